"""Hostile files and input against a real agent: nothing is stored, nothing freezes, nothing leaks.

- an 8 KB zip of 2000 nested folders is refused at upload (400) and leaves nothing behind;
- an app writing 20 MB without a newline, then exiting, over and over: healthz keeps answering, other
  apps stay supervised, the last lines in its status and state stay small, its rotated logs are 0640;
- what the agent writes is never open to other users (0750 folders, 0640 files, whatever the zip says),
  and an older data directory's modes are corrected at start;
- a version or a spec value that could never work (`../../x`, 5000 characters, a NUL byte) is a 400
  naming the field, and the running app is left exactly as it was.

Deterministic: no randomness, every wait bounded.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest

from support.agent import Agent, APIError, app_zip, make_zip, pid_alive, wait_until

MAX_LINE = 4096  # plum.agent.logfiles.MAX_LINE_CHARS: what one line of last_logs may hold
MARKER = "…[truncated]"
FLOOD_BYTES = 20 * 1024 * 1024
# 20 MB on one line, then a failure: the agent reads the log's last lines on every exit.
FLOOD = f"head -c {FLOOD_BYTES} /dev/zero | tr '\\0' x\nexit 3\n"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _untouched(agent: Agent, before: dict[str, Any]) -> None:
    now = agent.app(before["name"])
    assert (now["pid"], now["phase"], now["artifact_sha256"], now["restarts"]) == (
        before["pid"],
        "Running",
        before["artifact_sha256"],
        before["restarts"],
    )
    assert pid_alive(before["pid"])


def _stored(agent: Agent) -> dict[str, list[str]]:
    """What the agent keeps on disk, folder by folder (apps, releases, artifacts, staging)."""
    data = agent.data_dir
    return {
        "apps": sorted(p.name for p in (data / "apps").iterdir()),
        "releases": sorted(str(p.relative_to(data)) for p in data.glob("apps/*/releases/*")),
        "artifacts": sorted(p.name for p in (data / "artifacts").iterdir()),
        "tmp": sorted(p.name for p in (data / "tmp").iterdir()),
    }


def _deep_zip(path: Path, depth: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("start.sh", "#!/bin/sh\nexec sleep 100\n")
        zf.writestr("meta.ini", "name=deep\nversion=1\n")
        zf.writestr("d/" * depth + "leaf", "x")
    return path


# --- deep trees -----------------------------------------------------------------------------------


def test_deep_zip_is_refused_and_nothing_is_stored(agent, tmp_path):
    running = agent.deploy("svc", app_zip(tmp_path / "good.zip"))["app"]
    before = _stored(agent)
    deep = _deep_zip(tmp_path / "deep.zip", 2000)
    assert deep.stat().st_size < 9 * 1024  # about 8 KB: the 4000-character name, stored twice
    for name in ("svc", "deep"):  # over a running app, and as a new one
        with pytest.raises(APIError) as err:
            agent.deploy(name, deep)
        assert err.value.status == 400
        assert err.value.body["field"] == "artifact"
        assert "2001 levels deep, more than the limit of 64 levels" in err.value.body["error"]
        assert len(err.value.body["error"]) < 500  # the 4000-character entry name is not echoed
    assert _stored(agent) == before
    _untouched(agent, running)
    agent.request("DELETE", "/v1/apps/svc")  # the app next to it still comes and goes cleanly
    assert _stored(agent)["apps"] == []


# --- an app writing megabytes without a newline ---------------------------------------------------


class HealthProbe(threading.Thread):
    """Asks /healthz back to back; records each answer's latency and every failure."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            began = time.monotonic()
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    response.read()
            except OSError as exc:
                self.failures.append(f"{time.monotonic() - began:.2f}s: {exc}")
            self.latencies.append(time.monotonic() - began)
            time.sleep(0.02)


def test_megabytes_without_a_newline_freeze_nothing(agent_factory, tmp_path, record_property):
    agent = agent_factory(env={"AGENT_LOG_MAX_BYTES": str(1024 * 1024), "AGENT_LOG_BACKUPS": "2"})
    steady = agent.deploy("steady", app_zip(tmp_path / "steady.zip", name="steady"))["app"]
    probe = HealthProbe(agent.url)
    probe.start()
    try:
        agent.deploy("flood", app_zip(tmp_path / "flood.zip", name="flood", script=FLOOD))
        agent.wait_app("flood", lambda a: a["restarts"] >= 3, "three exits after 20 MB each", timeout=20)

        # Another app dies meanwhile: it is restarted at once, as always.
        os.kill(steady["pid"], signal.SIGKILL)
        agent.wait_app("steady", lambda a: a["phase"] == "Running" and a["pid"] != steady["pid"], "restart", 5)

        # The size rotation (every 10 s) copies megabytes: in a thread, and to a file as private as the log.
        logs = agent.data_dir / "apps" / "flood" / "logs"
        wait_until((logs / "app.log.1").exists, timeout=20, what="a rotated log")

        status = agent.wait_app("flood", lambda a: a["phase"] == "BackOff" and a["last_logs"], "BackOff", 20)
    finally:
        probe.done.set()
        probe.join(5)
    agent.request("POST", "/v1/apps/flood/stop")
    modes = {p.name: _mode(p) for p in logs.iterdir()}
    state_bytes = (agent.data_dir / "apps" / "flood" / "state.json").stat().st_size
    agent.request("DELETE", "/v1/apps/flood")  # and its hundreds of MB of logs

    worst = max(probe.latencies)
    record_property("healthz_max_latency_s", round(worst, 3))
    record_property("healthz_requests", len(probe.latencies))
    exits = status["restarts"] + 1
    print(f"\nhealthz during {exits} exits after 20 MB: {len(probe.latencies)} requests, max {worst * 1000:.0f} ms")
    assert probe.failures == []  # every request answered within 2 s (the fix: 14.5 s freezes before)

    lines = status["last_logs"]
    assert 1 <= len(lines) <= 20
    assert all(len(line) <= MAX_LINE + len(MARKER) for line in lines)
    assert lines[-1].startswith(MARKER) and lines[-1].endswith("x" * 100)  # the newest output, cut
    assert len(json.dumps(status)) < 64 * 1024
    assert state_bytes < 64 * 1024
    assert "app.log.1" in modes and set(modes.values()) == {0o640}, modes


