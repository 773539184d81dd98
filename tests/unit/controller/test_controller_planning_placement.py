"""Controller placement: pure arithmetic over candidates, spread, scale down and failover re-placement."""

from __future__ import annotations

import pytest

from plum.controller.errors import Unavailable
from plum.controller.placement import (
    Placement,
    candidates,
    plan_placed,
    plan_replacements,
)
from plum.controller.planning import Instance

LABELS = {
    "A": {"zone": "x"},
    "B": {"zone": "x", "disk": "ssd"},
    "C": {"zone": "y"},
    "D": {"zone": "x"},
}


def insts(*specs: tuple[str, str, int]) -> list[Instance]:
    return [Instance(i, n, s) for i, n, s in specs]


def apply(current: list[Instance], add: dict[str, int], first_seq: int = 100) -> list[Instance]:
    out = list(current)
    for node, count in sorted(add.items()):
        for _ in range(count):
            first_seq += 1
            out.append(Instance(f"new{first_seq}", node, first_seq))
    return out


def test_candidates_are_the_listed_healthy_nodes_whose_labels_match() -> None:
    healthy = {"A", "B", "C"}
    assert candidates(Placement(), LABELS, healthy) == ["A", "B", "C"]
    assert candidates(Placement(labels={"zone": "x"}), LABELS, healthy) == ["A", "B"]
    assert candidates(Placement(("B", "C", "D")), LABELS, healthy) == ["B", "C"], "D is down"
    assert candidates(Placement(("A", "B"), {"disk": "ssd"}), LABELS, healthy) == ["B"]


def test_spread_by_the_entrys_instances_then_the_nodes_load_then_id() -> None:
    plan = plan_placed([], 4, ["A", "B", "C"], {"A": 5, "B": 0, "C": 0}, one_per_node=False)
    assert plan.add == {"A": 1, "B": 2, "C": 1}, "B and C first (idle), then A; B wins the tie by id"
    assert plan.remove == []


def test_the_same_request_again_changes_nothing_even_with_a_node_down() -> None:
    current = insts(("i1", "A", 1), ("i2", "B", 2), ("i3", "C", 3))
    assert plan_placed(current, 3, ["A", "B", "C"], {}, one_per_node=False).empty
    assert plan_placed(current, 3, ["A", "B"], {}, one_per_node=False).empty, "C down: failover's job, not a move"


def test_scale_down_removes_from_the_nodes_holding_most_of_the_entry_newest_first() -> None:
    current = insts(
        ("a1", "A", 1),
        ("a2", "A", 4),
        ("a3", "A", 6),
        ("b1", "B", 2),
        ("b2", "B", 5),
        ("c1", "C", 3),
    )
    plan = plan_placed(current, 3, ["A", "B", "C"], {}, one_per_node=False, healthy={"A", "B", "C"})
    assert plan.remove == ["a3", "b2", "a2"]
    assert plan.add == {}


def test_scale_down_prefers_a_node_that_is_down_on_a_tie() -> None:
    current = insts(("a1", "A", 1), ("b1", "B", 2))
    assert plan_placed(current, 1, ["B"], {}, one_per_node=False, healthy={"B"}).remove == ["a1"]


def test_host_ports_put_at_most_one_instance_per_node() -> None:
    plan = plan_placed(insts(("a1", "A", 1)), 3, ["A", "B", "C"], {}, one_per_node=True)
    assert plan.add == {"B": 1, "C": 1}
    with pytest.raises(Unavailable, match="one per node"):
        plan_placed([], 4, ["A", "B", "C"], {}, one_per_node=True, what="entries[0].placement")


def test_no_healthy_candidate_is_unavailable_naming_the_placement() -> None:
    with pytest.raises(Unavailable, match=r"entries\[1\]\.placement") as caught:
        plan_placed(
            [],
            1,
            [],
            {},
            one_per_node=False,
            what="entries[1].placement (labels zone=z)",
        )
    assert caught.value.details["placement"] == "entries[1].placement (labels zone=z)"


def test_failover_replaces_on_a_healthy_candidate_and_never_on_the_dead_node() -> None:
    current = insts(("a1", "A", 1), ("b1", "B", 2), ("c1", "C", 3), ("c2", "C", 4))
    victims = [i for i in current if i.node_id == "C"]
    moves = plan_replacements(victims, current, ["A", "B", "D"], {"A": 1, "B": 1, "D": 0}, one_per_node=False)
    assert [(v.instance_id, t) for v, t in moves] == [("c1", "D"), ("c2", "A")]


def test_failover_with_host_ports_leaves_a_victim_without_room_where_it_is() -> None:
    current = insts(("a1", "A", 1), ("b1", "B", 2))
    moves = plan_replacements([current[1]], current, ["A"], {"A": 1}, one_per_node=True)
    assert moves == []


def test_rerunning_the_request_after_a_failover_changes_nothing_and_the_dead_node_gets_nothing() -> None:
    healthy = ["A", "B", "C"]
    current = apply([], plan_placed([], 3, healthy, {}, one_per_node=False).add)
    assert sorted(i.node_id for i in current) == ["A", "B", "C"]
    # C dies: failover replaces its instance on a healthy candidate
    victims = [i for i in current if i.node_id == "C"]
    moves = plan_replacements(victims, current, ["A", "B"], {"A": 1, "B": 1}, one_per_node=False)
    assert [t for _, t in moves] == ["A"]
    after = [i for i in current if i.node_id != "C"] + [Instance("moved", "A", 200)]
    # the same request again, C still down or back: nothing is added, removed or moved back
    for up in (["A", "B"], ["A", "B", "C"]):
        plan = plan_placed(after, 3, up, {"A": 2, "B": 1}, one_per_node=False, healthy=up)
        assert plan.empty, up
    # scaling up later spreads to the node that came back (it has none of the entry) without moving any
    plan = plan_placed(after, 4, ["A", "B", "C"], {"A": 2, "B": 1}, one_per_node=False)
    assert plan.add == {"C": 1}


def test_placement_json_round_trip() -> None:
    placement = Placement(("n1", "n2"), {"zone": "x"})
    assert Placement.from_json(placement.to_json()) == placement
    assert Placement().to_json() == {}
    assert Placement.from_json({}) == Placement()
