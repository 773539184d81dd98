"""Tombstones: every way an instance leaves the database tells its node that it was removed."""

from __future__ import annotations

import time
from pathlib import Path

from plum.controller.deployments import DeploymentRepo
from plum.controller.nodes import NodeRepo
from plum.controller.rollouts import RolloutRepo
from plum.controller.store import Store


def fleet_of(tmp_path: Path) -> tuple[Store, DeploymentRepo]:
    store = Store(tmp_path / "c.db")
    store.migrate()
    with store.write() as tx:
        for node in ("n1", "n2"):
            tx.execute(
                "INSERT INTO nodes(node_id, ip, last_seen) VALUES (?, '', ?)",
                (node, time.time()),
            )
        tx.execute(
            "INSERT INTO artifacts(artifact_id, app_name, version, type, created_at) VALUES ('a', 'x', '1', 'image', 0)"
        )
        for dep in ("d", "e"):
            tx.execute(
                "INSERT INTO deployments(deployment_id, name, created_at, updated_at) VALUES (?, ?, 0, 0)",
                (dep, dep),
            )
            tx.execute(
                "INSERT INTO deployment_entries(deployment_id, position, artifact_id) VALUES (?, 0, 'a')",
                (dep,),
            )
        rows = [
            ("d-1", "d", 1, "n1"),
            ("d-2", "d", 1, "n2"),
            ("e-1", "e", 2, "n1"),
            ("e-2", "e", 2, "n1"),
        ]
        for instance, dep, entry, node in rows:
            tx.execute(
                "INSERT INTO assignments(instance_id, deployment_id, entry_id, node_id, desired, created_at)"
                " VALUES (?, ?, ?, ?, 'Running', 0)",
                (instance, dep, entry, node),
            )
    nodes = NodeRepo(store, ttl=10)
    return store, DeploymentRepo(store, status_history=5, nodes=nodes, rollouts=RolloutRepo(store, nodes))


def test_a_deleted_instance_and_a_deleted_deployment_leave_tombstones_for_their_nodes(
    tmp_path: Path,
) -> None:
    _, repo = fleet_of(tmp_path)
    assert repo.removed_from("n1") == []
    repo.delete_instance("e-2")
    assert repo.removed_from("n1") == ["e-2"]
    repo.delete("d")  # its instances go by the foreign key's cascade: the trigger sees them too
    assert repo.removed_from("n1") == ["d-1", "e-2"]
    assert repo.removed_from("n2") == ["d-2"]


def test_failover_replaced_instances_count_as_removed(tmp_path: Path) -> None:
    store, repo = fleet_of(tmp_path)
    with store.write() as tx:
        tx.execute("UPDATE assignments SET desired='Lost', replaced_by='d-9' WHERE instance_id='d-1'")
    assert repo.removed_from("n1") == ["d-1"]


def test_old_tombstones_are_forgotten(tmp_path: Path) -> None:
    _, repo = fleet_of(tmp_path)
    repo.delete_instance("e-1")
    assert repo.forget_removed(time.time() - 3600) == 0, "a recent removal is kept"
    assert repo.forget_removed(time.time() + 1) == 1
    assert repo.removed_from("n1") == []
