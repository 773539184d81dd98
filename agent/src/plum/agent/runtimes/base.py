"""The contract between the supervisor and a runtime (processes, Docker containers, the fake for tests).

Modelled on Nomad's task driver: start returns a handle whose state is saved; recover re-adopts a running
instance from that saved state after an agent restart; exits are reported by event through the ``on_exit``
callback given to start/recover (and ``wait``), never by a polling loop. A runtime learns what the supervisor
tracks through the callback given to ``open``; it never reads the supervisor's records.
"""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from plum.agent.spec import AppSpec
from plum.common.artifact import AppMeta
from plum.common.fsio import is_resource_error

# Markers the supervisor puts in every instance's environment, so that what runs can be told apart
# without the saved record: the app's folder on this node, and the release the instance runs.
APP_HOME_ENV = "PLUM_APP_HOME"
RELEASE_ENV = "PLUM_RELEASE"


class StartError(Exception):
    """The instance could not be started (a reason the user can act on)."""


def start_command(app_dir: Path, start_cmd: Optional[str]) -> list[str]:
    """The command of a zip app, run in its release directory (a process's cwd, a container's /app).

    start_cmd goes through /bin/sh -c (the user wrote a shell command line: its quoting survives);
    else ./start.sh, exec'd directly when it has a shebang and is executable, else through /bin/sh.
    """
    if start_cmd:
        return ["/bin/sh", "-c", start_cmd]
    script = app_dir / "start.sh"
    try:
        with script.open("rb") as fh:
            runnable = fh.read(2) == b"#!" and os.access(script, os.X_OK)
    except OSError as exc:
        if is_resource_error(exc):
            raise  # the agent is short of files or memory: retried, never the app's failure
        raise StartError(f"cannot read {script}: {exc.strerror}") from None
    return ["./start.sh"] if runnable else ["/bin/sh", "./start.sh"]


@dataclass(frozen=True)
class Launch:
    """Everything a runtime needs to start one instance of an app."""

    app_name: str
    instance_id: str
    version: str
    app_dir: Optional[Path]
    data_dir: Path
    log_path: Path
    spec: AppSpec
    meta: Optional[AppMeta]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExitInfo:
    exit_code: Optional[int]  # None when it cannot be known (a re-adopted process)
    signal: Optional[int] = None
    reason: str = "Exited"  # Exited | Signaled | OOMKilled | Unhealthy | Unknown | StartFailed
    finished_at: float = 0.0
    detail: str = ""  # StartFailed: why

    def describe(self) -> str:
        if self.reason == "StartFailed":
            return f"could not start: {self.detail}"
        if self.reason == "OOMKilled":
            return "killed: out of memory (OOMKilled)"
        if self.reason == "Unhealthy":
            return "restarted: health check failed"
        if self.signal:
            return f"killed by signal {self.signal}"
        if self.exit_code is None:
            return "exited while the agent was not watching (exit code unknown)"
        return f"exited with code {self.exit_code}"


ExitCallback = Callable[["Handle", ExitInfo], None]


class Handle(ABC):
    """A running instance; ``to_state`` is what recover() gets back after an agent restart."""

    started_at: float
    exited: asyncio.Future[ExitInfo]  # resolved once by the runtime, with what on_exit gets

    @property
    @abstractmethod
    def pid(self) -> Optional[int]: ...

    @abstractmethod
    def to_state(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    memory_bytes: int


@dataclass(frozen=True)
class Inspection:
    """What a runtime can tell about a running instance."""

    pid: Optional[int]
    release: Optional[str]  # the RELEASE_ENV it was started with; None when the runtime cannot tell
    started_at: float


@dataclass(frozen=True)
class Expected:
    """An instance the supervisor tracks: what a runtime must keep (never clean up as a stray)."""

    app_name: str
    instance_id: str
    runtime: str
    state: Optional[dict[str, Any]]  # its saved handle; None before its first start


Tracked = Callable[[], Collection[Expected]]


class Runtime(ABC):
    name: str
    tracked: Tracked = staticmethod(lambda: ())

    async def open(self, tracked: Tracked) -> None:
        """Called once by the supervisor before any recover: background work (events, relists) starts here."""
        self.tracked = tracked

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Called by the supervisor when the agent stops; the instances keep running."""

    @abstractmethod
    def preflight(self, name: str, spec: AppSpec, meta: Optional[AppMeta]) -> None:
        """Checks a deploy makes before the running instance is touched: raise StartError or SpecError."""

    @abstractmethod
    async def start(self, launch: Launch, on_exit: ExitCallback) -> Handle:
        """Start one instance; raise StartError with a reason when it cannot start."""

    @abstractmethod
    async def recover(self, launch: Launch, state: dict[str, Any], on_exit: ExitCallback) -> Optional[Handle]:
        """Re-adopt the instance described by a saved handle, or None if it no longer runs."""

    async def wait(self, handle: Handle) -> ExitInfo:
        """Until the instance ends: the ExitInfo its on_exit callback got (at once if it already ended)."""
        return await asyncio.shield(handle.exited)

    @abstractmethod
    async def stop(self, handle: Handle, timeout: float) -> None:
        """Stop gracefully, then forcefully after timeout; on_exit still fires. The runtime itself remembers
        that the exit was asked for (the supervisor sets no flag on the handle)."""

    @abstractmethod
    def inspect(self, handle: Handle) -> Inspection:
        """What the instance is: its pid, the release it was started from, when it started."""

    @abstractmethod
    def usage(self, handles: list[Handle]) -> dict[int, Usage]:
        """CPU and memory per handle, keyed by id(handle)."""

    @abstractmethod
    def tail_logs(self, launch: Launch, handle: Optional[Handle], lines: int) -> list[str]:
        """The last lines of the app's output; never blocks the event loop for long (a local file read)."""

    async def tail_logs_async(self, launch: Launch, handle: Optional[Handle], lines: int) -> list[str]:
        """The last lines of the app's output, for callers on the event loop (the logs API).

        A runtime that must ask someone else for them (the Docker engine) overrides this to wait without
        blocking the loop; the default is tail_logs in a worker thread (a long tail reads megabytes).
        """
        return await asyncio.to_thread(self.tail_logs, launch, handle, lines)

    async def forget(self, launch: Launch) -> None:  # noqa: B027 - optional hook
        """Clean up what the runtime keeps for an app that is being removed."""

    async def recover_lost(self, launch: Launch, on_exit: ExitCallback) -> list[Handle]:
        """Re-adopt the instances of an app found by its APP_HOME_ENV marker alone (its record is lost or
        does not describe them), oldest first, each watched. Empty: none runs, or the runtime cannot tell."""
        return []
