"""Bad input gets a 4xx JSON error naming the problem, and the running app stays untouched."""

from __future__ import annotations

import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest

from support.agent import APIError, app_zip, make_zip, pid_alive


@pytest.fixture
def running(agent, tmp_path):
    """An app already running under the name every bad deploy targets."""
    app = agent.deploy("svc", app_zip(tmp_path / "good.zip"))["app"]
    return agent, app


def _assert_untouched(agent, app):
    now = agent.app("svc")
    assert (now["pid"], now["phase"], now["artifact_sha256"]) == (app["pid"], "Running", app["artifact_sha256"])
    assert pid_alive(app["pid"])
    assert agent.request("GET", "/healthz")["status"] == "ok"


def _zip_with(tmp_path: Path, writer) -> Path:
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("start.sh", "#!/bin/sh\nexec sleep 100\n")
        zf.writestr("meta.ini", "name=svc\nversion=9\n")
        writer(zf)
    return path


def _symlink(zf: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = (0o120777) << 16
    zf.writestr(info, target)


def _setuid(zf: zipfile.ZipFile) -> None:
    info = zipfile.ZipInfo("bin/tool")
    info.external_attr = (0o104755) << 16
    zf.writestr(info, "x")


BAD_ARTIFACTS = {
    "zip slip": (lambda zf: zf.writestr("../../evil.sh", "x"), ".."),
    "absolute path": (lambda zf: zf.writestr("/etc/evil", "x"), "absolute"),
    "symlink outside": (lambda zf: _symlink(zf, "link", "../../../etc/passwd"), "symlink"),
    "setuid bit": (_setuid, "setuid"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARTIFACTS))
def test_unsafe_archives_are_refused(running, tmp_path, case):
    agent, app = running
    writer, words = BAD_ARTIFACTS[case]
    with pytest.raises(APIError) as err:
        agent.deploy("svc", _zip_with(tmp_path, writer))
    assert err.value.status == 400
    assert words in err.value.body["error"].lower()
    assert err.value.body["field"] == "artifact"
    _assert_untouched(agent, app)
    assert not Path("/etc/evil").exists()


def test_zip_bomb_is_refused(running, tmp_path):
    agent, app = running
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("start.sh", "#!/bin/sh\n")
        zf.writestr("meta.ini", "name=svc\nversion=9\n")
        zf.writestr("zeros.bin", b"\0" * (64 * 1024 * 1024))
    with pytest.raises(APIError) as err:
        agent.deploy("svc", bomb)
    assert err.value.status == 400 and "zip bomb" in err.value.body["error"]
    _assert_untouched(agent, app)


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ({"meta.ini": "name=svc\nversion=1\n"}, "start.sh"),
        ({"bin/start.sh": "#!/bin/sh\n", "meta.ini": "name=svc\nversion=1\n"}, "zip root"),
        ({"start.sh": "#!/bin/sh\n", "meta.ini": "name=svc\nthis line is wrong\n"}, "meta.ini"),
        ({"start.sh": "#!/bin/sh\n", "meta.ini": "name=svc\n"}, "version"),
        ({"start.sh": "#!/bin/sh\n", "meta.ini": "name=svc\nversion=1\nservice=web:http:99999\n"}, "port"),
    ],
    ids=["no start.sh", "start.sh in a subfolder", "malformed meta.ini", "no version", "bad service port"],
)
def test_invalid_packages_are_refused(running, tmp_path, files, words):
    agent, app = running
    with pytest.raises(APIError) as err:
        agent.deploy("svc", make_zip(tmp_path / "p.zip", files))
    assert err.value.status == 400
    assert words in err.value.body["error"]
    _assert_untouched(agent, app)


def test_not_a_zip(running, tmp_path):
    agent, app = running
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not a zip file at all")
    with pytest.raises(APIError) as err:
        agent.deploy("svc", junk)
    assert err.value.status == 400 and "zip" in err.value.body["error"]
    _assert_untouched(agent, app)


@pytest.mark.parametrize("name", ["Upper", "-dash", "a" * 64, "with space", "ünï", "semi;colon"])
def test_invalid_app_names(agent, tmp_path, name):
    with pytest.raises(APIError) as err:
        agent.deploy(quote(name, safe=""), app_zip(tmp_path / "a.zip"))
    assert err.value.status == 400
    assert err.value.body["field"] == "name"
    assert agent.request("GET", "/v1/apps")["apps"] == []


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"restart_polcy": "always"}, "restart_polcy", "unknown field"),
        ({"restart_policy": "sometimes"}, "restart_policy", "sometimes"),
        ({"stop_timeout": -1}, "stop_timeout", "-1"),
        ({"env": {"PLUM_APP_NAME": "x"}}, "env", "cannot be overridden"),
        ({"env": {"1BAD": "x"}}, "env", "1BAD"),
        ({"start_cmd": "echo 'unbalanced"}, "start_cmd", "cannot be parsed"),
        ({"max_restarts": "3"}, "max_restarts", "'3'"),
    ],
)
def test_bad_spec_fields(running, tmp_path, spec, field, words):
    agent, app = running
    with pytest.raises(APIError) as err:
        agent.deploy("svc", app_zip(tmp_path / "v2.zip", version="2"), spec)
    assert err.value.status == 400
    assert err.value.body["field"] == field
    assert words in err.value.body["error"]
    _assert_untouched(agent, app)


