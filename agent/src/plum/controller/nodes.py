"""Nodes and their heartbeats.

Heartbeats are the hottest path (every agent, every few seconds), so they are answered from memory:
a known node with the same address and labels only moves its ``last_seen`` in RAM, and a timer
writes the changed rows to SQLite in one batch. A new node, or a changed address or labels, is
written at once (assignments reference the node row). Health is always computed from RAM.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from plum.controller.errors import Conflict, NotFound
from plum.controller.store import Store, dumps, loads

log = logging.getLogger(__name__)

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"


@dataclass
class Node:
    node_id: str
    ip: str
    labels: dict[str, str] = field(default_factory=dict)
    last_seen: float = 0.0

    def health(self, now: float, ttl: float) -> str:
        return HEALTHY if now - self.last_seen <= ttl else UNHEALTHY

    def to_json(self, now: float, ttl: float) -> dict[str, Any]:
        return {
            "nodeId": self.node_id,
            "ip": self.ip,
            "labels": self.labels,
            "lastSeen": int(self.last_seen),
            "health": self.health(now, ttl),
        }


class NodeRepo:
    def __init__(self, store: Store, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self.nodes: dict[str, Node] = {}
        self._dirty: set[str] = set()

    def load(self) -> None:
        for row in self.store.all("SELECT node_id, ip, labels, last_seen FROM nodes"):
            self.nodes[row["node_id"]] = Node(row["node_id"], row["ip"], loads(row["labels"], {}), row["last_seen"])
        log.info("loaded %d node(s)", len(self.nodes))

    def get(self, node_id: str) -> Optional[Node]:
        return self.nodes.get(node_id)

    def is_healthy(self, node_id: str, now: Optional[float] = None) -> bool:
        node = self.nodes.get(node_id)
        return node is not None and node.health(self.clock() if now is None else now, self.ttl) == HEALTHY

    def heartbeat(self, node_id: str, ip: str, labels: Optional[dict[str, str]]) -> Node:
        """Record a heartbeat; 409 when this id is alive at another address (two agents, one id)."""
        now = self.clock()
        node = self.nodes.get(node_id)
        if node is not None and node.ip != ip and node.ip and now - node.last_seen <= self.ttl:
            raise Conflict(
                f"node id {node_id!r} is already alive at {node.ip} (last heartbeat {now - node.last_seen:.1f}s "
                f"ago); refusing the heartbeat from {ip}: give each agent its own AGENT_NODE_ID",
                field="nodeId",
                nodeId=node_id,
                aliveIp=node.ip,
                ip=ip,
            )
        if node is None or node.ip != ip or (labels is not None and labels != node.labels):
            new_labels = labels if labels is not None else (node.labels if node else {})
            with self.store.write(feeds=False) as tx:
                tx.execute(
                    "INSERT INTO nodes(node_id, ip, labels, last_seen) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(node_id) DO UPDATE SET ip=excluded.ip, labels=excluded.labels, "
                    "last_seen=excluded.last_seen",
                    (node_id, ip, dumps(new_labels), now),
                )
            if node is None:
                log.info("node %s joined from %s", node_id, ip)
                node = self.nodes[node_id] = Node(node_id, ip, new_labels, now)
            else:
                log.info("node %s now at %s labels %s", node_id, ip, new_labels)
                node.ip, node.labels = ip, new_labels
            self._dirty.discard(node_id)
        else:
            self._dirty.add(node_id)
        node.last_seen = now
        return node

    def flush(self) -> int:
        """Write the batched ``last_seen`` values; returns how many rows were written."""
        if not self._dirty:
            return 0
        rows = [(self.nodes[n].last_seen, n) for n in self._dirty if n in self.nodes]
        self._dirty.clear()
        with self.store.write(feeds=False) as tx:
            tx.executemany("UPDATE nodes SET last_seen=? WHERE node_id=?", rows)
        return len(rows)

    def in_use(self, node_id: str) -> int:
        row = self.store.one("SELECT COUNT(*) FROM assignments WHERE node_id=? AND desired != 'Lost'", (node_id,))
        return int(row[0]) if row else 0

    def delete(self, node_id: str) -> None:
        """Forget a node; 404 when unknown, 409 while instances are assigned to it."""
        if node_id not in self.nodes:
            raise NotFound(f"no such node: {node_id}", field="nodeId")
        count = self.in_use(node_id)
        if count:
            raise Conflict(
                f"node in use: {node_id} has {count} assigned instance(s); delete or move them first",
                field="nodeId",
            )
        with self.store.write() as tx:  # the node's 'removed' list changes
            # only instances that failover replaced remain: they are history, not work
            tx.execute("DELETE FROM assignments WHERE node_id=? AND desired='Lost'", (node_id,))
            tx.execute("DELETE FROM nodes WHERE node_id=?", (node_id,))
        del self.nodes[node_id]
        self._dirty.discard(node_id)
        log.info("node %s deleted", node_id)

    def listing(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [self.nodes[n].to_json(now, self.ttl) for n in sorted(self.nodes)]

    def unhealthy(self, now: float) -> list[str]:
        return sorted(n for n, node in self.nodes.items() if now - node.last_seen > self.ttl)

    def healthy(self, now: float) -> list[str]:
        return sorted(n for n, node in self.nodes.items() if now - node.last_seen <= self.ttl)
