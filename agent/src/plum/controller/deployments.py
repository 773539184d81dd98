"""Deployments, their entries and instances (assignments), and the instances' status history."""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from plum.common.resources import parse_memory
from plum.common.vocab import REPORTED_PHASES, ControllerDesired, RunMode
from plum.controller import rollout
from plum.controller.apps import artifact_url
from plum.controller.errors import Conflict, NotFound
from plum.controller.nodes import NodeRepo
from plum.controller.placement import Placement, candidates, plan_placed
from plum.controller.planning import Instance, ScalePlan, plan_scale, replica_counts
from plum.controller.rollout import Member, UpdatePolicy
from plum.controller.store import Row, Store, Tx, dumps, loads, new_id

log = logging.getLogger(__name__)

PHASES = tuple(p.value for p in REPORTED_PHASES)  # what an agent may report for an instance
DESIRED = (ControllerDesired.RUNNING.value, ControllerDesired.STOPPED.value)  # what a client may ask for
RUNTIMES = tuple(m.value for m in RunMode)
# An entry's app and runtime settings: what one revision holds (the columns of entry_revisions).
SETTINGS_COLUMNS = (
    "artifact_id",
    "start_cmd",
    "runtime",
    "image",
    "env",
    "memory",
    "cpus",
    "network_mode",
    "restart_policy",
    "ports",
)

