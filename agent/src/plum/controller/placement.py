"""Controller placement, pure: which nodes an entry's N replicas run on, as they scale and as nodes fail.

Rules (docs/deployments.md): healthy candidates only; spread by the fewest instances of this entry, then the
fewest instances on the node overall, then node id. The same request again changes nothing: instances are
only added or removed to reach N, never moved, so a replica on a node that is down stays counted (failover
replaces it) and a node that comes back gets nothing moved back. Scaling down removes from the nodes holding
the most instances of the entry first. An entry with host ports runs at most one instance per node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from plum.controller.errors import Unavailable
from plum.controller.planning import Instance, ScalePlan


@dataclass(frozen=True)
class Placement:
    """Where an entry may run: the listed nodes (all when empty) whose labels hold every key=value."""

    nodes: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    def admits(self, node_id: str, node_labels: Mapping[str, str]) -> bool:
        if self.nodes and node_id not in self.nodes:
            return False
        return all(node_labels.get(key) == value for key, value in self.labels.items())

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {}
        if self.nodes:
            data["nodes"] = list(self.nodes)
        if self.labels:
            data["labels"] = dict(self.labels)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Placement:
        nodes = data.get("nodes") or []
        labels = data.get("labels") or {}
        assert isinstance(nodes, list) and isinstance(labels, dict)
        return cls(tuple(str(n) for n in nodes), {str(k): str(v) for k, v in labels.items()})

    def describe(self) -> str:
        parts = []
        if self.nodes:
            parts.append(f"nodes {', '.join(self.nodes)}")
        if self.labels:
            parts.append("labels " + ", ".join(f"{k}={v}" for k, v in sorted(self.labels.items())))
        return " and ".join(parts) or "any node"


def candidates(
    placement: Placement, node_labels: Mapping[str, Mapping[str, str]], healthy: Collection[str]
) -> list[str]:
    """The healthy nodes the placement admits, sorted by id."""
    return sorted(n for n, labels in node_labels.items() if n in healthy and placement.admits(n, labels))


def _spread_key(node: str, per_entry: Mapping[str, int], load: Mapping[str, int]) -> tuple[int, int, str]:
    return per_entry.get(node, 0), load.get(node, 0), node


def plan_placed(
    current: Sequence[Instance],
    wanted: int,
    candidate_nodes: Sequence[str],
    load: Mapping[str, int],
    *,
    one_per_node: bool,
    healthy: Collection[str] = (),
    what: str = "the placement",
) -> ScalePlan:
    """Reach ``wanted`` instances of one entry. ``load``: every node's instance count over all entries.

    Raises Unavailable when the candidates cannot hold the instances to add (none healthy, or fewer than
    needed for an entry with host ports)."""
    per_entry = Counter(i.node_id for i in current)
    if wanted >= len(current):
        add: Counter[str] = Counter()
        counts = Counter(load)
        for _ in range(wanted - len(current)):
            room = [n for n in candidate_nodes if not (one_per_node and per_entry[n])]
            if not room:
                needs = f"{wanted} instance(s), one per node (host ports)" if one_per_node else f"{wanted} instance(s)"
                raise Unavailable(f"no healthy candidate node left for {what}: it needs {needs}", placement=what)
            target = min(room, key=lambda n: _spread_key(n, per_entry, counts))
            per_entry[target] += 1
            counts[target] += 1
            add[target] += 1
        return ScalePlan(dict(sorted(add.items())), [])
    by_node: dict[str, list[Instance]] = {}
    for inst in current:
        by_node.setdefault(inst.node_id, []).append(inst)
    remove: list[str] = []
    for _ in range(len(current) - wanted):
        # the most instances of the entry first; a node that is down before a live one; then the busier node
        node = max(by_node, key=lambda n: (len(by_node[n]), n not in healthy, load.get(n, 0), n))
        newest = max(by_node[node], key=lambda i: i.seq)
        by_node[node].remove(newest)
        if not by_node[node]:
            del by_node[node]
        remove.append(newest.instance_id)
    return ScalePlan({}, remove)


def plan_replacements(
    victims: Sequence[Instance],
    current: Sequence[Instance],
    candidate_nodes: Sequence[str],
    load: Mapping[str, int],
    *,
    one_per_node: bool,
) -> list[tuple[Instance, str]]:
    """Failover of one controller-placed entry: a healthy candidate for each victim (oldest first), spread
    as on placement. ``current``: the entry's live instances, victims included (they still count until moved,
    so the dead node is never a target). A victim with no room stays where it is."""
    per_entry = Counter(i.node_id for i in current)
    for victim in victims:
        per_entry[victim.node_id] -= 1
    counts = Counter(load)
    moves = []
    for victim in sorted(victims, key=lambda i: i.seq):
        room = [n for n in candidate_nodes if n != victim.node_id and not (one_per_node and per_entry[n])]
        if not room:
            continue
        target = min(room, key=lambda n: _spread_key(n, per_entry, counts))
        per_entry[target] += 1
        counts[target] += 1
        moves.append((victim, target))
    return moves