def test_malformed_spec_json(running, tmp_path):
    agent, app = running
    body = b'--B\r\nContent-Disposition: form-data; name="spec"\r\n\r\n{not json\r\n--B--\r\n'
    with pytest.raises(APIError) as err:
        agent.request("PUT", "/v1/apps/svc", body, "multipart/form-data; boundary=B")
    assert err.value.status == 400 and "malformed JSON" in err.value.body["error"]
    _assert_untouched(agent, app)


def test_not_multipart(running):
    agent, app = running
    with pytest.raises(APIError) as err:
        agent.request("PUT", "/v1/apps/svc", b"{}", "application/json")
    assert err.value.status == 415
    _assert_untouched(agent, app)


def test_new_app_without_artifact(agent):
    with pytest.raises(APIError) as err:
        agent.request("PUT", "/v1/apps/new", b"--B--\r\n", "multipart/form-data; boundary=B")
    assert err.value.status == 400


@pytest.mark.parametrize("token", [None, "wrong-token-wrong-token"])
def test_missing_or_wrong_token(running, token, tmp_path):
    agent, app = running
    for method, path in [("GET", "/v1/apps"), ("POST", "/v1/apps/svc/stop"), ("DELETE", "/v1/apps/svc")]:
        with pytest.raises(APIError) as err:
            agent.request(method, path, token=token)
        assert err.value.status == 401
        assert "token" in err.value.body["error"]
    _assert_untouched(agent, app)


def test_start_command_that_does_not_exist(agent, tmp_path):
    result = agent.deploy("ghost", app_zip(tmp_path / "g.zip"), {"start_cmd": "no-such-program --serve"})
    app = result["app"]
    assert app["phase"] == "Failed"
    assert "start command not found" in app["message"] and "no-such-program" in app["message"]
    assert agent.request("GET", "/healthz")["status"] == "ok"


def test_unknown_app_is_404(agent):
    for method, path in [("GET", "/v1/apps/nope"), ("POST", "/v1/apps/nope/start"), ("DELETE", "/v1/apps/nope")]:
        with pytest.raises(APIError) as err:
            agent.request(method, path)
        assert err.value.status == 404 and "nope" in err.value.body["error"]


def test_bad_log_tail(running):
    agent, _ = running
    with pytest.raises(APIError) as err:
        agent.request("GET", "/v1/apps/svc/logs?tail=lots")
    assert err.value.status == 400 and err.value.body["field"] == "tail"


def test_refused_uploads_leave_nothing_behind(running, tmp_path):
    agent, app = running
    before = sorted(p.name for p in (agent.data_dir / "artifacts").iterdir())
    for files in ({"meta.ini": "name=svc\nversion=1\n"}, {"start.sh": "#!/bin/sh\n", "meta.ini": "broken\n"}):
        with pytest.raises(APIError):
            agent.deploy("svc", make_zip(tmp_path / "bad.zip", files))
        with pytest.raises(APIError):
            agent.deploy("newcomer", make_zip(tmp_path / "bad.zip", files))
    assert sorted(p.name for p in (agent.data_dir / "artifacts").iterdir()) == before
    assert list((agent.data_dir / "tmp").iterdir()) == []
    assert len(list((agent.data_dir / "apps/svc/releases").iterdir())) == 1
    assert not (agent.data_dir / "apps/newcomer").exists()
    _assert_untouched(agent, app)


def test_too_many_entries_is_refused(running, tmp_path):
    agent, app = running
    crowded = tmp_path / "crowded.zip"
    with zipfile.ZipFile(crowded, "w") as zf:
        zf.writestr("start.sh", "#!/bin/sh\n")
        zf.writestr("meta.ini", "name=svc\nversion=9\n")
        for i in range(10_001):
            zf.writestr(f"f/{i}", "")
    with pytest.raises(APIError) as err:
        agent.deploy("svc", crowded)
    assert err.value.status == 400 and "entries" in err.value.body["error"]
    _assert_untouched(agent, app)
