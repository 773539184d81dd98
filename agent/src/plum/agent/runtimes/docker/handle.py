"""A supervised container: its handle, whose life is one state, and how its end is described."""

from __future__ import annotations

import asyncio
import time
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from plum.agent.runtimes.base import ExitCallback, ExitInfo, Handle, Launch


class Life(Enum):
    UNVERIFIED = "unverified"  # re-adopted while the engine did not answer: checked once it does
    RUNNING = "running"
    FINISHING = "finishing"  # it ended by itself: its end is being collected
    STOPPING = "stopping"  # a stop was asked for: its end is collected by the stop, and is no crash
    EXITED = "exited"  # its end was reported


class Cause(Enum):
    """Why a container ended, when the engine's exit code alone does not tell."""

    OOM_KILLED = "OOMKilled"  # the engine's oom event
    UNHEALTHY = "Unhealthy"  # the agent stopped it after a failed health check


def exit_info(state: Optional[dict[str, Any]], cause: Optional[Cause], unknown: bool) -> ExitInfo:
    """The supervisor's view of a container's end, from its inspected State."""
    now = time.time()
    if state is None or unknown:
        return ExitInfo(None, None, "Unknown", now)
    code = int(state.get("ExitCode") or 0)
    if state.get("OOMKilled") or cause is Cause.OOM_KILLED:
        return ExitInfo(code or 137, 9, "OOMKilled", now)
    if cause is Cause.UNHEALTHY:
        return ExitInfo(code or None, None, "Unhealthy", now)  # never "success": the agent killed it
    if 128 < code < 160:
        return ExitInfo(code, code - 128, "Signaled", now)
    return ExitInfo(code, None, "Exited", now)


class DockerHandle(Handle):
    def __init__(
        self,
        container_id: str,
        name: str,
        launch: Launch,
        *,
        started_at: float,
        pid: Optional[int],
        on_exit: ExitCallback,
        life: Life = Life.RUNNING,
    ) -> None:
        self.container_id = container_id
        self.name = name
        self.launch = launch
        self.app_name = launch.app_name
        self.log_path: Path = launch.log_path
        self.stop_timeout = launch.spec.stop_timeout
        self.started_at = started_at
        self.container_pid = pid
        self.on_exit = on_exit
        self.life = life
        self.cause: Optional[Cause] = None
        self.cgroups: Optional[dict[str, Path]] = None
        self.published: list[str] = []  # where the engine published its ports: "127.0.0.1:32768->80/tcp"
        self.plan_hash = ""  # the plum.plan-hash label it was created with ("" by an older agent)
        self.image_id = ""
        self.exited: asyncio.Future[ExitInfo] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> Optional[int]:
        return self.container_pid

    @property
    def ending(self) -> bool:
        """Its end is being collected or was reported."""
        return self.life in (Life.FINISHING, Life.STOPPING, Life.EXITED)

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "container_id": self.container_id,
            "name": self.name,
            "started_at": self.started_at,
            "pid": self.container_pid,
        }
        if self.published:
            state["ports"] = list(self.published)
        return state
