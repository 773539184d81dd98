"""Failover: move the Running instances of unhealthy nodes to healthy ones.

Each round (every FAILOVER_INTERVAL_SEC, with AUTO_MIGRATION_ENABLED): nodes whose last heartbeat
is older than the TTL are unhealthy. Every instance there that should run (desired Running, in a
Running deployment) gets a replacement, and the old instance is marked ``Lost`` -- both in ONE
transaction, so a replica is never duplicated nor lost. An entry pinned per node by the operator moves
to the healthy node with the fewest instances; an entry the controller placed moves to a healthy node its
placement admits, spread as on placement (placement.py), and stays where it is when none is left.
The replacement runs the revision the old one ran.
Lost instances leave the old node's assignment feed, so its agent stops them when it comes back,
and start/stop of the deployment never revives them. With no healthy node nothing moves.

The first TTL after the controller starts is a grace period: heartbeats were not being received
while it was down, so a node is only judged once it had a full TTL to check in. The same holds after
the controller itself stood still for more than a TTL (SIGSTOP, a suspended VM, a stalled disk).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Callable

from plum.common.vocab import deployment_of, new_instance_id
from plum.controller.deployments import has_host_ports
from plum.controller.nodes import NodeRepo
from plum.controller.placement import Placement, candidates, plan_replacements
from plum.controller.planning import Instance, plan_failover
from plum.controller.store import Row, Store, loads

log = logging.getLogger(__name__)

_CHUNK = 500
_VICTIMS_SQL = (
    "SELECT a.instance_id, a.node_id, a.seq, a.entry_id, e.desired_replicas, e.placement, e.ports FROM assignments a"
    " JOIN deployments d ON d.deployment_id = a.deployment_id JOIN deployment_entries e ON e.entry_id = a.entry_id"
    " WHERE a.node_id IN ({placeholders}) AND a.desired = 'Running' AND d.status = 'Running' ORDER BY a.seq"
)


class Failover:
    def __init__(
        self,
        store: Store,
        nodes: NodeRepo,
        interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.nodes = nodes
        self.interval = interval
        self.clock = clock
        self.started_at = clock()
        self.last_round = self.started_at
        self.moved = 0
        self._warned_no_target = 0.0

    def victims(self, bad_nodes: list[str]) -> list[Row]:
        found: list[Row] = []
        for i in range(0, len(bad_nodes), _CHUNK):
            chunk = bad_nodes[i : i + _CHUNK]
            placeholders = ",".join("?" * len(chunk))
            found += self.store.all(_VICTIMS_SQL.format(placeholders=placeholders), chunk)
        return found

    def load(self, healthy: list[str]) -> dict[str, int]:
        counts = dict.fromkeys(healthy, 0)
        for row in self.store.all(
            "SELECT node_id, COUNT(*) AS n FROM assignments WHERE desired != 'Lost' GROUP BY node_id"
        ):
            if row["node_id"] in counts:
                counts[row["node_id"]] = row["n"]
        return counts

    def plan(self, victims: Sequence[Row], healthy: list[str]) -> list[tuple[Instance, str]]:
        """A target for each victim: pinned entries by the fewest instances, placed ones by their placement."""
        load = self.load(healthy)
        pinned = [_instance(r) for r in victims if r["desired_replicas"] is None]
        moves = plan_failover(pinned, load)
        for _, target in moves:
            load[target] += 1
        placed: dict[int, list[Row]] = {}
        for row in victims:
            if row["desired_replicas"] is not None:
                placed.setdefault(row["entry_id"], []).append(row)
        node_labels = {n: node.labels for n, node in self.nodes.nodes.items()}
        for entry_id, rows in sorted(placed.items()):
            placement = Placement.from_json(loads(rows[0]["placement"], {}))
            entry_moves = plan_replacements(
                [_instance(r) for r in rows],
                self._live(entry_id),
                candidates(placement, node_labels, healthy),
                load,
                one_per_node=has_host_ports(rows[0]["ports"]),
            )
            for _, target in entry_moves:
                load[target] = load.get(target, 0) + 1
            moves += entry_moves
        return moves

    def _live(self, entry_id: int) -> list[Instance]:
        rows = self.store.all(
            "SELECT instance_id, node_id, seq FROM assignments WHERE entry_id=? AND desired != 'Lost'", (entry_id,)
        )
        return [_instance(r) for r in rows]

    def run_once(self) -> int:
        """One round; returns how many instances moved."""
        now = self.clock()
        if now - self.last_round > self.interval + self.nodes.ttl:  # heard nothing either: a TTL to check in
            log.warning(
                "failover: the controller stood still for %.1fs; judging nodes again in %gs",
                now - self.last_round,
                self.nodes.ttl,
            )
            self.started_at = now
        self.last_round = now
        if now - self.started_at <= self.nodes.ttl:
            return 0
        bad = self.nodes.unhealthy(now)
        if not bad:
            return 0
        victims = self.victims(bad)
        if not victims:
            return 0
        healthy = self.nodes.healthy(now)
        if not healthy:
            if now - self._warned_no_target > 60:
                self._warned_no_target = now
                log.warning(
                    "failover: %d instance(s) on unhealthy nodes %s but no healthy node to move them to",
                    len(victims),
                    ", ".join(bad),
                )
            return 0
        moves = self.plan(victims, healthy)
        done = []
        with self.store.write() as tx:
            for victim, target in moves:
                replacement = new_instance_id(deployment_of(victim.instance_id))
                updated = tx.execute(
                    "UPDATE assignments SET desired='Lost', replaced_by=? WHERE instance_id=? AND desired='Running'",
                    (replacement, victim.instance_id),
                ).rowcount
                if updated != 1:
                    continue
                tx.execute(
                    "INSERT INTO assignments(instance_id, deployment_id, entry_id, node_id, desired, created_at,"
                    " revision, revision_at) SELECT ?, deployment_id, entry_id, ?, 'Running', ?, revision, ?"
                    " FROM assignments WHERE instance_id=?",
                    (replacement, target, now, now, victim.instance_id),
                )
                tx.execute("DELETE FROM endpoints WHERE instance_id=?", (victim.instance_id,))
                tx.nudge(target)
                done.append((victim, target, replacement))
        for victim, target, replacement in done:
            log.warning(
                "failover: instance %s on unhealthy node %s replaced by %s on %s",
                victim.instance_id,
                victim.node_id,
                replacement,
                target,
            )
        self.moved += len(done)
        return len(done)

    async def run(self) -> None:
        log.info("failover enabled: every %gs, nodes unhealthy after %gs", self.interval, self.nodes.ttl)
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.run_once()
            except Exception:
                log.exception("failover round failed; retrying next round")


def _instance(row: Row) -> Instance:
    return Instance(row["instance_id"], row["node_id"], row["seq"])
