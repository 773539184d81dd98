"""An app's life on the fake runtime and clock: deploy, stop, start, restart, re-adoption after an agent restart,
crashes backing off until the restart limit gives up, and a stable run resetting the backoff. No waiting."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_docker_helpers import make_config

from plum.agent import supervisor as sv
from plum.agent.runtimes.fake import FakeClock, FakeRuntime
from plum.agent.state import AppRecord
from plum.agent.taskrunner import TaskRunner, TransitionRefused
from plum.common.vocab import Phase
from support.agent import app_zip


@pytest.fixture(autouse=True)
def strict_transitions(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(TaskRunner, "strict_transitions", True)
    yield


class World:
    """One node: a runtime whose instances outlive the supervisors started on it, and the clock."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = FakeClock()
        self.runtime = FakeRuntime(self.clock)
        self.supervisor: sv.Supervisor

    async def open(self) -> sv.Supervisor:
        self.supervisor = sv.Supervisor(make_config(self.tmp_path), {"process": self.runtime}, self.clock)
        await self.supervisor.open()
        return self.supervisor

    def upload(self, version: str = "1.0") -> sv.Upload:
        source = app_zip(self.tmp_path / f"v{version}.zip", name="svc", version=version)
        target = self.supervisor.tmp_dir / f"incoming-{version}.zip"
        shutil.copy(source, target)
        return sv.Upload(target, hashlib.sha256(source.read_bytes()).hexdigest())

    async def deploy(self, spec: Any = None) -> dict[str, Any]:
        _, status = await self.supervisor.deploy("svc", self.upload(), spec)
        return status

    async def advance(self, seconds: float) -> dict[str, Any]:
        """Let the time pass, then let what it set off (a restart) run; the app's status after it."""
        self.clock.advance(seconds)
        await settle()
        return self.supervisor.status("svc")

    async def crash(self, exit_code: int = 1) -> dict[str, Any]:
        self.runtime.crash("svc", exit_code)
        await settle()
        return self.supervisor.status("svc")


async def settle() -> None:
    """Run what is ready on the loop (a restart task, its lock) until nothing is left: no time passes."""
    for _ in range(20):
        await asyncio.sleep(0)


def run(tmp_path: Path, scenario: Any) -> None:
    async def main() -> None:
        world = World(tmp_path)
        await world.open()
        try:
            await scenario(world)
        finally:
            await world.supervisor.close()

    asyncio.run(main())


def phases(status: dict[str, Any]) -> list[str]:
    return [t["to"] for t in status["transitions"]]


def test_deploy_stop_start_and_restart(tmp_path):
    async def scenario(world: World) -> None:
        status = await world.deploy()
        assert status["phase"] == Phase.RUNNING and status["pid"] == world.runtime.pid_of("svc")
        assert phases(status) == [Phase.STARTING, Phase.RUNNING]
        first = status["pid"]

        _, stopped = await world.supervisor.stop("svc")
        assert (stopped["phase"], stopped["desired"], stopped["pid"]) == (Phase.STOPPED, "stopped", None)
        assert world.runtime.stopped == [first] and world.runtime.running == {}

        _, started = await world.supervisor.start("svc")
        assert started["phase"] == Phase.RUNNING and started["pid"] not in (None, first)

        _, restarted = await world.supervisor.restart("svc")
        assert restarted["phase"] == Phase.RUNNING and restarted["pid"] != started["pid"]
        assert restarted["restarts"] == 0, "a restart asked for is not a crash"
        assert restarted["transitions"][-1]["reason"] == "started"

    run(tmp_path, scenario)


def test_an_agent_restart_re_adopts_the_running_instance(tmp_path):
    async def scenario(world: World) -> None:
        before = await world.deploy()
        await world.supervisor.close()
        again = await world.open()
        status = again.status("svc")
        assert (status["phase"], status["pid"], status["restarts"]) == (Phase.RUNNING, before["pid"], 0)
        assert status["transitions"][-1]["reason"] == "re-adopted at start"
        assert world.runtime.starts == 1

    run(tmp_path, scenario)


def test_an_instance_that_died_with_the_agent_down_is_restarted_by_its_policy(tmp_path):
    async def scenario(world: World) -> None:
        await world.deploy()
        await world.supervisor.close()
        world.runtime.running.clear()  # it died while no agent watched
        again = await world.open()
        await settle()
        status = again.status("svc")
        assert status["phase"] == Phase.RUNNING and status["restarts"] == 1
        assert world.runtime.starts == 2

    run(tmp_path, scenario)


