"""Deployments, their entries and instances (assignments), and the instances' status history."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from plum.common.resources import parse_memory
from plum.common.vocab import REPORTED_PHASES, ControllerDesired, RunMode, new_id, new_instance_id
from plum.controller.apps import artifact_url
from plum.controller.errors import Conflict, NotFound
from plum.controller.nodes import NodeRepo
from plum.controller.placement import Placement, candidates, plan_placed
from plum.controller.planning import Instance, ScalePlan, plan_scale, replica_counts
from plum.controller.rollout import UpdatePolicy
from plum.controller.rollouts import SETTINGS_COLUMNS, RolloutRepo, Settings, insert_revision, stored_settings
from plum.controller.store import Row, Store, Tx, dumps, loads

log = logging.getLogger(__name__)

PHASES = tuple(p.value for p in REPORTED_PHASES)  # what an agent may report for an instance
DESIRED = (ControllerDesired.RUNNING.value, ControllerDesired.STOPPED.value)  # what a client may ask for
RUNTIMES = tuple(m.value for m in RunMode)
_COLUMNS = ", ".join(SETTINGS_COLUMNS)
_MARKS = ", ".join("?" * len(SETTINGS_COLUMNS))
# Built from the constant column names, never from input.
_INSERT_ENTRY_SQL = (
    f"INSERT INTO deployment_entries(deployment_id, position, desired_replicas, placement, {_COLUMNS})"  # noqa: S608
    f" VALUES (?, ?, ?, ?, {_MARKS})"
)

_FEED_SQL = """
SELECT a.instance_id, a.deployment_id, a.node_id, a.desired, a.phase, a.healthy, a.last_report_at, d.status,
       a.message, a.exit_code, a.restarts,
       e.start_cmd, e.runtime, e.image, e.env, e.memory, e.cpus, e.network_mode, e.restart_policy, e.ports,
       r.artifact_id, r.type, r.path, r.app_name, r.version, r.sha256, r.image_repository, r.image_tag,
       r.port_mappings
