"""The agent's saved app records: what is written is read back, and anything else is refused by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from plum.agent.restart import RestartTracker
from plum.agent.state import AppRecord, StateFileError
from plum.common.artifact import AppMeta, Service


def _saved(tmp_path: Path, name: str = "svc") -> Path:
    record = AppRecord(
        name,
        f"{name}-1a2b3c4d",
        "process",
        release="0123456789abcdef",
        artifact_sha256="ab" * 32,
    )
    record.meta = AppMeta(name, "1.0", (Service("web", "http", 80),))
    record.handle = {"pid": 12, "start_ticks": 5}
    record.tracker = RestartTracker(1, [1.5])
    path = tmp_path / "apps" / name / "state.json"
    record.save(path)
    return path


def test_a_saved_record_is_read_back_as_it_was(tmp_path):
    path = _saved(tmp_path)
    loaded = AppRecord.load(path)
    assert json.loads(json.dumps(loaded.to_dict())) == json.loads(path.read_text())
    assert loaded.intent is None


def _rewrite(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the file is empty"),
        (b"  \n", "the file is empty"),
        (b'{"name": "svc", "inst', "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b"null", "expected a JSON object, got NoneType"),
        (b"[" * 100_000, "not valid JSON"),
        (b'{"instance_id": "x", "runtime": "process"}', "field 'name' is missing"),
    ],
)
def test_unusable_files_are_refused_with_the_reason(tmp_path, content, reason):
    path = _saved(tmp_path)
    path.write_bytes(content)
    with pytest.raises(StateFileError) as err:
        AppRecord.load(path)
    assert reason in err.value.message and str(path) in err.value.message


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"restarts": "many"},
            "field 'restarts': expected a whole number >= 0, got 'many'",
        ),
        ({"restarts": True}, "field 'restarts'"),
        ({"handle": 5}, "field 'handle': expected an object"),
        ({"desired": "maybe"}, "field 'desired'"),
        ({"phase": "Exploded"}, "field 'phase'"),
        ({"name": "../../etc"}, "field 'name': expected an app name"),
        ({"name": "other"}, "is not the name of the app's folder 'svc'"),
        ({"instance_id": "a/b"}, "field 'instance_id'"),
        ({"release": "../x"}, "field 'release'"),
        ({"artifact_sha256": "zz"}, "field 'artifact_sha256'"),
        ({"meta": {"name": "svc"}}, "field 'meta'"),
        ({"tracker": {"consecutive": "x"}}, "field 'tracker'"),
        ({"last_logs": [1, 2]}, "field 'last_logs'"),
        (
            {"spec": {"restart_policy": "sometimes"}},
            "field 'spec': spec.restart_policy",
        ),
        ({"spec": {"bogus": 1}}, "field 'spec': spec.bogus"),
        ({"intent": {"release": "x"}}, "field 'intent': 'artifact_sha256' is missing"),
    ],
)
def test_fields_of_the_wrong_shape_are_refused_by_name(tmp_path, changes, reason):
    path = _saved(tmp_path)
    _rewrite(path, **changes)
    with pytest.raises(StateFileError) as err:
        AppRecord.load(path)
    assert reason in err.value.message


def test_unknown_fields_are_ignored_for_records_of_later_versions(tmp_path):
    path = _saved(tmp_path)
    _rewrite(path, added_later={"x": 1})
    assert AppRecord.load(path).name == "svc"


def test_a_directory_in_place_of_the_file_is_refused(tmp_path):
    path = tmp_path / "apps" / "svc" / "state.json"
    path.mkdir(parents=True)
    with pytest.raises(StateFileError) as err:
        AppRecord.load(path)
    assert "cannot read it" in err.value.message
