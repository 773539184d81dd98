"""Status history bounds, the SSE hub and memory sizes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from plum.controller.deployments import DeploymentRepo, memory_bytes
from plum.controller.events import KEEPALIVE, PING, UPDATE, EventHub
from plum.controller.nodes import NodeRepo
from plum.controller.rollouts import RolloutRepo
from plum.controller.store import Store


def test_memory_sizes() -> None:
    assert memory_bytes("512m") == 512 * 1024**2
    assert memory_bytes("1g") == 1024**3
    assert memory_bytes("1.5G") == int(1.5 * 1024**3)
    assert memory_bytes("64MiB") == 64 * 1024**2
    assert memory_bytes("268435456") == 268435456
    assert memory_bytes("5t") == 5 * 1024**4, "the agent's units: t too"
    assert memory_bytes("lots") is None
    assert memory_bytes("5m") is None, "below Docker's minimum: the agent would refuse it"
    assert memory_bytes("2048t") is None


def test_status_history_is_bounded(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    store.migrate()
    now = time.time()
    with store.write() as tx:
        tx.execute("INSERT INTO nodes(node_id, ip, last_seen) VALUES ('n1', '', ?)", (now,))
        tx.execute(
            "INSERT INTO artifacts(artifact_id, app_name, version, type, created_at) VALUES ('a', 'x', '1', 'image', 0)"
        )
        tx.execute("INSERT INTO deployments(deployment_id, name, created_at, updated_at) VALUES ('d', 'd', 0, 0)")
        tx.execute("INSERT INTO deployment_entries(deployment_id, position, artifact_id) VALUES ('d', 0, 'a')")
        tx.execute(
            "INSERT INTO assignments(instance_id, deployment_id, entry_id, node_id, desired, created_at)"
            " VALUES ('d-1', 'd', 1, 'n1', 'Running', 0)"
        )
    nodes = NodeRepo(store, ttl=10)
    repo = DeploymentRepo(store, status_history=3, nodes=nodes, rollouts=RolloutRepo(store, nodes))
    for i in range(10):
        repo.record_status(
            "d-1",
            phase="Running" if i % 2 else "BackOff",
            healthy=True,
            message=f"m{i}",
            exit_code=i,
            restarts=i,
            ts_unix=None,
        )
    history = repo.history("d-1")
    assert [h["message"] for h in history] == ["m9", "m8", "m7"]
    assert store.one("SELECT COUNT(*) FROM statuses")[0] == 3
    row = store.one("SELECT phase, restarts, exit_code FROM assignments")
    assert tuple(row) == ("Running", 9, 9)


def test_hub_coalesces_and_keeps_alive() -> None:
    async def scenario() -> list[bytes]:
        hub = EventHub(keepalive=0.2)
        frames: list[bytes] = []
        stream = hub.stream("n1")
        frames.append(await stream.__anext__())
        assert hub.stream_count() == 1
        for _ in range(5):  # five changes before the subscriber reads: one update
            hub.publish(["n1"])
        hub.publish(["other"])
        frames.append(await stream.__anext__())
        frames.append(await asyncio.wait_for(stream.__anext__(), 1))  # nothing pending: keepalive
        await stream.aclose()
        assert hub.stream_count() == 0
        return frames

    assert asyncio.run(scenario()) == [PING, UPDATE, KEEPALIVE]


def test_hub_wildcard_subscriber_sees_every_node() -> None:
    async def scenario() -> bytes:
        hub = EventHub(keepalive=5)
        stream = hub.stream(None)
        await stream.__anext__()
        hub.publish(["n7"])
        frame = await asyncio.wait_for(stream.__anext__(), 1)
        await stream.aclose()
        return frame

    assert asyncio.run(scenario()) == UPDATE
