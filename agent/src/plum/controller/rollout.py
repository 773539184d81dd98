"""Rolling updates, pure: from the instances' reported phases and a clock, what one step of a rollout does.

A rollout moves the instances of the changed entries from revision ``previous`` to ``revision`` in place
(same instance ids). At most ``max_unavailable`` updated instances are not yet healthy at once; an updated
instance is healthy once it reports Running for ``min_healthy_seconds`` since it was switched. A Failed or
BackOff report after the switch, or an instance not healthy within ``progress_deadline_seconds`` of its
switch, stops the rollout: with ``auto_rollback`` every updated instance goes back to ``previous``.
RolloutLoop drives RolloutRepo's steps (rollouts.py, the SQL) on a clock; everything above it is pure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from plum.common.vocab import Phase
from plum.controller.errors import Invalid

if TYPE_CHECKING:  # the repository imports this module's pure part
    from plum.controller.rollouts import RolloutRepo

log = logging.getLogger(__name__)

RUNNING = "Running"
SUCCEEDED = "Succeeded"
ROLLED_BACK = "RolledBack"
FAILED = "Failed"
STATES = (RUNNING, SUCCEEDED, ROLLED_BACK, FAILED)

_BROKEN = (Phase.FAILED.value, Phase.BACKOFF.value)


@dataclass(frozen=True)
class UpdatePolicy:
    max_unavailable: int = 1
    min_healthy_seconds: float = 10.0
    progress_deadline_seconds: float = 120.0
    auto_rollback: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "maxUnavailable": self.max_unavailable,
            "minHealthySeconds": self.min_healthy_seconds,
            "progressDeadlineSeconds": self.progress_deadline_seconds,
            "autoRollback": self.auto_rollback,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], field_name: str = "update") -> UpdatePolicy:
        """A policy from its JSON (missing keys keep their defaults); Invalid names the bad key."""
        allowed = ("maxUnavailable", "minHealthySeconds", "progressDeadlineSeconds", "autoRollback")
        for key in data:
            if key not in allowed:
                raise Invalid(f"{field_name}.{key}", f"unknown key (allowed: {', '.join(allowed)})")
        base = cls()
        max_unavailable = data.get("maxUnavailable", base.max_unavailable)
        if isinstance(max_unavailable, bool) or not isinstance(max_unavailable, int) or max_unavailable < 1:
            raise Invalid(f"{field_name}.maxUnavailable", f"expected an integer >= 1, got {max_unavailable!r}")
        seconds = {}
        for key, default in (
            ("minHealthySeconds", base.min_healthy_seconds),
            ("progressDeadlineSeconds", base.progress_deadline_seconds),
        ):
            value = data.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 86400:
                raise Invalid(f"{field_name}.{key}", f"expected a number of seconds from 0 to 86400, got {value!r}")
            seconds[key] = float(value)
        auto_rollback = data.get("autoRollback", base.auto_rollback)
        if not isinstance(auto_rollback, bool):
            raise Invalid(f"{field_name}.autoRollback", f"expected true or false, got {auto_rollback!r}")
        return cls(max_unavailable, seconds["minHealthySeconds"], seconds["progressDeadlineSeconds"], auto_rollback)


@dataclass(frozen=True)
class Member:
    """One instance of a changed entry, as the controller last heard of it."""

    instance_id: str
    seq: int
    revision: int
    switched_at: float  # when it was pointed at its revision (its creation for a new instance)
    phase: str
    phase_since: float  # when it reported this phase first
    reported_at: float  # its last report
    running: bool = True  # desired Running in a Running deployment: False ones take the revision at once
    node_up: bool = True  # its node heartbeats: a silent node's last report proves nothing


@dataclass(frozen=True)
class Step:
    switch: list[str] = field(default_factory=list)  # instance ids to point at ``revision`` now
    revert: list[str] = field(default_factory=list)  # instance ids to point back at ``previous`` now
    state: str = RUNNING
    updated: int = 0
    healthy: int = 0
    total: int = 0
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.state != RUNNING


def is_healthy(member: Member, now: float, policy: UpdatePolicy) -> bool:
    if not member.running:
        return True
    since = max(member.switched_at, member.phase_since)
    return member.node_up and member.phase == Phase.RUNNING.value and now - since >= policy.min_healthy_seconds


def is_broken(member: Member) -> bool:
    """Failed or BackOff, reported after the switch (an earlier report is the old revision's)."""
    return member.running and member.phase in _BROKEN and member.reported_at >= member.switched_at


def step(members: Sequence[Member], revision: int, policy: UpdatePolicy, now: float) -> Step:
    """One step of a running rollout to ``revision``."""
    updated = [m for m in members if m.revision == revision]
    healthy = [m for m in updated if is_healthy(m, now, policy)]
    total = len(members)
    broken = next((m for m in updated if is_broken(m)), None)
    late = next(
        (
            m
            for m in updated
            if not is_healthy(m, now, policy) and now - m.switched_at > policy.progress_deadline_seconds
        ),
        None,
    )
    if broken is not None or late is not None:
        if broken is not None:
            why = f"instance {broken.instance_id} reported {broken.phase} on revision {revision}"
        else:
            assert late is not None
            why = (
                f"instance {late.instance_id} was not healthy within {policy.progress_deadline_seconds:g}s "
                f"(last phase {late.phase or 'none'})"
            )
        if policy.auto_rollback:
            revert = [m.instance_id for m in updated]
            return Step([], revert, ROLLED_BACK, len(updated), len(healthy), total, f"{why}; rolled back")
        return Step([], [], FAILED, len(updated), len(healthy), total, f"{why}; stopped (autoRollback is off)")
    if len(healthy) == total:
        return Step([], [], SUCCEEDED, len(updated), len(healthy), total, f"{total} instance(s) on revision {revision}")
    waiting = sorted((m for m in members if m.revision != revision), key=lambda m: m.seq)
    idle = [m.instance_id for m in waiting if not m.running]  # nothing runs: nothing to keep available
    slots = policy.max_unavailable - (len(updated) - len(healthy))
    switch = idle + [m.instance_id for m in waiting if m.running][: max(slots, 0)]
    now_healthy = len(healthy) + len(idle)
    message = f"{now_healthy}/{total} instance(s) healthy on revision {revision}"
    return Step(switch, [], RUNNING, len(updated) + len(switch), now_healthy, total, message)


Announce = Callable[[str, dict[str, Any]], None]


class RolloutLoop:
    """Advances every running rollout each ``interval``: one transaction per deployment and step. Every
    change (instances switched, more healthy, the end) is announced as a "rollout" event."""

    def __init__(
        self, rollouts: RolloutRepo, interval: float, announce: Announce, clock: Callable[[], float] = time.time
    ) -> None:
        self.rollouts = rollouts
        self.interval = interval
        self.announce = announce
        self.clock = clock
        self._seen: dict[str, tuple[int, int]] = {}  # deployment -> (updated, healthy) last announced

    def run_once(self) -> list[Step]:
        steps = []
        for deployment_id in self.rollouts.running():
            done = self.rollouts.advance(deployment_id, self.clock())
            if done is None:
                continue
            steps.append(done)
            progress = (done.updated, done.healthy)
            if done.finished:
                self._seen.pop(deployment_id, None)
                self.announce("rollout", self.rollouts.event(deployment_id, "finished"))
            elif self._seen.get(deployment_id) != progress:
                self._seen[deployment_id] = progress
                self.announce("rollout", self.rollouts.event(deployment_id, "progress"))
        return steps

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.run_once()
            except Exception:
                log.exception("rollout step failed; retrying next round")
