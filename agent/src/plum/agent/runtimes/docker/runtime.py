"""The Docker runtime: the Runtime contract over the engine, the planner and the stray cleaner.

Exits, OOM kills and health changes come from the engine's event stream; a relist after every
(re)connection and every RELIST_EVERY seconds catches what the stream missed, and hands this node's
containers to the stray cleaner. A container that ended by itself is kept (exited) until its app
starts again: when the plan is the same, that container is started again, as Docker's own restart
policy does, which is quicker than creating one; else it is removed and a new one created.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from plum.agent import logfiles, procfs
from plum.agent.config import AgentConfig
from plum.agent.runtimes.base import (
    ExitCallback,
    ExitInfo,
    Handle,
    Inspection,
    Launch,
    Runtime,
    StartError,
    Tracked,
    Usage,
)
from plum.agent.runtimes.docker import calls
from plum.agent.runtimes.docker.cgroups import cgroup_dirs, cgroup_usage
from plum.agent.runtimes.docker.cleaner import Kept, StrayCleaner
from plum.agent.runtimes.docker.engine import Engine, EngineUnavailable
from plum.agent.runtimes.docker.handle import Cause, DockerHandle, Life, exit_info
from plum.agent.runtimes.docker.plan import LABEL_APP, LABEL_INSTANCE, LABEL_PLAN, LABEL_SPEC, Plan, plan_container
from plum.agent.runtimes.docker.ports import HeldPorts, host_ports, port_mappings
from plum.agent.spec import AppSpec, SpecError
from plum.common.artifact import AppMeta

log = logging.getLogger(__name__)

ENGINE_WAIT = 60.0  # how long a start waits for an engine that is (re)starting
READY_WAIT_RECOVER = 5.0  # how long re-adoption at agent start waits for the engine
RECENT_DEATHS_TTL = 60.0
LOGS_AFTER_RESTART_WAIT = 1.0  # how long a crash's log capture waits for the restart to be under way


class DockerRuntime(Runtime):
    name = "docker"

    def __init__(self, config: AgentConfig, required: bool = False) -> None:
        self.config = config
        self.required = required  # open() connects at once; else the first docker app does
        self.engine = Engine(config.node_id, config.docker.docker_host)
        self.held = HeldPorts()
        self.cleaner = StrayCleaner(self.name)
        self._watched: dict[str, DockerHandle] = {}  # container id -> handle
        self._kept_exited: dict[str, calls.Ended] = {}  # app -> its container that ended by itself
        self._restart_issued: dict[str, asyncio.Event] = {}  # container id -> its log capture may begin
        self._image_checks: dict[str, tuple[str, asyncio.Future[str]]] = {}  # app -> its image's id, asked early
        self._recent_deaths: dict[str, float] = {}  # die events of containers not (yet) watched
        self._leftovers: set[str] = set()  # containers to remove whose removal (or stop) failed
        self._busy: dict[str, int] = {}  # app -> starts and re-adoptions in progress
        self._settled: set[str] = set()  # apps started, re-adopted or stopped since the agent started
        self._tasks: set[asyncio.Future[Any]] = set()
        self._ready = asyncio.Event()  # set once the stream is open and the first relist is done
        self._engine_down = asyncio.Event()  # set while the last connection attempt failed
        self._recover_waited = False  # re-adoption waited for the engine once already, in vain
        self._started = False
        self._outage = True  # the next relist reports exits as "not watched" (start, reconnection)
        self._recheck: Optional[asyncio.TimerHandle] = None

    # ---- lifecycle -------------------------------------------------------------------------------

    async def open(self, tracked: Tracked) -> None:
        self.tracked = tracked
        if self.required:
            self._start_engine()

    async def close(self) -> None:
        self.engine.close()
        if self._recheck is not None:
            self._recheck.cancel()

    def _start_engine(self) -> None:
        if not self._started:
            self._started = True
            self.engine.start(self)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("docker runtime task failed", exc_info=task.exception())

    async def _wait_ready(self, timeout: float) -> bool:
        self._start_engine()
        if not self._ready.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout)
        return self._ready.is_set()

    async def _wait_engine(self, timeout: float) -> bool:
        """Like _wait_ready, but gives up at once on an engine known to be down: an agent start never waits
        for it app after app (what it recovers meanwhile is checked once the engine answers)."""
        self._start_engine()
        if self._ready.is_set():
            return True
        if self._engine_down.is_set() or self._recover_waited:
            return False
        waits = [asyncio.ensure_future(self._ready.wait()), asyncio.ensure_future(self._engine_down.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if not self._ready.is_set() and not self._engine_down.is_set():
            self._recover_waited = True  # it answers but is not ready: the other apps do not wait again
        return self._ready.is_set()

    @contextlib.contextmanager
    def _busy_with(self, app: str) -> Iterator[None]:
        """An app's containers are being created or re-adopted: the cleaner leaves them alone meanwhile."""
        self._busy[app] = self._busy.get(app, 0) + 1
        try:
            yield
        finally:
            self._busy[app] -= 1
            if not self._busy[app]:
                del self._busy[app]
            self._settled.add(app)

    # ---- what the engine reports (EngineListener) --------------------------------------------

    def on_stream_open(self) -> None:
        self._engine_down.clear()
        log.info("watching Docker events for node %s", self.config.node_id)
        self._spawn(self._after_connect())

    def on_stream_lost(self) -> None:
        self._outage = True
        self._engine_down.set()

    async def on_relist_due(self) -> None:
        if not self._ready.is_set() or any(h.life is Life.UNVERIFIED for h in self._watched.values()):
            await self._after_connect()  # the first relist or a re-adoption failed: try again
        else:
            await self._relist(after_outage=False)

    def on_event(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        cid = str(event.get("id") or (event.get("Actor") or {}).get("ID") or "")
        handle = self._watched.get(cid)
        if action == "die":
            if handle is None:
                now = time.monotonic()
                self._recent_deaths = {k: t for k, t in self._recent_deaths.items() if now - t < RECENT_DEATHS_TTL}
                self._recent_deaths[cid] = now
            else:
                code = str(((event.get("Actor") or {}).get("Attributes") or {}).get("exitCode") or "")
                self._begin_exit(handle, exit_code=int(code) if code.isdigit() else None)
        elif action == "oom" and handle is not None:  # the engine sends it before the die event
            handle.cause = Cause.OOM_KILLED
        elif action.startswith("health_status") and handle is not None:
            status = action.partition(":")[2].strip()
            log.info("%s: container health is %s", handle.app_name, status)
            if status == "unhealthy":
                self._stop_unhealthy(handle)

    async def _after_connect(self) -> None:
        try:
            await self.engine.call(lambda api: None)  # the shared client, and the engine's facts
            outage, self._outage = self._outage, False
            await self._relist(after_outage=outage)
            self._ready.set()
            await self._adopt_unverified()
        except Exception as exc:  # retried at the next relist round or reconnection
            log.warning("after connecting to the Docker engine: %s", exc)

    async def _adopt_unverified(self) -> None:
        """Re-adopt for real the apps recovered while the engine did not answer (their saved container, else
        their instance's newest running one); an app whose container is gone is reported, and restarted."""
        for handle in [h for h in self._watched.values() if h.life is Life.UNVERIFIED]:
            with self._busy_with(handle.app_name):
                chosen = await self._choose(handle.launch, handle.container_id)
                if handle.life is not Life.UNVERIFIED:  # stopped, or its death seen, meanwhile
                    continue
                if chosen is None:
                    self._report(handle, exit_info(None, None, unknown=True))
                    continue
                await self._take(handle, chosen)
                log.info("%s: re-adopted container %s", handle.app_name, handle.container_id[:12])

    async def _relist(self, after_outage: bool) -> None:
        """Compare what the engine runs with what we watch: report missed exits, remove what nobody answers for."""
        containers = await self.engine.call(self.engine.list)
        by_id = {c["Id"]: c for c in containers}
        for cid, handle in list(self._watched.items()):
            if handle.life is not Life.RUNNING:
                continue
            summary = by_id.get(cid)
            if summary is None or summary.get("State") != "running":
                self._begin_exit(handle, unknown=after_outage)
            elif "(unhealthy)" in str(summary.get("Status", "")):
                self._stop_unhealthy(handle)
        busy = set(self._busy) | {h.app_name for h in self._watched.values() if h.life is Life.UNVERIFIED}
        keep = set(self._watched) | {ended.container_id for ended in self._kept_exited.values()}
        kept = Kept(keep, busy, set(self._settled), self._leftovers)
        verdict = self.cleaner.judge(containers, self.tracked(), kept, time.time())
        for summary in verdict.strays:
            labels = summary.get("Labels") or {}
            log.warning(
                "removing container %s of app %r (instance %s): nobody on this agent answers for it",
                summary["Id"][:12],
                labels.get(LABEL_APP),
                labels.get(LABEL_INSTANCE),
            )
            self._spawn(self._remove(summary["Id"]))
        self._leftovers &= set(by_id)
        if verdict.recheck_in is not None and self._recheck is None:
            self._recheck = asyncio.get_running_loop().call_later(verdict.recheck_in + 0.1, self._relist_again)

    def _relist_again(self) -> None:
        self._recheck = None
        if self.engine.connected:
            self._spawn(self._relist(after_outage=False))

    # ---- exits ----------------------------------------------------------------------------------

    def _watch(self, handle: DockerHandle) -> None:
        self._watched[handle.container_id] = handle
        if self._recent_deaths.pop(handle.container_id, None) is not None:
            self._begin_exit(handle)  # died before we were watching it

    def _begin_exit(self, handle: DockerHandle, unknown: bool = False, exit_code: Optional[int] = None) -> None:
        if handle.life is not Life.RUNNING:
            return
        handle.life = Life.FINISHING
        if exit_code is not None and handle.launch.spec.restart.wants_restart(exit_code):
            self._report_at_once(handle, exit_code)
        else:
            self._spawn(self._finish(handle, unknown))

    def _report_at_once(self, handle: DockerHandle, exit_code: int) -> None:
        """A crash its restart policy restarts, told by the die event itself: reported without waiting for the
        engine's clean-up of the container (an inspect or a log read waits for it); the last logs are kept
        meanwhile, and the container is kept to be started again. The capture waits until the start again
        was sent (or a short while), so that it never competes with the restart for the engine."""
        self._keep_exited(handle)
        self._check_image_early(handle)
        issued = self._restart_issued[handle.container_id] = asyncio.Event()
        self._report(handle, exit_info({"ExitCode": exit_code}, handle.cause, unknown=False))
        self._spawn(self._capture_logs(handle, issued))

    def _check_image_early(self, handle: DockerHandle) -> None:
        """What the app's image resolves to, asked while the engine still cleans the container up, so that the
        start again is the restart's only call once the engine can take it."""
        try:
            image = plan_container(handle.launch, self.config, self.engine.facts).image
        except Exception:  # planned again by the start, which reports what is wrong
            return
        check = asyncio.ensure_future(self.engine.call(calls.image_id, image))
        check.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved, even if unused
        self._image_checks[handle.app_name] = (image, check)

    async def _capture_logs(self, handle: DockerHandle, after: Optional[asyncio.Event] = None) -> None:
        if after is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(after.wait(), LOGS_AFTER_RESTART_WAIT)
            if self._restart_issued.pop(handle.container_id, None) is not after and not after.is_set():
                return  # not started again: kept before its removal by the start
        try:
            await self.engine.call(calls.capture_logs, handle.container_id, handle.log_path)
        except Exception as exc:
            log.warning("%s: cannot keep the last logs: %s", handle.app_name, exc)

    def _stop_unhealthy(self, handle: DockerHandle) -> None:
        if handle.life is not Life.RUNNING or handle.cause is not None:
            return
        handle.cause = Cause.UNHEALTHY
        log.warning("%s: health check failed; restarting its container", handle.app_name)

        async def kill() -> None:
            try:
                await self.engine.call(calls.stop, handle.container_id, handle.stop_timeout)
            except Exception as exc:  # the next relist (or health event) tries again
                log.warning(
                    "%s: cannot stop unhealthy container %s: %s", handle.app_name, handle.container_id[:12], exc
                )
                handle.cause = None

        self._spawn(kill())

    async def _finish(self, handle: DockerHandle, unknown: bool) -> None:
        """Collect a container's end (state, last logs) and report it; one that ended by itself is kept to be
        started again, a stopped one is removed by the stop."""
        cid = handle.container_id
        inspecting = self.engine.call(calls.inspect_state, cid)
        capturing = self.engine.call(calls.capture_logs, cid, handle.log_path)
        results: list[Any] = await asyncio.gather(inspecting, capturing, return_exceptions=True)
        inspected: Optional[dict[str, Any]] | BaseException = results[0]
        captured: Optional[BaseException] = results[1]
        if isinstance(captured, BaseException):
            log.warning("%s: cannot keep the last logs: %s", handle.app_name, captured)
        if isinstance(inspected, EngineUnavailable) and handle.life is Life.FINISHING:
            handle.life = Life.RUNNING  # the relist after the engine is back reports it
            return
        state: Optional[dict[str, Any]] = None
        if isinstance(inspected, BaseException):
            if not isinstance(inspected, EngineUnavailable):
                log.warning("%s: cannot inspect container %s: %s", handle.app_name, cid[:12], inspected)
            unknown = True
        else:
            state = inspected
        by_itself = handle.life is Life.FINISHING
        keep = by_itself and state is not None and not unknown  # an end seen as it happened, not after an outage
        if keep:
            self._keep_exited(handle)
        self._report(handle, exit_info(state, handle.cause, unknown))
        if by_itself and not keep:
            await self._remove(cid)

    def _keep_exited(self, handle: DockerHandle) -> None:
        previous = self._kept_exited.get(handle.app_name)
        self._kept_exited[handle.app_name] = calls.Ended(handle.container_id, handle.plan_hash, handle.image_id)
        if previous is not None and previous.container_id != handle.container_id:
            self._spawn(self._remove(previous.container_id))

    async def _drop_kept(self, app: str, log_path: Path) -> None:
        ended = self._kept_exited.pop(app, None)
        if ended is not None:
            if self._restart_issued.pop(ended.container_id, None) is not None:  # its last logs first
                with contextlib.suppress(Exception):
                    await self.engine.call(calls.capture_logs, ended.container_id, log_path)
            await self._remove(ended.container_id)

    def _report(self, handle: DockerHandle, info: ExitInfo) -> None:
        if handle.exited.done():
            return
        handle.life = Life.EXITED
        if self._watched.get(handle.container_id) is handle:
            del self._watched[handle.container_id]
        self.held.release(handle.app_name, handle)
        handle.exited.set_result(info)
        log.info("%s: container %s ended: %s", handle.app_name, handle.container_id[:12], info.describe())
        handle.on_exit(handle, info)

    async def _remove(self, cid: str) -> None:
        try:
            await self.engine.call(calls.remove, cid)
            self._leftovers.discard(cid)
        except Exception as exc:
            self._leftovers.add(cid)  # the next relist (at the latest once the engine is back) retries
            log.warning("cannot remove container %s: %s", cid[:12], exc)

    # ---- the Runtime contract -----------------------------------------------------------------

    def preflight(self, name: str, spec: AppSpec, meta: Optional[AppMeta]) -> None:
        """Checks a deploy makes before the running version is touched (a SpecError is a 400)."""
        for path in spec.host_lib_paths:
            if not Path(path).exists():
                raise SpecError("host_lib_paths", f"{path} does not exist on this host")
        ncpu = self.engine.facts.ncpu
        if spec.cpus is not None and ncpu is not None and spec.cpus > ncpu:
            raise SpecError("cpus", f"{spec.cpus:g} CPUs asked for, but the Docker host has {ncpu}")
        wanted = self._host_ports(spec, meta)
        problem = self.held.problem(name, wanted, own_held=True)
        if problem is not None:
            source = "" if spec.ports else " (from meta.ini services; set spec.ports to map them elsewhere)"
            raise SpecError("ports", problem + source)

    def _host_ports(self, spec: AppSpec, meta: Optional[AppMeta]) -> list[tuple[str, int, str]]:
        settings = self.config.docker
        mappings = port_mappings(spec, meta, spec.network_mode or settings.network_mode)
        return host_ports(mappings, settings.publish_host)

    async def start(self, launch: Launch, on_exit: ExitCallback) -> Handle:
        with self._busy_with(launch.app_name):
            return await self._start(launch, on_exit)

    async def _start(self, launch: Launch, on_exit: ExitCallback) -> DockerHandle:
        if not await self._wait_ready(ENGINE_WAIT):
            message = self.engine.describe_error(TimeoutError(f"no answer within {ENGINE_WAIT:g}s"))
            raise StartError(message)
        plan = plan_container(launch, self.config, self.engine.facts)
        problem = self.held.problem(launch.app_name, sorted(plan.host_ports), own_held=False)
        if problem is not None:
            raise StartError(f"cannot publish ports: {problem}")
        started = await self._start_kept(launch.app_name, plan, launch.log_path)
        deadline = time.monotonic() + ENGINE_WAIT
        again = False
        while started is None:
            try:
                started = await self.engine.call(calls.create_and_start, plan, again)
            except EngineUnavailable as exc:
                if time.monotonic() > deadline:
                    raise StartError(str(exc)) from None
                again = True
                await asyncio.sleep(0.5)  # the engine is restarting: wait for it rather than fail
            except StartError:
                raise
            except Exception as exc:  # an engine answer nobody foresaw: the app fails, not the agent
                log.exception("%s: unexpected error from the Docker engine", launch.app_name)
                raise StartError(f"Docker engine error: {exc}") from None
        handle = DockerHandle(
            started.container_id, started.name, launch, started_at=time.time(), pid=started.pid, on_exit=on_exit
        )
        handle.published = started.published
        handle.plan_hash, handle.image_id = plan.labels[LABEL_PLAN], started.image_id
        self.held.hold(launch.app_name, handle, plan.host_ports)
        self._watch(handle)
        if not started.running:
            self._begin_exit(handle)
        return handle

    async def _start_kept(self, app: str, plan: Plan, log_path: Path) -> Optional[calls.Started]:
        """The app's container that ended by itself, started again when its plan is this one; else removed."""
        ended = self._kept_exited.pop(app, None)
        if ended is None:
            return None
        current_image_id = None
        image, check = self._image_checks.pop(app, ("", None))
        if check is not None and image == plan.image:
            with contextlib.suppress(Exception):  # else start_again asks itself
                current_image_id = await check
        started = None
        with contextlib.suppress(EngineUnavailable):
            started = await self.engine.call(calls.start_again, ended, plan, current_image_id)
        capture_waits = self._restart_issued.pop(ended.container_id, None)
        if started is None:
            if capture_waits is not None:  # its last logs are kept before it goes
                with contextlib.suppress(Exception):
                    await self.engine.call(calls.capture_logs, ended.container_id, log_path)
            await self._remove(ended.container_id)
        elif capture_waits is not None:
            capture_waits.set()
        return started

    async def recover(self, launch: Launch, state: dict[str, Any], on_exit: ExitCallback) -> Optional[Handle]:
        saved_id = str(state.get("container_id") or "")
        started_at = float(state.get("started_at") or time.time())
        with self._busy_with(launch.app_name):
            try:
                if await self._wait_engine(READY_WAIT_RECOVER):
                    return await self._readopt(launch, saved_id, started_at, on_exit)
                problem = "the Docker engine does not answer"
            except Exception as exc:  # the engine went away meanwhile, or answered oddly: never block the agent
                problem = str(exc)
            if not saved_id:
                log.warning(
                    "%s: %s; its restart policy applies (a start waits for the engine)", launch.app_name, problem
                )
                return None
            # Watch the saved container anyway: once the engine answers, it is re-adopted, or reported if gone.
            log.warning("%s: %s; container %s is checked once it answers", launch.app_name, problem, saved_id[:12])
            handle = DockerHandle(
                saved_id,
                str(state.get("name") or ""),
                launch,
                started_at=started_at,
                pid=None,
                on_exit=on_exit,
                life=Life.UNVERIFIED,
            )
            self._watch(handle)
            return handle

    async def _readopt(
        self, launch: Launch, saved_id: str, started_at: float, on_exit: ExitCallback
    ) -> Optional[DockerHandle]:
        chosen = await self._choose(launch, saved_id)
        if chosen is None:
            return None
        handle = DockerHandle(saved_id or chosen["Id"], "", launch, started_at=started_at, pid=None, on_exit=on_exit)
        await self._take(handle, chosen)
        return handle

    async def _choose(self, launch: Launch, saved_id: str) -> Optional[dict[str, Any]]:
        """The instance's running container (by saved id, else by labels); the others are removed."""
        labels = {LABEL_APP: launch.app_name, LABEL_INSTANCE: launch.instance_id}
        containers = await self._list(labels)
        running = [c for c in containers if c.get("State") == "running"]
        chosen = next((c for c in running if c["Id"] == saved_id), None)
        if chosen is None and running:
            chosen = max(running, key=lambda c: float(c.get("Created") or 0))  # lost record: newest one
        if chosen is not None and (chosen.get("Labels") or {}).get(LABEL_SPEC) != launch.spec.digest():
            log.info("%s: container %s runs another spec; replacing it", launch.app_name, chosen["Id"][:12])
            await self.engine.call(calls.stop, chosen["Id"], launch.spec.stop_timeout)
            chosen = None
        for other in containers:
            if chosen is None or other["Id"] != chosen["Id"]:
                if other["Id"] == saved_id:
                    with contextlib.suppress(Exception):
                        await self.engine.call(calls.capture_logs, other["Id"], launch.log_path)
                await self._remove(other["Id"])
        return chosen

    async def _list(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        return await self.engine.call(lambda api: self.engine.list(api, **labels))

    async def _take(self, handle: DockerHandle, chosen: dict[str, Any]) -> None:
        """Make handle watch the chosen container (its id, name, pid and published ports)."""
        state = await self.engine.call(calls.inspect_state, chosen["Id"]) or {}
        if self._watched.get(handle.container_id) is handle:
            del self._watched[handle.container_id]
        if chosen["Id"] != handle.container_id:  # found by its labels: its own start time
            handle.started_at = float(chosen.get("Created") or time.time())
        handle.container_id = chosen["Id"]
        handle.name = (chosen.get("Names") or [""])[0].lstrip("/")
        handle.container_pid = state.get("Pid") or None
        handle.cgroups = None
        handle.published = calls.published_from_summary(chosen)
        handle.plan_hash = str((chosen.get("Labels") or {}).get(LABEL_PLAN) or "")
        handle.image_id = str(chosen.get("ImageID") or "")
        handle.life = Life.RUNNING
        self.held.hold(handle.app_name, handle, set(self._host_ports(handle.launch.spec, handle.launch.meta)))
        self._watch(handle)

    def inspect(self, handle: Handle) -> Inspection:
        return Inspection(handle.pid, None, handle.started_at)  # the release is told by the saved record

    async def stop(self, handle: Handle, timeout: float) -> None:
        assert isinstance(handle, DockerHandle)
        self._settled.add(handle.app_name)
        await self._drop_kept(handle.app_name, handle.log_path)
        if handle.ending:
            if handle.life is Life.FINISHING:
                handle.life = Life.STOPPING  # its end is being collected: not a crash, and not kept
            await handle.exited
        else:
            handle.life = Life.STOPPING
            try:
                await self.engine.call(calls.stop, handle.container_id, timeout)
            except Exception as exc:
                await self._stop_failed(handle, exc)
                return
            await self._finish(handle, unknown=False)
        await self._remove(handle.container_id)

    async def _stop_failed(self, handle: DockerHandle, exc: Exception) -> None:
        """A stop the engine did not carry out: the container is removed by force, else by a later relist; the
        instance's end is reported (exit unknown) either way, so nothing waits for it forever."""
        cid = handle.container_id
        removed = False
        if isinstance(exc, EngineUnavailable):
            log.warning(
                "%s: cannot stop container %s: %s; it is removed once the engine answers",
                handle.app_name,
                cid[:12],
                exc,
            )
        else:
            log.error(
                "%s: the engine did not stop container %s (%s); removing it by force", handle.app_name, cid[:12], exc
            )
            with contextlib.suppress(Exception):
                await self.engine.call(calls.capture_logs, cid, handle.log_path)
            try:
                await self.engine.call(calls.remove, cid)
                removed = True
            except Exception as again:
                log.error(
                    "%s: cannot remove container %s either (%s); retried at every relist",
                    handle.app_name,
                    cid[:12],
                    again,
                )
        if not removed:
            self._leftovers.add(cid)
        self._report(handle, exit_info(None, None, unknown=True))

    def usage(self, handles: list[Handle]) -> dict[int, Usage]:
        result: dict[int, Usage] = {}
        groups: Optional[dict[int, tuple[float, int]]] = None
        for handle in handles:
            assert isinstance(handle, DockerHandle)
            measured = None
            if handle.pid:
                if handle.cgroups is None:
                    handle.cgroups = cgroup_dirs(handle.pid)
                measured = cgroup_usage(handle.cgroups)
                if measured is None:  # no cgroup access (the agent in a container): its process group
                    if groups is None:
                        groups = procfs.usage_by_group()
                    measured = groups.get(handle.pid)
            cpu, memory = measured or (0.0, 0)
            result[id(handle)] = Usage(cpu, memory)
        return result

    def tail_logs(self, launch: Launch, handle: Optional[Handle], lines: int) -> list[str]:
        """What was kept in the app's log file when its last container ended (read on the spot)."""
        return logfiles.tail(launch.log_path, lines) if lines > 0 else []

    async def tail_logs_async(self, launch: Launch, handle: Optional[Handle], lines: int) -> list[str]:
        """A running container's last lines, read through the engine in the pool (never on the event loop);
        else what was kept when its last container ended."""
        if lines <= 0:
            return []
        if isinstance(handle, DockerHandle) and handle.life is Life.RUNNING and self.engine.has_client:
            try:
                return await self.engine.call(calls.container_logs, handle.container_id, lines)
            except Exception as exc:  # gone meanwhile, or the engine does not answer: what was kept
                log.debug("%s: no logs from the engine: %s", launch.app_name, exc)
        return await logfiles.tail_async(launch.log_path, lines)

    async def forget(self, launch: Launch) -> None:
        self.held.release(launch.app_name)
        self._kept_exited.pop(launch.app_name, None)
        self._image_checks.pop(launch.app_name, None)
        self._settled.discard(launch.app_name)
        if not self._ready.is_set():
            return
        try:
            for summary in await self._list({LABEL_APP: launch.app_name}):
                await self._remove(summary["Id"])
        except EngineUnavailable as exc:
            log.warning("%s: containers left for the next start's cleanup: %s", launch.app_name, exc)
