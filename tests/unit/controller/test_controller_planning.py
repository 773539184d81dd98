"""Replica planning and failover placement: pure arithmetic."""

from __future__ import annotations

import pytest

from plum.controller.planning import Instance, plan_failover, plan_scale, replica_counts


def insts(*specs: tuple[str, str, int]) -> list[Instance]:
    return [Instance(i, n, s) for i, n, s in specs]


def test_scale_up_adds_only_the_difference() -> None:
    current = insts(("a1", "A", 1), ("b1", "B", 2))
    plan = plan_scale(current, {"A": 3, "C": 1})
    assert plan.add == {"A": 2, "C": 1}
    assert plan.remove == []


def test_scale_down_removes_the_newest_first() -> None:
    current = insts(("a1", "A", 1), ("a2", "A", 5), ("a3", "A", 3), ("b1", "B", 2))
    plan = plan_scale(current, {"A": 1})
    assert plan.add == {}
    assert plan.remove == ["a2", "a3"]


def test_zero_removes_all_and_unlisted_nodes_are_untouched() -> None:
    current = insts(("a1", "A", 1), ("b1", "B", 2), ("b2", "B", 4))
    plan = plan_scale(current, {"B": 0})
    assert sorted(plan.remove) == ["b1", "b2"]
    assert plan.add == {}


def test_same_counts_is_an_empty_plan() -> None:
    current = insts(("a1", "A", 1), ("b1", "B", 2))
    assert plan_scale(current, {"A": 1, "B": 1}).empty
    assert plan_scale(current, {}).empty


def test_negative_count_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        plan_scale([], {"A": -1})


def test_replica_counts() -> None:
    assert replica_counts(insts(("a", "B", 1), ("b", "A", 2), ("c", "B", 3))) == {
        "A": 1,
        "B": 2,
    }


def test_failover_picks_fewest_instances_then_node_id() -> None:
    victims = insts(("x1", "dead", 1))
    moves = plan_failover(victims, {"n2": 1, "n1": 1, "n3": 4})
    assert [(v.instance_id, t) for v, t in moves] == [("x1", "n1")]


def test_failover_spreads_several_victims() -> None:
    victims = insts(("x1", "dead", 1), ("x2", "dead", 2), ("x3", "dead", 3), ("x4", "dead", 4))
    moves = plan_failover(victims, {"A": 0, "B": 2})
    # A has 0, 1, then ties B at 2 (A wins by id), then B has fewer
    assert [t for _, t in moves] == ["A", "A", "A", "B"]
    counts = {"A": 0, "B": 2}
    for _, target in moves:
        counts[target] += 1
    assert counts == {"A": 3, "B": 3}


def test_failover_without_healthy_nodes_moves_nothing() -> None:
    assert plan_failover(insts(("x1", "dead", 1)), {}) == []


def test_failover_keeps_every_victim_exactly_once() -> None:
    victims = insts(*((f"i{k}", "dead", k) for k in range(50)))
    moves = plan_failover(victims, {"A": 3, "B": 0, "C": 10})
    assert sorted(v.instance_id for v, _ in moves) == sorted(v.instance_id for v in victims)
