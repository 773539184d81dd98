"""Restart policy: one small struct plus the arithmetic that decides when (and whether) to restart.

A crash after a stable run restarts at once; crashes in a row back off exponentially from
``initial_delay`` (doubling, capped at ``max_delay``); a run of ``stable_after`` seconds resets the
sequence. With ``max_restarts`` set, more than that many restarts within ``window`` seconds gives up;
None is no limit (the spec's wire field says 0 for it: AppSpec.restart converts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class RestartPolicy:
    policy: str = "always"
    max_restarts: Optional[int] = None  # None: no limit
    window: float = 60.0
    initial_delay: float = 0.1
    max_delay: float = 30.0
    stable_after: float = 10.0

    def wants_restart(self, exit_code: Optional[int]) -> bool:
        """Whether an exit calls for a restart at all; an unknown exit code counts as a failure."""
        if self.policy == "never":
            return False
        if self.policy == "on-failure":
            return exit_code != 0
        return True


@dataclass
class RestartTracker:
    """Counters that survive agent restarts (saved with the app's state)."""

    consecutive: int = 0
    history: list[float] = field(default_factory=list)

    def next_delay(self, policy: RestartPolicy, run_seconds: float, now: float) -> Optional[float]:
        """Seconds to wait before the next start, or None to give up (restart limit reached)."""
        if run_seconds >= policy.stable_after:
            self.consecutive = 0
        self.consecutive += 1
        self.history = [t for t in self.history if now - t < policy.window]
        if policy.max_restarts is not None and len(self.history) >= policy.max_restarts:
            return None
        self.history.append(now)
        if self.consecutive == 1:
            return 0.0
        return min(policy.initial_delay * 2.0 ** (self.consecutive - 2), policy.max_delay)

    def to_state(self) -> dict[str, Any]:
        return {"consecutive": self.consecutive, "history": list(self.history)}

    @classmethod
    def from_state(cls, data: Optional[dict[str, Any]]) -> RestartTracker:
        """From a saved record (checked by plum.agent.state already)."""
        if not data:
            return cls()
        return cls(int(data.get("consecutive") or 0), [float(t) for t in data.get("history") or []])
