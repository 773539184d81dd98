"""The process runtime against real processes: what an instance uses, what it runs, how it is found again."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
from pathlib import Path
from typing import Callable

import psutil

from plum.agent.runtimes.base import APP_HOME_ENV, RELEASE_ENV, ExitInfo, Handle, Launch
from plum.agent.runtimes.process import ProcessHandle, ProcessRuntime
from plum.agent.spec import AppSpec

# The leader forks a worker that holds memory of its own, then waits.
WORKER = "python3 -c 'import time; block = bytearray(16 * 2**20); time.sleep(30)' & exec sleep 30"


def launch_in(tmp_path: Path, start_cmd: str) -> Launch:
    release = tmp_path / "releases" / "r1"
    release.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "PLUM_INSTANCE_ID": f"svc-{tmp_path.name}",
        RELEASE_ENV: "r1",
        APP_HOME_ENV: str(tmp_path),
    }
    spec = AppSpec(start_cmd=start_cmd)
    return Launch("svc", f"svc-{tmp_path.name}", "1", release, tmp_path, tmp_path / "app.log", spec, None, env)


def runtime() -> ProcessRuntime:
    return ProcessRuntime(pwd.getpwuid(os.geteuid()).pw_name)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_usage_covers_the_workers_an_instance_forks(tmp_path: Path) -> None:
    async def scenario() -> None:
        rt = runtime()
        exits: list[ExitInfo] = []
        handle = await rt.start(launch_in(tmp_path, WORKER), lambda h, info: exits.append(info))
        leader = psutil.Process(handle.pid)
        await wait_for(lambda: any(c.memory_info().rss > 16 * 2**20 for c in leader.children()))
        usage = rt.usage([handle])[id(handle)]
        assert usage.memory_bytes > leader.memory_info().rss + 16 * 2**20
        assert rt.inspect(handle).release == "r1"
        await rt.stop(handle, timeout=5)
        assert exits == [await rt.wait(handle)]
        assert (exits[0].reason, exits[0].signal) == ("Signaled", signal.SIGTERM)
        assert not leader.is_running()

    asyncio.run(scenario())


def test_an_instance_is_recovered_by_its_identity_or_else_by_its_environment(tmp_path: Path) -> None:
    async def scenario() -> None:
        launch = launch_in(tmp_path, "exec sleep 30")
        first = runtime()
        handle = await first.start(launch, lambda h, info: None)
        assert isinstance(handle, ProcessHandle)
        state = handle.to_state()

        def ignore(h: Handle, info: ExitInfo) -> None:
            pass

        again = await runtime().recover(launch, state, ignore)
        assert again is not None and (again.pid, again.started_at) == (handle.pid, handle.started_at)
        stale = {**state, "start_ticks": state["start_ticks"] + 1}  # as if the pid had been reused
        found = await runtime().recover(launch, stale, ignore)
        assert found is not None and found.pid == handle.pid, "found by PLUM_INSTANCE_ID instead"
        lost = await runtime().recover_lost(launch, ignore)
        assert [h.pid for h in lost] == [handle.pid]
        await first.stop(handle, timeout=5)
        assert await runtime().recover(launch, state, ignore) is None

    asyncio.run(scenario())
