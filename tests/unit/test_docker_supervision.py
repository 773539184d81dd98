"""The Docker runtime's supervision against a fake engine: engine errors on stop, stray containers,
reconnections, re-adoption while the engine is down, logs without blocking the event loop, and a
crashed container started again rather than created anew."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Callable

import pytest
from test_docker_helpers import make_config, make_launch

from plum.agent.runtimes.base import ExitInfo, Expected, Handle, Launch
from plum.agent.runtimes.docker import DockerRuntime, engine
from plum.agent.runtimes.docker.handle import DockerHandle, Life
from support.fake_docker import FakeEngine, api_error


@pytest.fixture(autouse=True)
def quick_reconnects(monkeypatch):
    monkeypatch.setattr(engine, "EVENTS_RETRY", (0.01, 0.05))
    monkeypatch.setattr(engine, "RELIST_EVERY", 3600.0)  # the tests relist when they want to


class Harness:
    """A DockerRuntime on a fake engine, plus the exits it reported."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.engine = FakeEngine()
        self.runtime = DockerRuntime(make_config(tmp_path))
        self.runtime.engine.new_client = self.engine.new_client  # type: ignore[method-assign]
        self.exits: list[tuple[str, ExitInfo]] = []
        self.expected: dict[str, Expected] = {}  # what the supervisor tracks, by app
        self.launch = make_launch(tmp_path, {"stop_timeout": 1})

    def app(self, name: str) -> Launch:
        return dataclasses.replace(self.launch, app_name=name, instance_id=f"{name}-1", log_path=self.log(name))

    def log(self, name: str) -> Path:
        return self.tmp_path / "data" / "apps" / name / "logs" / "app.log"

    def on_exit(self, handle: Handle, info: ExitInfo) -> None:
        assert isinstance(handle, DockerHandle)
        self.exits.append((handle.app_name, info))

    def tracked(self) -> list[Expected]:
        return list(self.expected.values())

    def track(self, launch: Launch, cid: str = "") -> None:
        """The supervisor tracks launch's instance, whose saved container is cid (none: not saved)."""
        state = {"container_id": cid} if cid else None
        self.expected[launch.app_name] = Expected(launch.app_name, launch.instance_id, "docker", state)

    def run(self, launch: Launch, cid: str) -> None:
        """A container of launch's instance, running its spec, which the supervisor tracks."""
        self.engine.add(cid, launch.app_name, launch.instance_id, spec=launch.spec.digest())
        self.track(launch, cid)

    async def adopt(self, launch: Launch, cid: str) -> DockerHandle:
        handle = await self.runtime.recover(launch, {"container_id": cid}, self.on_exit)
        assert isinstance(handle, DockerHandle) and handle.container_id == cid and handle.life is Life.RUNNING
        return handle

    async def settle(self) -> None:
        """Let the runtime's background tasks (removals, exits) run."""
        for _ in range(20):
            await asyncio.sleep(0.01)
            tasks = [t for t in self.runtime._tasks if not t.done()]
            if tasks:
                await asyncio.wait(tasks, timeout=2)

    def close(self) -> None:
        self.runtime.engine.close()
        self.engine.down()  # ends the event thread's stream


