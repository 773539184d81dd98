"""A small asyncio HTTP/1.1 client on h11: JSON calls, streamed downloads and Server-Sent Events.

Same reason as httpserver.py: it keeps the agent small. One connection per call keeps it simple;
the agent makes a few calls every few seconds, not thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlsplit

import h11

from plum.common.tls import ssl_module

if TYPE_CHECKING:
    import ssl

CHUNK = 64 * 1024
IDLE_TIMEOUT = 60.0  # a body that sends nothing for this long is dead (SSE keepalives come every 15 s)


class ClientError(Exception):
    """The server could not be reached, or answered with an error status."""

    def __init__(self, message: str, status: Optional[int] = None, answer: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.answer = answer  # the decoded JSON error answer, when there was one


@dataclass
class StreamedResponse:
    status: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]


class HTTPClient:
    def __init__(self, base_url: str, token: Optional[str] = None, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.ssl: Optional[ssl.SSLContext] = ssl_module().create_default_context() if parts.scheme == "https" else None
        self.token = token
        self.timeout = timeout
        self.local_ip: Optional[str] = None  # this host's address on the last connection to the server

    def _headers(self, extra: Optional[dict[str, str]] = None) -> list[tuple[str, str]]:
        headers = [("host", f"{self.host}:{self.port}"), ("user-agent", "plum-agent"), ("connection", "close")]
        if self.token:
            headers.append(("authorization", f"Bearer {self.token}"))
        headers += list((extra or {}).items())
        return headers

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, path: str, body: bytes = b"", headers: Optional[dict[str, str]] = None
    ) -> AsyncIterator[StreamedResponse]:
        """Open a request and yield its response with the body as an async chunk iterator.

        The connect and the response head are bounded by the timeout; the body is not (downloads and
        event streams last as long as they need to; callers bound them with their own deadlines).
        """
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self.ssl), self.timeout
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise ClientError(f"cannot connect to {self.base_url}: {exc or 'timed out'}") from None
        sockname = writer.get_extra_info("sockname")
        self.local_ip = str(sockname[0]) if sockname else None
        conn = h11.Connection(h11.CLIENT)
        try:
            extra = dict(headers or {})
            if body or method in ("POST", "PUT", "PATCH"):
                extra["content-length"] = str(len(body))
            data = conn.send(h11.Request(method=method, target=self.prefix + path, headers=self._headers(extra)))
            if body:
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
            writer.write(data)
            await writer.drain()

            async def next_event() -> Any:
                while True:
                    event = conn.next_event()
                    if event is not h11.NEED_DATA:
                        return event
                    conn.receive_data(await asyncio.wait_for(reader.read(CHUNK), IDLE_TIMEOUT))

            head = await asyncio.wait_for(next_event(), self.timeout)
            if not isinstance(head, h11.Response):
                raise ClientError(f"{method} {self.base_url}{path}: connection closed before a response")

            async def chunks() -> AsyncIterator[bytes]:
                while True:
                    event = await next_event()
                    if isinstance(event, h11.Data):
                        yield bytes(event.data)
                    elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                        return

            resp_headers = {k.decode().lower(): v.decode("latin-1") for k, v in head.headers}
            yield StreamedResponse(head.status_code, resp_headers, chunks())
        except (OSError, asyncio.TimeoutError, h11.ProtocolError) as exc:
            raise ClientError(f"{method} {self.base_url}{path}: {exc or 'timed out'}") from None
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def call(self, method: str, path: str, payload: Any = None) -> Any:
        """A JSON request; returns the decoded JSON answer (None when empty); ClientError on >= 400."""
        body = json.dumps(payload).encode() if payload is not None else b""
        headers = {"content-type": "application/json"} if payload is not None else {}

        async def exchange() -> tuple[int, bytes]:
            async with self.stream(method, path, body, headers) as response:
                raw = b"".join([chunk async for chunk in response.chunks])
                return response.status, raw

        try:
            status, raw = await asyncio.wait_for(exchange(), self.timeout)
        except asyncio.TimeoutError:
            raise ClientError(f"{method} {self.base_url}{path}: timed out after {self.timeout:g}s") from None
        if status >= 400:
            raise ClientError(f"{method} {path}: {status} {error_message(raw)}", status, json_or_none(raw))
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ClientError(f"{method} {path}: answer is not JSON: {raw[:200]!r}", status) from None


def json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def error_message(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("error"))
    except (ValueError, AttributeError):
        return raw[:500].decode("utf-8", "replace").strip()


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, str]]:
    """(event, data) per complete Server-Sent Event; comments (keepalives) are skipped."""
    buffer = b""
    event = "message"
    data: list[str] = []
    async for chunk in chunks:
        buffer += chunk
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                if data or event != "message":
                    yield event, "\n".join(data)
                event, data = "message", []
            elif line.startswith(":"):
                continue
            else:
                key, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if key == "event":
                    event = value
                elif key == "data":
                    data.append(value)
