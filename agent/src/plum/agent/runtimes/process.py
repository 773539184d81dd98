"""Apps as plain processes, each in its own session and process group.

Exits are seen through a pidfd registered with the event loop (Linux >= 5.3), so a crash is noticed
the moment it happens. Children of this agent are reaped with waitpid for their real exit code;
processes re-adopted after an agent restart are no longer our children, so their exit code is
unknown (reported as such). Identity is pid + start time + boot id, so a reused pid is never taken
for the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Optional

from plum.agent import appuser, logfiles, procfs
from plum.agent.appuser import DEFAULT_APP_USER, RunAs, UserError
from plum.agent.runtimes.base import (
    APP_HOME_ENV,
    RELEASE_ENV,
    ExitCallback,
    ExitInfo,
    Handle,
    Inspection,
    Launch,
    Runtime,
    StartError,
    Usage,
    start_command,
)
from plum.agent.spec import AppSpec, SpecError
from plum.common.artifact import AppMeta
from plum.common.fsio import is_resource_error

log = logging.getLogger(__name__)

# Words a shell runs itself: a start_cmd beginning with one of these cannot be checked up front.
SHELL_WORDS = frozenset(
    [
        "!",
        "{",
        "(",
        "[",
        "[[",
        ".",
        ":",
        "alias",
        "break",
        "case",
        "cd",
        "command",
        "continue",
        "eval",
        "exit",
        "export",
        "for",
        "if",
        "local",
        "read",
        "return",
        "set",
        "shift",
        "source",
        "test",
        "time",
        "trap",
        "ulimit",
        "umask",
        "unset",
        "until",
        "wait",
        "while",
    ]
)
STOP_POLL = 0.02
USAGE_CACHE = 1.0  # seconds a scan of the process table answers usage() for
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


class ProcessHandle(Handle):
    def __init__(self, pid: int, start_ticks: int, boot: str, started_at: float, child: bool) -> None:
        self._pid = pid
        self.start_ticks = start_ticks
        self.boot = boot
        self.started_at = started_at
        self.child = child  # False once re-adopted: waitpid is then impossible
        self.stopping = False  # a stop was asked for: its group is ended by stop(), not as a dead leader's
        self.popen: Optional[subprocess.Popen[bytes]] = None
        self.exited: asyncio.Future[ExitInfo] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int:
        return self._pid

    def to_state(self) -> dict[str, Any]:
        return {"pid": self._pid, "start_ticks": self.start_ticks, "boot_id": self.boot, "started_at": self.started_at}


def check_command(launch: Launch) -> None:
    """Refuse a start_cmd whose program does not exist, instead of letting it crash-loop."""
    if not launch.spec.start_cmd:
        return
    words = shlex.split(launch.spec.start_cmd)
    while words and (ASSIGNMENT.match(words[0]) or words[0] == "exec"):
        words.pop(0)  # VAR=value prefixes and exec come before the program
    if not words or words[0] in SHELL_WORDS:
        return
    program = words[0]
    if "/" in program:
        path = Path(program) if program.startswith("/") else (launch.app_dir or Path.cwd()) / program
        if not path.exists():
            raise StartError(f"start command not found: {program} (looked for {path})")
        if not os.access(path, os.X_OK):
            raise StartError(f"start command is not executable: {path}")
    elif shutil.which(program, path=launch.env.get("PATH")) is None:
        raise StartError(f"start command not found: {program!r} is not on PATH ({launch.env.get('PATH')})")


def env_as(launch: Launch, user: Optional[RunAs]) -> dict[str, str]:
    """The app's environment, with USER, LOGNAME and HOME of the user it runs as (unless its spec sets them)."""
    env = dict(launch.env)
    if user is None:
        return env
    for key, value in user.identity_env().items():
        if key in launch.spec.env:
            continue
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def switch_to(user: Optional[RunAs]) -> dict[str, Any]:
    """Popen's arguments that switch uid, gid and supplementary groups at exec (after the chdir, as root)."""
    if user is None:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups or (user.gid,))}