_COLUMNS = ", ".join(SETTINGS_COLUMNS)
_MARKS = ", ".join("?" * len(SETTINGS_COLUMNS))
# Built from the constant column names above, never from input.
_INSERT_ENTRY_SQL = (
    f"INSERT INTO deployment_entries(deployment_id, position, desired_replicas, placement, {_COLUMNS})"  # noqa: S608
    f" VALUES (?, ?, ?, ?, {_MARKS})"
)
_INSERT_REVISION_SQL = f"INSERT INTO entry_revisions(entry_id, revision, {_COLUMNS}) VALUES (?, ?, {_MARKS})"  # noqa: S608
_COPY_REVISION_SQL = (
    f"INSERT INTO entry_revisions(entry_id, revision, {_COLUMNS}) SELECT entry_id, ?, {_COLUMNS}"  # noqa: S608
    " FROM entry_revisions WHERE entry_id=? AND revision=?"
)
_SET_ENTRY_SQL = f"UPDATE deployment_entries SET {', '.join(f'{c}=?' for c in SETTINGS_COLUMNS)} WHERE entry_id=?"  # noqa: S608
_RESTORE_ENTRIES_SQL = (
    f"UPDATE deployment_entries AS e SET {', '.join(f'{c}=r.{c}' for c in SETTINGS_COLUMNS)}"  # noqa: S608
    " FROM entry_revisions r WHERE r.entry_id = e.entry_id AND r.revision=? AND e.deployment_id=?"
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

    def settings(self) -> tuple[Any, ...]:
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


def stored_settings(row: Row) -> tuple[Any, ...]:
    """An entry's (or a revision's) SETTINGS_COLUMNS values, comparable with EntrySpec.settings()."""
    return tuple(row[c] for c in SETTINGS_COLUMNS)


def has_host_ports(ports_json: str) -> bool:
    ports = loads(ports_json, [])
    return isinstance(ports, list) and any(isinstance(p, dict) and "host" in p for p in ports)


def rollout_json(row: Optional[Row]) -> Optional[dict[str, Any]]:
    if row is None:
        return None
    return {
        "revision": row["revision"],
        "previousRevision": row["previous_revision"],
        "state": row["state"],
        "updated": row["updated"],
        "healthy": row["healthy"],
        "total": row["total"],
        "message": row["message"],
        "startedAt": row["started_at"],
        "finishedAt": row["finished_at"],
    }


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
    def __init__(self, store: Store, status_history: int, nodes: NodeRepo) -> None:
        self.store = store
        self.status_history = status_history
        self.nodes = nodes

    # -- reads ----------------------------------------------------------------------------------

    def get_row(self, deployment_id: str) -> Row:
        row = self.store.one("SELECT * FROM deployments WHERE deployment_id=?", (deployment_id,))
        if row is None:
            raise NotFound(f"no such deployment: {deployment_id}", field="id")
        return row

    def rollout_row(self, deployment_id: str) -> Optional[Row]:
        return self.store.one("SELECT * FROM rollouts WHERE deployment_id=?", (deployment_id,))

    def listing(self) -> list[dict[str, Any]]:
        rows = self.store.all(
            "SELECT d.deployment_id, d.name, d.labels, d.status,"
            " (SELECT COUNT(*) FROM assignments a WHERE a.deployment_id = d.deployment_id"
            "  AND a.desired != 'Lost') AS instances"
            " FROM deployments d ORDER BY d.created_at, d.name"
        )
        rollouts = {r["deployment_id"]: r for r in self.store.all("SELECT * FROM rollouts")}
        return [
            {
                "deploymentId": r["deployment_id"],
                "name": r["name"],
                "labels": loads(r["labels"], {}),
                "status": r["status"],
                "instances": r["instances"],
                "rollout": rollout_json(rollouts.get(r["deployment_id"])),
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
                "rollout": rollout_json(self.rollout_row(deployment_id)),
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
        tx.execute(_INSERT_REVISION_SQL, (entry_id, 1, *spec.settings()))
        return entry_id

    @staticmethod
    def _add_instances(
        tx: Tx, deployment_id: str, entry_id: int, node: str, *, count: int, revision: int, now: float
    ) -> list[str]:
        ids = []
        for _ in range(count):
            instance_id = f"{deployment_id}-{secrets.token_hex(4)}"
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
        started); Conflict while one runs."""
        dep = self.get_row(deployment_id)
        now = time.time()
        rows = {e["entry_id"]: e for e in self.entries(deployment_id)}
        rolled = {
            entry_id: change.settings
            for entry_id, change in changes.items()
            if change.settings is not None and change.settings.settings() != stored_settings(rows[entry_id])
        }
        running = self.rollout_row(deployment_id)
        if rolled and running is not None and running["state"] == rollout.RUNNING:
            raise Conflict(
                f"deployment {dep['name']} is rolling out revision {running['revision']} ({running['message']}); "
                "change its app or settings once that rollout finished",
                field="entries",
                deploymentId=deployment_id,
                revision=running["revision"],
            )
        node_of: dict[str, str] = {}
        plans: dict[int, ScalePlan] = {}
        load = self.load()
        for entry_id, change in changes.items():
            row = rows[entry_id]
            current = self.instances(entry_id)
            node_of.update((i.instance_id, i.node_id) for i in current)
            if change.replicas is not None:
                plans[entry_id] = plan_scale(current, change.replicas)
            elif change.placed is not None:
                placement = change.placement or Placement.from_json(loads(row["placement"], {}))
                host_ports = change.settings.host_ports if change.settings else has_host_ports(row["ports"])
                plans[entry_id] = self._placement_plan(
                    current,
                    change.placed,
                    placement=placement,
                    host_ports=host_ports,
                    load=load,
                    position=row["position"],
                )
            else:
                continue
            for node, count in plans[entry_id].add.items():
                load[node] = load.get(node, 0) + count
        with self.store.write() as tx:
            tx.execute("UPDATE deployments SET updated_at=? WHERE deployment_id=?", (now, deployment_id))
            if labels is not None:
                tx.execute(
                    "UPDATE deployments SET labels=? WHERE deployment_id=?", (dumps(dict(labels)), deployment_id)
                )
            if policy is not None:
                tx.execute(
                    "UPDATE deployments SET update_policy=? WHERE deployment_id=?",
                    (dumps(policy.to_json()), deployment_id),
                )
            for entry_id, change in changes.items():
                if change.replicas is not None:
                    tx.execute(
                        "UPDATE deployment_entries SET desired_replicas=NULL, placement='{}' WHERE entry_id=?",
                        (entry_id,),
                    )
                elif change.placed is not None:
                    tx.execute(
                        "UPDATE deployment_entries SET desired_replicas=? WHERE entry_id=?", (change.placed, entry_id)
                    )
                    if change.placement is not None:
                        tx.execute(
                            "UPDATE deployment_entries SET placement=? WHERE entry_id=?",
                            (dumps(change.placement.to_json()), entry_id),
                        )
            for entry_id, plan in plans.items():
                tx.nudge(*(node_of[i] for i in plan.remove))
                self._delete_instances(tx, plan.remove)
                for node, count in sorted(plan.add.items()):
                    self._add_instances(
                        tx, deployment_id, entry_id, node, count=count, revision=dep["revision"], now=now
                    )
            if rolled:
                self._start_rollout(tx, dep, running, rolled, now)
        scaled = {e: (p.add, len(p.remove)) for e, p in plans.items() if not p.empty}
        log.info(
            "deployment %s updated (labels %s, scale %s, %s)",
            deployment_id,
            "set" if labels is not None else "kept",
            scaled or "unchanged",
            f"rolling out {len(rolled)} changed entr(y/ies)" if rolled else "app and settings unchanged",
        )
        return bool(rolled)

    def _start_rollout(
        self, tx: Tx, dep: Row, last: Optional[Row], rolled: Mapping[int, EntrySpec], now: float
    ) -> None:
        """A new revision of every entry (the changed ones with their new settings) and a Running rollout to it.
        The instances of unchanged entries take the revision at once: nothing changes for their agents."""
        deployment_id, previous = dep["deployment_id"], dep["revision"]
        revision = max(previous, last["revision"] if last is not None else 0) + 1
        for entry in self.entries(deployment_id):
            entry_id = entry["entry_id"]
            spec = rolled.get(entry_id)
            if spec is None:
                tx.execute(_COPY_REVISION_SQL, (revision, entry_id, previous))
                tx.execute(
                    "UPDATE assignments SET revision=? WHERE entry_id=? AND revision=?", (revision, entry_id, previous)
                )
                continue
            tx.execute(_INSERT_REVISION_SQL, (entry_id, revision, *spec.settings()))
            tx.execute(_SET_ENTRY_SQL, (*spec.settings(), entry_id))
        tx.execute("UPDATE deployments SET revision=? WHERE deployment_id=?", (revision, deployment_id))
        tx.execute(
            "INSERT OR REPLACE INTO rollouts(deployment_id, revision, previous_revision, state, message, started_at)"
            " VALUES (?, ?, ?, 'Running', 'started', ?)",
            (deployment_id, revision, previous, now),
        )
        log.info("deployment %s: rollout of revision %d started (from %d)", deployment_id, revision, previous)

    # -- rollouts -------------------------------------------------------------------------------

    def rollout_event(self, deployment_id: str, event: str) -> dict[str, Any]:
        """What a "rollout" event says: started, progress or finished, and the rollout as GET shows it."""
        return {"deploymentId": deployment_id, "event": event, "rollout": rollout_json(self.rollout_row(deployment_id))}

    def running_rollouts(self) -> list[str]:
        rows = self.store.all("SELECT deployment_id FROM rollouts WHERE state='Running' ORDER BY started_at")
        return [r["deployment_id"] for r in rows]

    def rollout_members(self, deployment_id: str, revision: int, previous: int, now: float) -> list[Member]:
        """The live instances of the entries whose settings differ between the two revisions."""
        dep = self.get_row(deployment_id)
        rows = self.store.all(
            "SELECT instance_id, entry_id, node_id, seq, revision, revision_at, desired, phase, phase_since,"
            " last_report_at FROM assignments WHERE deployment_id=? AND desired != 'Lost' ORDER BY seq",
            (deployment_id,),
        )
        changed_entries = self._changed_entries(deployment_id, revision, previous)
        return [
            Member(
                instance_id=r["instance_id"],
                seq=r["seq"],
                revision=r["revision"],
                switched_at=r["revision_at"],
                phase=r["phase"],
                phase_since=r["phase_since"],
                reported_at=r["last_report_at"],
                running=dep["status"] == "Running" and r["desired"] == ControllerDesired.RUNNING.value,
                node_up=self.nodes.is_healthy(r["node_id"], now),
            )
            for r in rows
            if r["entry_id"] in changed_entries
        ]

    def _changed_entries(self, deployment_id: str, revision: int, previous: int) -> set[int]:
        rows = self.store.all(
            "SELECT r.* FROM entry_revisions r JOIN deployment_entries e USING (entry_id)"
            " WHERE e.deployment_id=? AND r.revision IN (?, ?)",
            (deployment_id, revision, previous),
        )
        settings = {(r["entry_id"], r["revision"]): stored_settings(r) for r in rows}
        return {e for (e, rev), values in settings.items() if rev == revision and settings.get((e, previous)) != values}

    def advance_rollout(self, deployment_id: str, now: float) -> Optional[rollout.Step]:
        """One step of the deployment's running rollout, in one transaction; None when none runs."""
        ro = self.rollout_row(deployment_id)
        if ro is None or ro["state"] != rollout.RUNNING:
            return None
        dep = self.get_row(deployment_id)
        revision, previous = ro["revision"], ro["previous_revision"]
        policy = UpdatePolicy.from_json(loads(dep["update_policy"], {}))
        result = rollout.step(self.rollout_members(deployment_id, revision, previous, now), revision, policy, now)
        node_rows = self.store.all(
            "SELECT instance_id, node_id FROM assignments WHERE deployment_id=?", (deployment_id,)
        )
        node_of = {r["instance_id"]: r["node_id"] for r in node_rows}
        with self.store.write() as tx:
            for target, ids in ((revision, result.switch), (previous, result.revert)):
                for instance_id in ids:
                    tx.execute(
                        "UPDATE assignments SET revision=?, revision_at=? WHERE instance_id=?",
                        (target, now, instance_id),
                    )
                    tx.nudge(node_of[instance_id])
            if result.state == rollout.ROLLED_BACK:
                self._restore_revision(tx, deployment_id, previous)
            tx.execute(
                "UPDATE rollouts SET state=?, updated=?, healthy=?, total=?, message=?, finished_at=?"
                " WHERE deployment_id=?",
                (
                    result.state,
                    result.updated,
                    result.healthy,
                    result.total,
                    result.message,
                    now if result.finished else None,
                    deployment_id,
                ),
            )
            if result.finished:
                self._forget_revisions(tx, deployment_id)
        if result.finished:
            log.log(
                logging.INFO if result.state == rollout.SUCCEEDED else logging.WARNING,
                "deployment %s: rollout of revision %d %s: %s",
                deployment_id,
                revision,
                result.state,
                result.message,
            )
        elif result.switch:
            log.info("deployment %s: revision %d goes to %s", deployment_id, revision, ", ".join(result.switch))
        return result

    def _restore_revision(self, tx: Tx, deployment_id: str, revision: int) -> None:
        """The deployment's entries take the settings of ``revision`` again (a rollback)."""
        tx.execute(_RESTORE_ENTRIES_SQL, (revision, deployment_id))
        tx.execute("UPDATE deployments SET revision=? WHERE deployment_id=?", (revision, deployment_id))

    @staticmethod
    def _forget_revisions(tx: Tx, deployment_id: str) -> None:
        """Keep only the current revision and the ones an instance runs (failover's history included)."""
        tx.execute(
            "DELETE FROM entry_revisions"
            " WHERE entry_id IN (SELECT entry_id FROM deployment_entries WHERE deployment_id=?)"
            " AND revision != (SELECT revision FROM deployments WHERE deployment_id=?)"
            " AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.entry_id = entry_revisions.entry_id"
            " AND a.revision = entry_revisions.revision)",
            (deployment_id, deployment_id),
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
