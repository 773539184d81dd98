"""A small asyncio HTTP/1.1 server on h11, shared by the agent and the controller.

Why not a framework: the agent must stay under 30 MB RSS with 50 apps, and aiohttp alone costs
about 17 MB. h11 does the protocol parsing; plum.common.listener accepts connections under a cap;
this module adds routing, JSON errors, bearer-token auth, streamed request bodies with per-route
size caps, streamed (chunked) responses such as Server-Sent Events, and the timeouts that keep
slow or silent clients from holding connections: a deadline for the request head, an idle
keep-alive timeout, and a bound on a body read or response write that makes no progress.
Responses being streamed (SSE, downloads) are never cut by the head or keep-alive timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qs, unquote, urlsplit

import h11

from plum.common.digest import compare_digest
from plum.common.fsio import StorageError, os_reason
from plum.common.listener import Listener, RateLimitedLog, Slot

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
MAX_HEADER_BYTES = 32 * 1024
DEFAULT_MAX_BODY = 1024 * 1024
DRAIN_LIMIT = 1024 * 1024  # an unread body up to this size is read and dropped to keep the connection
LINGER_SECONDS = 2.0  # after refusing a body: how long its rest is read and dropped before closing
LINGER_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 64
OUT_OF_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


@dataclass(frozen=True)
class ServerLimits:
    """How many connections, and how long each may keep the server waiting."""

    max_connections: int = 512  # lowered at start to leave fd_reserve descriptors below the open-file limit
    fd_reserve: int = 256
    head_timeout: float = 10.0  # from the first byte (or the accept) to the end of the request head
    keepalive_timeout: float = 30.0  # an idle keep-alive connection is closed after this
    io_timeout: float = 60.0  # a body read or a response write making no progress for this long
    setting: str = ""  # the variable that sets max_connections, named in log lines


class HTTPError(Exception):
    """An error answered as JSON: {"error": message, ...details}."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.details}


ErrorMapper = Callable[[Exception], Optional[HTTPError]]


def storage_error(exc: Exception) -> Optional[HTTPError]:
    """A failed file operation as a JSON answer naming the file: 507 when out of space, else 500."""
    if isinstance(exc, StorageError):
        code = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
        return HTTPError(507 if exc.disk_full else 500, exc.message, path=exc.path, errno=code)
    if not isinstance(exc, OSError) or isinstance(exc, (ConnectionError, TimeoutError)) or exc.errno is None:
        return None
    code = errno.errorcode.get(exc.errno, str(exc.errno))
    status = 507 if exc.errno in OUT_OF_SPACE else 500
    reason = os_reason(exc)
    if exc.filename is None:
        return HTTPError(status, reason, errno=code)
    return HTTPError(status, f"{reason}: {exc.filename}", path=str(exc.filename), errno=code)


