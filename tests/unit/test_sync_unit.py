"""ControllerSync against a fake controller and the fake runtime: assignments become controller apps, their
changes are reported, what the controller stops or forgets is stopped or removed, bad assignments fail once."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import shutil
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Callable

import pytest
from test_docker_helpers import make_config

from plum.agent.credential import CREDENTIAL_FILE
from plum.agent.runtimes.fake import FakeClock, FakeRuntime
from plum.agent.supervisor import Supervisor
from plum.agent.sync import ControllerSync
from plum.agent.taskrunner import TaskRunner
from plum.common.vocab import Owner, Phase
from support.agent import make_zip

INSTANCE = "0123456789abcdef0123456789abcdef-1a2b3c4d"


@pytest.fixture(autouse=True)
def strict_transitions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TaskRunner, "strict_transitions", True)


class FakeController:
    """Answers the agent's calls from memory and keeps what the agent sent."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.removed: list[str] | None = []
        self.statuses: list[dict[str, Any]] = []
        self.registered: dict[str, list[dict[str, Any]]] = {}

    async def call(self, method: str, path: str, payload: Any = None) -> Any:
        if path == "/v1/nodes/heartbeat":
            return {"heartbeatIntervalSec": 0.1}
        if path.startswith("/v1/assignments"):
            return {"items": self.items, "controllerId": "db-1", "removed": self.removed}
        if path == "/v1/instances/status":
            self.statuses.append(payload)
        elif path.startswith("/v1/services/register"):
            self.registered[payload["instanceId"]] = payload["endpoints"]
        elif method == "DELETE" and path.startswith("/v1/services"):
            self.registered.pop(path.rsplit("=", 1)[1], None)
        return None

    def phases(self) -> list[str]:
        return [s["phase"] for s in self.statuses if s["instanceId"] == INSTANCE]


class Node:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = FakeClock()
        self.runtime = FakeRuntime(self.clock)
        self.controller = FakeController()
        config = make_config(tmp_path)
        self.config = dataclasses.replace(config, controller_base="http://controller.invalid", sync_interval=0.05)
        self.supervisor = Supervisor(self.config, {"process": self.runtime}, self.clock)
        self.sync: ControllerSync

    async def open(self) -> None:
        await self.supervisor.open()
        (self.config.data_dir / CREDENTIAL_FILE).write_text("n" * 32 + "\n")  # joined: no join call
        self.sync = ControllerSync(self.config, self.supervisor)
        self.sync.call = self.controller.call  # type: ignore[method-assign]

    async def close(self) -> None:
        await self.sync.close()
        await self.supervisor.close()

    def assignment(self, version: str = "1.0", **changes: Any) -> dict[str, Any]:
        """An assignment whose artifact is in the agent's cache already (nothing to download)."""
        source = make_zip(
            self.tmp_path / f"v{version}.zip",
            {"start.sh": ("#!/bin/sh\nexec sleep 1000\n", 0o755), "meta.ini": meta_ini(version)},
        )
        sha = hashlib.sha256(source.read_bytes()).hexdigest()
        shutil.copy(source, self.supervisor.artifacts_dir / f"{sha}.zip")
        item = {"instanceId": INSTANCE, "desired": "Running", "artifactType": "zip", "artifactSha256": sha}
        return {**item, **changes}


def meta_ini(version: str) -> str:
    return f"name=web\nversion={version}\nservice=http:http:8080\n"


def run(tmp_path: Path, scenario: Callable[[Node], Awaitable[None]]) -> None:
    async def main() -> None:
        node = Node(tmp_path)
        await node.open()
        try:
            await scenario(node)
        finally:
            await node.close()

    asyncio.run(main())


def test_an_assignment_runs_as_a_controller_app_and_is_reported(tmp_path):
    async def scenario(node: Node) -> None:
        await node.sync.reconcile([node.assignment()], set())
        app = node.supervisor.apps[INSTANCE]
        assert app.record.owner is Owner.CONTROLLER and app.record.phase is Phase.RUNNING
        assert node.sync.pending[INSTANCE]["phase"] == Phase.RUNNING
        assert node.sync.endpoints_wanted[INSTANCE] == [{"serviceName": "http", "protocol": "http", "port": 8080}]

        await node.sync.reconcile([node.assignment()], set())  # the same feed again changes nothing
        assert node.runtime.starts == 1

    run(tmp_path, scenario)


def test_a_crash_is_reported_with_its_restart(tmp_path):
    async def scenario(node: Node) -> None:
        await node.sync.reconcile([node.assignment()], set())
        node.sync.pending.clear()
        node.runtime.crash(INSTANCE)
        for _ in range(20):
            await asyncio.sleep(0)
        payload = node.sync.pending[INSTANCE]
        assert (payload["phase"], payload["restarts"]) == (Phase.RUNNING, 1)

    run(tmp_path, scenario)


def test_desired_stopped_stops_and_keeps_the_app(tmp_path):
    async def scenario(node: Node) -> None:
        await node.sync.reconcile([node.assignment()], set())
        await node.sync.reconcile([node.assignment(desired="Stopped")], set())
        app = node.supervisor.apps[INSTANCE]
        assert app.record.phase is Phase.STOPPED and node.runtime.running == {}
        assert node.sync.pending[INSTANCE]["phase"] == Phase.STOPPED
        assert INSTANCE not in node.sync.endpoints_wanted

    run(tmp_path, scenario)


def test_removed_instances_go_and_forgotten_ones_stay(tmp_path):
    async def scenario(node: Node) -> None:
        await node.sync.reconcile([node.assignment()], set())
        await node.sync.reconcile([], set())  # not listed, not said to be removed: an orphan, kept running
        assert node.supervisor.apps[INSTANCE].record.phase is Phase.RUNNING
        assert node.sync.orphans == {INSTANCE}
        await node.sync.reconcile([], {INSTANCE})
        assert INSTANCE not in node.supervisor.apps and node.runtime.running == {}
        assert node.sync.pending[INSTANCE]["phase"] == Phase.STOPPED

    run(tmp_path, scenario)


def test_a_bad_assignment_fails_once_and_is_not_retried_as_is(tmp_path):
    async def scenario(node: Node) -> None:
        bad = node.assignment(restartPolicy="sometimes")
        await node.sync.reconcile([bad], set())
        payload = node.sync.pending.pop(INSTANCE)
        assert payload["phase"] == Phase.FAILED and "restart_policy" in payload["message"]
        await node.sync.reconcile([bad], set())
        assert INSTANCE not in node.sync.pending and INSTANCE not in node.supervisor.apps
        await node.sync.reconcile([node.assignment()], set())  # a changed assignment is tried again
        assert node.supervisor.apps[INSTANCE].record.phase is Phase.RUNNING

    run(tmp_path, scenario)


def test_the_loops_follow_the_controller_end_to_end(tmp_path):
    async def scenario(node: Node) -> None:
        node.controller.items = [node.assignment()]
        node.sync.start()
        for _ in range(200):  # the loops' own short timers (sync_interval 0.05 s)
            if Phase.RUNNING in node.controller.phases() and INSTANCE in node.controller.registered:
                break
            await asyncio.sleep(0.01)
        assert Phase.RUNNING in node.controller.phases()
        assert node.controller.registered[INSTANCE][0]["port"] == 8080

    run(tmp_path, scenario)
