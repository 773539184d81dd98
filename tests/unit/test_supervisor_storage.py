"""The supervisor on a fake runtime: changes are saved before they are made, agent-side start failures are
retried without counting, and what interrupted deploys leave is finished or undone at start."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from plum.agent import supervisor as sv
from plum.agent.runtimes.base import (
    ExitCallback,
    ExitInfo,
    Handle,
    Inspection,
    Launch,
    Runtime,
    StartError,
    Usage,
)
from plum.agent.spec import AppSpec
from plum.agent.state import AppRecord
from plum.common.artifact import AppMeta
from plum.common.fsio import StorageError
from support.agent import app_zip
from test_docker_helpers import make_config


class FakeHandle(Handle):
    def __init__(self, pid: int, release: str | None, on_exit: ExitCallback) -> None:
        self._pid, self.release, self.on_exit, self.started_at = (
            pid,
            release,
            on_exit,
            1.0,
        )

    @property
    def pid(self) -> int:
        return self._pid

    def to_state(self) -> dict[str, Any]:
        return {"pid": self._pid, "start_ticks": self._pid}


class FakeRuntime(Runtime):
    """Instances are numbers; start fails with the queued errors first."""

    name = "process"

    def __init__(self) -> None:
        self.failures: list[Exception] = []
        self.running: dict[int, FakeHandle] = {}
        self.next_pid = 100
        self.starts = 0

    async def start(self, launch: Launch, on_exit: ExitCallback) -> Handle:
        self.starts += 1
        if self.failures:
            raise self.failures.pop(0)
        self.next_pid += 1
        release = launch.app_dir.name if launch.app_dir else None
        handle = FakeHandle(self.next_pid, release, on_exit)
        self.running[handle.pid] = handle
        return handle

    async def recover(
        self, launch: Launch, state: dict[str, Any], on_exit: ExitCallback
    ) -> Handle | None:
        handle = self.running.get(int(state.get("pid") or 0))
        if (
            handle is None and self.running
        ):  # as the process runtime does: found by its instance marker
            handle = list(self.running.values())[-1]
        if handle is not None:
            handle.on_exit = on_exit
        return handle

    async def stop(self, handle: Handle, timeout: float) -> None:
        assert isinstance(handle, FakeHandle)
        del self.running[handle.pid]
        handle.on_exit(handle, ExitInfo(0, None, "Exited", 2.0))

    def inspect(self, handle: Handle) -> Inspection:
        assert isinstance(handle, FakeHandle)
        return Inspection(handle.pid, handle.release, handle.started_at)

    def preflight(self, name: str, spec: AppSpec, meta: AppMeta | None) -> None:
        pass

    def usage(self, handles: list[Handle]) -> dict[int, Usage]:
        return {}

    def tail_logs(self, launch: Launch, handle: Handle | None, lines: int) -> list[str]:
        return []


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(sv, "RESOURCE_RETRY_FIRST", 0.01)


def _upload(
    tmp_path: Path, supervisor: sv.Supervisor, version: str = "1.0"
) -> sv.Upload:
    source = app_zip(tmp_path / f"v{version}.zip", name="svc", version=version)
    target = supervisor.tmp_dir / f"incoming-{version}.zip"
    shutil.copy(source, target)
    return sv.Upload(target, hashlib.sha256(source.read_bytes()).hexdigest())


async def _opened(tmp_path: Path, runtime: FakeRuntime) -> sv.Supervisor:
    supervisor = sv.Supervisor(make_config(tmp_path), {"process": runtime})
    await supervisor.open()
    return supervisor


async def _settle(supervisor: sv.Supervisor, phase: str) -> dict[str, Any]:
    for _ in range(200):
        status = supervisor.status("svc")
        if status["phase"] == phase:
            return status
        await asyncio.sleep(0.01)
    raise AssertionError(f"never reached {phase}: {supervisor.status('svc')}")


@pytest.mark.parametrize(
    "code", [errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOSPC, errno.EAGAIN]
)
def test_an_agent_side_start_failure_is_retried_and_never_counted(tmp_path, code):
    async def scenario() -> None:
        runtime = FakeRuntime()
        supervisor = await _opened(tmp_path, runtime)
        runtime.failures = [OSError(code, os.strerror(code))] * 4
        _, status = await supervisor.deploy(
            "svc", _upload(tmp_path, supervisor), {"max_restarts": 1}
        )
        assert (
            status["phase"] == "BackOff"
            and "the agent cannot start it now" in status["message"]
        )
        assert os.strerror(code).lower() in status["message"]
        running = await _settle(supervisor, "Running")
        assert running["restarts"] == 0, (
            "a retry of the agent's own failure is not a restart"
        )
        assert runtime.starts == 5
        await supervisor.close()

    asyncio.run(scenario())


def test_a_start_error_of_the_app_itself_still_fails(tmp_path):
    async def scenario() -> None:
        runtime = FakeRuntime()
        supervisor = await _opened(tmp_path, runtime)
        runtime.failures = [StartError("start command not found: nope")]
        _, status = await supervisor.deploy("svc", _upload(tmp_path, supervisor), None)
        assert status["phase"] == "Failed" and "not found" in status["message"]
        await supervisor.close()

    asyncio.run(scenario())


def test_a_change_the_disk_refuses_changes_nothing(tmp_path, monkeypatch):
    async def scenario() -> None:
        runtime = FakeRuntime()
        supervisor = await _opened(tmp_path, runtime)
        _, before = await supervisor.deploy("svc", _upload(tmp_path, supervisor), None)

        def refuse(self: AppRecord, path: Path) -> None:
            raise StorageError("save", path, "no space left on device", errno.ENOSPC)

        monkeypatch.setattr(AppRecord, "save", refuse)
        for operation in (supervisor.stop, supervisor.restart):
            with pytest.raises(StorageError):
                await operation("svc")
        with pytest.raises(StorageError):
            await supervisor.deploy("svc", _upload(tmp_path, supervisor, "2.0"), None)
        now = supervisor.status("svc")
        assert {
            k: now[k] for k in ("pid", "phase", "desired", "version", "release")
        } == {k: before[k] for k in ("pid", "phase", "desired", "version", "release")}
        assert list(runtime.running) == [before["pid"]]
        assert supervisor.apps["svc"].record.intent is None
        await supervisor.close()

    asyncio.run(scenario())


def test_a_deploy_cut_after_its_intent_is_finished_at_start(tmp_path):
    async def scenario() -> None:
        runtime = FakeRuntime()
        supervisor = await _opened(tmp_path, runtime)
        _, v1 = await supervisor.deploy("svc", _upload(tmp_path, supervisor), None)
        _, v2 = await supervisor.deploy(
            "svc", _upload(tmp_path, supervisor, "2.0"), None
        )
        await supervisor.close()
        # As if the agent died just after starting 2.0: the record still names 1.0, with the intent of 2.0.
        state = tmp_path / "data" / "apps" / "svc" / "state.json"
        record = AppRecord.load(state)
        intent = {name: getattr(record, name) for name in sv.INTENT_FIELDS}
        record.release, record.artifact_sha256 = v1["release"], v1["artifact_sha256"]
        record.meta, record.handle, record.intent = (
            {"name": "svc", "version": "1.0"},
            {"pid": 1},
            intent,
        )
        record.save(state)

        again = await _opened(tmp_path, runtime)
        status = again.status("svc")
        assert (status["version"], status["release"], status["pid"]) == (
            "2.0",
            v2["release"],
            v2["pid"],
        )
        assert AppRecord.load(state).intent is None and status["restarts"] == 0
        await again.close()

    asyncio.run(scenario())


def test_a_first_deploy_cut_before_its_release_was_in_place_leaves_nothing(tmp_path):
    async def scenario() -> None:
        runtime = FakeRuntime()
        supervisor = await _opened(tmp_path, runtime)
        await supervisor.close()
        intent = {name: None for name in sv.INTENT_FIELDS}
        intent.update(
            release="0123456789abcdef",
            artifact_sha256="ab" * 32,
            spec={},
            spec_hash="",
            runtime="process",
        )
        intent["desired"] = "running"
        record = AppRecord("svc", "svc-1", "process", desired="stopped", intent=intent)
        record.save(tmp_path / "data" / "apps" / "svc" / "state.json")
        again = await _opened(tmp_path, runtime)
        assert again.apps == {} and not (tmp_path / "data" / "apps" / "svc").exists()
        await again.close()

    asyncio.run(scenario())
