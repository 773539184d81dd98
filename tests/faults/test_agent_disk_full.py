"""The agent's data directory on a full disk (a small tmpfs): every refused change is a clear storage error
that leaves everything as it was, in memory, on disk and in the running processes.

- stop: 507 naming .../state.json and "no space left on device"; the app keeps running, the API and the
  saved record still say desired=running, and after a kill -9 and a restart (disk still full) it is
  re-adopted, running as before;
- deploy of a new version (refused at the upload, or with room for the upload only, at its extraction)
  and of a new spec (no upload): 507, never a 400 "bad artifact";
  the old version keeps running and its record is unchanged; restart: 507, same pid;
- delete still works (removing an app frees space), and once space is freed, stop works again;
- a removal that fails (a mount point inside the app's folder) answers an error naming the entry and
  keeps the app listed, stopped, also after an agent restart; once the cause is gone, delete works,
  also through a 2000-level tree the app wrote.

Needs root (mount -t tmpfs); the mount is removed in teardown.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from support.agent import Agent, APIError, app_instances, app_zip, make_zip, pid_alive

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

APP = "svc"
SEED = 1012
PAYLOAD = 400_000  # incompressible: the upload and the extraction each need about this much


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, filler: Optional[Path] = None) -> Path:
    """Take every free byte of the file system (the last pages with small writes)."""
    filler = filler or disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    with pytest.raises(OSError) as err:
        (disk / "probe").write_bytes(b"x" * 4096)
    (disk / "probe").unlink(missing_ok=True)
    assert err.value.errno == errno.ENOSPC
    return filler


def _refused_for_space(call: Any) -> dict[str, Any]:
    with pytest.raises(APIError) as err:
        call()
    assert err.value.status == 507, err.value.body
    assert "no space left on device" in err.value.body["error"], err.value.body
    return err.value.body


def _saved(agent: Agent, name: str = APP) -> dict[str, Any]:
    return json.loads((agent.data_dir / "apps" / name / "state.json").read_text())


def _as_before(agent: Agent, before: dict[str, Any]) -> None:
    now = agent.app(APP)
    fields = ("pid", "phase", "desired", "version", "artifact_sha256", "spec_hash", "restarts")
    assert {k: now[k] for k in fields} == {k: before[k] for k in fields}
    assert pid_alive(before["pid"]) and app_instances(agent.data_dir, APP) == [before["pid"]]
    saved = _saved(agent)
    assert (saved["desired"], saved["artifact_sha256"], saved["handle"]["pid"], saved["intent"]) == (
        "running",
        before["artifact_sha256"],
        before["pid"],
        None,
    )


def test_a_full_disk_refuses_changes_cleanly_and_loses_nothing(small_disk, agent_factory, tmp_path):
    agent = agent_factory(small_disk.name)  # its data dir is the mount
    before = agent.deploy(APP, app_zip(tmp_path / "v1.zip", name=APP))["app"]
    spare = agent.deploy("spare", app_zip(tmp_path / "spare.zip", name="spare"))["app"]
    filler = fill(small_disk)

    body = _refused_for_space(lambda: agent.request("POST", f"/v1/apps/{APP}/stop"))
    assert body["path"] == str(agent.data_dir / "apps" / APP / "state.json")
    assert str(agent.data_dir / "apps" / APP / "state.json") in body["error"]
    _as_before(agent, before)

    v2 = app_zip(tmp_path / "v2.zip", name=APP, version="2.0.0")
    body = _refused_for_space(lambda: agent.deploy(APP, v2))
    assert body.get("field") != "artifact" and "upload" in body["error"]
    # Room for the upload, not for its extraction: still the disk's fault, not the artifact's.
    payload = random.Random(SEED).randbytes(PAYLOAD)  # noqa: S311 - seeded test data
    big = make_zip(
        tmp_path / "big.zip",
        {
            "start.sh": ("#!/bin/sh\nexec sleep 1000\n", 0o755),
            "data.bin": payload,
            "meta.ini": f"name={APP}\nversion=3.0.0\n",
        },
    )
    os.truncate(filler, filler.stat().st_size - PAYLOAD * 3 // 2)
    body = _refused_for_space(lambda: agent.deploy(APP, big))
    assert body.get("field") != "artifact" and "cannot extract the artifact into" in body["error"]
    fill(small_disk, filler)
    _refused_for_space(lambda: agent.deploy(APP, None, {"env": {"GREETING": "new"}}))
    _refused_for_space(lambda: agent.request("POST", f"/v1/apps/{APP}/restart"))
    _as_before(agent, before)
    assert list((agent.data_dir / "tmp").iterdir()) == [], "a refused upload leaves nothing behind"

    agent.kill()
    agent.start()  # the disk is still full
    _as_before(agent, before)

    assert agent.request("DELETE", "/v1/apps/spare") == {"changed": True}, "a full disk never blocks a removal"
    assert not pid_alive(spare["pid"]) and not (agent.data_dir / "apps" / "spare").exists()

    filler.unlink()
    stopped = agent.request("POST", f"/v1/apps/{APP}/stop")["app"]
    assert stopped["phase"] == "Stopped" and not pid_alive(before["pid"])
    assert _saved(agent)["desired"] == "stopped"
    agent.kill()
    agent.start()
    assert agent.app(APP)["phase"] == "Stopped" and app_instances(agent.data_dir, APP) == []


def _nest(root: Path, depth: int) -> None:
    """depth nested folders (paths far longer than PATH_MAX), as an app may write into its folder."""
    root.mkdir(parents=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("n", dir_fd=fd)
        child = os.open("n", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def test_a_removal_that_fails_keeps_the_app_listed_and_can_be_retried(agent_factory, tmp_path):
    agent = agent_factory()
    app = agent.deploy(APP, app_zip(tmp_path / "v1.zip", name=APP))["app"]
    app_dir = agent.data_dir / "apps" / APP
    _nest(app_dir / "data" / "deep", 2000)
    busy = app_dir / "data" / "mounted"  # a mount point cannot be removed (EBUSY) until it is unmounted
    busy.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(busy)], check=True)
    try:
        with pytest.raises(APIError) as err:
            agent.request("DELETE", f"/v1/apps/{APP}")
        assert err.value.status == 500 and f"cannot remove {busy}: device or resource busy" in err.value.body["error"]
        listed = agent.app(APP)
        assert listed["phase"] == "Stopped" and "removal failed" in listed["message"], listed
        assert not pid_alive(app["pid"])
        agent.kill()
        agent.start()
        assert agent.app(APP)["phase"] == "Stopped", "an interrupted removal never brings the app back to life"
    finally:
        subprocess.run(["umount", str(busy)], check=False)
    assert agent.request("DELETE", f"/v1/apps/{APP}") == {"changed": True}
    assert not app_dir.exists()
    agent.kill()
    agent.start()
    assert agent.request("GET", "/v1/apps")["apps"] == []
