"""Apps as Docker containers (hybrid mode), driven through the Docker SDK for Python.

The same contract as the process runtime: start returns a handle whose state is saved, recover
re-adopts a running container after an agent restart, and exits reach the supervisor through the
``on_exit`` callback, which then applies the restart policy. Docker's own restart policy stays ``no``.

- Identity is labels (plum.managed, plum.node, plum.app, plum.instance, plum.version, plum.spec-hash);
  every list and the event stream are filtered by this node's label, so two agents sharing one engine
  never see each other's containers.
- Exits, OOM kills and health changes come from the engine's event stream, read by one background
  thread that hands each event to the event loop; a relist every RELIST_EVERY seconds, and after every
  reconnection of the stream (a restarted dockerd), catches anything the stream missed.
- A relist also removes running containers of this node that nobody supervises (left by a stop or a
  start the engine did not answer in time): never two instances of an app.
- The SDK is blocking: every call runs in a small thread pool, never on the event loop. The SDK is
  imported only when this runtime is first used, so process-mode agents stay small.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar
from urllib.parse import urlsplit, urlunsplit

from plum.agent import appuser, logfiles, procfs
from plum.agent.appenv import is_base_env
from plum.agent.config import AgentConfig
from plum.agent.runtimes import docker_resources as dres
from plum.agent.runtimes.base import (
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
from plum.agent.state import AppRecord
from plum.common.artifact import AppMeta
from plum.common.config import ConfigError

log = logging.getLogger(__name__)

LABEL_MANAGED = "plum.managed"
LABEL_NODE = "plum.node"
LABEL_APP = "plum.app"
LABEL_INSTANCE = "plum.instance"
LABEL_VERSION = "plum.version"
LABEL_SPEC = "plum.spec-hash"

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
API_TIMEOUT = 30  # seconds per engine call (a stop adds its own timeout to this)
RELIST_EVERY = 30.0  # safety net behind the event stream
ENGINE_WAIT = 60.0  # how long a start waits for an engine that is (re)starting
READY_WAIT_RECOVER = 5.0  # how long re-adoption at agent start waits for the engine
EVENTS_RETRY = (0.2, 5.0)  # reconnect backoff of the event stream: first and largest delay
CAPTURED_LINES = 1000  # log lines kept in the app's log file when its container ends
GARBAGE_AFTER = 60.0  # a dead container nobody watches is removed after this many seconds
RECENT_DEATHS_TTL = 60.0
ACTIVE_PHASES = ("Starting", "Running", "BackOff")
LOCALHOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")  # noqa: S104 - names to rewrite, not bound
HOST_GATEWAY_NAME = "host.docker.internal"

T = TypeVar("T")


class EngineUnavailable(Exception):
    """The engine does not answer (stopped, restarting, wrong DOCKER_HOST)."""


@functools.lru_cache(maxsize=1)
def _sdk() -> Any:
    import docker  # noqa: PLC0415 - imported on first use only: process-mode agents never load it

    logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)  # one debug line per engine call
    return docker


# --- engine probe without the SDK ----------------------------------------------------------------


def engine_answers(docker_host: Optional[str], timeout: float = 1.0) -> bool:
    """Whether a Docker engine answers GET /_ping, without importing the SDK (plain unix/tcp only)."""
    url = docker_host or DEFAULT_SOCKET
    parts = urlsplit(url)
    request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n"
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = parts.path
        elif parts.scheme in ("tcp", "http") and not os.environ.get("DOCKER_TLS_VERIFY"):
            sock = socket.socket(socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET)
            address = (parts.hostname, parts.port or 2375)
        else:  # TLS or ssh: only the SDK can talk to it
            with contextlib.closing(
                _sdk().APIClient(version="auto", timeout=timeout, **_sdk_kwargs(docker_host))
            ) as client:
                return bool(client.ping())
        with sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(request)
            answer = sock.recv(64)
        return answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n", 1)[0]
    except Exception:
        return False


def docker_runtime(config: AgentConfig, required: bool) -> Optional[DockerRuntime]:
    """The Docker runtime when AGENT_RUN_MODE=docker, when saved docker apps need it, or when an engine answers.

    Only the SDK's presence is checked here; it is imported once a docker app is deployed or re-adopted.
    """
    if not required and not engine_answers(config.docker.docker_host):
        log.info("no Docker engine answers: docker apps are refused on this agent")
        return None
    if importlib.util.find_spec("docker") is None:
        message = "the Docker SDK for Python is not installed (pip install 'plum[docker]')"
        if config.run_mode == "docker":
            raise ConfigError(f"AGENT_RUN_MODE=docker: {message}")
        log.warning("%s: docker apps are refused on this agent", message)
        return None
    return DockerRuntime(config)


def saved_records(data_dir: Path) -> Iterator[AppRecord]:
    """The apps' saved records (the supervisor's apps/<name>/state.json); unreadable ones are skipped."""
    for state_path in sorted((data_dir / "apps").glob("*/state.json")):
        try:
            yield AppRecord.load(state_path)
        except (OSError, ValueError, TypeError):
            continue


def saved_record(data_dir: Path, app: str) -> Optional[AppRecord]:
    if not app or app in (".", "..") or "/" in app:
        return None
    try:
        return AppRecord.load(data_dir / "apps" / app / "state.json")
    except (OSError, ValueError, TypeError):
        return None


def has_docker_apps(data_dir: Path) -> bool:
    """Whether the agent's saved state holds docker apps (they need this runtime to be re-adopted)."""
    return any(record.runtime == "docker" for record in saved_records(data_dir))