FROM assignments a
JOIN deployments d ON d.deployment_id = a.deployment_id
JOIN entry_revisions e ON e.entry_id = a.entry_id AND e.revision = a.revision
JOIN artifacts r ON r.artifact_id = e.artifact_id
"""


@dataclass(frozen=True)
class EntrySpec:
    """One validated deployment entry: what to run, how, and how many: per node (``replicas``) or
    ``placed`` instances the controller puts on the nodes ``placement`` admits."""

    artifact: Row
    replicas: dict[str, int]
    placed: Optional[int] = None
    placement: Placement = field(default_factory=Placement)
    start_cmd: str = ""
    runtime: str = ""
    image: str = ""
    env: dict[str, str] = field(default_factory=dict)
    memory: str = ""
    cpus: Optional[float] = None
    network_mode: str = ""
    restart_policy: str = ""
    ports: list[dict[str, Any]] = field(default_factory=list)

    def settings(self) -> Settings:
        """The values of SETTINGS_COLUMNS, as stored."""
        return (
            self.artifact["artifact_id"],
            self.start_cmd,
            self.runtime,
            self.image,
            dumps(self.env),
            self.memory,
            self.cpus,
            self.network_mode,
            self.restart_policy,
            dumps(self.ports),
        )

    @property
    def host_ports(self) -> bool:
        return any("host" in p for p in self.ports)


@dataclass(frozen=True)
class EntryChange:
    """What a PATCH asks of one entry; None keeps that part as it is."""

    replicas: Optional[dict[str, int]] = None  # pinned per node
    placed: Optional[int] = None  # placed by the controller (with ``placement``)
    placement: Optional[Placement] = None
    settings: Optional[EntrySpec] = None  # new app or settings: rolled out


def has_host_ports(ports_json: str) -> bool:
    ports = loads(ports_json, [])
    return isinstance(ports, list) and any(isinstance(p, dict) and "host" in p for p in ports)


def memory_bytes(text: str) -> Optional[int]:
    """'512m', '1g', '1.5g', '268435456' -> bytes, as the agent reads them; None when the agent would refuse it."""
    try:
        return parse_memory(text)
    except ValueError:
        return None


def _int_or_none(value: Any) -> Optional[int]:
    return None if value is None else int(value)


def item_json(row: Row, *, runtime_settings: bool = True) -> dict[str, Any]:
    """One assignment with Plum's keys (plus phase details and the entry's runtime settings)."""
    is_image = row["type"] == "image"
    data: dict[str, Any] = {
        "instanceId": row["instance_id"],
        "deploymentId": row["deployment_id"],
        "nodeId": row["node_id"],
        "desired": row["desired"],
        "artifactUrl": artifact_url(row),
        "artifactSha256": row["sha256"],
        "startCmd": row["start_cmd"],
        "appName": row["app_name"],
        "appVersion": row["version"],
        "artifactType": row["type"],
        "imageRepository": row["image_repository"] if is_image else "",
        "imageTag": row["image_tag"] if is_image else "",
        "portMappings": row["port_mappings"] if is_image else "",
        "phase": row["phase"],
        "healthy": bool(row["healthy"]),
        "lastReportAt": int(row["last_report_at"]),
        "message": row["message"],
        "exitCode": _int_or_none(row["exit_code"]),
        "restarts": row["restarts"],
    }
    if runtime_settings:
        data.update(
            {
                "runtime": row["runtime"] or ("docker" if is_image else ""),
                "image": row["image"] or (f"{row['image_repository']}:{row['image_tag']}" if is_image else ""),
                "env": loads(row["env"], {}),
                "memory": row["memory"],
                "memoryBytes": memory_bytes(row["memory"]) if row["memory"] else None,
                "cpus": row["cpus"],
                "networkMode": row["network_mode"],
                "restartPolicy": row["restart_policy"],
                "ports": loads(row["ports"], []),
            }
        )
    return data


class DeploymentRepo:
    def __init__(self, store: Store, status_history: int, nodes: NodeRepo, rollouts: RolloutRepo) -> None:
        self.store = store
        self.status_history = status_history
        self.nodes = nodes
        self.rollouts = rollouts  # a changed app or settings starts one inside update's transaction

    # -- reads ----------------------------------------------------------------------------------

    def get_row(self, deployment_id: str) -> Row:
        row = self.store.one("SELECT * FROM deployments WHERE deployment_id=?", (deployment_id,))
        if row is None:
            raise NotFound(f"no such deployment: {deployment_id}", field="id")
        return row

    def listing(self) -> list[dict[str, Any]]:
        rows = self.store.all(
            "SELECT d.deployment_id, d.name, d.labels, d.status,"
            " (SELECT COUNT(*) FROM assignments a WHERE a.deployment_id = d.deployment_id"
            "  AND a.desired != 'Lost') AS instances"
            " FROM deployments d ORDER BY d.created_at, d.name"
        )
        rollouts = self.rollouts.json_by_deployment()
        return [
            {
                "deploymentId": r["deployment_id"],
                "name": r["name"],
                "labels": loads(r["labels"], {}),
                "status": r["status"],
                "instances": r["instances"],
                "rollout": rollouts.get(r["deployment_id"]),
            }
            for r in rows
        ]

    def instances(self, entry_id: int) -> list[Instance]:
        rows = self.store.all(
            "SELECT instance_id, node_id, seq FROM assignments WHERE entry_id=? AND desired != 'Lost' ORDER BY seq",
            (entry_id,),
        )
        return [Instance(r["instance_id"], r["node_id"], r["seq"]) for r in rows]

    def entries(self, deployment_id: str) -> list[Row]:
        return self.store.all(
            "SELECT e.*, r.type, r.path, r.app_name, r.version FROM deployment_entries e"
            " JOIN artifacts r USING (artifact_id) WHERE e.deployment_id=? ORDER BY e.position",
            (deployment_id,),
        )

    def load(self) -> dict[str, int]:
        """Every node's instance count over all deployments (what spreading weighs)."""
        rows = self.store.all("SELECT node_id, COUNT(*) AS n FROM assignments WHERE desired != 'Lost' GROUP BY node_id")
        return {r["node_id"]: r["n"] for r in rows}

    def detail(self, deployment_id: str, include_lost: bool = False) -> dict[str, Any]:
        """Plum's shape: ``{"deployment": {PascalCase}, "assignments": [...]}`` plus ``entries``."""
        dep = self.get_row(deployment_id)
        lost = "" if include_lost else " AND a.desired != 'Lost'"
        sql = f"{_FEED_SQL} WHERE a.deployment_id=?{lost} ORDER BY a.seq"
        rows = self.store.all(sql, (deployment_id,))
        assignments = []
        for row in rows:
            item = item_json(row, runtime_settings=False)
            item.pop("artifactSha256")
            assignments.append(item)
        entries = []
        for e in self.entries(deployment_id):
            entry = {
                "position": e["position"],
                "artifactId": e["artifact_id"],
                "artifactUrl": artifact_url(e),
                "appName": e["app_name"],
                "appVersion": e["version"],
                "startCmd": e["start_cmd"],
                "runtime": e["runtime"],
                "image": e["image"],
                "env": loads(e["env"], {}),
                "memory": e["memory"],
                "cpus": e["cpus"],
                "networkMode": e["network_mode"],
                "restartPolicy": e["restart_policy"],
                "ports": loads(e["ports"], []),
                "replicas": replica_counts(self.instances(e["entry_id"])),
            }
            if e["desired_replicas"] is not None:
                entry["desiredReplicas"] = e["desired_replicas"]
                entry["placement"] = Placement.from_json(loads(e["placement"], {})).to_json()
            entries.append(entry)
        labels = loads(dep["labels"], {})
        return {
            # Plum's PascalCase keys, and the camelCase ones Plum's web UI reads (deployment.status)
            "deployment": {
                "DeploymentID": dep["deployment_id"],
                "Name": dep["name"],
                "Labels": labels,
                "Status": dep["status"],
                "deploymentId": dep["deployment_id"],
                "name": dep["name"],
                "labels": labels,
                "status": dep["status"],
                "rollout": self.rollouts.json(deployment_id),
            },
            "assignments": assignments,
            "entries": entries,
        }

    def feed(self, node_id: str, limit: int) -> list[dict[str, Any]]:
        """The node's instances, never the ones failover replaced.

        Instances of a Stopped deployment are listed with desired Stopped (Plum left them out): the
        agent then stops them and keeps their data and release, and only an instance that is really
        gone (deleted, scaled down, moved by failover) disappears from the feed and is removed."""
        rows = self.store.all(
            _FEED_SQL + " WHERE a.node_id=? AND a.desired != 'Lost' ORDER BY a.seq LIMIT ?",
            (node_id, limit),
        )
        items = [item_json(r) for r in rows]
        for row, item in zip(rows, items):
            if row["status"] != "Running":
                item["desired"] = "Stopped"
        return items

    def removed_from(self, node_id: str) -> list[str]:
        """The node's instances the controller removed (tombstones) or failover replaced: what it may remove."""
        rows = self.store.all(
            "SELECT instance_id FROM removed_instances WHERE node_id=?"
            " UNION SELECT instance_id FROM assignments WHERE node_id=? AND desired='Lost' ORDER BY 1",
            (node_id, node_id),
        )
        return [r["instance_id"] for r in rows]

    def forget_removed(self, older_than: float) -> int:
        """Drop tombstones older than ``older_than`` (unix time); an agent away longer holds what it runs."""
        with self.store.write() as tx:
            return tx.execute("DELETE FROM removed_instances WHERE removed_at < ?", (older_than,)).rowcount

    def assignment(self, instance_id: str) -> Row:
        row = self.store.one("SELECT * FROM assignments WHERE instance_id=?", (instance_id,))
        if row is None:
            raise NotFound(f"no such instance: {instance_id}", field="instanceId")
        return row

    def nodes_of_instance(self, instance_id: str) -> list[str]:
        """The node an instance is assigned to (empty when unknown): who may report its status."""
        row = self.store.one("SELECT node_id FROM assignments WHERE instance_id=?", (instance_id,))
        return [row["node_id"]] if row else []

    def nodes_of_artifact(self, artifact_id: str) -> list[str]:
        """The nodes with an instance to run on this artifact (whatever revision): who may download it."""
        rows = self.store.all(
            "SELECT DISTINCT a.node_id FROM assignments a"
            " JOIN entry_revisions e ON e.entry_id = a.entry_id AND e.revision = a.revision"
            " WHERE e.artifact_id=? AND a.desired != 'Lost' ORDER BY a.node_id",
            (artifact_id,),
        )
        return [r["node_id"] for r in rows]

    def history(self, instance_id: str) -> list[dict[str, Any]]:
        self.assignment(instance_id)
        rows = self.store.all("SELECT * FROM statuses WHERE instance_id=? ORDER BY id DESC", (instance_id,))
        return [
            {
                "phase": r["phase"],
                "healthy": bool(r["healthy"]),
                "message": r["message"],
                "exitCode": _int_or_none(r["exit_code"]),
                "restarts": r["restarts"],
                "tsUnix": r["ts_unix"],
                "receivedAt": r["received_at"],
            }
            for r in rows
        ]

    def name_taken(self, name: str, except_id: str = "") -> Optional[str]:
        row = self.store.one(
            "SELECT deployment_id FROM deployments WHERE name=? AND deployment_id != ?", (name, except_id)
        )
        return row["deployment_id"] if row else None

    # -- writes ---------------------------------------------------------------------------------

    def create(
        self, name: str, labels: Mapping[str, str], entries: Sequence[EntrySpec], policy: UpdatePolicy
    ) -> tuple[str, list[str]]:
        existing = self.name_taken(name)
        if existing:
            raise Conflict(
                f"deployment name {name!r} is taken (deploymentId {existing})", field="name", deploymentId=existing
            )
        deployment_id = new_id()
        now = time.time()
        load = self.load()
        plans = []
        for position, spec in enumerate(entries):
            if spec.placed is None:
                plan = plan_scale([], spec.replicas)
            else:
                plan = self._placement_plan(
                    [],
                    spec.placed,
                    placement=spec.placement,
                    host_ports=spec.host_ports,
                    load=load,
                    position=position,
                )
            for node, count in plan.add.items():
                load[node] = load.get(node, 0) + count
            plans.append(plan)
        instance_ids: list[str] = []
        try:
            with self.store.write() as tx:
                tx.execute(
                    "INSERT INTO deployments(deployment_id, name, labels, status, created_at, updated_at,"
                    " update_policy) VALUES (?, ?, ?, 'Stopped', ?, ?, ?)",
                    (deployment_id, name, dumps(dict(labels)), now, now, dumps(policy.to_json())),
                )
                for position, (spec, plan) in enumerate(zip(entries, plans)):
                    entry_id = self._insert_entry(tx, deployment_id, position, spec)
                    for node, count in sorted(plan.add.items()):
                        instance_ids += self._add_instances(
                            tx, deployment_id, entry_id, node, count=count, revision=1, now=now
                        )
        except sqlite3.IntegrityError as exc:  # a constraint the checks above missed: never half-written
            raise Conflict(f"deployment conflicts with existing data: {exc}", field="name") from None
        log.info("deployment %s (%s) created with %d instance(s), Stopped", name, deployment_id, len(instance_ids))
        return deployment_id, instance_ids

    def _placement_plan(
        self,
        current: Sequence[Instance],
        wanted: int,
        *,
        placement: Placement,
        host_ports: bool,
        load: Mapping[str, int],
        position: int,
    ) -> ScalePlan:
        healthy = self.nodes.healthy(self.nodes.clock())  # the clock heartbeats are judged by
        node_labels = {n: node.labels for n, node in self.nodes.nodes.items()}
        return plan_placed(
            current,
            wanted,
            candidates(placement, node_labels, healthy),
            load,
            one_per_node=host_ports,
            healthy=healthy,
            what=f"entries[{position}].placement ({placement.describe()})",
        )

    @staticmethod
    def _insert_entry(tx: Tx, deployment_id: str, position: int, spec: EntrySpec) -> int:
        placement = dumps(spec.placement.to_json())
        cur = tx.execute(_INSERT_ENTRY_SQL, (deployment_id, position, spec.placed, placement, *spec.settings()))
        entry_id = int(cur.lastrowid or 0)
        insert_revision(tx, entry_id, 1, spec.settings())
        return entry_id

    @staticmethod
    def _add_instances(
        tx: Tx, deployment_id: str, entry_id: int, node: str, *, count: int, revision: int, now: float
    ) -> list[str]:
        ids = []
        for _ in range(count):
            instance_id = new_instance_id(deployment_id)
            tx.execute(
                "INSERT INTO assignments(instance_id, deployment_id, entry_id, node_id, desired, created_at,"
                " revision, revision_at) VALUES (?, ?, ?, ?, 'Running', ?, ?, ?)",
                (instance_id, deployment_id, entry_id, node, now, revision, now),
            )
            ids.append(instance_id)
        tx.nudge(node)
        return ids

    @staticmethod
    def _delete_instances(tx: Tx, instance_ids: Sequence[str]) -> None:
        for instance_id in instance_ids:
            tx.execute("DELETE FROM endpoints WHERE instance_id=?", (instance_id,))
            tx.execute("DELETE FROM assignments WHERE instance_id=?", (instance_id,))

    def _nodes_of(self, deployment_id: str) -> list[str]:
        rows = self.store.all(
            "SELECT DISTINCT node_id FROM assignments WHERE deployment_id=? AND desired != 'Lost'", (deployment_id,)
        )
        return [r["node_id"] for r in rows]

    def set_status(self, deployment_id: str, status: str) -> None:
        """start/stop: every instance except those failover replaced (which stay Lost forever)."""
        self.get_row(deployment_id)
        with self.store.write() as tx:
            tx.execute(
                "UPDATE deployments SET status=?, updated_at=? WHERE deployment_id=?",
                (status, time.time(), deployment_id),
            )
            tx.execute(
                "UPDATE assignments SET desired=? WHERE deployment_id=? AND desired != 'Lost'",
                (status, deployment_id),
            )
            if status == "Stopped":
                tx.execute(
                    "DELETE FROM endpoints WHERE instance_id IN"
                    " (SELECT instance_id FROM assignments WHERE deployment_id=?)",
                    (deployment_id,),
                )
            tx.nudge(*self._nodes_of(deployment_id))
        log.info("deployment %s -> %s", deployment_id, status)

    def delete(self, deployment_id: str) -> None:
        self.get_row(deployment_id)
        with self.store.write() as tx:
            tx.nudge(*self._nodes_of(deployment_id))
            tx.execute(
                "DELETE FROM endpoints WHERE instance_id IN"
                " (SELECT instance_id FROM assignments WHERE deployment_id=?)",
                (deployment_id,),
            )
            tx.execute("DELETE FROM deployments WHERE deployment_id=?", (deployment_id,))
        log.info("deployment %s deleted", deployment_id)

    def update(
        self,
        deployment_id: str,
        labels: Optional[Mapping[str, str]],
        changes: Mapping[int, EntryChange],
        policy: Optional[UpdatePolicy] = None,
    ) -> bool:
        """Change labels, replicas, placement and the app or settings in place: same id, same instances.

        A new app or settings starts a rollout (the rollout loop moves the instances over; True when one
        started); Conflict while one runs. Everything is written in one transaction."""
        dep = self.get_row(deployment_id)
        now = time.time()
        rows = {e["entry_id"]: e for e in self.entries(deployment_id)}
        rolled = _changed_settings(rows, changes)
        if rolled:
            self.rollouts.refuse_while_running(dep)
        plans, node_of = self._scale_plans(rows, changes)
        with self.store.write() as tx:
            _write_deployment(tx, deployment_id, labels, policy, now)
            _write_replica_targets(tx, changes)
            self._apply_scale_plans(tx, dep, plans, node_of, now)
            if rolled:
                self.rollouts.start(tx, dep, rolled, now)
        scaled = {e: (p.add, len(p.remove)) for e, p in plans.items() if not p.empty}
        log.info(
            "deployment %s updated (labels %s, scale %s, %s)",
            deployment_id,
            "set" if labels is not None else "kept",
            scaled or "unchanged",
            f"rolling out {len(rolled)} changed entr(y/ies)" if rolled else "app and settings unchanged",
        )
        return bool(rolled)

    def _scale_plans(
        self, rows: Mapping[int, Row], changes: Mapping[int, EntryChange]
    ) -> tuple[dict[int, ScalePlan], dict[str, str]]:
        """What each entry whose replicas or placement the request names adds and removes, spread over the
        fleet's load as it grows; and the node of every current instance (whose agent hears of a removal)."""
        node_of: dict[str, str] = {}
        plans: dict[int, ScalePlan] = {}
        load = self.load()
        for entry_id, change in changes.items():
            current = self.instances(entry_id)
            node_of.update((i.instance_id, i.node_id) for i in current)
            plan = self._entry_plan(rows[entry_id], change, current, load)
            if plan is None:
                continue
            plans[entry_id] = plan
            for node, count in plan.add.items():
                load[node] = load.get(node, 0) + count
        return plans, node_of

    def _apply_scale_plans(
        self, tx: Tx, dep: Row, plans: Mapping[int, ScalePlan], node_of: Mapping[str, str], now: float
    ) -> None:
        """New instances start on the deployment's current revision (a rollout started next moves them too)."""
        for entry_id, plan in plans.items():
            tx.nudge(*(node_of[i] for i in plan.remove))
            self._delete_instances(tx, plan.remove)
            for node, count in sorted(plan.add.items()):
                self._add_instances(
                    tx, dep["deployment_id"], entry_id, node, count=count, revision=dep["revision"], now=now
                )

    def _entry_plan(
        self, row: Row, change: EntryChange, current: Sequence[Instance], load: Mapping[str, int]
    ) -> Optional[ScalePlan]:
        """Pinned replicas as given, or N placed by the (new or kept) placement; None when neither changes."""
        if change.replicas is not None:
            return plan_scale(current, change.replicas)
        if change.placed is None:
            return None
        return self._placement_plan(
            current,
            change.placed,
            placement=change.placement or Placement.from_json(loads(row["placement"], {})),
            host_ports=change.settings.host_ports if change.settings else has_host_ports(row["ports"]),
            load=load,
            position=row["position"],
        )

    def set_desired(self, instance_id: str, desired: str) -> None:
        row = self.assignment(instance_id)
        if row["desired"] == "Lost":
            raise Conflict(
                f"instance {instance_id} was replaced by {row['replaced_by']} after its node failed; "
                "it cannot run again",
                field="instanceId",
            )
        with self.store.write() as tx:
            tx.execute("UPDATE assignments SET desired=? WHERE instance_id=?", (desired, instance_id))
            if desired == "Stopped":
                tx.execute("DELETE FROM endpoints WHERE instance_id=?", (instance_id,))
            tx.nudge(row["node_id"])

    def delete_instance(self, instance_id: str) -> None:
        row = self.assignment(instance_id)
        with self.store.write() as tx:
            self._delete_instances(tx, [instance_id])
            tx.nudge(row["node_id"])

    def record_status(
        self,
        instance_id: str,
        *,
        phase: str,
        healthy: bool,
        message: str,
        exit_code: Optional[int],
        restarts: Optional[int],
        ts_unix: Optional[float],
    ) -> None:
        row = self.store.one("SELECT restarts FROM assignments WHERE instance_id=?", (instance_id,))
        if row is None:
            raise NotFound(f"no such instance: {instance_id} (deleted?)", field="instanceId")
        restarts_value = row["restarts"] if restarts is None else restarts
        now = time.time()
        with self.store.write() as tx:
            tx.execute(
                "INSERT INTO statuses(instance_id, phase, healthy, message, exit_code, restarts, ts_unix, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (instance_id, phase, int(healthy), message, exit_code, restarts_value, ts_unix, now),
            )
            tx.execute(
                "UPDATE assignments SET phase_since=CASE WHEN phase=? THEN phase_since ELSE ? END,"
                " phase=?, healthy=?, message=?, exit_code=?, restarts=?, last_report_at=? WHERE instance_id=?",
                (phase, now, phase, int(healthy), message, exit_code, restarts_value, now, instance_id),
            )
            # keep only the newest N statuses of this instance
            tx.execute(
                "DELETE FROM statuses WHERE instance_id=? AND id <= (SELECT id FROM statuses WHERE instance_id=?"
                " ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (instance_id, instance_id, self.status_history),
            )


