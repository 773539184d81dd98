"""Rollouts through the repository on SQLite: revisions, the feed, conflicts, pruning and the events."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from plum.controller.deployments import DeploymentRepo, EntryChange, EntrySpec
from plum.controller.errors import Conflict
from plum.controller.events import KEEPALIVE, UPDATE, EventHub
from plum.controller.nodes import NodeRepo
from plum.controller.rollout import RolloutLoop, UpdatePolicy
from plum.controller.rollouts import RolloutRepo
from plum.controller.store import Store


@pytest.fixture
def repo(tmp_path: Path) -> DeploymentRepo:
    store = Store(tmp_path / "c.db")
    store.migrate()
    with store.write() as tx:
        for artifact, version in (("a1", "1"), ("a2", "2")):
            tx.execute(
                "INSERT INTO artifacts(artifact_id, app_name, version, type, image_repository, image_tag, created_at)"
                " VALUES (?, 'x', ?, 'image', 'x', ?, 0)",
                (artifact, version, version),
            )
    nodes = NodeRepo(store, 30)
    nodes.heartbeat("n1", "10.0.0.1", {})
    return DeploymentRepo(store, status_history=3, nodes=nodes, rollouts=RolloutRepo(store, nodes))


def spec(repo: DeploymentRepo, artifact: str, **settings: Any) -> EntrySpec:
    row = repo.store.one("SELECT * FROM artifacts WHERE artifact_id=?", (artifact,))
    return EntrySpec(artifact=row, replicas={"n1": 2}, **settings)


def test_a_stopped_deployment_takes_the_new_revision_at_once_and_unchanged_entries_never_move(
    repo: DeploymentRepo,
) -> None:
    dep_id, ids = repo.create("two", {}, [spec(repo, "a1"), spec(repo, "a1", env={"K": "v"})], UpdatePolicy())
    first, second = (e["entry_id"] for e in repo.entries(dep_id))
    feed_before = {i["instanceId"]: i for i in repo.feed("n1", 100)}
    repo.update(dep_id, None, {first: EntryChange(settings=spec(repo, "a2"))})
    with pytest.raises(Conflict, match="rolling out revision 2"):
        repo.update(dep_id, None, {second: EntryChange(settings=spec(repo, "a2"))})
    step = repo.rollouts.advance(dep_id, time.time())
    assert step is not None and step.state == "Running" and step.total == 2
    step = repo.rollouts.advance(dep_id, time.time())
    assert step is not None and step.state == "Succeeded"
    feed = {i["instanceId"]: i for i in repo.feed("n1", 100)}
    assert sorted(feed) == sorted(ids)
    versions = sorted((i["appVersion"], bool(i["env"])) for i in feed.values())
    assert versions == [("1", True), ("1", True), ("2", False), ("2", False)]
    unchanged = [i for i in feed.values() if i["env"]]
    assert all(feed_before[i["instanceId"]] == {**i} for i in unchanged), "their agents see nothing new"
    revisions = repo.store.all("SELECT DISTINCT revision FROM entry_revisions")
    assert [r["revision"] for r in revisions] == [2], "revision 1 is forgotten once nothing runs it"
    assert repo.listing()[0]["rollout"]["state"] == "Succeeded"


def test_a_running_deployment_rolls_one_instance_at_a_time_and_back(repo: DeploymentRepo) -> None:
    dep_id, ids = repo.create("one", {}, [spec(repo, "a1")], UpdatePolicy(min_healthy_seconds=5))
    repo.set_status(dep_id, "Running")
    now = time.time()
    for instance_id in ids:
        repo.record_status(
            instance_id, phase="Running", healthy=True, message="", exit_code=None, restarts=0, ts_unix=None
        )
    entry = repo.entries(dep_id)[0]["entry_id"]
    repo.update(dep_id, None, {entry: EntryChange(settings=spec(repo, "a2"))})
    assert repo.detail(dep_id)["entries"][0]["appVersion"] == "2"
    step = repo.rollouts.advance(dep_id, now - 1)  # switched a second ago: the next report is after it
    assert step is not None and len(step.switch) == 1
    switched = step.switch[0]
    assert {i["instanceId"]: i["appVersion"] for i in repo.feed("n1", 10)}[switched] == "2"
    repo.record_status(
        switched, phase="BackOff", healthy=False, message="exit 3", exit_code=3, restarts=1, ts_unix=None
    )
    step = repo.rollouts.advance(dep_id, time.time() + 2)
    assert step is not None and step.state == "RolledBack" and step.revert == [switched]
    assert {i["appVersion"] for i in repo.feed("n1", 10)} == {"1"}
    assert repo.detail(dep_id)["entries"][0]["appVersion"] == "1"
    assert repo.detail(dep_id)["deployment"]["rollout"]["previousRevision"] == 1
    assert repo.rollouts.advance(dep_id, time.time()) is None


def test_the_loop_announces_progress_and_the_end_to_the_fleet_streams_only(repo: DeploymentRepo) -> None:
    dep_id, _ = repo.create("quiet", {}, [spec(repo, "a1")], UpdatePolicy())
    entry = repo.entries(dep_id)[0]["entry_id"]
    assert repo.update(dep_id, None, {entry: EntryChange(settings=spec(repo, "a2"))})
    told: list[tuple[str, dict[str, Any]]] = []
    loop = RolloutLoop(repo.rollouts, 0.5, lambda kind, data: told.append((kind, data)), clock=time.time)
    loop.run_once()  # a Stopped deployment: both instances switch at once
    loop.run_once()
    assert [(kind, data["event"]) for kind, data in told] == [("rollout", "progress"), ("rollout", "finished")]
    assert told[-1][1]["rollout"]["state"] == "Succeeded"
    assert loop.run_once() == []

    async def frames() -> tuple[bytes, bytes]:
        hub = EventHub(keepalive=0.2)
        fleet, node = hub.stream(None), hub.stream("n1")
        await fleet.__anext__()
        await node.__anext__()
        hub.announce("rollout", told[-1][1])
        hub.publish(["n1"])
        first = await asyncio.wait_for(fleet.__anext__(), 1)
        assert await asyncio.wait_for(fleet.__anext__(), 1) == UPDATE
        only = await asyncio.wait_for(node.__anext__(), 1)
        assert await asyncio.wait_for(node.__anext__(), 1) == KEEPALIVE
        await fleet.aclose()
        await node.aclose()
        return first, only

    event, update = asyncio.run(frames())
    assert event.startswith(b"event: rollout\ndata: {") and b'"event": "finished"' in event
    assert update == UPDATE, "a node's stream carries only its updates"


def test_scaling_up_with_a_new_app_in_one_patch_rolls_the_new_instances_too(repo: DeploymentRepo) -> None:
    dep_id, ids = repo.create("grow", {}, [spec(repo, "a1")], UpdatePolicy())
    entry = repo.entries(dep_id)[0]["entry_id"]
    new_app = spec(repo, "a2")
    assert repo.update(dep_id, None, {entry: EntryChange(replicas={"n1": 3}, settings=new_app)})
    feed = {i["instanceId"]: i["appVersion"] for i in repo.feed("n1", 10)}
    assert len(feed) == 3 and set(ids) < set(feed)
    assert set(feed.values()) == {"1"}, "every instance waits for the rollout, the new one included"
    while (step := repo.rollouts.advance(dep_id, time.time())) is not None and not step.finished:
        pass
    assert step is not None and step.state == "Succeeded" and step.total == 3
    assert {i["appVersion"] for i in repo.feed("n1", 10)} == {"2"}
    assert repo.detail(dep_id)["deployment"]["rollout"]["total"] == 3