class ProcessRuntime(Runtime):
    name = "process"

    def __init__(self, default_user: str = DEFAULT_APP_USER, data_dir: Optional[Path] = None) -> None:
        self.default_user = default_user  # AGENT_APP_USER: apps of a root agent whose spec names no user
        self.data_dir = data_dir  # AGENT_DATA_DIR: the folders down to a release an app user may pass through
        self._usage_cache: tuple[float, Optional[procfs.ProcessTable]] = (0.0, None)

    def preflight(self, name: str, spec: AppSpec, meta: Optional[AppMeta]) -> None:
        """Checks a deploy makes before the running version is touched (a SpecError is a 400)."""
        try:
            appuser.run_as(spec.user, self.default_user)
        except UserError as exc:
            raise SpecError("user", str(exc)) from None

    def _open_release_to(self, release: Path, user: RunAs) -> None:
        """The app's user may read its release (never write it), by relative and by absolute paths."""
        try:
            appuser.share_release(release, user.gid)
            if self.data_dir is not None and user.uid != os.geteuid():
                appuser.open_path_to(release, self.data_dir, user.uid)
        except OSError as exc:
            where = exc.filename or release
            raise StartError(f"cannot let {user.describe()} read {where}: {exc.strerror}") from None

    def _user_for(self, launch: Launch) -> Optional[RunAs]:
        try:
            return appuser.run_as(launch.spec.user, self.default_user)
        except UserError as exc:  # removed from the host since the deploy
            field = "spec.user" if launch.spec.user else "AGENT_APP_USER"
            raise StartError(f"cannot run as {field} {exc}") from None

    async def start(self, launch: Launch, on_exit: ExitCallback) -> Handle:
        assert launch.app_dir is not None
        user = self._user_for(launch)
        if user is not None and not appuser.is_open_to(launch.app_dir, self.data_dir, user):
            await asyncio.to_thread(self._open_release_to, launch.app_dir, user)
        check_command(launch)
        argv = start_command(launch.app_dir, launch.spec.start_cmd)
        log_fd = logfiles.open_for_append(launch.log_path)
        try:
            popen = subprocess.Popen(
                argv,
                cwd=launch.app_dir,
                env=env_as(launch, user),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                **switch_to(user),
            )
        except OSError as exc:
            if is_resource_error(exc):
                raise  # the agent's host is short of files or memory: retried, never the app's failure
            raise StartError(f"cannot start {argv[0]} in {launch.app_dir}: {exc.strerror}") from None
        finally:
            os.close(log_fd)
        identity = procfs.identify(popen.pid)
        ticks = identity.start_ticks if identity else 0  # 0: it died at once; the pidfd reports it
        handle = ProcessHandle(popen.pid, ticks, procfs.boot_id(), time.time(), True)
        handle.popen = popen
        self._watch(handle, on_exit)
        return handle

    async def recover(self, launch: Launch, state: dict[str, Any], on_exit: ExitCallback) -> Optional[Handle]:
        pid = int(state.get("pid") or 0)
        if pid and procfs.is_same_process(pid, int(state.get("start_ticks") or 0), str(state.get("boot_id"))):
            started_at = float(state.get("started_at") or time.time())
        else:
            # The saved record is stale or was never written (agent died right after a spawn):
            # look for the instance by its environment so it is never started twice.
            found = procfs.find_session_leader_with_env("PLUM_INSTANCE_ID", launch.instance_id)
            if found is None:
                return None
            pid, started_at = found, time.time()
        identity = procfs.identify(pid)
        if identity is None:
            return None
        handle = ProcessHandle(pid, identity.start_ticks, identity.boot, started_at, child=False)
        self._watch(handle, on_exit)
        return handle

    async def recover_lost(self, launch: Launch, on_exit: ExitCallback) -> list[Handle]:
        home = launch.env.get(APP_HOME_ENV, "")
        leaders = procfs.session_leaders_with_env(APP_HOME_ENV, home) if home else []
        if home and not leaders:  # started before the marker existed: found by its working directory
            leaders = procfs.session_leaders_below(Path(home) / "releases")
        handles: list[Handle] = []
        for pid in leaders:
            identity = procfs.identify(pid)
            if identity is not None:
                handle = ProcessHandle(pid, identity.start_ticks, identity.boot, time.time(), child=False)
                self._watch(handle, on_exit)
                handles.append(handle)
        return handles

    def inspect(self, handle: Handle) -> Inspection:
        environ = procfs.environ_of(handle.pid) if handle.pid else None
        return Inspection(handle.pid, (environ or {}).get(RELEASE_ENV), handle.started_at)

    def _watch(self, handle: ProcessHandle, on_exit: ExitCallback) -> None:
        loop = asyncio.get_running_loop()

        def exited() -> None:
            info = self._collect_exit(handle)
            if not handle.exited.done():
                handle.exited.set_result(info)
            on_exit(handle, info)

        try:
            pidfd = os.pidfd_open(handle.pid)
        except ProcessLookupError:
            loop.call_soon(exited)
            return
        except (AttributeError, OSError):  # kernel without pidfd: fall back to a slow poll
            self._poll(handle, exited)
            return

        def readable() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            exited()

        loop.add_reader(pidfd, readable)

    def _poll(self, handle: ProcessHandle, exited: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()

        def check() -> None:
            identity = procfs.identify(handle.pid)
            if identity is None or identity.start_ticks != handle.start_ticks:
                exited()
            else:
                loop.call_later(0.5, check)

        loop.call_later(0.5, check)

    def _collect_exit(self, handle: ProcessHandle) -> ExitInfo:
        if not handle.stopping:
            # The leader is gone: what is left of its group belongs to a dead instance.
            # Killed before reaping, while the zombie still pins the group id.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(handle.pid, signal.SIGKILL)
        now = time.time()
        if not handle.child:
            return ExitInfo(None, None, "Unknown", now)
        try:
            _, status = os.waitpid(handle.pid, 0)
        except ChildProcessError:
            return ExitInfo(None, None, "Unknown", now)
        code = os.waitstatus_to_exitcode(status)
        if handle.popen is not None:
            handle.popen.returncode = code  # keeps subprocess from ever reaping it again
        if code < 0:
            return ExitInfo(128 - code, -code, "Signaled", now)
        return ExitInfo(code, None, "Exited", now)

    async def stop(self, handle: Handle, timeout: float) -> None:
        assert isinstance(handle, ProcessHandle)
        handle.stopping = True
        if not self._signal_group(handle, signal.SIGTERM):
            await handle.exited
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if handle.exited.done() and not self._group_alive(handle):
                return
            await asyncio.sleep(STOP_POLL)
        log.warning("pid %s did not stop within %.1fs; sending SIGKILL to its group", handle.pid, timeout)
        self._signal_group(handle, signal.SIGKILL)
        await handle.exited

    @staticmethod
    def _signal_group(handle: ProcessHandle, sig: int) -> bool:
        try:
            os.killpg(handle.pid, sig)
            return True
        except ProcessLookupError:
            return False

    @staticmethod
    def _group_alive(handle: ProcessHandle) -> bool:
        try:
            os.killpg(handle.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def usage(self, handles: list[Handle]) -> dict[int, Usage]:
        """CPU and memory of each instance: its leader's process tree and process group."""
        now = time.monotonic()
        stamp, table = self._usage_cache
        if table is None or now - stamp > USAGE_CACHE:
            table = procfs.ProcessTable()  # one scan serves the status calls of the next second
            self._usage_cache = (now, table)
        return {id(handle): Usage(*table.usage(handle.pid or -1)) for handle in handles}

    def tail_logs(self, launch: Launch, handle: Optional[Handle], lines: int) -> list[str]:
        return logfiles.tail(launch.log_path, lines)