def test_crashes_back_off_then_give_up_at_the_restart_limit(tmp_path):
    async def scenario(world: World) -> None:
        await world.deploy({"max_restarts": 3, "restart_window": 60})
        status = await world.crash()
        assert (status["phase"], status["restarts"]) == (Phase.RUNNING, 1), "the first crash restarts at once"
        delays = []
        for restarts in (2, 3):
            status = await world.crash()
            assert status["phase"] == Phase.BACKOFF and "restarting in" in status["message"]
            (due,) = world.clock.pending
            delays.append(round(due - world.clock.now(), 3))
            status = await world.advance(due - world.clock.now())
            assert (status["phase"], status["restarts"]) == (Phase.RUNNING, restarts)
        assert delays == [0.1, 0.2], "the backoff doubles"
        status = await world.crash()
        assert status["phase"] == Phase.FAILED and "gave up after 3 restarts within 60s" in status["message"]
        assert status["pid"] is None and world.clock.pending == []

    run(tmp_path, scenario)


def test_a_stable_run_resets_the_backoff(tmp_path):
    async def scenario(world: World) -> None:
        await world.deploy()
        await world.crash()
        status = await world.crash()
        assert status["phase"] == Phase.BACKOFF
        status = await world.advance(0.1)
        assert status["phase"] == Phase.RUNNING
        await world.advance(10.0)  # stable_after: the next crash is a first one again
        status = await world.crash()
        assert (status["phase"], status["restarts"]) == (Phase.RUNNING, 3)
        assert world.clock.pending == []

    run(tmp_path, scenario)


def test_a_backoff_survives_an_agent_restart(tmp_path):
    async def scenario(world: World) -> None:
        await world.deploy()
        await world.crash()
        assert (await world.crash())["phase"] == Phase.BACKOFF
        await world.supervisor.close()
        again = await world.open()
        status = again.status("svc")
        assert status["phase"] == Phase.BACKOFF and world.clock.pending
        status = await world.advance(0.1)
        assert (status["phase"], status["restarts"]) == (Phase.RUNNING, 2)

    run(tmp_path, scenario)


def test_a_stop_during_backoff_cancels_the_restart(tmp_path):
    async def scenario(world: World) -> None:
        await world.deploy()
        await world.crash()
        await world.crash()
        _, status = await world.supervisor.stop("svc")
        assert status["phase"] == Phase.STOPPED and world.clock.pending == []
        status = await world.advance(60)
        assert status["phase"] == Phase.STOPPED and world.runtime.running == {}

    run(tmp_path, scenario)


def test_a_clean_exit_under_on_failure_completes(tmp_path):
    async def scenario(world: World) -> None:
        world.runtime.logs["svc"] = ["done"]
        await world.deploy({"restart_policy": "on-failure"})
        status = await world.crash(exit_code=0)
        assert status["phase"] == Phase.COMPLETED and status["last_logs"] == ["done"]
        status = await world.advance(60)
        assert status["phase"] == Phase.COMPLETED and world.runtime.starts == 1

    run(tmp_path, scenario)


def test_a_removed_app_is_never_started_again(tmp_path):
    async def scenario(world: World) -> None:
        await world.deploy()
        await world.crash()
        await world.crash()  # a restart is pending
        await world.supervisor.remove("svc")
        world.clock.advance(60)
        await settle()
        assert world.supervisor.apps == {} and world.runtime.running == {}
        assert world.runtime.forgotten == ["svc"]

    run(tmp_path, scenario)


def test_a_transition_the_table_refuses_raises(tmp_path):
    async def scenario(world: World) -> None:
        await world.deploy({"restart_policy": "never"})
        await world.crash()
        runner = world.supervisor.apps["svc"]
        assert runner.record.phase == Phase.FAILED
        with pytest.raises(TransitionRefused, match="Failed -> BackOff"):
            runner.transition(Phase.BACKOFF, "a crash of nothing")
        assert runner.record.phase == Phase.FAILED

    run(tmp_path, scenario)


def test_a_restart_saves_its_record_once_after_the_spawn(tmp_path, monkeypatch):
    saves: list[int] = []

    async def scenario(world: World) -> None:
        await world.deploy()
        original = AppRecord.save

        def save(record: AppRecord, path: Path) -> None:
            saves.append(world.runtime.starts)
            original(record, path)

        monkeypatch.setattr(AppRecord, "save", save)
        status = await world.crash()
        assert (status["phase"], status["restarts"]) == (Phase.RUNNING, 1)
        assert saves == [2], "one write, after the second instance was started"
        saved = json.loads((world.supervisor.apps_dir / "svc" / "state.json").read_text())
        assert saved["handle"]["pid"] == status["pid"] and saved["restarts"] == 1

    run(tmp_path, scenario)


def test_a_save_put_off_by_a_restart_is_written_when_the_agent_closes(tmp_path):
    async def scenario(world: World) -> None:
        await world.deploy()
        app = world.supervisor.get("svc")
        app.record.restarts = 7
        app.save_soon()  # closed before the loop gets to it
        await world.supervisor.close()
        saved = json.loads((world.supervisor.apps_dir / "svc" / "state.json").read_text())
        assert saved["restarts"] == 7
        await world.open()

    run(tmp_path, scenario)
