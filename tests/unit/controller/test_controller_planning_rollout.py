"""Rolling updates: the pure step of a rollout, driven by a fake clock (no sleeps)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from plum.controller.errors import Invalid
from plum.controller.rollout import (
    FAILED,
    ROLLED_BACK,
    RUNNING,
    SUCCEEDED,
    Member,
    UpdatePolicy,
    step,
)

POLICY = UpdatePolicy(max_unavailable=1, min_healthy_seconds=10, progress_deadline_seconds=60)


class Fleet:
    """Instances on revision 1 that report Running; ``tick`` applies a step as the repository would."""

    def __init__(self, count: int, policy: UpdatePolicy = POLICY) -> None:
        self.now = 1000.0
        self.policy = policy
        self.members = {
            f"i{k}": Member(
                f"i{k}",
                k,
                1,
                switched_at=0,
                phase="Running",
                phase_since=0,
                reported_at=0,
            )
            for k in range(count)
        }

    def tick(self, seconds: float = 0) -> str:
        self.now += seconds
        result = step(list(self.members.values()), 2, self.policy, self.now)
        for instance_id in result.switch:
            self.members[instance_id] = replace(self.members[instance_id], revision=2, switched_at=self.now)
        for instance_id in result.revert:
            self.members[instance_id] = replace(self.members[instance_id], revision=1, switched_at=self.now)
        self.last = result
        return result.state

    def report(self, instance_id: str, phase: str) -> None:
        member = self.members[instance_id]
        since = member.phase_since if member.phase == phase else self.now
        self.members[instance_id] = replace(member, phase=phase, phase_since=since, reported_at=self.now)

    def on(self, revision: int) -> list[str]:
        return sorted(m.instance_id for m in self.members.values() if m.revision == revision)


def test_one_instance_at_a_time_each_healthy_for_the_minimum_before_the_next() -> None:
    fleet = Fleet(3)
    assert fleet.tick() == RUNNING
    assert fleet.on(2) == ["i0"]
    assert fleet.tick(9.9) == RUNNING and fleet.on(2) == ["i0"], "not healthy before min_healthy_seconds"
    assert fleet.tick(0.2) == RUNNING and fleet.on(2) == ["i0", "i1"]
    assert fleet.last.updated == 2 and fleet.last.healthy == 1 and fleet.last.total == 3
    fleet.tick(10.1)
    assert fleet.on(2) == ["i0", "i1", "i2"]
    assert fleet.tick(10.1) == SUCCEEDED
    assert fleet.last.healthy == 3


def test_max_unavailable_switches_that_many_at_once() -> None:
    fleet = Fleet(5, replace(POLICY, max_unavailable=2))
    fleet.tick()
    assert fleet.on(2) == ["i0", "i1"]
    fleet.tick(5)
    assert fleet.on(2) == ["i0", "i1"], "both still inside their minimum"


def test_a_restart_after_the_switch_restarts_the_health_clock() -> None:
    fleet = Fleet(2)
    fleet.tick()
    fleet.tick(5)
    fleet.report("i0", "Starting")
    fleet.tick(1)
    fleet.report("i0", "Running")
    assert fleet.tick(9) == RUNNING and fleet.on(2) == ["i0"]
    fleet.tick(1.1)
    assert fleet.on(2) == ["i0", "i1"]


def test_a_crash_on_the_new_revision_rolls_every_updated_instance_back() -> None:
    fleet = Fleet(3, replace(POLICY, max_unavailable=2))
    fleet.tick()
    fleet.tick(1)
    fleet.report("i1", "BackOff")
    assert fleet.tick(0.5) == ROLLED_BACK
    assert fleet.on(2) == [], "both updated instances go back"
    assert "i1 reported BackOff" in fleet.last.message


def test_a_failed_report_from_before_the_switch_is_the_old_revisions() -> None:
    fleet = Fleet(2)
    fleet.report("i0", "Failed")
    fleet.tick(1)  # i0 switched after its report
    assert fleet.tick(1) == RUNNING


def test_not_healthy_within_the_deadline_rolls_back() -> None:
    fleet = Fleet(2)
    fleet.tick()
    fleet.report("i0", "Starting")
    assert fleet.tick(59) == RUNNING
    assert fleet.tick(2) == ROLLED_BACK
    assert "not healthy within 60s" in fleet.last.message
    assert fleet.on(1) == ["i0", "i1"]


def test_without_auto_rollback_the_rollout_stops_where_it_is() -> None:
    fleet = Fleet(2, replace(POLICY, auto_rollback=False))
    fleet.tick()
    fleet.report("i0", "Failed")
    assert fleet.tick(1) == FAILED
    assert fleet.on(2) == ["i0"]
    assert fleet.last.revert == []


def test_a_silent_node_proves_nothing() -> None:
    fleet = Fleet(1)
    fleet.tick()
    fleet.members["i0"] = replace(fleet.members["i0"], node_up=False)
    assert fleet.tick(30) == RUNNING
    assert fleet.tick(31) == ROLLED_BACK


def test_instances_that_do_not_run_take_the_revision_at_once() -> None:
    fleet = Fleet(3)
    for instance_id in fleet.members:
        fleet.members[instance_id] = replace(fleet.members[instance_id], running=False, phase="Stopped")
    assert fleet.tick() == RUNNING
    assert fleet.on(2) == ["i0", "i1", "i2"]
    assert fleet.tick() == SUCCEEDED


def test_policy_from_json_defaults_and_errors() -> None:
    assert UpdatePolicy.from_json({}) == UpdatePolicy(1, 10.0, 120.0, True)
    policy = UpdatePolicy.from_json({"maxUnavailable": 2, "minHealthySeconds": 0, "autoRollback": False})
    assert policy.to_json() == {
        "maxUnavailable": 2,
        "minHealthySeconds": 0.0,
        "progressDeadlineSeconds": 120.0,
        "autoRollback": False,
    }
    for bad, field in (
        ({"maxUnavailable": 0}, "update.maxUnavailable"),
        ({"maxUnavailable": True}, "update.maxUnavailable"),
        ({"minHealthySeconds": "10"}, "update.minHealthySeconds"),
        ({"progressDeadlineSeconds": -1}, "update.progressDeadlineSeconds"),
        ({"autoRollback": "yes"}, "update.autoRollback"),
        ({"surge": 1}, "update.surge"),
    ):
        with pytest.raises(Invalid) as caught:
            UpdatePolicy.from_json(bad)
        assert caught.value.field == field
