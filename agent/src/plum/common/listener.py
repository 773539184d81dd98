"""Accepting TCP connections without being overrun: a connection cap, accept back-off, quiet logs.

asyncio's own server accepts until the process runs out of file descriptors, then logs one
traceback per failed accept (tens of thousands of lines a second) while descriptors stay exhausted
for every other part of the daemon. This listener instead:

- caps open connections (below the open-file limit, leaving room for the daemon's other files);
  at the cap a new connection replaces the oldest idle one (still sending its request head, or
  between keep-alive requests), and is answered 503 only when every connection is busy;
- pauses accepting on EMFILE/ENFILE/ENOBUFS/ENOMEM with a growing delay, closing a few idle
  connections to give descriptors back;
- logs each kind of trouble at most once per interval, with a count of what it did not log.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import socket
import time
from collections.abc import Awaitable
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_BATCH = 64  # accepts per readiness event: leaves the loop time to serve what it accepted
BACKLOG = 1024
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 1.0
SHED_ON_SHORTAGE = 8  # idle connections closed when descriptors run out
MIN_CONNECTIONS = 16
CLOSE_GRACE = 5.0  # seconds a closing connection may take to flush its last bytes before it is dropped


class RateLimitedLog:
    """At most one line per kind and interval; the lines in between are counted and reported."""

    def __init__(
        self, logger: logging.Logger, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def log(self, level: int, kind: str, message: str, *, exc_info: Any = None) -> bool:
        """Log message unless a line of this kind went out less than interval ago; True if logged."""
        now = self.clock()
        last = self._last.get(kind, -math.inf)
        if now - last < self.interval:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return False
        skipped = self._skipped.pop(kind, 0)
        if skipped:
            message += f" ({skipped} more like this in the last {now - last:.0f}s)"
        self._last[kind] = now
        self.logger.log(level, "%s", message, exc_info=exc_info)
        return True


def open_file_limit() -> Optional[int]:
    """The soft RLIMIT_NOFILE, None when unlimited or unknown."""
    try:
        import resource  # noqa: PLC0415 - POSIX only

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(wanted: int, reserve: int, fd_limit: Optional[int]) -> int:
    """wanted, lowered so that connections never take the descriptors the daemon needs otherwise."""
    if fd_limit is None:
        return wanted
    return max(MIN_CONNECTIONS, min(wanted, fd_limit - reserve))


class Slot:
    """One accepted connection as the listener sees it: idle (may be closed for a newer one) or busy."""

    __slots__ = ("_listener", "evicted", "transport")

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self.transport: Optional[asyncio.WriteTransport] = None
        self.evicted = False

    def idle(self) -> None:
        """Waiting for a request head: may be closed to make room."""
        self._listener._idle.pop(self, None)
        if not self.evicted:
            self._listener._idle[self] = None

    def busy(self) -> None:
        """Handling a request or streaming a response: never closed to make room."""
        self._listener._idle.pop(self, None)

    def evict(self) -> None:
        self.evicted = True
        self._listener._release(self)
        if self.transport is not None:
            self.transport.abort()


Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Slot], Awaitable[None]]


class Listener:
    """Listens on host:port and runs serve(reader, writer, slot) for each admitted connection."""

    def __init__(
        self,
        serve: Serve,
        *,
        max_connections: int,
        fd_reserve: int,
        refusal: bytes,
        setting: str = "",
    ) -> None:
        self.serve = serve
        self.wanted_connections = max_connections
        self.max_connections = max_connections
        self.fd_reserve = fd_reserve
        self.refusal = refusal  # sent as is to a connection refused at the cap
        self.setting = setting  # the variable that sets the cap, for log lines
        self.sockets: list[socket.socket] = []
        self.log = RateLimitedLog(log)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._slots: set[Slot] = set()
        self._idle: dict[Slot, None] = {}  # insertion order: the oldest idle connection first
        self._tasks: set[asyncio.Task[None]] = set()
        self._backoff = 0.0
        self._failures = 0
        self._closed = False

    @property
    def open_connections(self) -> int:
        return len(self._slots)

    async def start(self, host: str, port: int) -> None:
        self._loop = asyncio.get_running_loop()
        self.max_connections = connection_cap(self.wanted_connections, self.fd_reserve, open_file_limit())
        if self.max_connections < self.wanted_connections:
            log.info(
                "connection limit %d instead of %s=%d: the open-file limit is %s",
                self.max_connections,
                self.setting or "the configured",
                self.wanted_connections,
                open_file_limit(),
            )
        infos = await self._loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                self.sockets.append(_listening_socket(family, kind, proto, address))
        except OSError:
            for sock in self.sockets:
                sock.close()
            self.sockets.clear()
            raise
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._accept_ready, sock)

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    async def close(self) -> None:
        self._closed = True
        for sock in self.sockets:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- accepting ------------------------------------------------------------------------------

    def _accept_ready(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._pause(sock, exc)
                return
            self._accepting_again()
            self._admit(conn)

    def _pause(self, sock: socket.socket, exc: OSError) -> None:
        """Stop accepting for a while: the kernel keeps reporting the socket ready, so retrying at once spins."""
        assert self._loop is not None
        self._loop.remove_reader(sock.fileno())
        self._failures += 1
        self._backoff = min(BACKOFF_MAX, self._backoff * 2) if self._backoff else BACKOFF_FIRST
        freed = self._shed(SHED_ON_SHORTAGE) if exc.errno in RESOURCE_ERRNOS else 0
        self.log.log(
            logging.WARNING,
            "accept",
            f"cannot accept connections on port {sock.getsockname()[1]}: {exc.strerror or exc} "
            f"({len(self._slots)} connections open, open-file limit {open_file_limit()}); "
            f"closed {freed} idle connections, retrying in {self._backoff:g}s",
        )
        self._loop.call_later(self._backoff, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        if not self._closed and self._loop is not None:
            self._loop.add_reader(sock.fileno(), self._accept_ready, sock)

    def _accepting_again(self) -> None:
        if not self._failures:
            return
        self._backoff = 0.0
        message = f"accepting connections again after {self._failures} failed attempts"
        if self.log.log(logging.INFO, "accepted", message):
            self._failures = 0

    def _admit(self, conn: socket.socket) -> None:
        assert self._loop is not None
        conn.setblocking(False)
        if len(self._slots) >= self.max_connections:
            if not self._shed(1):
                self._refuse(conn)
                return
            self.log.log(
                logging.WARNING,
                "shed",
                f"connection limit {self.max_connections} reached: closing the oldest idle connections to make room"
                + (f" (raise {self.setting} if they are legitimate)" if self.setting else ""),
            )
        slot = Slot(self)
        self._slots.add(slot)
        task = self._loop.create_task(self._run(conn, slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _shed(self, count: int) -> int:
        """Close up to count of the oldest idle connections; how many were closed."""
        closed = 0
        while closed < count and self._idle:
            victim = next(iter(self._idle))
            victim.evict()
            closed += 1
        return closed

    def _refuse(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.send(self.refusal)
        conn.close()
        self.log.log(
            logging.WARNING,
            "refuse",
            f"{self.max_connections} connections open and all busy: new connections are answered 503"
            + (f" (raise {self.setting})" if self.setting else ""),
        )

    def _release(self, slot: Slot) -> None:
        self._slots.discard(slot)
        self._idle.pop(slot, None)

    async def _run(self, conn: socket.socket, slot: Slot) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except OSError:
            conn.close()
            self._release(slot)
            return
        slot.transport = writer.transport
        try:
            await self.serve(reader, writer, slot)
        except Exception:
            self.log.log(logging.ERROR, "serve", "unexpected error on a connection", exc_info=True)
        finally:
            await _close(writer)
            self._release(slot)  # only once the socket is closed: the cap counts descriptors, not tasks


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close gracefully if the peer takes what is left to send, else drop it: a client that stops
    reading (a zero TCP window) must not keep the descriptor forever."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), CLOSE_GRACE)
    except (asyncio.TimeoutError, OSError, ConnectionError):
        writer.transport.abort()


def _listening_socket(family: int, kind: int, proto: int, address: Any) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio: one socket per family
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
