"""The Docker engine as the runtime sees it: the SDK's client, the pool its blocking calls run in, the
event stream (one background thread that reconnects with back-off) and the periodic relist behind it.

The SDK is imported on first use only, so process-mode agents never load it; engine_answers probes an
engine without it. Every blocking call runs in the pool, never on the event loop, and a connection
failure becomes EngineUnavailable, which callers treat as "try again once the engine answers".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, TypeVar
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

LABEL_MANAGED = "plum.managed"
LABEL_NODE = "plum.node"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
API_TIMEOUT = 30  # seconds per engine call (a stop adds its own timeout to this)
RELIST_EVERY = 30.0  # safety net behind the event stream
EVENTS_RETRY = (0.2, 5.0)  # reconnect back-off of the event stream: first and largest delay

T = TypeVar("T")


class EngineUnavailable(Exception):
    """The engine does not answer (stopped, restarting, wrong DOCKER_HOST)."""


@functools.lru_cache(maxsize=1)
def sdk() -> Any:
    import docker  # noqa: PLC0415 - imported on first use only: process-mode agents never load it

    logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)  # one debug line per engine call
    return docker


def sdk_kwargs(docker_host: Optional[str]) -> dict[str, Any]:
    environment = dict(os.environ)
    if docker_host:
        environment["DOCKER_HOST"] = docker_host
    return dict(sdk().utils.kwargs_from_env(environment=environment))


def engine_answers(docker_host: Optional[str], timeout: float = 1.0) -> bool:
    """Whether a Docker engine answers GET /_ping, without importing the SDK (plain unix/tcp only)."""
    parts = urlsplit(docker_host or DEFAULT_SOCKET)
    request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n"
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = parts.path
        elif parts.scheme in ("tcp", "http") and not os.environ.get("DOCKER_TLS_VERIFY"):
            sock = socket.socket(socket.AF_INET6 if ":" in (parts.hostname or "") else socket.AF_INET)
            address = (parts.hostname, parts.port or 2375)
        else:  # TLS or ssh: only the SDK can talk to it
            client = sdk().APIClient(version="auto", timeout=timeout, **sdk_kwargs(docker_host))
            with contextlib.closing(client):
                return bool(client.ping())
        with sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(request)
            answer = sock.recv(64)
        return answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n", 1)[0]
    except Exception:
        return False


@dataclass
class EngineFacts:
    """What the engine told on the first connection, for planning containers and checking specs."""

    host_gateway: bool = False  # engine 20.10+: "host-gateway" resolves to the host in extra_hosts
    gateway: Optional[str] = None  # the bridge's gateway address (older engines)
    ncpu: Optional[int] = None


class EngineListener(Protocol):
    """Who the engine reports to, on the event loop."""

    def on_stream_open(self) -> None: ...

    def on_stream_lost(self) -> None: ...

    def on_event(self, event: dict[str, Any]) -> None: ...

    async def on_relist_due(self) -> None: ...


class Engine:
    """One node's view of the engine: every list and the event stream are filtered by its node label."""

    def __init__(self, node: str, docker_host: Optional[str]) -> None:
        self.node = node
        self.docker_host = docker_host
        self.facts = EngineFacts()
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="plum-docker")
        self.connected = False
        self._api: Any = None  # the shared APIClient, made on first use
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._closing = threading.Event()
        self._relist: Optional[asyncio.Task[None]] = None

    def node_filter(self, **labels: str) -> dict[str, Any]:
        wanted = [f"{LABEL_MANAGED}=true", f"{LABEL_NODE}={self.node}"]
        return {"label": wanted + [f"{key}={value}" for key, value in labels.items()]}

    def describe_error(self, exc: Exception) -> str:
        where = self.docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
        return f"Docker engine at {where} does not answer ({exc})"

    def new_client(self, timeout: int = API_TIMEOUT) -> Any:
        docker = sdk()
        try:
            return docker.APIClient(version="auto", timeout=timeout, max_pool_size=8, **sdk_kwargs(self.docker_host))
        except docker.errors.DockerException as exc:
            raise EngineUnavailable(self.describe_error(exc)) from None

    def client(self) -> Any:
        """The shared API client (thread-safe connection pool); called in a worker thread."""
        if self._api is None:
            api = self.new_client()
            version = tuple(int(x) for x in str(api.api_version).split(".")[:2])
            self.facts.host_gateway = version >= (1, 41)
            if not self.facts.host_gateway:
                with contextlib.suppress(Exception):
                    self.facts.gateway = api.inspect_network("bridge")["IPAM"]["Config"][0]["Gateway"]
            with contextlib.suppress(Exception):
                self.facts.ncpu = int(api.info().get("NCPU") or 0) or None
            self._api = api
        return self._api

    @property
    def has_client(self) -> bool:
        return self._api is not None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(client, *args) in the pool; connection failures become EngineUnavailable."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.call_here, fn, args)

    def call_here(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        import requests  # noqa: PLC0415 - comes with the SDK, loaded with it

        try:
            return fn(self.client(), *args)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise EngineUnavailable(self.describe_error(exc)) from None

    def list(self, api: Any, **labels: str) -> list[dict[str, Any]]:
        """This node's containers (with these labels too); run through call()."""
        return list(api.containers(all=True, filters=self.node_filter(**labels)))

    # ---- background work ----------------------------------------------------------------------

    def start(self, listener: EngineListener) -> None:
        """The event thread (which reconnects until close) and the relist loop, reporting to listener."""
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._events_main, args=(listener,), name="plum-docker-events", daemon=True).start()
        self._relist = asyncio.ensure_future(self._relist_forever(listener))

    def close(self) -> None:
        self._closing.set()
        if self._relist is not None:
            self._relist.cancel()
        self.pool.shutdown(wait=False)

    async def _relist_forever(self, listener: EngineListener) -> None:
        while True:
            await asyncio.sleep(RELIST_EVERY)
            if self.connected:  # else the event thread reconnects, then the listener relists
                try:
                    await listener.on_relist_due()
                except Exception as exc:  # the next round tries again
                    log.warning("relist: %s", exc)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed while we were reading
                loop.call_soon_threadsafe(fn, *args)

    def _events_main(self, listener: EngineListener) -> None:
        """Background thread: read this node's container events and hand them to the event loop."""
        delay = EVENTS_RETRY[0]
        while not self._closing.is_set():
            client: Any = None
            stream: Any = None
            try:
                client = self.new_client()
                stream = client.events(decode=True, filters={**self.node_filter(), "type": "container"})
                self._post(self._opened, listener)
                delay = EVENTS_RETRY[0]
                for event in stream:
                    self._post(listener.on_event, event)
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
            self._post(self._lost, listener)
            self._closing.wait(delay)
            delay = min(delay * 2, EVENTS_RETRY[1])

    def _opened(self, listener: EngineListener) -> None:
        self.connected = True
        listener.on_stream_open()

    def _lost(self, listener: EngineListener) -> None:
        if self.connected:
            log.warning("lost the Docker event stream; reconnecting (containers are checked once it is back)")
        self.connected = False
        listener.on_stream_lost()
