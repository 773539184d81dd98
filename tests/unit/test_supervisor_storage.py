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
from test_docker_helpers import make_config

from plum.agent import supervisor as sv
from plum.agent.runtimes.base import StartError
from plum.agent.runtimes.fake import FakeClock, FakeRuntime
from plum.agent.spec import AppSpec
from plum.agent.state import AppRecord, Intent
from plum.agent.taskrunner import TaskRunner
from plum.common.artifact import AppMeta
from plum.common.fsio import StorageError
from plum.common.vocab import Desired
from support.agent import app_zip


@pytest.fixture(autouse=True)
def strict_transitions(monkeypatch):
    monkeypatch.setattr(TaskRunner, "strict_transitions", True)


def _upload(tmp_path: Path, supervisor: sv.Supervisor, version: str = "1.0") -> sv.Upload:
    source = app_zip(tmp_path / f"v{version}.zip", name="svc", version=version)
    target = supervisor.tmp_dir / f"incoming-{version}.zip"
    shutil.copy(source, target)
    return sv.Upload(target, hashlib.sha256(source.read_bytes()).hexdigest())


async def _opened(tmp_path: Path, runtime: FakeRuntime) -> sv.Supervisor:
    supervisor = sv.Supervisor(make_config(tmp_path), {"process": runtime}, runtime.clock)
    await supervisor.open()
    return supervisor


async def _settle(supervisor: sv.Supervisor, phase: str) -> dict[str, Any]:
    """Let the fake time pass until the app reaches the phase (retries fall due meanwhile)."""
    clock = supervisor.clock
    assert isinstance(clock, FakeClock)
    for _ in range(100):
        status = supervisor.status("svc")
        if status["phase"] == phase:
            return status
        clock.advance(1.0)
        for _ in range(20):
            await asyncio.sleep(0)
    raise AssertionError(f"never reached {phase}: {supervisor.status('svc')}")


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOSPC, errno.EAGAIN])
def test_an_agent_side_start_failure_is_retried_and_never_counted(tmp_path, code):
    async def scenario() -> None:
        runtime = FakeRuntime(FakeClock())
        supervisor = await _opened(tmp_path, runtime)
        runtime.failures = [OSError(code, os.strerror(code))] * 4
        _, status = await supervisor.deploy("svc", _upload(tmp_path, supervisor), {"max_restarts": 1})
        assert status["phase"] == "BackOff" and "the agent cannot start it now" in status["message"]
        assert os.strerror(code).lower() in status["message"]
        running = await _settle(supervisor, "Running")
        assert running["restarts"] == 0, "a retry of the agent's own failure is not a restart"
        assert runtime.starts == 5
        await supervisor.close()

    asyncio.run(scenario())


def test_a_start_error_of_the_app_itself_still_fails(tmp_path):
    async def scenario() -> None:
        runtime = FakeRuntime(FakeClock())
        supervisor = await _opened(tmp_path, runtime)
        runtime.failures = [StartError("start command not found: nope")]
        _, status = await supervisor.deploy("svc", _upload(tmp_path, supervisor), None)
        assert status["phase"] == "Failed" and "not found" in status["message"]
        await supervisor.close()

    asyncio.run(scenario())


def test_a_change_the_disk_refuses_changes_nothing(tmp_path, monkeypatch):
    async def scenario() -> None:
        runtime = FakeRuntime(FakeClock())
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
        assert {k: now[k] for k in ("pid", "phase", "desired", "version", "release")} == {
            k: before[k] for k in ("pid", "phase", "desired", "version", "release")
        }
        assert list(runtime.running) == [before["pid"]]
        assert supervisor.apps["svc"].record.intent is None
        await supervisor.close()

    asyncio.run(scenario())


def test_a_deploy_cut_after_its_intent_is_finished_at_start(tmp_path):
    async def scenario() -> None:
        runtime = FakeRuntime(FakeClock())
        supervisor = await _opened(tmp_path, runtime)
        _, v1 = await supervisor.deploy("svc", _upload(tmp_path, supervisor), None)
        _, v2 = await supervisor.deploy("svc", _upload(tmp_path, supervisor, "2.0"), None)
        await supervisor.close()
        # As if the agent died just after starting 2.0: the record still names 1.0, with the intent of 2.0.
        state = tmp_path / "data" / "apps" / "svc" / "state.json"
        record = AppRecord.load(state)
        intent = Intent.of(record)
        record.release, record.artifact_sha256 = v1["release"], v1["artifact_sha256"]
        record.meta, record.handle, record.intent = AppMeta("svc", "1.0", ()), {"pid": 1}, intent
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
        runtime = FakeRuntime(FakeClock())
        supervisor = await _opened(tmp_path, runtime)
        await supervisor.close()
        intent = Intent("0123456789abcdef", "ab" * 32, None, AppSpec(), "", "process", Desired.RUNNING)
        record = AppRecord("svc", "svc-1", "process", desired=Desired.STOPPED, intent=intent)
        record.save(tmp_path / "data" / "apps" / "svc" / "state.json")
        again = await _opened(tmp_path, runtime)
        assert again.apps == {} and not (tmp_path / "data" / "apps" / "svc").exists()
        await again.close()

    asyncio.run(scenario())
