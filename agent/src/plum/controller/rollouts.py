"""Rollouts on SQLite: the entries' revisions, a deployment's last rollout, and one step of a running one.

A rollout starts inside the transaction of the PATCH that changed an app or settings (DeploymentRepo.update);
the rollout loop then advances it with ``advance``, one transaction per step. The decisions are rollout.step's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Optional

from plum.common.vocab import ControllerDesired
from plum.controller import rollout
from plum.controller.errors import Conflict, NotFound
from plum.controller.nodes import NodeRepo
from plum.controller.rollout import Member, UpdatePolicy
from plum.controller.store import Row, Store, Tx, loads

log = logging.getLogger(__name__)

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
Settings = tuple[Any, ...]  # the values of SETTINGS_COLUMNS, as stored

_COLUMNS = ", ".join(SETTINGS_COLUMNS)
_MARKS = ", ".join("?" * len(SETTINGS_COLUMNS))
# Built from the constant column names above, never from input.
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


def stored_settings(row: Row) -> Settings:
    """An entry's (or a revision's) SETTINGS_COLUMNS values, comparable with EntrySpec.settings()."""
    return tuple(row[c] for c in SETTINGS_COLUMNS)


def insert_revision(tx: Tx, entry_id: int, revision: int, settings: Settings) -> None:
    tx.execute(_INSERT_REVISION_SQL, (entry_id, revision, *settings))


def _rollout_json(row: Optional[Row]) -> Optional[dict[str, Any]]:
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


class RolloutRepo:
    def __init__(self, store: Store, nodes: NodeRepo) -> None:
        self.store = store
        self.nodes = nodes

    # -- reads ----------------------------------------------------------------------------------

    def row(self, deployment_id: str) -> Optional[Row]:
        return self.store.one("SELECT * FROM rollouts WHERE deployment_id=?", (deployment_id,))

    def json(self, deployment_id: str) -> Optional[dict[str, Any]]:
        """The deployment's last rollout as GET shows it (None when it never rolled out a change)."""
        return _rollout_json(self.row(deployment_id))

    def json_by_deployment(self) -> dict[str, Optional[dict[str, Any]]]:
        return {r["deployment_id"]: _rollout_json(r) for r in self.store.all("SELECT * FROM rollouts")}

    def event(self, deployment_id: str, event: str) -> dict[str, Any]:
        """What a "rollout" event says: started, progress or finished, and the rollout as GET shows it."""
        return {"deploymentId": deployment_id, "event": event, "rollout": self.json(deployment_id)}

    def running(self) -> list[str]:
        rows = self.store.all("SELECT deployment_id FROM rollouts WHERE state='Running' ORDER BY started_at")
        return [r["deployment_id"] for r in rows]

    def refuse_while_running(self, dep: Row) -> None:
        """Conflict naming the deployment's running rollout, if one runs: one change at a time."""
        running = self.row(dep["deployment_id"])
        if running is None or running["state"] != rollout.RUNNING:
            return
        raise Conflict(
            f"deployment {dep['name']} is rolling out revision {running['revision']} ({running['message']}); "
            "change its app or settings once that rollout finished",
            field="entries",
            deploymentId=dep["deployment_id"],
            revision=running["revision"],
        )

    def members(self, deployment_id: str, revision: int, previous: int, now: float) -> list[Member]:
        """The live instances of the entries whose settings differ between the two revisions."""
        dep = self._deployment(deployment_id)
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

    def _deployment(self, deployment_id: str) -> Row:
        row = self.store.one("SELECT * FROM deployments WHERE deployment_id=?", (deployment_id,))
        if row is None:
            raise NotFound(f"no such deployment: {deployment_id}", field="id")
        return row

    def _changed_entries(self, deployment_id: str, revision: int, previous: int) -> set[int]:
        rows = self.store.all(
            "SELECT r.* FROM entry_revisions r JOIN deployment_entries e USING (entry_id)"
            " WHERE e.deployment_id=? AND r.revision IN (?, ?)",
            (deployment_id, revision, previous),
        )
        settings = {(r["entry_id"], r["revision"]): stored_settings(r) for r in rows}
        return {e for (e, rev), values in settings.items() if rev == revision and settings.get((e, previous)) != values}

    # -- writes ---------------------------------------------------------------------------------

    def start(self, tx: Tx, dep: Row, rolled: Mapping[int, Settings], now: float) -> None:
        """A new revision of every entry (the changed ones with their new settings) and a Running rollout to it.
        The instances of unchanged entries take the revision at once: nothing changes for their agents."""
        deployment_id, previous = dep["deployment_id"], dep["revision"]
        last = self.row(deployment_id)
        revision = max(previous, last["revision"] if last is not None else 0) + 1
        entry_rows = self.store.all(
            "SELECT entry_id FROM deployment_entries WHERE deployment_id=? ORDER BY position", (deployment_id,)
        )
        for entry_id in (e["entry_id"] for e in entry_rows):
            settings = rolled.get(entry_id)
            if settings is None:
                tx.execute(_COPY_REVISION_SQL, (revision, entry_id, previous))
                tx.execute(
                    "UPDATE assignments SET revision=? WHERE entry_id=? AND revision=?", (revision, entry_id, previous)
                )
                continue
            insert_revision(tx, entry_id, revision, settings)
            tx.execute(_SET_ENTRY_SQL, (*settings, entry_id))
        tx.execute("UPDATE deployments SET revision=? WHERE deployment_id=?", (revision, deployment_id))
        tx.execute(
            "INSERT OR REPLACE INTO rollouts(deployment_id, revision, previous_revision, state, message, started_at)"
            " VALUES (?, ?, ?, 'Running', 'started', ?)",
            (deployment_id, revision, previous, now),
        )
        log.info("deployment %s: rollout of revision %d started (from %d)", deployment_id, revision, previous)

    def advance(self, deployment_id: str, now: float) -> Optional[rollout.Step]:
        """One step of the deployment's running rollout, in one transaction; None when none runs."""
        ro = self.row(deployment_id)
        if ro is None or ro["state"] != rollout.RUNNING:
            return None
        dep = self._deployment(deployment_id)
        revision, previous = ro["revision"], ro["previous_revision"]
        policy = UpdatePolicy.from_json(loads(dep["update_policy"], {}))
        result = rollout.step(self.members(deployment_id, revision, previous, now), revision, policy, now)
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
        _log_step(deployment_id, revision, result)
        return result

    @staticmethod
    def _restore_revision(tx: Tx, deployment_id: str, revision: int) -> None:
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


def _log_step(deployment_id: str, revision: int, result: rollout.Step) -> None:
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