def _sdk_kwargs(docker_host: Optional[str]) -> dict[str, Any]:
    environment = dict(os.environ)
    if docker_host:
        environment["DOCKER_HOST"] = docker_host
    return dict(_sdk().utils.kwargs_from_env(environment=environment))


# --- pure helpers (unit-tested) ------------------------------------------------------------------


def rewrite_controller_base(base: str, controller_host: Optional[str], gateway: str) -> str:
    """CONTROLLER_BASE as seen from a bridge-mode container: a loopback host becomes the host's address.

    The port and path are kept as they are; no port means none is added (never a trailing colon).
    """
    parts = urlsplit(base)
    if (parts.hostname or "") not in LOCALHOSTS:
        return base
    host = controller_host or gateway
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def ports_overlap(a: tuple[str, int, str], b: tuple[str, int, str]) -> bool:
    wildcard = ("0.0.0.0", "::")  # noqa: S104 - compared, not bound
    return a[1:] == b[1:] and (a[0] == b[0] or a[0] in wildcard or b[0] in wildcard)


def port_in_use(host_ip: str, port: int, protocol: str) -> Optional[str]:
    """Why (host_ip, port) cannot be published, found by binding it for a moment; None when it is free."""
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            sock.bind((host_ip, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def published_ports(ports: Optional[dict[str, Any]]) -> list[str]:
    """Where an inspected container's ports are published (NetworkSettings.Ports): "127.0.0.1:32768->80/tcp"."""
    found = []
    for key, bindings in sorted((ports or {}).items()):
        for binding in bindings or ():
            ip, port = binding.get("HostIp") or "", binding.get("HostPort") or ""
            if port:
                found.append(f"{f'[{ip}]' if ':' in ip else ip}:{port}->{key}")
    return found


def listed_ports(summary: dict[str, Any]) -> list[str]:
    """The same from a container list entry (its Ports)."""
    ports: dict[str, list[dict[str, str]]] = {}
    for item in summary.get("Ports") or ():
        if item.get("PublicPort"):
            key = f"{item.get('PrivatePort')}/{item.get('Type') or 'tcp'}"
            ports.setdefault(key, []).append({"HostIp": item.get("IP") or "", "HostPort": str(item["PublicPort"])})
    return published_ports(ports)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def exit_info(state: Optional[dict[str, Any]], oom: bool, unhealthy: bool, unknown: bool) -> ExitInfo:
    """The supervisor's view of a container's end, from its inspected State."""
    now = time.time()
    if state is None or unknown:
        return ExitInfo(None, None, "Unknown", now)
    code = int(state.get("ExitCode") or 0)
    if state.get("OOMKilled") or oom:
        return ExitInfo(code or 137, 9, "OOMKilled", now)
    if unhealthy:
        return ExitInfo(code or None, None, "Unhealthy", now)  # never "success": the agent killed it
    if 128 < code < 160:
        return ExitInfo(code, code - 128, "Signaled", now)
    return ExitInfo(code, None, "Exited", now)


# --- handle ---------------------------------------------------------------------------------------


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
    ) -> None:
        self.container_id = container_id
        self.name = name
        self.launch = launch
        self.app_name = launch.app_name
        self.log_path = launch.log_path
        self.stop_timeout = launch.spec.stop_timeout
        self.started_at = started_at
        self._pid = pid
        self.on_exit = on_exit
        self.oom = False
        self.unhealthy = False
        self.finishing = False  # its end is being collected
        self.stopping = False  # a stop was asked for: its end is not a crash
        self.cgroups: Optional[dict[str, Path]] = None
        self.published: list[str] = []  # "HOST_IP:HOST_PORT->CONTAINER/proto", the Docker-picked ports too
        # Re-adopted while the engine did not answer: checked (and re-adopted for real) once it does.
        self.pending = False
        self.recent_logs: Optional[tuple[int, list[str]]] = None  # (lines asked for, lines) of the last fetch
        self.logs_fetch: Optional[asyncio.Future[None]] = None
        self.exited: asyncio.Future[ExitInfo] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> Optional[int]:
        return self._pid

    def to_state(self) -> dict[str, Any]:
        state = {"container_id": self.container_id, "name": self.name, "started_at": self.started_at, "pid": self._pid}
        if self.published:
            state["ports"] = list(self.published)
        return state


@dataclass
class Plan:
    """One container to create, computed from a Launch before anything touches the engine."""

    name: str
    image: str
    pull_policy: str
    command: Optional[list[str]]
    env: dict[str, str]
    labels: dict[str, str]
    working_dir: Optional[str]
    host_config: dict[str, Any]
    exposed: list[tuple[int, str]]
    bindings: set[tuple[str, int, str]] = field(default_factory=set)
    stop_timeout: int = 10
    data_dir: Optional[Path] = None
    user: Optional[str] = None  # spec.user, resolved by the image; None: the image's own user
    release: Optional[Path] = None  # a zip app's release, mounted at /app


# --- the runtime ----------------------------------------------------------------------------------


class DockerRuntime(Runtime):
    name = "docker"

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.settings = config.docker
        self.node = config.node_id
        self._api: Any = None  # docker.APIClient, made on first use
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="plum-docker")
        self._watched: dict[str, DockerHandle] = {}  # container id -> handle
        self._published: dict[str, set[tuple[str, int, str]]] = {}  # app -> host ports its container holds
        self._published_by: dict[str, DockerHandle] = {}  # app -> the container holding them
        self._recent_deaths: dict[str, float] = {}  # die events of containers not (yet) watched
        self._leftovers: set[str] = set()  # containers to remove whose removal (or stop) failed
        self._busy: dict[str, int] = {}  # app -> starts and re-adoptions in progress (their containers are spared)
        self._settled: set[str] = set()  # apps started or re-adopted since the agent started
        self._tasks: set[asyncio.Future[Any]] = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._ready: Optional[asyncio.Event] = None  # set once the stream is open and the sweep is done
        self._engine_down: Optional[asyncio.Event] = None  # set while the last connection attempt failed
        self._recover_waited = False  # re-adoption waited for the engine once already, in vain
        self._booted = False
        self._connected = False
        self._outage = True  # the next relist reports exits as "not watched" (start, reconnection)
        self._closing = threading.Event()
        self._gateway: Optional[str] = None
        self._host_gateway = False
        self._ncpu: Optional[int] = None
        with contextlib.suppress(RuntimeError):  # no loop: a unit test; boot on first use
            asyncio.get_running_loop()
            if config.run_mode == "docker" or has_docker_apps(config.data_dir):
                self._boot()

    # ---- engine connection, event stream, relist --------------------------------------------

    def _node_filter(self, **extra: str) -> dict[str, Any]:
        labels = [f"{LABEL_MANAGED}=true", f"{LABEL_NODE}={self.node}"]
        labels += [f"{key}={value}" for key, value in extra.items()]
        return {"label": labels}

    def _new_client(self, timeout: int = API_TIMEOUT) -> Any:
        docker = _sdk()
        try:
            return docker.APIClient(
                version="auto", timeout=timeout, max_pool_size=8, **_sdk_kwargs(self.settings.docker_host)
            )
        except docker.errors.DockerException as exc:
            raise EngineUnavailable(self._describe_engine_error(exc)) from None

    def _describe_engine_error(self, exc: Exception) -> str:
        where = self.settings.docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
        return f"Docker engine at {where} does not answer ({exc})"

    def _client(self) -> Any:
        """The shared API client (thread-safe connection pool); runs in a worker thread."""
        if self._api is None:
            api = self._new_client()
            version = tuple(int(x) for x in str(api.api_version).split(".")[:2])
            self._host_gateway = version >= (1, 41)  # host-gateway: engine 20.10 and later
            if not self._host_gateway:
                with contextlib.suppress(Exception):
                    self._gateway = api.inspect_network("bridge")["IPAM"]["Config"][0]["Gateway"]
            with contextlib.suppress(Exception):
                self._ncpu = int(api.info().get("NCPU") or 0) or None
            self._api = api
        return self._api

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking engine call in the pool; connection failures become EngineUnavailable."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._guarded, fn, args)

    def _guarded(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        import requests  # noqa: PLC0415 - comes with the SDK, loaded with it

        try:
            return fn(*args)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise EngineUnavailable(self._describe_engine_error(exc)) from None

    def _boot(self) -> None:
        """Start watching the engine: the event thread (which reconnects forever) and the relist loop."""
        if self._booted:
            return
        self._booted = True
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._engine_down = asyncio.Event()
        threading.Thread(target=self._events_main, name="plum-docker-events", daemon=True).start()
        self._spawn(self._relist_forever())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("docker runtime task failed", exc_info=task.exception())

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed while we were reading
                loop.call_soon_threadsafe(fn, *args)

    def _events_main(self) -> None:
        """Background thread: read this node's container events and hand them to the event loop."""
        delay = EVENTS_RETRY[0]
        while not self._closing.is_set():
            client: Any = None
            stream: Any = None
            try:
                client = self._new_client()
                stream = client.events(decode=True, filters={**self._node_filter(), "type": "container"})
                self._post(self._on_stream_open)
                delay = EVENTS_RETRY[0]
                for event in stream:
                    self._post(self._on_event, event)
            except Exception as exc:
                log.debug("docker event stream: %s", exc)
            finally:
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()
                if client is not None:  # one client per connection: its pool goes with it
                    with contextlib.suppress(Exception):
                        client.close()
            if self._closing.is_set():
                return
            self._post(self._on_stream_lost)
            self._closing.wait(delay)
            delay = min(delay * 2, EVENTS_RETRY[1])

    def _on_stream_open(self) -> None:
        self._connected = True
        if self._engine_down is not None:
            self._engine_down.clear()
        log.info("watching Docker events for node %s", self.node)
        self._spawn(self._after_connect())

    def _on_stream_lost(self) -> None:
        if self._connected:
            log.warning("lost the Docker event stream; reconnecting (containers are checked once it is back)")
        self._connected = False
        self._outage = True
        if self._engine_down is not None:
            self._engine_down.set()

    async def _after_connect(self) -> None:
        assert self._ready is not None
        try:
            await self._run(self._client)
            if not self._ready.is_set():
                await self._run(self._sweep)
                self._ready.set()
            await self._adopt_pending()
            outage, self._outage = self._outage, False
            await self._relist(after_outage=outage)
        except Exception as exc:  # retried at the next relist round or reconnection
            log.warning("after connecting to the Docker engine: %s", exc)

    async def _adopt_pending(self) -> None:
        """Re-adopt for real the apps recovered while the engine did not answer (their saved container, else
        their instance's newest running one); an app whose container is gone is reported, and restarted."""
        for handle in [h for h in self._watched.values() if h.pending]:
            if handle.finishing or handle.exited.done():
                continue
            with self._busy_with(handle.app_name):
                chosen = await self._choose(handle.launch, handle.container_id)
                if handle.finishing or handle.exited.done():  # stopped, or its death seen, meanwhile
                    continue
                if chosen is None:
                    handle.pending = False
                    self._report(handle, exit_info(None, False, False, True))
                    continue
                await self._take(handle, chosen)
                log.info("%s: re-adopted container %s", handle.app_name, handle.container_id[:12])

    async def _relist_forever(self) -> None:
        assert self._ready is not None
        while True:
            await asyncio.sleep(RELIST_EVERY)
            if not self._connected:
                continue  # the event thread reconnects, then relists
            if not self._ready.is_set() or any(h.pending for h in self._watched.values()):
                await self._after_connect()  # the first sweep or a re-adoption failed: try again
                continue
            try:
                await self._relist(after_outage=False)
            except Exception as exc:  # the next round tries again
                log.warning("relist: %s", exc)

    def _list(self, **labels: str) -> list[dict[str, Any]]:
        return list(self._client().containers(all=True, filters=self._node_filter(**labels)))

    async def _relist(self, after_outage: bool) -> None:
        """Compare what the engine runs with what we watch: report missed exits, remove what nobody supervises."""
        containers = await self._run(self._list)
        by_id = {c["Id"]: c for c in containers}
        for cid, handle in list(self._watched.items()):
            if handle.stopping or handle.finishing or handle.pending:
                continue
            summary = by_id.get(cid)
            if summary is None or summary.get("State") != "running":
                self._begin_exit(handle, unknown=after_outage)
            elif "(unhealthy)" in str(summary.get("Status", "")):
                self._begin_unhealthy(handle)
        now = time.time()
        for summary in containers:
            cid = summary["Id"]
            if cid in self._watched:
                continue
            if summary.get("State") == "running":
                if cid in self._leftovers or self._unsupervised(summary):
                    labels = summary.get("Labels") or {}
                    log.warning(
                        "removing container %s of app %r (instance %s): it runs, but the agent does not supervise it",
                        cid[:12],
                        labels.get(LABEL_APP),
                        labels.get(LABEL_INSTANCE),
                    )
                    self._spawn(self._remove(cid))
            elif cid in self._leftovers or now - float(summary.get("Created") or now) > GARBAGE_AFTER:
                self._spawn(self._remove(cid))
        self._leftovers &= set(by_id)

    def _unsupervised(self, summary: dict[str, Any]) -> bool:
        """Whether a running container of this node that no handle watches is a stray (never a second instance).

        Spared: containers of an app being started or re-adopted right now, and, before an app is re-adopted
        after an agent start, the container its saved record points at (or, a lost record, may be found by).
        """
        labels = summary.get("Labels") or {}
        if labels.get(LABEL_NODE) != self.node:  # the list is filtered by node already: never another node's
            return False
        app = str(labels.get(LABEL_APP) or "")
        if self._busy.get(app) or any(h.pending and h.app_name == app for h in self._watched.values()):
            return False  # being started or re-adopted, or waiting to be once the engine answers
        if app in self._settled:  # started or re-adopted by this agent: its one container is the watched one
            return True
        record = saved_record(self.config.data_dir, app)
        if record is None or record.runtime != self.name or record.instance_id != labels.get(LABEL_INSTANCE):
            return True
        if not (record.handle or record.phase in ACTIVE_PHASES):
            return True
        saved = str((record.handle or {}).get("container_id") or "")
        return bool(saved) and saved != summary["Id"]

    @contextlib.contextmanager
    def _busy_with(self, app: str) -> Iterator[None]:
        """An app's containers are being created or re-adopted: the relist leaves them alone meanwhile."""
        self._busy[app] = self._busy.get(app, 0) + 1
        try:
            yield
        finally:
            self._busy[app] -= 1
            if not self._busy[app]:
                del self._busy[app]
            self._settled.add(app)

    def _sweep(self) -> None:
        """At start: remove containers labelled for this node that belong to no app the agent keeps running."""
        known = {
            (record.name, record.instance_id): record
            for record in saved_records(self.config.data_dir)
            if record.runtime == self.name
        }
        for summary in self._list():
            labels = summary.get("Labels") or {}
            record = known.get((labels.get(LABEL_APP), labels.get(LABEL_INSTANCE)))
            if record is not None and (record.handle or record.phase in ACTIVE_PHASES):
                continue
            log.info(
                "removing container %s (%s): app %r is not kept by this agent",
                summary.get("Names"),
                summary["Id"][:12],
                labels.get(LABEL_APP),
            )
            with contextlib.suppress(Exception):
                self._client().remove_container(summary["Id"], force=True)

    async def _wait_ready(self, timeout: float) -> bool:
        self._boot()
        assert self._ready is not None
        if not self._ready.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout)
        return self._ready.is_set()

    async def _wait_engine(self, timeout: float) -> bool:
        """Like _wait_ready, but gives up at once on an engine known to be down: an agent start never waits
        for it app after app (what it recovers meanwhile is checked once the engine answers)."""
        self._boot()
        assert self._ready is not None and self._engine_down is not None
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

    # ---- events ---------------------------------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        cid = str(event.get("id") or (event.get("Actor") or {}).get("ID") or "")
        handle = self._watched.get(cid)
        if action == "die":
            if handle is None:
                now = time.monotonic()
                self._recent_deaths = {k: t for k, t in self._recent_deaths.items() if now - t < RECENT_DEATHS_TTL}
                self._recent_deaths[cid] = now
            elif not (handle.stopping or handle.finishing):
                self._begin_exit(handle)
        elif action == "oom" and handle is not None:
            handle.oom = True
        elif action.startswith("health_status") and handle is not None:
            status = action.partition(":")[2].strip()
            log.info("%s: container health is %s", handle.app_name, status)
            if status == "unhealthy":
                self._begin_unhealthy(handle)

    def _watch(self, handle: DockerHandle) -> None:
        self._watched[handle.container_id] = handle
        if self._recent_deaths.pop(handle.container_id, None) is not None:
            self._begin_exit(handle)  # died before we were watching it

    def _begin_exit(self, handle: DockerHandle, unknown: bool = False) -> None:
        if handle.finishing or handle.exited.done():
            return
        handle.finishing = True
        self._spawn(self._finish(handle, unknown))

    def _begin_unhealthy(self, handle: DockerHandle) -> None:
        if handle.unhealthy or handle.stopping or handle.finishing:
            return
        handle.unhealthy = True
        log.warning("%s: health check failed; restarting its container", handle.app_name)

        async def kill() -> None:
            try:
                await self._run(self._stop_container, handle.container_id, handle.stop_timeout)
            except Exception as exc:  # the next relist (or health event) tries again
                log.warning(
                    "%s: cannot stop unhealthy container %s: %s", handle.app_name, handle.container_id[:12], exc
                )
                handle.unhealthy = False

        self._spawn(kill())

    async def _finish(self, handle: DockerHandle, unknown: bool) -> None:
        """Collect a container's end (state, last logs), report it, then remove the container."""
        inspected, captured = await asyncio.gather(
            self._run(self._inspect_state, handle.container_id),
            self._run(self._capture_logs, handle.container_id, handle.log_path),
            return_exceptions=True,
        )
        if isinstance(captured, BaseException):
            log.warning("%s: cannot keep the last logs: %s", handle.app_name, captured)
        state: Optional[dict[str, Any]] = None
        if isinstance(inspected, EngineUnavailable) and not handle.stopping:
            handle.finishing = False  # the relist after the engine is back reports it
            return
        if isinstance(inspected, BaseException):
            if not isinstance(inspected, EngineUnavailable):
                log.warning("%s: cannot inspect container %s: %s", handle.app_name, handle.container_id[:12], inspected)
            unknown = True
        else:
            state = inspected
        self._report(handle, exit_info(state, handle.oom, handle.unhealthy, unknown))
        if not handle.stopping:
            await self._remove(handle.container_id)

    def _report(self, handle: DockerHandle, info: ExitInfo) -> None:
        if handle.exited.done():
            return
        self._watched.pop(handle.container_id, None)
        if self._published_by.get(handle.app_name) is handle:
            self._published.pop(handle.app_name, None)
            self._published_by.pop(handle.app_name, None)
        handle.exited.set_result(info)
        log.info("%s: container %s ended: %s", handle.app_name, handle.container_id[:12], info.describe())
        handle.on_exit(handle, info)

    # ---- engine calls (run in the pool) -----------------------------------------------------------

    def _inspect_state(self, cid: str) -> Optional[dict[str, Any]]:
        docker = _sdk()
        try:
            return dict(self._client().inspect_container(cid)["State"])
        except docker.errors.NotFound:
            return None

    def _container_logs(self, cid: str, lines: int) -> list[str]:
        raw = self._client().logs(cid, stdout=True, stderr=True, tail=lines)
        return bytes(raw).decode("utf-8", "replace").splitlines()[-lines:]

    def _capture_logs(self, cid: str, path: Path) -> None:
        """Keep the last lines of an ending container in the app's log file (served once it is gone)."""
        docker = _sdk()
        try:
            lines = self._container_logs(cid, CAPTURED_LINES)
        except docker.errors.APIError as exc:  # gone, or being removed: nothing left to keep
            log.debug("no logs from container %s: %s", cid[:12], exc)
            return
        logfiles.replace_with_lines(path, lines)

    def _stop_container(self, cid: str, timeout: float) -> None:
        docker = _sdk()
        with contextlib.suppress(docker.errors.NotFound):
            self._client().stop(cid, timeout=math.ceil(timeout))

    def _remove_container(self, cid: str) -> None:
        docker = _sdk()
        try:
            self._client().remove_container(cid, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: a removal is already in progress
                raise

    async def _remove(self, cid: str) -> None:
        try:
            await self._run(self._remove_container, cid)
            self._leftovers.discard(cid)
        except Exception as exc:
            self._leftovers.add(cid)  # the next relist (at the latest once the engine is back) retries
            log.warning("cannot remove container %s: %s", cid[:12], exc)

    def _ensure_image(self, image: str, policy: str) -> None:
        docker = _sdk()
        api = self._client()
        if policy != "always":
            try:
                api.inspect_image(image)
                return
            except docker.errors.ImageNotFound:
                if policy == "never":
                    raise StartError(
                        f"image {image} is not on this Docker engine and spec.pull_policy is 'never' "
                        "(load it with docker load or build it first)"
                    ) from None
        repository, tag = docker.utils.parse_repository_tag(image)
        try:
            for line in api.pull(repository, tag=tag, stream=True, decode=True):
                if isinstance(line, dict) and line.get("error"):
                    raise StartError(f"cannot pull image {image}: {line['error']}")
        except docker.errors.APIError as exc:
            hint = " (it is not on this engine either)" if policy != "always" else ""
            raise StartError(f"cannot pull image {image}{hint}: {exc.explanation or exc}") from None

    def _create_and_start(self, plan: Plan, again: bool = False) -> tuple[str, dict[str, Any]]:
        """Create and start the planned container: (id, its inspected state, NetworkSettings included).

        again: a retry after the engine did not answer; what the first attempt may have created goes first.
        """
        docker = _sdk()
        api = self._client()
        if again:
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_container(plan.name, force=True)
        self._ensure_image(plan.image, plan.pull_policy)
        if plan.data_dir is not None:
            plan.data_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._open_mounts_to(plan)
        try:
            container = api.create_container(
                plan.image,
                command=plan.command,
                name=plan.name,
                environment=plan.env,
                labels=plan.labels,
                working_dir=plan.working_dir,
                ports=plan.exposed or None,
                stop_timeout=plan.stop_timeout,
                user=plan.user,
                host_config=api.create_host_config(**plan.host_config),
            )
        except docker.errors.APIError as exc:
            raise StartError(f"cannot create a container from {plan.image}: {exc.explanation or exc}") from None
        cid = str(container["Id"])
        try:
            api.start(cid)
            inspected = api.inspect_container(cid)
            state = dict(inspected["State"])
            state["Published"] = published_ports((inspected.get("NetworkSettings") or {}).get("Ports"))
        except docker.errors.APIError as exc:
            with contextlib.suppress(Exception):
                api.remove_container(cid, force=True)
            raise StartError(f"cannot start the container from {plan.image}: {exc.explanation or exc}") from None
        except BaseException:
            with contextlib.suppress(Exception):
                api.remove_container(cid, force=True)
            raise
        return cid, state

    @staticmethod
    def _open_mounts_to(plan: Plan) -> None:
        """A numeric UID:GID user may read the release and own the data dir; a name means nothing on the host,
        so then the release is readable by any user (only through the container's mount)."""
        ids = appuser.numeric_ids(plan.user) if appuser.agent_is_root() else None
        try:
            if ids is None:  # the image's own user, unknown here: any user may read the release
                if plan.release is not None:
                    appuser.open_release_to_any_user(plan.release)
                return
            if plan.release is not None:
                appuser.share_release(plan.release, ids[1])
            if plan.data_dir is not None:
                os.chown(plan.data_dir, *ids)
        except OSError as exc:
            raise StartError(f"cannot give the app's files to user {plan.user}: {exc.strerror}") from None

    # ---- planning a container ---------------------------------------------------------------------

    def _network_mode(self, spec: AppSpec) -> str:
        return spec.network_mode or self.settings.network_mode

    def _port_mappings(self, spec: AppSpec, meta: Optional[AppMeta]) -> list[dres.PortMapping]:
        """spec.ports when given, else every meta.ini service on the same host port (bridge mode only)."""
        if self._network_mode(spec) != "bridge":
            return []
        if spec.ports:
            return [dres.parse_port(p) for p in spec.ports]
        services = meta.services if meta is not None else ()
        return [dres.PortMapping(None, s.port, s.port, "udp" if s.protocol == "udp" else "tcp") for s in services]

    def _host_ports(self, mappings: list[dres.PortMapping]) -> list[tuple[str, int, str]]:
        """The explicit host ports of mappings, as (host ip, port, protocol); Docker-picked ones never conflict."""
        publish_host = self.settings.publish_host
        return [(m.host_ip or publish_host, m.host_port, m.protocol) for m in mappings if m.host_port is not None]

    def _port_problem(self, app_name: str, bindings: list[tuple[str, int, str]], own_held: bool) -> Optional[str]:
        for binding in bindings:
            for other, held in self._published.items():
                if other != app_name and any(ports_overlap(binding, h) for h in held):
                    return f"host port {binding[0]}:{binding[1]}/{binding[2]} is already published by app {other!r}"
            if own_held and binding in self._published.get(app_name, set()):
                continue  # held by this app's running container, which the deploy replaces
            reason = port_in_use(*binding)
            if reason is not None:
                return f"host port {binding[0]}:{binding[1]}/{binding[2]} is not free ({reason})"
        return None

    def preflight(self, name: str, spec: AppSpec, meta: Optional[AppMeta]) -> None:
        """Checks a deploy makes before the running version is touched (a SpecError is a 400)."""
        for path in spec.host_lib_paths:
            if not Path(path).exists():
                raise SpecError("host_lib_paths", f"{path} does not exist on this host")
        if spec.cpus is not None and self._ncpu is not None and spec.cpus > self._ncpu:
            raise SpecError("cpus", f"{spec.cpus:g} CPUs asked for, but the Docker host has {self._ncpu}")
        bindings = self._host_ports(self._port_mappings(spec, meta))
        problem = self._port_problem(name, bindings, own_held=True)
        if problem is not None:
            source = "" if spec.ports else " (from meta.ini services; set spec.ports to map them elsewhere)"
            raise SpecError("ports", problem + source)

    def _container_env(self, launch: Launch, network_mode: str, controller_gateway: str) -> dict[str, str]:
        env = dict(self.settings.env)
        env.update({k: v for k, v in launch.env.items() if not is_base_env(k)})  # the image has its own
        env.update(launch.spec.env)  # the spec may set PATH & co. on purpose
        base = env.get("CONTROLLER_BASE")
        if base and network_mode == "bridge":
            env["CONTROLLER_BASE"] = rewrite_controller_base(base, self.settings.controller_host, controller_gateway)
        if launch.app_dir is not None and (launch.app_dir / "lib").is_dir():
            current = env.get("LD_LIBRARY_PATH")
            env["LD_LIBRARY_PATH"] = f"{current}:/app/lib" if current else "/app/lib"
        return env

    def _plan(self, launch: Launch) -> Plan:
        spec, settings = launch.spec, self.settings
        network_mode = self._network_mode(spec)
        binds: dict[str, dict[str, str]] = {}
        data_dir = None
        if launch.app_dir is not None:  # a zip app: its release directory is /app
            image = spec.base_image or settings.base_image
            binds[str(launch.app_dir)] = {"bind": "/app", "mode": "rw"}
            working_dir: Optional[str] = "/app"
            command: Optional[list[str]] = start_command(launch.app_dir, spec.start_cmd)
        else:  # an image app: its own command, a data directory at /app/data
            assert spec.image is not None
            image, working_dir, data_dir = spec.image, None, launch.data_dir
            binds[str(launch.data_dir)] = {"bind": "/app/data", "mode": "rw"}
            command = ["/bin/sh", "-c", spec.start_cmd] if spec.start_cmd else None
        for path in (*settings.host_lib_paths, *spec.host_lib_paths):
            if not Path(path).exists():
                raise StartError(f"host library path {path} does not exist (spec.host_lib_paths/PLUM_HOST_LIB_PATHS)")
            binds.setdefault(path, {"bind": path, "mode": "ro"})

        mappings = self._port_mappings(spec, launch.meta)
        bindings = self._host_ports(mappings)
        problem = self._port_problem(launch.app_name, bindings, own_held=False)
        if problem is not None:
            raise StartError(f"cannot publish ports: {problem}")
        port_bindings: dict[str, list[tuple[str, Optional[int]]]] = {}
        exposed: list[tuple[int, str]] = []
        for mapping in mappings:
            host_ip, host_port, protocol = mapping.bound_on(settings.publish_host)
            key = f"{mapping.container_port}/{protocol}"
            if key not in port_bindings:
                exposed.append((mapping.container_port, protocol))
            port_bindings.setdefault(key, []).append((host_ip, host_port))  # None: Docker picks the host port

        host_config: dict[str, Any] = {
            "binds": binds,
            "network_mode": network_mode,
            "restart_policy": {"Name": "no"},  # the agent is the one that restarts
            "init": True,  # signals reach the app, zombies are reaped
            "log_config": {
                "type": "json-file",
                "config": {
                    "max-size": str(self.config.log_max_bytes),
                    "max-file": str(self.config.log_backups + 1),
                },
            },
        }
        if port_bindings:
            host_config["port_bindings"] = port_bindings
        gateway = self._gateway or "172.17.0.1"
        if network_mode == "bridge" and self._host_gateway:
            host_config["extra_hosts"] = {HOST_GATEWAY_NAME: "host-gateway"}
            gateway = HOST_GATEWAY_NAME
        memory = spec.memory or settings.memory
        if memory:
            host_config["mem_limit"] = memory
            host_config["memswap_limit"] = memory  # no swap: over the limit is an OOM kill, not a crawl
        cpus = spec.cpus or settings.cpus
        if cpus:
            host_config["nano_cpus"] = int(cpus * 1e9)
        if spec.seccomp_unconfined:
            host_config["security_opt"] = ["seccomp=unconfined"]

        version = launch.version or dres.image_tag(image)
        return Plan(
            name=f"plum-{self.node}-{launch.app_name}-{secrets.token_hex(3)}",
            image=image,
            pull_policy=spec.pull_policy,
            command=command,
            env=self._container_env(launch, network_mode, gateway),
            labels={
                LABEL_MANAGED: "true",
                LABEL_NODE: self.node,
                LABEL_APP: launch.app_name,
                LABEL_INSTANCE: launch.instance_id,
                LABEL_VERSION: version,
                LABEL_SPEC: spec.digest(),
            },
            working_dir=working_dir,
            host_config=host_config,
            exposed=exposed,
            bindings=set(bindings),
            stop_timeout=math.ceil(spec.stop_timeout),
            data_dir=data_dir,
            user=spec.user,
            release=launch.app_dir,
        )

    # ---- the Runtime contract -----------------------------------------------------------------

    async def start(self, launch: Launch, on_exit: ExitCallback) -> Handle:
        with self._busy_with(launch.app_name):
            return await self._start(launch, on_exit)

    async def _start(self, launch: Launch, on_exit: ExitCallback) -> DockerHandle:
        if not await self._wait_ready(ENGINE_WAIT):
            raise StartError(self._describe_engine_error(TimeoutError(f"no answer within {ENGINE_WAIT:g}s")))
        plan = self._plan(launch)
        deadline = time.monotonic() + ENGINE_WAIT
        again = False
        while True:
            try:
                cid, state = await self._run(self._create_and_start, plan, again)
                break
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
            cid, plan.name, launch, started_at=time.time(), pid=state.get("Pid") or None, on_exit=on_exit
        )
        handle.published = list(state.get("Published") or [])
        self._published[launch.app_name] = plan.bindings
        self._published_by[launch.app_name] = handle
        self._watch(handle)
        if not state.get("Running") and not handle.finishing:
            self._begin_exit(handle)
        return handle

    async def recover(self, launch: Launch, state: dict[str, Any], on_exit: ExitCallback) -> Optional[Handle]:
        saved_id = str(state.get("container_id") or "")
        started_at = float(state.get("started_at") or time.time())
        with self._busy_with(launch.app_name):
            try:
                if await self._wait_engine(READY_WAIT_RECOVER):
                    return await self._readopt(launch, saved_id, started_at, on_exit)
                problem = "the Docker engine does not answer"
            except Exception as exc:  # the engine went away meanwhile, or answered oddly: never block the agent's start
                problem = str(exc)
            if not saved_id:
                log.warning(
                    "%s: %s; its restart policy applies (a start waits for the engine)", launch.app_name, problem
                )
                return None
            # Watch the saved container anyway: once the engine answers, it is re-adopted, or reported if gone.
            log.warning("%s: %s; container %s is checked once it answers", launch.app_name, problem, saved_id[:12])
            handle = DockerHandle(
                saved_id, str(state.get("name") or ""), launch, started_at=started_at, pid=None, on_exit=on_exit
            )
            handle.pending = True
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
        containers = await self._run(self._list_instance, launch.app_name, launch.instance_id)
        running = [c for c in containers if c.get("State") == "running"]
        chosen = next((c for c in running if c["Id"] == saved_id), None)
        if chosen is None and running:
            chosen = max(running, key=lambda c: float(c.get("Created") or 0))  # lost record: newest one
        if chosen is not None and (chosen.get("Labels") or {}).get(LABEL_SPEC) != launch.spec.digest():
            log.info("%s: container %s runs another spec; replacing it", launch.app_name, chosen["Id"][:12])
            await self._run(self._stop_container, chosen["Id"], launch.spec.stop_timeout)
            chosen = None
        for other in containers:
            if chosen is None or other["Id"] != chosen["Id"]:
                if other["Id"] == saved_id:
                    with contextlib.suppress(Exception):
                        await self._run(self._capture_logs, other["Id"], launch.log_path)
                await self._remove(other["Id"])
        return chosen

    async def _take(self, handle: DockerHandle, chosen: dict[str, Any]) -> None:
        """Make handle watch the chosen container (its id, name, pid and published ports)."""
        state = await self._run(self._inspect_state, chosen["Id"]) or {}
        if self._watched.get(handle.container_id) is handle:
            del self._watched[handle.container_id]
        if chosen["Id"] != handle.container_id:  # found by its labels: its own start time
            handle.started_at = float(chosen.get("Created") or time.time())
        handle.container_id = chosen["Id"]
        handle.name = (chosen.get("Names") or [""])[0].lstrip("/")
        handle._pid = state.get("Pid") or None
        handle.cgroups = None
        handle.published = listed_ports(chosen)
        handle.pending = False
        mappings = self._port_mappings(handle.launch.spec, handle.launch.meta)
        self._published[handle.app_name] = set(self._host_ports(mappings))
        self._published_by[handle.app_name] = handle
        self._watch(handle)

    def _list_app(self, app: str) -> list[dict[str, Any]]:
        return self._list(**{LABEL_APP: app})

    def _list_instance(self, app: str, instance: str) -> list[dict[str, Any]]:
        return self._list(**{LABEL_APP: app, LABEL_INSTANCE: instance})

    def inspect(self, handle: Handle) -> Inspection:
        return Inspection(handle.pid, None, handle.started_at)  # the release is told by the saved record

    async def stop(self, handle: Handle, timeout: float) -> None:
        assert isinstance(handle, DockerHandle)
        handle.stopping = True
        if handle.finishing or handle.exited.done():
            await handle.exited  # its end is being collected already
        else:
            handle.finishing = True
            try:
                await self._run(self._stop_container, handle.container_id, timeout)
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
                await self._run(self._capture_logs, cid, handle.log_path)
            try:
                await self._run(self._remove_container, cid)
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
        handle.finishing = False
        self._report(handle, exit_info(None, False, False, True))

    def usage(self, handles: list[Handle]) -> dict[int, Usage]:
        result: dict[int, Usage] = {}
        groups: Optional[dict[int, tuple[float, int]]] = None
        for handle in handles:
            assert isinstance(handle, DockerHandle)
            measured = None
            if handle.pid:
                if handle.cgroups is None:
                    handle.cgroups = dres.cgroup_dirs(handle.pid)
                measured = dres.cgroup_usage(handle.cgroups)
                if measured is None:  # no cgroup access (the agent in a container): its process group
                    if groups is None:
                        groups = procfs.usage_by_group()
                    measured = groups.get(handle.pid)
            cpu, memory = measured or (0.0, 0)
            result[id(handle)] = Usage(cpu, memory)
        return result

    def _live(self, handle: Optional[Handle]) -> bool:
        """A container that runs and whose logs the engine can serve."""
        return (
            isinstance(handle, DockerHandle)
            and not handle.pending
            and not handle.exited.done()
            and self._api is not None
        )

    async def tail_logs_async(self, launch: Launch, handle: Optional[Handle], lines: int) -> list[str]:
        """The container's last lines, read through the engine in the pool (never on the event loop)."""
        if lines <= 0:
            return []
        if self._live(handle):
            assert isinstance(handle, DockerHandle)
            try:
                return await self._run(self._container_logs, handle.container_id, lines)
            except Exception as exc:  # gone meanwhile, or the engine does not answer: what was kept
                log.debug("%s: no logs from the engine: %s", launch.app_name, exc)
        return await logfiles.tail_async(launch.log_path, lines)  # what was captured when the last container ended

    def tail_logs(self, launch: Launch, handle: Optional[Handle], lines: int) -> list[str]:
        """Never waits for the engine on the event loop: a running container's lines come from the last fetch
        made in the pool (each call starts a new one); tail_logs_async waits for fresh ones instead."""
        if lines <= 0:
            return []
        if self._live(handle):
            assert isinstance(handle, DockerHandle)
            if not _on_event_loop():  # a worker thread may wait
                with contextlib.suppress(Exception):
                    return self._guarded(self._container_logs, (handle.container_id, lines))
            else:
                self._fetch_logs(handle, lines)
                if handle.recent_logs is not None and handle.recent_logs[0] >= lines:
                    return handle.recent_logs[1][-lines:]
        return logfiles.tail(launch.log_path, lines)

    def _fetch_logs(self, handle: DockerHandle, lines: int) -> None:
        if handle.logs_fetch is not None and not handle.logs_fetch.done():
            return
        wanted = max(lines, handle.recent_logs[0] if handle.recent_logs else 0)

        async def fetch() -> None:
            handle.recent_logs = (wanted, await self._run(self._container_logs, handle.container_id, wanted))

        def done(task: asyncio.Future[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.debug("%s: no logs from the engine: %s", handle.app_name, task.exception())

        handle.logs_fetch = asyncio.ensure_future(fetch())
        handle.logs_fetch.add_done_callback(done)

    async def forget(self, launch: Launch) -> None:
        self._published.pop(launch.app_name, None)
        self._published_by.pop(launch.app_name, None)
        self._settled.discard(launch.app_name)
        if self._ready is None or not self._ready.is_set():
            return
        try:
            for summary in await self._run(self._list_app, launch.app_name):
                await self._remove(summary["Id"])
        except EngineUnavailable as exc:
            log.warning("%s: containers left for the next start's cleanup: %s", launch.app_name, exc)
