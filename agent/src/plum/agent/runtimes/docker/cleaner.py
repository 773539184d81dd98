"""Which of this node's containers nobody answers for: strays to remove.

Modelled on Nomad's dangling-container reconciler: it asks its owner what is tracked (the supervisor's
Expected instances, through the runtime's ``tracked`` callback) and never reads the supervisor's files.
A container is kept when the runtime watches it, keeps it to start again, or is creating or re-adopting
its app's container right now, or when an Expected instance of this runtime is its own. Any other is
removed once it is older than a creation grace (a container created a moment ago may be someone's
start whose record is not written yet); one the runtime itself failed to remove goes at once.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Optional

from plum.agent.runtimes.base import Expected
from plum.agent.runtimes.docker.plan import LABEL_APP, LABEL_INSTANCE

CREATION_GRACE = 5.0  # seconds: younger unknown containers are looked at again once they are older
GARBAGE_AFTER = 60.0  # an ended container of a tracked instance that nobody keeps goes after this long


@dataclass(frozen=True)
class Kept:
    """What the runtime itself keeps, at the moment of one pass."""

    containers: set[str] = field(default_factory=set)  # watched, or kept to be started again
    busy_apps: set[str] = field(default_factory=set)  # being started or re-adopted right now
    settled_apps: set[str] = field(default_factory=set)  # started, re-adopted or stopped by this agent
    leftovers: set[str] = field(default_factory=set)  # its own removals that failed


@dataclass(frozen=True)
class Verdict:
    strays: list[dict[str, Any]]  # container list entries to remove
    recheck_in: Optional[float]  # seconds until a young unknown container is old enough to judge


class StrayCleaner:
    def __init__(self, runtime: str) -> None:
        self.runtime = runtime

    def judge(self, containers: list[dict[str, Any]], tracked: Collection[Expected], kept: Kept, now: float) -> Verdict:
        """The containers (this node's, from one list) that nobody answers for."""
        expected = {(e.app_name, e.instance_id): e for e in tracked if e.runtime == self.runtime}
        strays: list[dict[str, Any]] = []
        recheck: Optional[float] = None
        for summary in containers:
            cid = str(summary["Id"])
            labels = summary.get("Labels") or {}
            app = str(labels.get(LABEL_APP) or "")
            if cid in kept.containers or app in kept.busy_apps:
                continue
            if cid in kept.leftovers:
                strays.append(summary)
                continue
            owner = expected.get((app, str(labels.get(LABEL_INSTANCE) or "")))
            running = summary.get("State") == "running"
            if owner is not None and self._owns(owner, cid, kept):
                if running:
                    continue
                limit = GARBAGE_AFTER  # ended: never re-adopted, so of no use once nobody keeps it
            else:
                limit = CREATION_GRACE
            age = now - float(summary.get("Created") or now)
            if age >= limit:
                strays.append(summary)
            elif limit == CREATION_GRACE:
                recheck = min(recheck or limit, limit - age)
        return Verdict(strays, recheck)

    @staticmethod
    def _owns(owner: Expected, cid: str, kept: Kept) -> bool:
        """Whether cid may be owner's container: its saved one, or, with none saved, any of its instance
        until this agent has run the app itself (a lost record: the container is found by its labels)."""
        saved = str((owner.state or {}).get("container_id") or "")
        if saved:
            return saved == cid
        return owner.app_name not in kept.settled_apps
