"""Controller-placed entries through the repository and failover, on SQLite with a fake clock."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from plum.controller.deployments import DeploymentRepo, EntryChange, EntrySpec
from plum.controller.errors import Unavailable
from plum.controller.failover import Failover
from plum.controller.nodes import NodeRepo
from plum.controller.placement import Placement
from plum.controller.rollout import UpdatePolicy
from plum.controller.rollouts import RolloutRepo
from plum.controller.store import Store

TTL = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(tmp_path: Path) -> tuple[DeploymentRepo, NodeRepo, Failover, Clock]:
    store = Store(tmp_path / "c.db")
    store.migrate()
    with store.write() as tx:
        tx.execute(
            "INSERT INTO artifacts(artifact_id, app_name, version, type, created_at) VALUES ('a', 'x', '1', 'image', 0)"
        )
    clock = Clock()
    nodes = NodeRepo(store, TTL, clock=clock)
    for node, zone in (("A", "x"), ("B", "x"), ("C", "x"), ("Z", "other")):
        nodes.heartbeat(node, f"10.0.0.{ord(node)}", {"zone": zone})
    repo = DeploymentRepo(store, status_history=3, nodes=nodes, rollouts=RolloutRepo(store, nodes))
    failover = Failover(store, nodes, interval=1.0, clock=clock)
    return repo, nodes, failover, clock


def placed(repo: DeploymentRepo, count: int, placement: Placement) -> EntrySpec:
    artifact = repo.store.one("SELECT * FROM artifacts WHERE artifact_id='a'")
    return EntrySpec(artifact=artifact, replicas={}, placed=count, placement=placement)


def counts(repo: DeploymentRepo, dep_id: str) -> Counter[str]:
    return Counter(a["nodeId"] for a in repo.detail(dep_id)["assignments"])


def beat(nodes: NodeRepo, *alive: str) -> None:
    for node in alive:
        nodes.heartbeat(node, f"10.0.0.{ord(node)}", {"zone": "x"})


def test_placed_replicas_spread_over_the_matching_nodes_and_the_same_request_changes_nothing(
    world,
) -> None:
    repo, _, _, _ = world
    zone_x = Placement(labels={"zone": "x"})
    dep_id, ids = repo.create("web", {}, [placed(repo, 4, zone_x)], UpdatePolicy())
    assert counts(repo, dep_id) == {"A": 2, "B": 1, "C": 1}
    entry = repo.detail(dep_id)["entries"][0]
    assert entry["desiredReplicas"] == 4
    assert entry["placement"] == {"labels": {"zone": "x"}}
    entry_id = repo.entries(dep_id)[0]["entry_id"]
    repo.update(dep_id, None, {entry_id: EntryChange(placed=4, placement=zone_x)})
    assert sorted(a["instanceId"] for a in repo.detail(dep_id)["assignments"]) == sorted(ids)
    repo.update(dep_id, None, {entry_id: EntryChange(placed=2)})
    assert counts(repo, dep_id) == {"B": 1, "C": 1} or sum(counts(repo, dep_id).values()) == 2
    assert max(counts(repo, dep_id).values()) == 1, "scaling down takes from the node with the most first"


def test_no_candidate_is_unavailable(world) -> None:
    repo, _, _, _ = world
    with pytest.raises(Unavailable, match="labels zone=nowhere"):
        repo.create(
            "none",
            {},
            [placed(repo, 1, Placement(labels={"zone": "nowhere"}))],
            UpdatePolicy(),
        )
    assert repo.listing() == []


def test_after_a_failover_the_same_request_changes_nothing_and_the_dead_node_gets_nothing_back(
    world,
) -> None:
    repo, nodes, failover, clock = world
    zone_x = Placement(labels={"zone": "x"})
    dep_id, _ = repo.create("web", {}, [placed(repo, 3, zone_x)], UpdatePolicy())
    repo.set_status(dep_id, "Running")
    entry_id = repo.entries(dep_id)[0]["entry_id"]
    assert counts(repo, dep_id) == {"A": 1, "B": 1, "C": 1}

    clock.now += TTL + 1
    beat(nodes, "A", "B")  # C went silent; Z (another zone) is alive but not a candidate
    nodes.heartbeat("Z", "10.0.0.90", {"zone": "other"})
    assert failover.run_once() == 1
    after = counts(repo, dep_id)
    assert after["C"] == 0 and sum(after.values()) == 3 and after["Z"] == 0
    before = sorted(a["instanceId"] for a in repo.detail(dep_id)["assignments"])

    repo.update(dep_id, None, {entry_id: EntryChange(placed=3, placement=zone_x)})
    assert sorted(a["instanceId"] for a in repo.detail(dep_id)["assignments"]) == before

    beat(nodes, "A", "B", "C")  # C comes back: nothing moves back to it, on a round or a re-request
    assert failover.run_once() == 0
    repo.update(dep_id, None, {entry_id: EntryChange(placed=3, placement=zone_x)})
    assert sorted(a["instanceId"] for a in repo.detail(dep_id)["assignments"]) == before
    assert counts(repo, dep_id)["C"] == 0


def test_a_pinned_entry_keeps_todays_failover(world) -> None:
    repo, nodes, failover, clock = world
    artifact = repo.store.one("SELECT * FROM artifacts WHERE artifact_id='a'")
    dep_id, _ = repo.create("pinned", {}, [EntrySpec(artifact=artifact, replicas={"C": 2})], UpdatePolicy())
    repo.set_status(dep_id, "Running")
    clock.now += TTL + 1
    beat(nodes, "A", "B")
    nodes.heartbeat("Z", "10.0.0.90", {"zone": "other"})
    assert failover.run_once() == 2
    assert sum(counts(repo, dep_id).values()) == 2
    assert counts(repo, dep_id)["C"] == 0, "any healthy node, labels aside, as before"