def parse_json(raw: bytes, what: str = "request body") -> Any:
    """Decode JSON from a client: 400 naming what was sent when malformed or nested too deeply."""
    too_deep = HTTPError(400, f"JSON {what} is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPError(400, f"malformed JSON {what}: {exc}") from None
    except RecursionError:
        raise too_deep from None
    if json_depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise too_deep
    return value


def json_depth(value: Any, stop_after: int) -> int:
    """How deeply lists and objects nest in value (a scalar is 0), counted without recursion."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > stop_after:
            return deepest
        pending.extend((child, depth + 1) for child in children)
    return deepest


UNMATCHED_ROUTE = "(unmatched)"
# Told of every request once its answer is ready: method, route, status, seconds spent (streams excluded).
RequestObserver = Callable[[str, str, int, float], None]


class Request:
    """One request; the body is read on demand so large uploads can be streamed to disk."""

    def __init__(
        self,
        conn: _Connection,
        method: str,
        target: str,
        headers: dict[str, str],
    ) -> None:
        self._conn = conn
        self.method = method
        parts = urlsplit(target)
        self.path = unquote(parts.path)
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.headers = headers
        self.path_params: dict[str, str] = {}
        self.route = UNMATCHED_ROUTE  # the route's path as added, once resolved
        self.principal: Any = None  # what the router's token check answered for the bearer token
        self.max_body = DEFAULT_MAX_BODY  # set from the route
        self.limit_hint = ""  # names the setting behind max_body, for the 413 message
        self._body_done = False

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def peer(self) -> str:
        """The client's IP address."""
        peername = self._conn.writer.get_extra_info("peername")
        return str(peername[0]) if peername else ""

    @property
    def declared_length(self) -> Optional[int]:
        length = self.headers.get("content-length", "")
        return int(length) if length.isdigit() else None

    @property
    def small_body(self) -> bool:
        """Cheap to read and drop: none, or a declared length within DRAIN_LIMIT and the route's cap."""
        if "transfer-encoding" in self.headers:
            return False
        return (self.declared_length or 0) <= min(DRAIN_LIMIT, self.max_body)

    def _too_large(self, size: int, what: str) -> HTTPError:
        hint = f" ({self.limit_hint})" if self.limit_hint else ""
        return HTTPError(
            413,
            f"request body too large: {what} {size} bytes, "
            f"{self.method} {self.path} accepts at most {self.max_body} bytes{hint}",
            maxBytes=self.max_body,
        )

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the body in chunks as it arrives; 413 before reading when it is declared too large."""
        if self._body_done:
            return
        declared = self.declared_length
        if declared is not None and declared > self.max_body:
            raise self._too_large(declared, "Content-Length")
        await self._conn.continue_if_expected()
        received = 0
        while True:
            event = await self._next_body_event()
            if isinstance(event, h11.Data):
                received += len(event.data)
                if received > self.max_body:
                    raise self._too_large(received, "received more than")
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._body_done = True
                return
            else:  # anything unexpected mid-body
                self._body_done = True
                raise HTTPError(400, "request body ended early")

    async def _next_body_event(self) -> Any:
        """The next body event; the client's faults (bad framing, leaving, silence) as 4xx errors."""
        try:
            return await self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            self._body_done = True
            raise HTTPError(400, f"malformed or incomplete request body: {exc}") from None
        except asyncio.TimeoutError:
            self._body_done = True
            raise HTTPError(408, f"request body: nothing received for {self._conn.limits.io_timeout:g}s") from None
        except ConnectionError:
            self._body_done = True
            raise HTTPError(400, "request body ended early: the client closed the connection") from None

    async def read(self, limit: int = DEFAULT_MAX_BODY) -> bytes:
        buf = bytearray()
        async for chunk in self.chunks():
            buf += chunk
            if len(buf) > limit:
                raise HTTPError(413, f"request body larger than {limit} bytes")
        return bytes(buf)

    async def json(self, limit: int = DEFAULT_MAX_BODY) -> Any:
        raw = await self.read(limit)
        if not raw.strip():
            raise HTTPError(400, "request body is empty; expected JSON")
        return parse_json(raw)

    async def drain(self) -> None:
        async for _ in self.chunks():
            pass


@dataclass
class Response:
    status: int = 200
    body: Union[bytes, AsyncIterator[bytes]] = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(data: Any, status: int = 200, headers: Optional[dict[str, str]] = None) -> Response:
    body = json.dumps(data, separators=(",", ":"), default=str).encode() + b"\n"
    return Response(status, body, "application/json", headers or {})


def text_response(text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8") -> Response:
    return Response(status, text.encode(), content_type)


def canned_response(status: int, reason: str, message: str) -> bytes:
    """A complete JSON error answer as bytes, for connections that get nothing else."""
    body = json.dumps({"error": message}).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Route:
    method: str
    path: str  # as added, '/v1/apps/{name}': what metrics label a request with
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool
    max_body: int = DEFAULT_MAX_BODY
    limit_hint: str = ""


class Router:
    """Maps METHOD + '/path/{param}' to handlers; params match one path segment.

    error_mappers turn a handler's domain exceptions into HTTPErrors (first match wins); an OSError
    from the file system is always answered as storage_error() describes."""

    def __init__(
        self, token_check: Optional[Callable[[str], Any]] = None, error_mappers: Iterable[ErrorMapper] = ()
    ) -> None:
        self.routes: list[Route] = []
        self.token_check = token_check
        self.error_mappers: list[ErrorMapper] = [*error_mappers, storage_error]

    def add(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        auth: bool = True,
        max_body: int = DEFAULT_MAX_BODY,
        limit_hint: str = "",
    ) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
        self.routes.append(Route(method.upper(), path, re.compile(f"^{regex}$"), handler, auth, max_body, limit_hint))

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        allowed = False
        for route in self.routes:
            match = route.pattern.match(path)
            if not match:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, match.groupdict()
            allowed = True
        if allowed:
            raise HTTPError(405, f"method {method} not allowed on {path}")
        raise HTTPError(404, f"no such endpoint: {path}")

    def authorize(self, request: Request) -> None:
        if self.token_check is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise HTTPError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        principal = self.token_check(token.strip()) if scheme.lower() == "bearer" and token else None
        if not principal:
            raise HTTPError(401, "invalid bearer token")
        request.principal = principal

    async def dispatch(self, request: Request) -> Response:
        route, params = self.resolve(request.method, request.path)
        request.route = route.path
        if route.auth:
            self.authorize(request)
        request.path_params = params
        request.max_body, request.limit_hint = route.max_body, route.limit_hint
        return await route.handler(request)

    def translate(self, exc: Exception) -> Optional[HTTPError]:
        for mapper in self.error_mappers:
            mapped = mapper(exc)
            if mapped is not None:
                return mapped
        return None


def token_matcher(*tokens: str) -> Callable[[str], bool]:
    """Constant-time comparison against any of the given tokens."""
    encoded = [t.encode() for t in tokens if t]

    def check(candidate: str) -> bool:
        got = candidate.encode()
        return any(compare_digest(got, want) for want in encoded)

    return check


class HeadTimeout(Exception):
    """The client did not finish its request head in time."""


class _Connection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slot: Slot, limits: ServerLimits
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.slot = slot
        self.limits = limits
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.requests = 0

    async def _receive(self, timeout: float) -> None:
        self.h11.receive_data(await asyncio.wait_for(self.reader.read(READ_CHUNK), timeout))

    async def next_event(self) -> Any:
        """The next event of a request body: each read may wait io_timeout."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            await self._receive(self.limits.io_timeout)

    async def read_head(self) -> Any:
        """The next request head, or None when a keep-alive connection stays idle too long.

        The head must be complete head_timeout after the accept (first request) or after its first
        byte (later requests); HeadTimeout otherwise. Dripping header lines does not extend it."""
        loop = asyncio.get_running_loop()
        event = self.h11.next_event()
        if event is h11.NEED_DATA and self.requests:
            try:
                await self._receive(self.limits.keepalive_timeout)
            except asyncio.TimeoutError:
                return None
            event = self.h11.next_event()
        deadline = loop.time() + self.limits.head_timeout
        while event is h11.NEED_DATA:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise HeadTimeout
            try:
                await self._receive(remaining)
            except asyncio.TimeoutError:
                raise HeadTimeout from None
            event = self.h11.next_event()
        return event

    @property
    def has_partial_head(self) -> bool:
        return bool(self.h11.trailing_data[0])

    async def continue_if_expected(self) -> None:
        if self.h11.they_are_waiting_for_100_continue:
            await self.send(h11.InformationalResponse(status_code=100, headers=[]))

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            await self.send_raw(data)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), self.limits.io_timeout)

    async def linger(self) -> None:
        """Half-close, then read and drop what the client still sends for a moment.

        Closing with unread data makes the kernel reset the connection, which can destroy the
        answer before the client has read it (a refused upload would see 'connection reset')."""
        with contextlib.suppress(OSError, RuntimeError, asyncio.TimeoutError):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + LINGER_SECONDS
            dropped = 0
            while dropped < LINGER_BYTES and (remaining := deadline - loop.time()) > 0:
                data = await asyncio.wait_for(self.reader.read(READ_CHUNK), remaining)
                if not data:
                    return
                dropped += len(data)


HEAD_TIMEOUT_ANSWER = "request head not received in time"
BUSY_ANSWER = canned_response(503, "Service Unavailable", "too many connections; retry later")


class HTTPServer:
    """Serves a Router on a TCP address until stopped."""

    def __init__(
        self,
        router: Router,
        server_name: str = "plum",
        limits: Optional[ServerLimits] = None,
        observe: Optional[RequestObserver] = None,
    ) -> None:
        self.router = router
        self.observe = observe
        self.server_name = server_name.encode()
        self.limits = limits or ServerLimits()
        self.errors = RateLimitedLog(log)
        self.listener = Listener(
            self._serve,
            max_connections=self.limits.max_connections,
            fd_reserve=self.limits.fd_reserve,
            refusal=BUSY_ANSWER,
            setting=self.limits.setting,
        )

    async def start(self, host: str, port: int) -> None:
        await self.listener.start(host, port)

    @property
    def port(self) -> int:
        return self.listener.port

    async def close(self) -> None:
        await self.listener.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slot: Slot) -> None:
        conn = _Connection(reader, writer, slot, self.limits)
        try:
            await self._serve_requests(conn)
        except (asyncio.TimeoutError, ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass

    async def _serve_requests(self, conn: _Connection) -> None:
        while True:
            event = await self._next_request(conn)
            if event is None:
                return
            conn.slot.busy()
            conn.requests += 1
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
            request = Request(conn, event.method.decode(), event.target.decode("latin-1"), headers)
            response = await self._handle(request)
            await self._settle_body(request, response)
            await self._send(conn, request.method, response)
            if conn.h11.their_state is not h11.DONE:
                conn.slot.idle()
                await conn.linger()  # the client may still be sending the body we refused
                return
            if conn.h11.our_state is h11.MUST_CLOSE:
                return
            try:
                conn.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _next_request(self, conn: _Connection) -> Optional[h11.Request]:
        """The next request head, or None after answering (or quietly dropping) a connection that sent none."""
        conn.slot.idle()
        try:
            event = await conn.read_head()
        except h11.RemoteProtocolError as exc:
            if not conn.slot.evicted:
                status = exc.error_status_hint if exc.error_status_hint >= 400 else 400
                await self._send(conn, "GET", json_response({"error": f"bad request: {exc}"}, status))
            return None
        except HeadTimeout:
            if conn.has_partial_head and not conn.slot.evicted:
                limit = f"{HEAD_TIMEOUT_ANSWER} ({conn.limits.head_timeout:g}s)"
                await conn.send_raw(canned_response(408, "Request Timeout", limit))
            return None
        return event if isinstance(event, h11.Request) else None

    async def _settle_body(self, request: Request, response: Response) -> None:
        """The handler did not read the whole body (an early error): drain a small body of known
        length so the connection stays usable; close after answering otherwise (a chunked or
        large body could be endless)."""
        conn = request._conn
        if conn.h11.their_state is h11.SEND_BODY and request.small_body:
            with contextlib.suppress(HTTPError, asyncio.TimeoutError):
                if request.declared_length:
                    await asyncio.wait_for(request.drain(), conn.limits.head_timeout)
                else:
                    await request.drain()  # no body: only its end, already received, is left
        if conn.h11.their_state is not h11.DONE:
            response.headers["connection"] = "close"

    async def _handle(self, request: Request) -> Response:
        started = time.monotonic()
        response = await self._answer(request)
        if self.observe is not None:
            self.observe(request.method, request.route, response.status, time.monotonic() - started)
        return response

    async def _answer(self, request: Request) -> Response:
        try:
            return await self.router.dispatch(request)
        except HTTPError as err:
            return json_response(err.body(), err.status)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            mapped = self.router.translate(exc)
            if mapped is None:
                log.exception("unhandled error in %s %s", request.method, request.path)
                return json_response({"error": "internal error; see the server log"}, 500)
            if mapped.status >= 500:  # one line per kind and interval: a full disk fails every request
                kind = f"{mapped.status} {mapped.details.get('errno', type(exc).__name__)}"
                self.errors.log(logging.WARNING, kind, f"{request.method} {request.path} failed: {mapped.message}")
            return json_response(mapped.body(), mapped.status)

    async def _send(self, conn: _Connection, method: str, response: Response) -> None:
        headers = [(b"server", self.server_name), (b"content-type", response.content_type.encode())]
        headers += [(k.encode(), v.encode()) for k, v in response.headers.items()]
        body = response.body
        if isinstance(body, (bytes, bytearray)):
            headers.append((b"content-length", str(len(body)).encode()))
        await conn.send(h11.Response(status_code=response.status, headers=headers))
        if isinstance(body, (bytes, bytearray)):
            if body and method != "HEAD":
                await conn.send(h11.Data(data=body))
        elif method != "HEAD":
            await self._stream(conn, body)
        else:
            await _close_stream(body)
        await conn.send(h11.EndOfMessage())

    async def _stream(self, conn: _Connection, body: AsyncIterator[bytes]) -> None:
        """Send a streamed body; closed when the client goes away, so its cleanup (an SSE
        unsubscribe, a file close) runs now rather than whenever the garbage collector gets to it."""
        try:
            async for chunk in body:
                if chunk:
                    await conn.send(h11.Data(data=chunk))
        finally:
            await _close_stream(body)


async def _close_stream(body: AsyncIterator[bytes]) -> None:
    close = getattr(body, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


def parse_host_port(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """'127.0.0.1:7070', ':7070', '[::1]:7070' or '7070' -> (host, port); ValueError when malformed."""
    value = value.strip()
    if value.isdigit():
        host, port_text = default_host, value
    elif value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [host]:port, got {value!r}")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            raise ValueError(f"expected host:port, got {value!r}")
        host = host or "0.0.0.0"  # noqa: S104 - ':8080' means every interface, as in Plum
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port_text!r}")
    return host, int(port_text)