def scenario(tmp_path: Path, body: Callable[[Harness], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        harness = Harness(tmp_path)
        await harness.runtime.open(harness.tracked)
        try:
            return await asyncio.wait_for(body(harness), 30)
        finally:
            harness.close()

    return asyncio.run(main())


async def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


# ---- 1. a stop the engine refuses -------------------------------------------------------------------


def test_a_stop_the_engine_refuses_still_ends_the_instance_and_removes_the_container(
    tmp_path,
):
    async def body(h: Harness) -> None:
        h.run(h.launch, "c1")
        handle = await h.adopt(h.launch, "c1")
        h.engine.stop_error = api_error("cannot stop container: permission denied")
        await asyncio.wait_for(h.runtime.stop(handle, 1), 5)  # neither raises nor waits forever
        assert handle.exited.done() and handle.exited.result().reason == "Unknown"
        assert [name for name, _ in h.exits] == ["web"]
        assert "c1" not in h.engine.containers, "removed by force"
        await asyncio.wait_for(h.runtime.stop(handle, 1), 1)  # the supervisor may stop it again: at once
        assert len(h.exits) == 1

    scenario(tmp_path, body)


def test_a_container_the_engine_neither_stops_nor_removes_goes_at_the_next_relist(
    tmp_path,
):
    async def body(h: Harness) -> None:
        h.run(h.launch, "c1")
        handle = await h.adopt(h.launch, "c1")
        h.engine.stop_error = api_error("cannot stop container")
        h.engine.remove_error = api_error("cannot remove container")
        await asyncio.wait_for(h.runtime.stop(handle, 1), 5)
        assert handle.exited.done() and handle.life is Life.EXITED
        assert h.engine.containers["c1"]["State"] == "running"
        h.engine.remove_error = None
        await h.runtime._relist(after_outage=False)
        await h.settle()
        assert "c1" not in h.engine.containers

    scenario(tmp_path, body)


def test_a_stop_while_the_engine_is_away_ends_the_instance(tmp_path):
    async def body(h: Harness) -> None:
        h.run(h.launch, "c1")
        handle = await h.adopt(h.launch, "c1")
        h.engine.down()
        await asyncio.wait_for(h.runtime.stop(handle, 1), 5)
        assert handle.exited.result().reason == "Unknown"
        h.engine.up = True  # back, with the container still running (live-restore): the relist removes it
        await wait_for(lambda: "c1" not in h.engine.containers)

    scenario(tmp_path, body)


# ---- 2. running containers nobody supervises ---------------------------------------------------------


def test_the_relist_removes_running_containers_nobody_supervises(tmp_path):
    async def body(h: Harness) -> None:
        web, api, db = h.launch, h.app("api"), h.app("db")
        h.run(web, "web-c")
        await h.adopt(web, "web-c")
        # left by a stop the engine did not answer, or a start that timed out: same app, not watched
        h.engine.add("web-stray", "web", web.instance_id, spec=web.spec.digest())
        h.engine.add("web-old", "web", "web-0")  # an older instance of the app
        h.engine.add("ghost-c", "ghost", "ghost-1")  # an app this agent does not have
        h.engine.add("n2-c", "web", web.instance_id, node="n2")  # another agent's: never touched
        h.engine.add("api-c", "api", api.instance_id)  # being started right now
        # db is not re-adopted yet (the agent is starting): its record's container is spared, no other
        h.run(db, "db-c")
        h.engine.add("db-extra", "db", db.instance_id)
        with h.runtime._busy_with("api"):
            await h.runtime._relist(after_outage=False)
            await h.settle()
        assert sorted(h.engine.containers) == ["api-c", "db-c", "n2-c", "web-c"]
        assert sorted(h.engine.removed) == [
            "db-extra",
            "ghost-c",
            "web-old",
            "web-stray",
        ]
        # once its start is over, the api container is the app's business: not watched, so removed
        await h.runtime._relist(after_outage=False)
        await h.settle()
        assert sorted(h.engine.containers) == ["db-c", "n2-c", "web-c"]

    scenario(tmp_path, body)


def test_a_lost_record_keeps_its_container_until_the_app_is_re_adopted(tmp_path):
    async def body(h: Harness) -> None:
        h.engine.add("lost-c", "web", h.launch.instance_id, spec=h.launch.spec.digest())
        h.track(h.launch)  # its record has no container: lost by an agent killed mid-start
        await h.runtime._wait_ready(5)
        await h.runtime._relist(after_outage=False)
        await h.settle()
        assert "lost-c" in h.engine.containers
        handle = await h.runtime.recover(h.launch, {}, h.on_exit)  # found by its labels
        assert handle is not None and handle.container_id == "lost-c"

    scenario(tmp_path, body)


# ---- 4. logs never block the event loop -------------------------------------------------------------------


def test_logs_of_a_running_container_never_block_the_event_loop(tmp_path):
    async def body(h: Harness) -> None:
        h.run(h.launch, "c1")
        handle = await h.adopt(h.launch, "c1")
        h.launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        h.launch.log_path.write_text("kept from the last container\n")
        assert h.runtime.tail_logs(h.launch, None, 2) == ["kept from the last container"], "at an exit: what was kept"
        h.engine.logs_delay = 0.5
        tick = time.monotonic()
        ticks = 0

        async def count() -> None:
            nonlocal ticks
            while time.monotonic() - tick < 0.4:
                ticks += 1
                await asyncio.sleep(0.01)

        lines, _ = await asyncio.gather(h.runtime.tail_logs_async(h.launch, handle, 3), count())
        assert lines == ["c1 line 3", "c1 line 4", "c1 line 5"]
        assert ticks > 10, "the loop kept running while the engine answered"
        h.engine.down()
        assert await h.runtime.tail_logs_async(h.launch, handle, 1) == ["kept from the last container"]

    scenario(tmp_path, body)


# ---- 5. one client per connection, closed with it ----------------------------------------------------------


def test_a_reconnection_closes_the_previous_event_client(tmp_path):
    async def body(h: Harness) -> None:
        await h.runtime._wait_ready(5)
        first = h.engine.streams[0].client
        assert not first.closed
        h.engine.restart()
        await wait_for(lambda: len(h.engine.streams) == 2)
        await wait_for(lambda: first.closed, timeout=2)
        assert not h.engine.streams[1].client.closed
        h.engine.down()
        await wait_for(lambda: h.engine.streams[1].client.closed, timeout=2)
        opened = len(h.engine.clients)
        await asyncio.sleep(0.3)  # retries while it is down open no clients, so none is leaked
        assert len(h.engine.clients) == opened

    scenario(tmp_path, body)


# ---- 6. recovery with the engine down --------------------------------------------------------------------------


def test_recovery_with_the_engine_down_is_quick_and_the_apps_are_re_adopted_once_it_is_back(
    tmp_path,
):
    async def body(h: Harness) -> None:
        apps = [h.app(f"app{i}") for i in range(4)]
        for i, launch in enumerate(apps):
            h.track(launch, f"c{i}")
        h.engine.up = False
        started = time.monotonic()
        handles = [await h.runtime.recover(app, {"container_id": f"c{i}"}, h.on_exit) for i, app in enumerate(apps)]
        assert time.monotonic() - started < 2, "never seconds per app while the engine is down"
        assert all(isinstance(x, DockerHandle) and x.life is Life.UNVERIFIED for x in handles)
        assert await h.runtime.recover(h.app("lost"), {}, h.on_exit) is None, "nothing to watch: restart policy"

        # the engine is back: c0 still runs, c1 died with the engine, c2 runs an old spec, c3's record is lost
        # but its instance has a (newer) container
        h.engine.add("c0", "app0", "app0-1", spec=apps[0].spec.digest())
        h.engine.add("c1", "app1", "app1-1", state="exited", spec=apps[1].spec.digest())
        h.engine.add("c2", "app2", "app2-1", spec="an-older-spec")
        h.engine.add("c3-new", "app3", "app3-1", spec=apps[3].spec.digest())
        h.engine.up = True
        await wait_for(lambda: all(x.life is not Life.UNVERIFIED for x in handles) and len(h.exits) == 2)
        await h.settle()
        assert sorted(name for name, _ in h.exits) == ["app1", "app2"]
        assert {info.reason for _, info in h.exits} == {"Unknown"}
        assert (handles[0].container_id, handles[0].exited.done()) == ("c0", False)
        found = handles[3]  # by its labels
        assert (found.container_id, found.name, found.exited.done()) == (
            "c3-new",
            "plum-n1-app3-c3-new",
            False,
        )
        assert h.runtime._watched == {"c0": handles[0], "c3-new": handles[3]}
        assert sorted(h.engine.containers) == ["c0", "c3-new"]

    scenario(tmp_path, body)


def test_recovery_waits_for_an_engine_that_answers(tmp_path):
    async def body(h: Harness) -> None:
        h.run(h.launch, "c1")
        handle = await h.runtime.recover(h.launch, {"container_id": "c1"}, h.on_exit)
        assert isinstance(handle, DockerHandle) and handle.life is Life.RUNNING and handle.name == "plum-n1-web-c1"

    scenario(tmp_path, body)


# ---- 7. a crash is restarted in the same container when nothing changed ---------------------------------


def test_a_container_that_ended_by_itself_is_started_again_when_nothing_changed(tmp_path):
    async def body(h: Harness) -> None:
        first = await h.runtime.start(h.launch, h.on_exit)
        assert isinstance(first, DockerHandle) and h.engine.created == [first.container_id]
        h.track(h.launch, first.container_id)
        h.engine.die(first.container_id)
        await wait_for(lambda: len(h.exits) == 1)
        assert h.exits[0][1].exit_code == 1
        await h.runtime._relist(after_outage=False)  # the exited container is kept, not a stray
        await h.settle()
        assert h.engine.removed == []
        again = await h.runtime.start(h.launch, h.on_exit)
        assert isinstance(again, DockerHandle)
        assert again.container_id == first.container_id and again.name == first.name
        assert len(h.engine.created) == 1, "started again, not created anew"
        assert h.engine.started == [first.container_id, first.container_id]
        assert again.life is Life.RUNNING and h.runtime._watched == {again.container_id: again}

    scenario(tmp_path, body)


def test_a_changed_plan_or_a_stop_gets_a_new_container(tmp_path):
    async def body(h: Harness) -> None:
        first = await h.runtime.start(h.launch, h.on_exit)
        assert isinstance(first, DockerHandle)
        h.engine.die(first.container_id)
        await wait_for(lambda: len(h.exits) == 1)
        changed = dataclasses.replace(h.launch, env={**h.launch.env, "NEW": "1"})
        second = await h.runtime.start(changed, h.on_exit)
        assert isinstance(second, DockerHandle) and second.container_id != first.container_id
        await h.settle()
        assert h.engine.removed == [first.container_id], "the old container goes"
        await h.runtime.stop(second, 1)
        assert second.container_id in h.engine.removed, "a stopped container is removed, never kept"
        third = await h.runtime.start(changed, h.on_exit)
        assert h.engine.created == [first.container_id, second.container_id, third.container_id]

    scenario(tmp_path, body)


def test_a_kept_container_that_is_gone_is_created_anew(tmp_path):
    async def body(h: Harness) -> None:
        first = await h.runtime.start(h.launch, h.on_exit)
        assert isinstance(first, DockerHandle)
        h.engine.die(first.container_id)
        await wait_for(lambda: len(h.exits) == 1)
        del h.engine.containers[first.container_id]  # removed behind the agent's back
        second = await h.runtime.start(h.launch, h.on_exit)
        assert isinstance(second, DockerHandle) and second.container_id != first.container_id
        assert second.life is Life.RUNNING

    scenario(tmp_path, body)


def test_a_crash_the_policy_restarts_is_reported_without_waiting_for_the_engine(tmp_path):
    async def body(h: Harness) -> None:
        first = await h.runtime.start(h.launch, h.on_exit)
        assert isinstance(first, DockerHandle)
        h.engine.logs_delay = 1.0  # the engine is still cleaning the container up
        started = time.monotonic()
        h.engine.die(first.container_id, exit_code=3)
        await wait_for(lambda: len(h.exits) == 1)
        assert time.monotonic() - started < 0.5, "told by the die event itself"
        assert (h.exits[0][1].exit_code, h.exits[0][1].reason) == (3, "Exited")
        await wait_for(h.launch.log_path.exists, timeout=3)  # the last logs are kept meanwhile
        assert h.launch.log_path.read_text().splitlines()[-1] == f"{first.container_id} line 5"

    scenario(tmp_path, body)


def test_an_exit_the_policy_does_not_restart_waits_for_its_last_logs(tmp_path):
    async def body(h: Harness) -> None:
        launch = make_launch(tmp_path, {"stop_timeout": 1, "restart_policy": "never"})
        first = await h.runtime.start(launch, h.on_exit)
        assert isinstance(first, DockerHandle)
        h.engine.die(first.container_id, exit_code=0)
        await wait_for(lambda: len(h.exits) == 1)
        assert launch.log_path.read_text().splitlines()[-1] == f"{first.container_id} line 5", (
            "kept before the supervisor reads them for the status"
        )

    scenario(tmp_path, body)
