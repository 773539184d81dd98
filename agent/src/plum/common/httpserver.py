"""A small asyncio HTTP/1.1 server on h11, shared by the agent and the controller.

Why not a framework: the agent must stay under 30 MB RSS with 50 apps, and aiohttp alone costs
about 17 MB. h11 does the protocol parsing; this module adds routing, JSON errors, bearer-token
auth, streamed request bodies and streamed (chunked) responses such as Server-Sent Events.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Optional, Union
from urllib.parse import parse_qs, unquote, urlsplit

import h11

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
MAX_HEADER_BYTES = 32 * 1024
IDLE_TIMEOUT = 75.0


class HTTPError(Exception):
    """An error answered as JSON: {"error": message, ...details}."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.details}


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
        self._body_done = False

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def peer(self) -> str:
        """The client's IP address."""
        peername = self._conn.writer.get_extra_info("peername")
        return str(peername[0]) if peername else ""

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the body in chunks as it arrives."""
        if self._body_done:
            return
        while True:
            event = await self._conn.next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._body_done = True
                return
            else:  # ConnectionClosed or anything unexpected mid-body
                self._body_done = True
                raise HTTPError(400, "request body ended early")

    async def read(self, limit: int = 1024 * 1024) -> bytes:
        buf = bytearray()
        async for chunk in self.chunks():
            buf += chunk
            if len(buf) > limit:
                raise HTTPError(413, f"request body larger than {limit} bytes")
        return bytes(buf)

    async def json(self, limit: int = 1024 * 1024) -> Any:
        raw = await self.read(limit)
        if not raw.strip():
            raise HTTPError(400, "request body is empty; expected JSON")
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HTTPError(400, f"malformed JSON body: {exc}") from None

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


Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool


class Router:
    """Maps METHOD + '/path/{param}' to handlers; params match one path segment."""

    def __init__(self, token_check: Optional[Callable[[str], bool]] = None) -> None:
        self.routes: list[Route] = []
        self.token_check = token_check

    def add(self, method: str, path: str, handler: Handler, *, auth: bool = True) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
        self.routes.append(Route(method.upper(), re.compile(f"^{regex}$"), handler, auth))

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
        if scheme.lower() != "bearer" or not token or not self.token_check(token.strip()):
            raise HTTPError(401, "invalid bearer token")

    async def dispatch(self, request: Request) -> Response:
        route, params = self.resolve(request.method, request.path)
        if route.auth:
            self.authorize(request)
        request.path_params = params
        return await route.handler(request)


def token_matcher(*tokens: str) -> Callable[[str], bool]:
    """Constant-time comparison against any of the given tokens."""
    encoded = [t.encode() for t in tokens if t]

    def check(candidate: str) -> bool:
        got = candidate.encode()
        return any(hmac.compare_digest(got, want) for want in encoded)

    return check


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await asyncio.wait_for(self.reader.read(READ_CHUNK), IDLE_TIMEOUT)
            self.h11.receive_data(data)

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()


class HTTPServer:
    """Serves a Router on a TCP address until stopped."""

    def __init__(self, router: Router, server_name: str = "plum") -> None:
        self.router = router
        self.server_name = server_name.encode()
        self._server: Optional[asyncio.AbstractServer] = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True, backlog=1024)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        conn = _Connection(reader, writer)
        try:
            await self._serve_requests(conn)
        except (asyncio.TimeoutError, ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_requests(self, conn: _Connection) -> None:
        while True:
            try:
                event = await conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._send(conn, "GET", json_response({"error": f"bad request: {exc}"}, 400))
                return
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):
                return
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
            request = Request(conn, event.method.decode(), event.target.decode("latin-1"), headers)
            response = await self._handle(request)
            if conn.h11.their_state is h11.SEND_BODY:
                # The handler did not read the whole body (an early error): drain a small body of
                # known length so the connection stays usable; close after answering otherwise
                # (a chunked or large body could be endless).
                length = headers.get("content-length", "")
                if length.isdigit() and int(length) <= 1024 * 1024:
                    with contextlib.suppress(HTTPError):
                        await request.drain()
                else:
                    response.headers["connection"] = "close"
            await self._send(conn, request.method, response)
            if conn.h11.our_state is h11.MUST_CLOSE or conn.h11.their_state is not h11.DONE:
                return
            try:
                conn.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _handle(self, request: Request) -> Response:
        try:
            return await self.router.dispatch(request)
        except HTTPError as err:
            return json_response(err.body(), err.status)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            return json_response({"error": "internal error; see the server log"}, 500)

    async def _send(self, conn: _Connection, method: str, response: Response) -> None:
        headers = [("server", self.server_name), ("content-type", response.content_type.encode())]
        headers += [(k.encode(), v.encode()) for k, v in response.headers.items()]
        streaming = not isinstance(response.body, (bytes, bytearray))
        if not streaming:
            headers.append(("content-length", str(len(response.body)).encode()))  # type: ignore[arg-type]
        await conn.send(h11.Response(status_code=response.status, headers=headers))
        if method != "HEAD":
            if streaming:
                async for chunk in response.body:  # type: ignore[union-attr]
                    if chunk:
                        await conn.send(h11.Data(data=chunk))
            elif response.body:
                await conn.send(h11.Data(data=response.body))
        await conn.send(h11.EndOfMessage())


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