def _changed_settings(rows: Mapping[int, Row], changes: Mapping[int, EntryChange]) -> dict[int, Settings]:
    """The entries whose requested app or settings differ from the stored ones: what a rollout moves."""
    return {
        entry_id: change.settings.settings()
        for entry_id, change in changes.items()
        if change.settings is not None and change.settings.settings() != stored_settings(rows[entry_id])
    }


def _write_deployment(
    tx: Tx, deployment_id: str, labels: Optional[Mapping[str, str]], policy: Optional[UpdatePolicy], now: float
) -> None:
    tx.execute("UPDATE deployments SET updated_at=? WHERE deployment_id=?", (now, deployment_id))
    if labels is not None:
        tx.execute("UPDATE deployments SET labels=? WHERE deployment_id=?", (dumps(dict(labels)), deployment_id))
    if policy is not None:
        tx.execute(
            "UPDATE deployments SET update_policy=? WHERE deployment_id=?", (dumps(policy.to_json()), deployment_id)
        )


def _write_replica_targets(tx: Tx, changes: Mapping[int, EntryChange]) -> None:
    """Pinned replicas drop the entry's N and placement; a placed N (and a new placement) is kept with it."""
    for entry_id, change in changes.items():
        if change.replicas is not None:
            tx.execute(
                "UPDATE deployment_entries SET desired_replicas=NULL, placement='{}' WHERE entry_id=?", (entry_id,)
            )
        elif change.placed is not None:
            tx.execute("UPDATE deployment_entries SET desired_replicas=? WHERE entry_id=?", (change.placed, entry_id))
            if change.placement is not None:
                tx.execute(
                    "UPDATE deployment_entries SET placement=? WHERE entry_id=?",
                    (dumps(change.placement.to_json()), entry_id),
                )