# --- modes ----------------------------------------------------------------------------------------


def _open_to_others(root: Path) -> list[str]:
    """Every file or folder under root that a user other than its owner and group could use."""
    found = []
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink() and _mode(path) & 0o007:
            found.append(f"{path.relative_to(root.parent)} {_mode(path):04o}")
    return found


def test_extracted_files_get_strict_modes_whatever_the_zip_says(agent, tmp_path):
    artifact = make_zip(
        tmp_path / "modes.zip",
        {
            "start.sh": ("#!/bin/sh\nexec sleep 1000\n", 0o777),
            "meta.ini": ("name=modes\nversion=1\n", 0o666),
            "bin/tool": ("#!/bin/sh\n", 0o777),
            "bin/private-tool": ("#!/bin/sh\n", 0o700),
            "etc/config": ("x=1\n", 0o666),
            "etc/secret": ("s\n", 0o600),
        },
    )
    with zipfile.ZipFile(artifact, "a") as zf:  # a world-writable folder
        folder = zipfile.ZipInfo("shared/")
        folder.external_attr = (stat.S_IFDIR | 0o777) << 16
        zf.writestr(folder, "")
    app = agent.deploy("modes", artifact)["app"]
    assert app["phase"] == "Running"
    release = next((agent.data_dir / "apps" / "modes" / "releases").iterdir())
    modes = {str(p.relative_to(release)): _mode(p) for p in [release, *release.rglob("*")]}
    assert modes == {
        ".": 0o750,
        "start.sh": 0o750,
        "meta.ini": 0o640,
        "bin": 0o750,
        "bin/tool": 0o750,
        "bin/private-tool": 0o750,
        "etc": 0o750,
        "etc/config": 0o640,
        "etc/secret": 0o640,
        "shared": 0o750,
    }
    assert _mode(agent.data_dir) == 0o750
    assert _open_to_others(agent.data_dir) == []


def test_an_older_data_directory_is_made_private_at_start(agent_factory, tmp_path):
    agent = agent_factory()
    app = agent.deploy("old", app_zip(tmp_path / "old.zip", name="old"))["app"]
    agent.kill(signal.SIGTERM)  # apps keep running
    data = agent.data_dir
    logs = data / "apps" / "old" / "logs"
    (logs / "app.log.1").write_text("rotated by an older agent\n")
    loose = [data, data / "apps", data / "artifacts", data / "apps" / "old", logs, data / "apps" / "old" / "releases"]
    for folder in loose:
        os.chmod(folder, 0o755)  # noqa: S103 - what older agents left, on purpose
    for log in logs.iterdir():
        os.chmod(log, 0o644)

    agent.start()
    assert {str(p.relative_to(data)): _mode(p) for p in loose} == {str(p.relative_to(data)): 0o750 for p in loose}
    assert {p.name: _mode(p) for p in logs.iterdir()} == {"app.log": 0o640, "app.log.1": 0o640}
    assert _open_to_others(data) == []
    assert agent.app("old")["pid"] == app["pid"]  # re-adopted, not restarted


# --- values that could never work -----------------------------------------------------------------

BAD_VERSIONS = {"traversal": "../../x", "5000 characters": "1" * 5000, "space": "1.0 beta"}


@pytest.mark.parametrize("case", sorted(BAD_VERSIONS))
def test_bad_versions_are_refused_and_the_app_is_untouched(agent, tmp_path, case):
    running = agent.deploy("svc", app_zip(tmp_path / "good.zip"))["app"]
    before = _stored(agent)
    bad = app_zip(tmp_path / "bad.zip", version=BAD_VERSIONS[case])
    for name in ("svc", "newcomer"):
        with pytest.raises(APIError) as err:
            agent.deploy(name, bad)
        assert err.value.status == 400
        assert err.value.body["field"] == "version"
        assert "is not valid" in err.value.body["error"] and len(err.value.body["error"]) < 500
    assert _stored(agent) == before
    _untouched(agent, running)


BAD_SPECS = {
    "NUL in an env value": ({"env": {"TOKEN": "abc\x00def"}}, "env", "NUL byte"),
    "NUL in an env name": ({"env": {"TO\x00KEN": "x"}}, "env", "invalid variable name"),
    "NUL in the start command": ({"start_cmd": "exec sleep\x00 1000"}, "start_cmd", "NUL byte"),
    "lone surrogate in an env value": ({"env": {"TOKEN": "\udc80"}}, "env", "not valid text"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_spec_values_exec_cannot_take_are_refused(agent, tmp_path, case):
    running = agent.deploy("svc", app_zip(tmp_path / "good.zip"))["app"]
    spec, field, words = BAD_SPECS[case]
    for name in ("svc", "newcomer"):
        with pytest.raises(APIError) as err:
            agent.deploy(name, app_zip(tmp_path / "v2.zip", version="2"), spec)
        assert err.value.status == 400
        assert err.value.body["field"] == field
        assert words in err.value.body["error"]
    time.sleep(0.3)  # a crash loop would show by now
    _untouched(agent, running)
    assert not (agent.data_dir / "apps" / "newcomer").exists()
