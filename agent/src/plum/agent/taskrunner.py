"""One app on this agent and its instance's life, as a Nomad client's task runner: start, exit handling,
restart scheduling with backoff, stop, and the phase, changed only through `transition`.

The supervisor keeps the registry of task runners, holds the app's lock around every call that changes
it, and decides what to run (deploys, recovery at start); a task runner carries it out on its runtime.
Time and timers come from a Clock, so the whole life runs in unit tests without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from plum.agent.appenv import base_env
from plum.agent.config import AgentConfig
from plum.agent.runtimes.base import APP_HOME_ENV, RELEASE_ENV, ExitInfo, Handle, Launch, Runtime, StartError, Usage
from plum.agent.state import STATE_FILE, AppRecord
from plum.common import fsio
from plum.common.fsio import StorageError
from plum.common.vocab import ACTIVE_PHASES, Desired, Phase

log = logging.getLogger(__name__)

LOG_TAIL_ON_EXIT = 20
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# An instance the agent could not start for lack of its own resources (file descriptors, memory,
# disk) is retried after 1 s, 2 s, 4 s, ... up to 30 s, and never counted as a restart of the app.
RESOURCE_RETRY_FIRST = 1.0
RESOURCE_RETRY_MAX = 30.0

# Where an instance may go from each phase; a same-phase transition (a new reason) is always allowed.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.STOPPED: frozenset({Phase.STARTING, Phase.RUNNING, Phase.FAILED}),
    Phase.STARTING: frozenset({Phase.RUNNING, Phase.BACKOFF, Phase.FAILED, Phase.COMPLETED, Phase.STOPPED}),
    Phase.RUNNING: frozenset({Phase.STARTING, Phase.BACKOFF, Phase.FAILED, Phase.COMPLETED, Phase.STOPPED}),
    Phase.BACKOFF: frozenset({Phase.STARTING, Phase.RUNNING, Phase.FAILED, Phase.STOPPED}),
    # Running from a final phase: an instance the agent finds at start is re-adopted.
    Phase.FAILED: frozenset({Phase.STARTING, Phase.RUNNING, Phase.STOPPED}),
    Phase.COMPLETED: frozenset({Phase.STARTING, Phase.RUNNING, Phase.STOPPED}),
    Phase.UNKNOWN: frozenset({Phase.STOPPED}),
}
TRANSITIONS_KEPT = 10  # served in the app's status, for "why is it in this phase?"

Listener = Callable[[AppRecord], None]

# Records whose save a restart put off until the restarts of its burst are spawned (TaskRunner.save_soon).
_deferred: dict[TaskRunner, None] = {}
_flusher: Optional[asyncio.Task[None]] = None


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Where the supervisor and its task runners take the time and their timers from."""

    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...


class RealClock:
    def now(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


class TransitionRefused(RuntimeError):
    """A phase change the table does not allow: a bug in the agent, never the user's doing."""


def iso(ts: Optional[float]) -> Optional[str]:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Transition:
    at: float
    source: Phase
    target: Phase
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"at": iso(self.at), "from": self.source, "to": self.target, "reason": self.reason}


