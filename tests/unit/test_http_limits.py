"""The shared HTTP server under slow, silent, greedy or malformed clients (in-process, short timeouts)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Callable

import pytest

from plum.common import listener
from plum.common.fsio import StorageError
from plum.common.httpserver import (
    MAX_JSON_DEPTH,
    HTTPError,
    HTTPServer,
    Request,
    Response,
    Router,
    ServerLimits,
    json_depth,
    json_response,
    parse_json,
    storage_error,
)
from plum.common.listener import MIN_CONNECTIONS, RateLimitedLog, connection_cap
from plum.controller.api import database_errors

FAST = ServerLimits(
    max_connections=MIN_CONNECTIONS,
    head_timeout=0.5,
    keepalive_timeout=0.5,
    io_timeout=0.5,
)


class Client:
    """A raw socket on the event loop, so tests can send exactly the bytes they mean."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def connect(cls, port: int) -> Client:
        sock = socket.socket()
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return cls(sock)

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def read_all(self, timeout: float = 5.0) -> bytes:
        """Everything until the server closes the connection."""
        data = b""
        while True:
            try:
                chunk = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), timeout)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk

    async def read_response(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """One response with a Content-Length body: (status, body)."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), timeout)
            assert chunk, f"closed before a response; got {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        while len(body) < length:
            body += await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), timeout)
        return int(head.split()[1]), body

    def close(self) -> None:
        self.sock.close()


def serve(body: Callable[[HTTPServer], Awaitable[Any]], limits: ServerLimits = FAST) -> Any:
    """Run body against a server with a few test routes."""

    async def main() -> Any:
        router = Router()
        release = asyncio.Event()

        async def ok(request: Request) -> Response:
            return json_response({"ok": True})

        async def echo(request: Request) -> Response:
            return json_response({"got": await request.json()})

        async def hold(request: Request) -> Response:
            await release.wait()
            return json_response({"held": True})

        async def ticks() -> AsyncIterator[bytes]:
            for i in range(4):
                await asyncio.sleep(0.4)  # longer gaps than head and keep-alive timeouts, 1.6 s in all
                yield f"tick {i}\n".encode()

        async def stream(request: Request) -> Response:
            return Response(200, ticks(), "text/plain")

        async def full(request: Request) -> Response:
            raise OSError(errno.ENOSPC, "No space left on device", "/data/apps/x/state.json")

        async def big(request: Request) -> Response:
            return Response(200, b"x" * (1 << 20), "application/octet-stream")

        router.add("GET", "/ok", ok)
        router.add("GET", "/big", big)
        router.add("GET", "/full", full)
        router.add("POST", "/echo", echo, max_body=1000, limit_hint="TEST_LIMIT")
        router.add("GET", "/hold", hold)
        router.add("GET", "/stream", stream)
        server = HTTPServer(router, limits=limits)
        server.release = release  # type: ignore[attr-defined]
        await server.start("127.0.0.1", 0)
        try:
            return await body(server)
        finally:
            release.set()
            await server.close()

    return asyncio.run(main())


GET_OK = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"


def test_a_head_dripping_header_lines_is_cut_at_the_deadline_with_408():
    async def body(server: HTTPServer) -> bytes:
        client = await Client.connect(server.port)
        answer = asyncio.ensure_future(client.read_all())
        await client.send(b"GET /ok HTTP/1.1\r\n")
        for _ in range(10):  # a line every 0.2 s for 2 s: no read waits long, the head never ends
            await asyncio.sleep(0.2)
            if answer.done():
                break
            with contextlib.suppress(OSError):
                await client.send(b"X-Slow: yes\r\n")
        client.close()
        return await answer

    answer = serve(body)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"request head not received in time" in answer


def test_an_idle_keep_alive_connection_is_closed_quietly():
    async def body(server: HTTPServer) -> tuple[int, bytes]:
        client = await Client.connect(server.port)
        await client.send(GET_OK)
        status, _ = await client.read_response()
        rest = await client.read_all(timeout=3)  # nothing more is sent: the server closes after 0.5 s
        client.close()
        return status, rest

    assert serve(body) == (200, b"")


def test_keep_alive_serves_several_requests_on_one_connection():
    async def body(server: HTTPServer) -> list[int]:
        client = await Client.connect(server.port)
        statuses = []
        for _ in range(3):
            await asyncio.sleep(0.2)  # below the keep-alive timeout
            await client.send(GET_OK)
            statuses.append((await client.read_response())[0])
        client.close()
        return statuses

    assert serve(body) == [200, 200, 200]


def test_a_streamed_response_outlives_the_head_and_keep_alive_timeouts():
    async def body(server: HTTPServer) -> bytes:
        client = await Client.connect(server.port)
        await client.send(b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await client.read_all()
        client.close()
        return answer

    answer = serve(body)
    assert all(f"tick {i}".encode() in answer for i in range(4)), answer


def test_at_the_cap_a_new_connection_replaces_the_oldest_idle_one():
    async def body(server: HTTPServer) -> tuple[int, bytes, int]:
        idle = [await Client.connect(server.port) for _ in range(MIN_CONNECTIONS)]
        for client in idle:
            await client.send(b"GET /ok HTTP/1.1\r\n")  # a head begun, never finished
        await asyncio.sleep(0.1)
        fresh = await Client.connect(server.port)
        await fresh.send(GET_OK)
        status, _ = await fresh.read_response()
        oldest = await idle[0].read_all(timeout=1)
        open_now = server.listener.open_connections
        for client in [*idle, fresh]:
            client.close()
        return status, oldest, open_now

    status, oldest, open_now = serve(body)
    assert status == 200
    assert oldest == b""  # closed without an answer: it never sent a request
    assert open_now <= MIN_CONNECTIONS


def test_at_the_cap_with_every_connection_busy_a_new_one_is_answered_503():
    async def body(server: HTTPServer) -> bytes:
        busy = [await Client.connect(server.port) for _ in range(MIN_CONNECTIONS)]
        for client in busy:
            await client.send(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.2)
        extra = await Client.connect(server.port)
        answer = await extra.read_all()
        server.release.set()  # type: ignore[attr-defined]
        statuses = [(await client.read_response())[0] for client in busy]
        assert statuses == [200] * MIN_CONNECTIONS  # the busy ones were not cut
        for client in [*busy, extra]:
            client.close()
        return answer

    answer = serve(body)
    assert answer.startswith(b"HTTP/1.1 503")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"].startswith("too many connections")


def test_a_declared_body_over_the_route_cap_is_refused_before_it_is_sent():
    async def body(server: HTTPServer) -> tuple[int, bytes]:
        client = await Client.connect(server.port)
        await client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")
        answer = await client.read_response()  # not one byte of the body was sent
        client.close()
        return answer

    status, raw = serve(body)
    assert status == 413
    error = json.loads(raw)
    assert "at most 1000 bytes (TEST_LIMIT)" in error["error"]
    assert error["maxBytes"] == 1000


def test_a_chunked_body_over_the_route_cap_is_refused_once_it_passes_it():
    async def body(server: HTTPServer) -> tuple[int, bytes]:
        client = await Client.connect(server.port)
        chunk = b"x" * 800
        await client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        await client.send(b"320\r\n" + chunk + b"\r\n320\r\n" + chunk + b"\r\n")
        answer = await client.read_response()
        client.close()
        return answer

    status, _ = serve(body)
    assert status == 413


def test_expect_100_continue_gets_the_go_ahead():
    async def body(server: HTTPServer) -> bytes:
        client = await Client.connect(server.port)
        await client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\r\n")
        first = await asyncio.wait_for(client.loop.sock_recv(client.sock, 1000), 2)
        await client.send(b'{"a":1}')
        _, raw = await client.read_response()
        client.close()
        return first + raw

    answer = serve(body)
    assert answer.startswith(b"HTTP/1.1 100")
    assert b'{"got":{"a":1}}' in answer


@pytest.mark.parametrize(
    ("request_bytes", "half_close", "status", "words"),
    [
        (
            b"Transfer-Encoding: chunked\r\n\r\nZZZ\r\n",
            False,
            400,
            "illegal chunk header",
        ),
        (
            b"Content-Length: 100\r\n\r\n" + b"[1," * 10,
            True,
            400,
            "incomplete request body",
        ),
        (b"Content-Length: 5\r\n\r\n{", False, 408, "nothing received"),
        (
            b"Content-Length: 100000\r\n\r\n" + b"[" * 100_000,
            False,
            413,
            "at most 1000 bytes",
        ),
    ],
    ids=[
        "broken-chunk-header",
        "client-leaves-mid-body",
        "silent-mid-body",
        "too-long",
    ],
)
def test_a_bad_body_is_a_json_client_error_without_a_traceback(request_bytes, half_close, status, words, caplog):
    async def body(server: HTTPServer) -> tuple[int, bytes]:
        client = await Client.connect(server.port)
        await client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\n" + request_bytes)
        if half_close:
            client.sock.shutdown(socket.SHUT_WR)
        answer = await client.read_response()
        client.close()
        return answer

    with caplog.at_level(logging.DEBUG):
        got, raw = serve(body)
    assert got == status
    assert words in json.loads(raw)["error"]
    assert not [r for r in caplog.records if r.exc_info], "a client's fault must not log a traceback"


def test_a_client_that_vanishes_mid_body_leaves_no_traceback_and_the_server_serving(
    caplog,
):
    async def body(server: HTTPServer) -> int:
        client = await Client.connect(server.port)
        await client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[1,")
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()  # a reset, not a goodbye
        await asyncio.sleep(0.2)
        other = await Client.connect(server.port)
        await other.send(GET_OK)
        status, _ = await other.read_response()
        other.close()
        return status

    with caplog.at_level(logging.DEBUG):
        assert serve(body) == 200
    assert not [r for r in caplog.records if r.exc_info]


def test_a_full_disk_in_a_handler_is_a_507_naming_the_file_logged_once_without_traceback(
    caplog,
):
    async def body(server: HTTPServer) -> list[tuple[int, bytes]]:
        answers = []
        for _ in range(5):
            client = await Client.connect(server.port)
            await client.send(b"GET /full HTTP/1.1\r\nHost: x\r\n\r\n")
            answers.append(await client.read_response())
            client.close()
        return answers

    with caplog.at_level(logging.WARNING):
        answers = serve(body)
    assert {status for status, _ in answers} == {507}
    assert json.loads(answers[0][1]) == {
        "error": "no space left on device: /data/apps/x/state.json",
        "path": "/data/apps/x/state.json",
        "errno": "ENOSPC",
    }
    lines = [r for r in caplog.records if "state.json" in r.getMessage()]
    assert len(lines) == 1 and not lines[0].exc_info, lines


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("database or disk is full", 507),
        ("database is locked", 503),
        ("attempt to write a readonly database", 500),
    ],
)
def test_controller_database_errors_name_the_file(reason, status, tmp_path):
    mapped = database_errors(tmp_path / "controller.db")(sqlite3.OperationalError(reason))
    assert mapped is not None and mapped.status == status
    assert mapped.message == f"database {tmp_path / 'controller.db'}: {reason}"
    assert database_errors(tmp_path / "controller.db")(ValueError("not a database error")) is None


def test_json_nested_100k_deep_is_a_400():
    with pytest.raises(HTTPError) as err:
        parse_json(b"[" * 100_000 + b"]" * 100_000)
    assert err.value.status == 400
    assert "nested more than" in err.value.message


def test_json_nesting_is_counted_without_recursion():
    deep: Any = 1
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = {"a": [deep]} if isinstance(deep, list) else [deep]
    assert json_depth(deep, MAX_JSON_DEPTH) > MAX_JSON_DEPTH
    with pytest.raises(HTTPError):
        parse_json(json.dumps(deep).encode())
    assert parse_json(b'{"env": {"A": [1, {"b": null}]}}') == {"env": {"A": [1, {"b": None}]}}
    assert json_depth({"env": {"A": [1, {"b": None}]}}, MAX_JSON_DEPTH) == 4


def test_storage_errors_are_json_answers_naming_the_file():
    full = storage_error(OSError(errno.ENOSPC, "No space left on device", "/data/apps/x/state.json"))
    assert full is not None and full.status == 507
    assert full.body() == {
        "error": "no space left on device: /data/apps/x/state.json",
        "path": "/data/apps/x/state.json",
        "errno": "ENOSPC",
    }
    read_only = storage_error(OSError(errno.EROFS, "Read-only file system", "/data"))
    assert read_only is not None and read_only.status == 500 and read_only.details["path"] == "/data"
    saved = storage_error(StorageError("save", "/data/state.json", "no space left on device", errno.ENOSPC))
    assert saved is not None and saved.status == 507
    assert saved.message == "cannot save /data/state.json: no space left on device"
    assert storage_error(ConnectionResetError(errno.ECONNRESET, "reset")) is None
    assert storage_error(ValueError("not storage")) is None


def test_rate_limited_log_writes_one_line_per_interval_with_a_count(caplog):
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("test.ratelog"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.ratelog"):
        for _ in range(1000):
            limited.log(logging.WARNING, "accept", "accept failed: Too many open files")
            now[0] += 0.01  # 1000 failures in 10 s
        now[0] += 0.1
        limited.log(logging.WARNING, "accept", "accept failed: Too many open files")
        limited.log(logging.WARNING, "other", "a different kind is not held back")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "accept failed: Too many open files",
        "accept failed: Too many open files (999 more like this in the last 10s)",
        "a different kind is not held back",
    ]


@pytest.mark.parametrize(
    ("wanted", "fd_limit", "cap"),
    [
        (512, 1024, 512),
        (4096, 1024, 768),
        (4096, None, 4096),
        (512, 100, MIN_CONNECTIONS),
    ],
)
def test_the_connection_cap_leaves_descriptors_for_the_rest_of_the_daemon(wanted, fd_limit, cap):
    assert connection_cap(wanted, 256, fd_limit) == cap


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_client_that_stops_reading_loses_its_connection_and_the_descriptor_comes_back(
    monkeypatch,
):
    monkeypatch.setattr(listener, "CLOSE_GRACE", 0.2)

    async def body(server: HTTPServer) -> tuple[int, int]:
        before = open_fds()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader that barely reads...
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        client = Client(sock)
        with contextlib.suppress(asyncio.TimeoutError):  # ...and then never: the answers pile up
            await asyncio.wait_for(client.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 16), 3)
        connected = open_fds()
        deadline = time.monotonic() + 5
        while open_fds() > before + 1 and time.monotonic() < deadline:  # only the client's own socket left
            await asyncio.sleep(0.05)
        left = open_fds()
        client.close()
        return connected - before, left - before

    connected, left = serve(body)
    assert connected == 2, "the client's socket and the server's end of it"
    assert left == 1, "the server dropped its end: the cap counts real descriptors"
