"""Pure placement arithmetic: scaling an entry's replicas and choosing failover targets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Instance:
    instance_id: str
    node_id: str
    seq: int  # creation order: higher is newer


@dataclass(frozen=True)
class ScalePlan:
    add: dict[str, int]  # node -> how many new instances
    remove: list[str]  # instance ids, newest first

    @property
    def empty(self) -> bool:
        return not self.add and not self.remove


def plan_scale(current: Sequence[Instance], wanted: Mapping[str, int]) -> ScalePlan:
    """Reach ``wanted`` replicas per listed node; nodes not listed keep what they have.

    Scaling down removes the newest instances of that node first, so long-running ones survive.
    """
    by_node: dict[str, list[Instance]] = {}
    for inst in current:
        by_node.setdefault(inst.node_id, []).append(inst)
    add: dict[str, int] = {}
    remove: list[str] = []
    for node in sorted(wanted):
        want = wanted[node]
        if want < 0:
            raise ValueError(f"negative replica count for {node}: {want}")
        have = sorted(by_node.get(node, []), key=lambda i: i.seq, reverse=True)
        if want > len(have):
            add[node] = want - len(have)
        elif want < len(have):
            remove.extend(i.instance_id for i in have[: len(have) - want])
    return ScalePlan(add, remove)


def replica_counts(current: Sequence[Instance]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for inst in current:
        counts[inst.node_id] = counts.get(inst.node_id, 0) + 1
    return dict(sorted(counts.items()))


def plan_failover(victims: Sequence[Instance], load: Mapping[str, int]) -> list[tuple[Instance, str]]:
    """Give each victim a target: the healthy node with the fewest instances, ties by node id.

    ``load`` maps every healthy node to its current instance count; each placement counts
    toward the next choice, so a dead node's instances spread instead of piling onto one node.
    Returns an empty plan when no node is healthy (never drop a replica for lack of a target).
    """
    if not load:
        return []
    counts = dict(load)
    moves = []
    for victim in sorted(victims, key=lambda i: i.seq):
        target = min(counts, key=lambda n: (counts[n], n))
        counts[target] += 1
        moves.append((victim, target))
    return moves
