"""A runtime and a clock for tests: the supervisor's whole life in milliseconds, without processes or waiting.

FakeRuntime implements the runtime contract with instances that are numbers: starts fail with the queued
errors first, `crash` ends an instance as if it died, and `recover` finds an instance by its saved state
(or by its app-folder marker, as the process runtime does), so one FakeRuntime outlives the supervisors of
a test the way real processes outlive an agent. FakeClock's time moves only when `advance` says so, and
advancing fires the timers that fell due, in order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any, Callable, Optional

from plum.agent.runtimes.base import (
    APP_HOME_ENV,
    RELEASE_ENV,
    ExitCallback,
    ExitInfo,
    Handle,
    Inspection,
    Launch,
    Runtime,
    Usage,
)
from plum.agent.spec import AppSpec
from plum.common.artifact import AppMeta


class FakeTimer:
    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due = due
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Time that stands still until a test advances it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self._now + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.due, next(self._order), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move the time on, firing every timer due by then (a timer a callback sets may fire too)."""
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            due, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, due)
            timer.callback()
        self._now = target

    @property
    def pending(self) -> list[float]:
        """When the timers still waiting fall due."""
        return sorted(due for due, _, timer in self._timers if not timer.cancelled)


class FakeHandle(Handle):
    def __init__(self, pid: int, launch: Launch, started_at: float, on_exit: ExitCallback) -> None:
        self._pid = pid
        self.app_name = launch.app_name
        self.instance_id = launch.instance_id
        self.app_home = launch.env.get(APP_HOME_ENV, "")
        self.release = launch.env.get(RELEASE_ENV) or None
        self.started_at = started_at
        self.on_exit = on_exit
        self.exited = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int:
        return self._pid

    def to_state(self) -> dict[str, Any]:
        return {"pid": self._pid, "start_ticks": self._pid}


class FakeRuntime(Runtime):
    """Instances are numbers (their pids); nothing runs."""

    def __init__(self, clock: FakeClock, name: str = "process") -> None:
        self.name = name
        self.clock = clock
        self.failures: list[Exception] = []  # raised by the next starts, first one first
        self.running: dict[int, FakeHandle] = {}
        self.starts = 0
        self.stopped: list[int] = []  # pids stopped on the supervisor's request
        self.forgotten: list[str] = []  # app names forget() was called for
        self.logs: dict[str, list[str]] = {}  # app name: its output
        self._pids = itertools.count(101)

    def preflight(self, name: str, spec: AppSpec, meta: Optional[AppMeta]) -> None:
        pass

    async def start(self, launch: Launch, on_exit: ExitCallback) -> Handle:
        self.starts += 1
        if self.failures:
            raise self.failures.pop(0)
        handle = FakeHandle(next(self._pids), launch, self.clock.now(), on_exit)
        self.running[handle.pid] = handle
        return handle

    async def recover(self, launch: Launch, state: dict[str, Any], on_exit: ExitCallback) -> Optional[Handle]:
        handle = self.running.get(int(state.get("pid") or 0))
        if handle is None:  # as the process runtime does: found by its app-folder marker and instance id
            mine = [h for h in self._of(launch) if h.instance_id == launch.instance_id]
            handle = mine[-1] if mine else None
        if handle is not None:
            handle.on_exit = on_exit
        return handle

    async def recover_lost(self, launch: Launch, on_exit: ExitCallback) -> list[Handle]:
        found = self._of(launch)
        for handle in found:
            handle.on_exit = on_exit
        return list(found)

    async def stop(self, handle: Handle, timeout: float) -> None:
        assert isinstance(handle, FakeHandle)
        if handle.pid in self.running:
            self.stopped.append(handle.pid)
            self._end(handle, ExitInfo(None, 15, "Signaled", self.clock.now()))

    def crash(self, app_name: str, exit_code: Optional[int] = 1, signal: Optional[int] = None) -> int:
        """End the app's instance as if it died on its own; returns its pid."""
        (handle,) = [h for h in self.running.values() if h.app_name == app_name]
        reason = "Signaled" if signal else "Exited"
        self._end(handle, ExitInfo(exit_code, signal, reason, self.clock.now()))
        return handle.pid

    def pid_of(self, app_name: str) -> Optional[int]:
        pids = [pid for pid, h in self.running.items() if h.app_name == app_name]
        return pids[-1] if pids else None

    def inspect(self, handle: Handle) -> Inspection:
        assert isinstance(handle, FakeHandle)
        return Inspection(handle.pid, handle.release, handle.started_at)

    def usage(self, handles: list[Handle]) -> dict[int, Usage]:
        return {id(h): Usage(0.5, 1 << 20) for h in handles if h.pid in self.running}

    def tail_logs(self, launch: Launch, handle: Optional[Handle], lines: int) -> list[str]:
        return self.logs.get(launch.app_name, [])[-lines:]

    async def forget(self, launch: Launch) -> None:
        self.forgotten.append(launch.app_name)

    def _of(self, launch: Launch) -> list[FakeHandle]:
        home = launch.env.get(APP_HOME_ENV, "")
        return [h for h in self.running.values() if home and h.app_home == home]

    def _end(self, handle: FakeHandle, info: ExitInfo) -> None:
        del self.running[handle.pid]
        if not handle.exited.done():
            handle.exited.set_result(info)
        handle.on_exit(handle, info)
