"""The agent's controller identity: which database it follows, and when it holds a feed."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from plum.agent import sync
from plum.agent.sync import ControllerIdentity
from plum.common import fsio

OLD = "11111111-1111-4111-8111-111111111111"
NEW = "22222222-2222-4222-8222-222222222222"


def admits(identity: ControllerIdentity, served: object, instances: int = 2) -> bool:
    return asyncio.run(identity.admits(served, instances))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "controller-id"


def test_first_contact_follows_and_records_the_identity(path: Path) -> None:
    identity = ControllerIdentity(path, "http://c:8080")
    assert admits(identity, OLD)
    assert path.read_text().strip() == OLD
    assert path.stat().st_mode & 0o777 == 0o600
    assert identity.status() == {"state": "following", "controllerId": OLD}
    assert ControllerIdentity(path, "http://c:8080").followed == OLD, "kept across agent restarts"


def test_another_identity_holds_until_the_file_is_removed(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path.write_text(OLD + "\n")
    identity = ControllerIdentity(path, "http://c:8080")
    with caplog.at_level(logging.ERROR, logger="plum.agent.sync"):
        assert [admits(identity, NEW, 3) for _ in range(5)] == [False] * 5
    held = [r.getMessage() for r in caplog.records if "answers with database" in r.getMessage()]
    assert len(held) == 1, "logged when the hold starts, then at most once a minute"
    assert NEW in held[0] and OLD in held[0] and str(path) in held[0] and "3 controller instance(s)" in held[0]
    status = identity.status()
    assert (status["state"], status["controllerId"], status["servedControllerId"]) == (
        "held",
        OLD,
        NEW,
    )
    assert path.read_text().strip() == OLD, "nothing is accepted implicitly"

    path.unlink()  # the operator accepts the new database
    assert admits(identity, NEW)
    assert identity.status()["state"] == "following"
    assert path.read_text().strip() == NEW


def test_the_followed_database_coming_back_ends_the_hold(path: Path) -> None:
    path.write_text(OLD + "\n")
    identity = ControllerIdentity(path, "http://c:8080")
    assert not admits(identity, NEW)
    assert admits(identity, OLD), "its backup restored: same identity, followed again"
    assert identity.hold is None


def test_a_restarted_agent_still_holds(path: Path) -> None:
    path.write_text(OLD + "\n")
    assert not admits(ControllerIdentity(path, "c"), NEW)
    assert not admits(ControllerIdentity(path, "c"), NEW)


@pytest.mark.parametrize("served", [None, "", 42, "not an id!", "x" * 500])
def test_a_feed_without_a_usable_identity_is_followed_as_before(path: Path, served: object) -> None:
    path.write_text(OLD + "\n")
    assert admits(ControllerIdentity(path, "c"), served)


@pytest.mark.parametrize("content", [b"", b"\x00\xff garbage", b"a" * 300])
def test_an_unreadable_record_holds_rather_than_follows_anything(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    identity = ControllerIdentity(path, "c")
    assert not admits(identity, NEW), "written atomically by the agent: damage is not first contact"
    assert "unreadable controller-id" in identity.status()["message"]
    path.unlink()
    assert admits(identity, NEW)


def test_a_node_without_controller_instances_follows_a_new_database_at_once(
    path: Path,
) -> None:
    path.write_text(OLD + "\n")
    identity = ControllerIdentity(path, "c")
    assert admits(identity, NEW, instances=0), "nothing to protect"
    assert path.read_text().strip() == NEW
    assert not admits(identity, OLD, instances=1), "from then on it is the followed one"


def test_a_record_the_disk_refused_is_never_read_as_the_operators_consent(path: Path, monkeypatch) -> None:
    identity = ControllerIdentity(path, "http://c:8080")
    real_write = fsio.write_atomic

    def full_disk(*args: object, **kwargs: object) -> None:
        raise fsio.StorageError("save", path, "no space left on device")

    monkeypatch.setattr(sync.fsio, "write_atomic", full_disk)
    assert admits(identity, OLD), "followed in memory although it could not be saved"
    assert not path.exists()
    assert [admits(identity, NEW) for _ in range(3)] == [False] * 3, "still held: nobody removed anything"

    monkeypatch.setattr(sync.fsio, "write_atomic", real_write)  # space again: the record is written
    assert not admits(identity, NEW)
    assert path.read_text().strip() == OLD
    path.unlink()  # now a removal is the operator's consent
    assert admits(identity, NEW)