class TaskRunner:
    # Tests raise on a refused transition; the agent logs it and keeps the phase it had.
    strict_transitions = False

    def __init__(
        self,
        record: AppRecord,
        root: Path,
        lock: asyncio.Lock,
        listeners: list[Listener],
        *,
        runtimes: dict[str, Runtime],
        config: AgentConfig,
        clock: Clock,
    ) -> None:
        self.record = record
        self.listeners = listeners
        self.dir = root / record.name
        self.lock = lock  # the supervisor's one lock for this name, also held while the app is created
        self.runtimes = runtimes
        self.config = config
        self.clock = clock
        self.handle: Optional[Handle] = None
        self.cpu_sample: Optional[tuple[float, float]] = None
        self.lost: Optional[str] = None  # why the saved record is unusable; then the record is a placeholder
        self.unsaved = False  # the disk refused the last change: saved again by the housekeeping
        self.transitions: deque[Transition] = deque(maxlen=TRANSITIONS_KEPT)
        self._timer: Optional[Timer] = None
        self._restarts: set[asyncio.Task[None]] = set()  # pending restarts, referenced until done
        self._resource_failures = 0  # starts that failed in a row for lack of the agent's resources
        self._retrying_start = False  # the pending restart retries such a start: not a restart of the app
        self._stopping: Optional[Handle] = None  # the instance a stop the agent asked for is ending
        self._retired = False  # removed from the supervisor: nothing is started any more

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def log_path(self) -> Path:
        return self.dir / "logs" / "app.log"

    @property
    def runtime(self) -> Runtime:
        return self.runtimes[self.record.runtime]

    def release_dir(self, release: Optional[str]) -> Optional[Path]:
        return self.dir / "releases" / release if release else None

    # ---- the record ---------------------------------------------------------------------------

    def save(self) -> None:
        """Save the record durably, then tell the listeners; StorageError if the disk refuses it."""
        _deferred.pop(self, None)
        if self.lost is None:
            self.record.save(self.state_path)
        self.unsaved = False
        self.notify()

    def save_quietly(self) -> None:
        """Save a change the agent made on its own: a refusing disk is logged, and the save retried later."""
        _deferred.pop(self, None)  # this save covers a pending one
        try:
            self.save()
        except StorageError as exc:
            if not self.unsaved:
                log.error("%s: %s; the change is kept and saved once the disk allows it", self.name, exc.message)
            self.unsaved = True
            self.notify()

    def save_soon(self) -> None:
        """save_quietly, once the loop has run what is ready: the restarts of a burst of exits are all spawned
        before any of their records is written, and each record is written once, one per loop turn.

        A kill -9 in between loses nothing: the saved record still names the instance id, and the agent's
        next start finds the new instance by it (ProcessRuntime.recover)."""
        global _flusher  # noqa: PLW0603 - one flusher for the agent's loop
        _deferred[self] = None
        if _flusher is None or _flusher.done() or _flusher.get_loop() is not asyncio.get_running_loop():
            _flusher = asyncio.ensure_future(_flush_deferred())

    def flush_save(self) -> None:
        """Write a save that save_soon put off, now (the agent is closing)."""
        if self in _deferred:
            self.save_quietly()

    @contextlib.contextmanager
    def committing(self) -> Iterator[AppRecord]:
        """Change the record in the block, then save it; if it cannot be saved, the change is undone."""
        before = copy.deepcopy(self.record)
        try:
            yield self.record
            self.save()
        except BaseException:
            self.record.restore(before)
            raise

    def notify(self) -> None:
        """Tell the listeners (the controller sync) about a change, saved or passing (Starting)."""
        for listener in self.listeners:
            listener(self.record)

    def transition(self, target: Phase, reason: str) -> None:
        """Move the instance to another phase, if the table allows it; every change is kept with its reason."""
        source = self.record.phase
        if target is not source and target not in TRANSITIONS[source]:
            message = f"{self.name}: refused phase change {source} -> {target} ({reason})"
            if self.strict_transitions:
                raise TransitionRefused(message)
            log.error("%s", message)
            return
        self.record.phase = target
        self.transitions.append(Transition(self.clock.now(), source, target, reason))

    def lost_message(self) -> str:
        if self.handle is not None:
            running = f"its instance still runs (pid {self.handle.pid})"
        else:
            running = "no instance of it runs"
        return f"{self.lost}; {running}: deploy it again or delete it"

    def status(self, usage: Optional[Usage], *, runtime_on_deploy: str) -> dict[str, Any]:
        """The app as the API shows it; `usage`: its instance's, when one runs."""
        r = self.record
        cpu_percent = None
        if usage is not None:
            now = time.monotonic()
            if self.cpu_sample is not None and now - self.cpu_sample[0] > 0.2:
                cpu_percent = round(100 * (usage.cpu_seconds - self.cpu_sample[1]) / (now - self.cpu_sample[0]), 2)
            if self.cpu_sample is None or now - self.cpu_sample[0] > 0.2:
                self.cpu_sample = (now, usage.cpu_seconds)
        return {
            "name": r.name,
            "package": r.meta.name if r.meta else None,
            "version": r.meta.version if r.meta else None,
            "runtime": r.runtime,
            "runtime_on_deploy": runtime_on_deploy,
            "phase": r.phase,
            "desired": r.desired,
            "pid": self.handle.pid if self.handle is not None else None,
            "instance_id": r.instance_id,
            "restarts": r.restarts,
            "exit_code": r.exit_code,
            "exit_signal": r.exit_signal,
            "exit_reason": r.exit_reason,
            "message": r.message,
            "started_at": iso(r.started_at),
            "finished_at": iso(r.finished_at),
            "next_restart_at": iso(r.next_restart_at),
            "deployed_at": iso(r.deployed_at),
            "artifact_sha256": r.artifact_sha256,
            "release": r.release,
            "spec_hash": r.spec_hash,
            "spec": r.spec.to_dict(),
            "services": [asdict(s) for s in r.meta.services] if r.meta else [],
            "cpu_seconds": round(usage.cpu_seconds, 3) if usage is not None else None,
            "cpu_percent": cpu_percent,
            "memory_bytes": usage.memory_bytes if usage is not None else None,
            "log_path": str(self.log_path),
            "transitions": [t.to_dict() for t in self.transitions],
            "last_logs": r.last_logs
            if r.phase in (Phase.BACKOFF, Phase.FAILED, Phase.COMPLETED, Phase.STOPPED)
            else [],
        }

    # ---- the instance -------------------------------------------------------------------------

    def launch(self) -> Launch:
        """What the runtime starts (or finds) the instance from."""
        record = self.record
        meta, spec = record.meta, record.spec
        return Launch(
            app_name=record.name,
            instance_id=record.instance_id,
            version=meta.version if meta else "",
            app_dir=self.release_dir(record.release),
            data_dir=self.dir / "data",
            log_path=self.log_path,
            spec=spec,
            meta=meta,
            env=self._app_env(),
        )

    def _app_env(self) -> dict[str, str]:
        """A clean environment: never the agent's own (it may hold tokens), only what apps need."""
        record, meta = self.record, self.record.meta
        env = base_env(os.environ)
        env.setdefault("PATH", DEFAULT_PATH)
        if self.config.controller_base:
            env["CONTROLLER_BASE"] = self.config.controller_base
        env.update(record.spec.env)
        env.update(
            PLUM_INSTANCE_ID=record.instance_id,
            PLUM_APP_NAME=meta.name if meta else self.name,
            PLUM_APP_VERSION=meta.version if meta else "",
            WORKER_NODE_ID=self.config.node_id,
        )
        # The instance's identity, readable without the record: which app folder, which release.
        env[APP_HOME_ENV] = str(self.dir)
        env[RELEASE_ENV] = record.release or ""
        return env

    def adopt(self, handle: Handle) -> None:
        """Take an instance a runtime found (re-adoption at start)."""
        self.handle = handle

    async def resume(self, saved: dict[str, Any], *, restart_now: bool) -> None:
        """After the agent's start: carry on from what the record says and what was re-adopted (`saved`: the
        saved handle). `restart_now`: the agent stopped the instance itself, so it starts again uncounted."""
        record = self.record
        if self.handle is not None:
            record.handle = self.handle.to_state()
            if not saved or self.handle.to_state().get("pid") != saved.get("pid"):
                record.started_at = self.handle.started_at
            if record.desired is Desired.STOPPED:  # a stop was interrupted by the agent's own death
                await self.stop_instance()
                self.transition(Phase.STOPPED, "a stop the agent's death interrupted, finished")
            else:
                self.transition(Phase.RUNNING, "re-adopted at start")
                record.message = ""
            self.save_quietly()
            return
        record.handle = None
        if record.desired is not Desired.RUNNING:
            self.transition(Phase.STOPPED, "found stopped at start")
            self.save_quietly()
            return
        if restart_now:
            await self.start_instance()
            return
        if record.phase is Phase.BACKOFF and record.next_restart_at:
            self.schedule_restart(max(0.0, record.next_restart_at - self.clock.now()))
            return
        log.info("%s is not running any more; applying its restart policy", self.name)
        now = self.clock.now()
        self.after_exit(ExitInfo(None, None, "Unknown", now), now - (record.started_at or now))

    async def stop(self, reason: str, *, keep_logs: bool = True) -> None:
        """Stop the instance (if any) and any pending restart; the app is Stopped."""
        self.cancel_timer()
        if self.handle is not None:
            await self.stop_instance()
            if keep_logs:
                self.keep_last_logs()
        self.transition(Phase.STOPPED, reason)

    async def start_instance(self, *, save_soon: bool = False) -> None:
        """Start an instance of the record's release; its outcome is the phase (Running, BackOff, Failed).
        `save_soon`: a restart, whose record is saved after the other restarts ready to run (save_soon)."""
        record = self.record
        self.transition(Phase.STARTING, "starting an instance")
        record.next_restart_at = None
        self.notify()
        try:
            handle = await self.runtime.start(self.launch(), self.on_exit)
        except StartError as exc:  # the app itself cannot start (no such command, no image): final
            log.warning("%s failed to start: %s", self.name, exc)
            record.message, record.handle = str(exc), None
            self.transition(Phase.FAILED, f"cannot start: {exc}")
            record.finished_at = self.clock.now()
            self.save_quietly()
            return
        except Exception as exc:
            record.handle = None
            if isinstance(exc, OSError) and fsio.is_resource_error(exc):
                self._retry_start_later(exc)
                return
            log.exception("%s failed to start", self.name)
            now = self.clock.now()
            self.after_exit(ExitInfo(None, None, "StartFailed", now, detail=str(exc) or type(exc).__name__), 0)
            return
        self.handle, self._resource_failures = handle, 0
        record.handle, record.started_at = handle.to_state(), handle.started_at
        self.transition(Phase.RUNNING, "started")
        record.message = ""
        if save_soon:
            self.save_soon()
        else:
            self.save_quietly()

    def _retry_start_later(self, exc: OSError) -> None:
        """A start the agent's host could not carry out (EMFILE, ENOMEM, ENOSPC...): retried, never counted."""
        self._resource_failures += 1
        delay = min(RESOURCE_RETRY_FIRST * 2.0 ** (self._resource_failures - 1), RESOURCE_RETRY_MAX)
        reason = fsio.os_reason(exc)
        log.warning("%s: cannot start it (%s, on the agent's side); retrying in %.1fs", self.name, reason, delay)
        self.transition(Phase.BACKOFF, f"the agent cannot start it ({reason})")
        self.record.message = f"the agent cannot start it now ({reason}); retrying in {delay:.1f}s"
        self._retrying_start = True
        self.schedule_restart(delay)
        self.save_quietly()

    async def stop_instance(self) -> None:
        """Stop the instance (graceful, then forceful); its exit is not one the restart policy sees."""
        handle = self.handle
        if handle is None:
            return
        self._stopping = handle
        try:
            await self.runtime.stop(handle, self.record.spec.stop_timeout)
        finally:
            self._stopping = None
        self.handle = None
        self.record.handle = None

    def on_exit(self, handle: Handle, info: ExitInfo) -> None:
        """The runtime's word that an instance ended."""
        if self.handle is not handle:
            return  # an instance we already replaced
        self.handle = None
        record = self.record
        record.handle = None
        record.exit_code, record.exit_signal, record.exit_reason = info.exit_code, info.signal, info.reason
        record.finished_at = info.finished_at
        if self._stopping is handle:
            return  # the stop path records the outcome
        if self.lost is not None:  # nothing to restart it from
            record.message = self.lost_message()
            self.notify()
            return
        self.after_exit(info, info.finished_at - handle.started_at)

    def after_exit(self, info: ExitInfo, run_seconds: float) -> None:
        """Apply the restart policy to an exit we did not ask for."""
        record = self.record
        policy = record.spec.restart
        if not policy.wants_restart(info.exit_code):
            record.message = info.describe()
            target = Phase.COMPLETED if info.exit_code == 0 else Phase.FAILED
            self.transition(target, f"{record.message}; not restarted")
            self.keep_last_logs()
            self.save_quietly()
            return
        delay = record.tracker.next_delay(policy, run_seconds, self.clock.now())
        if delay is None:
            record.message = (
                f"{info.describe()}; gave up after {policy.max_restarts} restarts within {policy.window:g}s"
            )
            self.transition(Phase.FAILED, record.message)
            self.keep_last_logs()
            self.save_quietly()
            log.warning("%s: %s", self.name, record.message)
            return
        self._retrying_start = False
        if delay == 0:
            self.transition(Phase.STARTING, f"{info.describe()}; restarting now")
            self.schedule_restart(0.0)
            return
        record.message = f"{info.describe()}; restarting in {delay:.1f}s"
        self.transition(Phase.BACKOFF, record.message)
        self.keep_last_logs()
        self.schedule_restart(delay)
        self.save_quietly()

    def schedule_restart(self, delay: float) -> None:
        self.cancel_timer()
        if delay > 0:
            self.record.next_restart_at = self.clock.now() + delay
            self._timer = self.clock.call_later(delay, self._restart_soon)
        else:
            self._restart_soon()

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.record.next_restart_at = None

    def retire(self) -> None:
        """The app left the supervisor (removed, or replaced): nothing of it is started any more."""
        self._retired = True
        _deferred.pop(self, None)  # its folder may be gone: nothing of it is written any more
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _restart_soon(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self._restart_after_exit())
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart_after_exit(self) -> None:
        async with self.lock:
            record = self.record
            if self._retired or self.handle is not None:
                return
            if record.desired is not Desired.RUNNING or record.phase not in ACTIVE_PHASES:
                return
            if not self._retrying_start:  # a retry of the agent's own failure is not a restart of the app
                record.restarts += 1
            self._retrying_start = False
            await self.start_instance(save_soon=True)

    def keep_last_logs(self) -> None:
        with contextlib.suppress(Exception):
            self.record.last_logs = self.runtime.tail_logs(self.launch(), None, LOG_TAIL_ON_EXIT)


async def _flush_deferred() -> None:
    """Write the records save_soon put off, one per loop turn: exits seen meanwhile are restarted first."""
    await asyncio.sleep(0)
    while _deferred:
        app = next(iter(_deferred))
        del _deferred[app]
        app.save_quietly()
        await asyncio.sleep(0)
