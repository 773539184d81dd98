from __future__ import annotations

import asyncio
import socket

import pytest

from plum.common.httpserver import (
    HTTPError,
    HTTPServer,
    Router,
    json_response,
    parse_host_port,
    token_matcher,
)
from plum.common.multipart import MultipartReader, boundary_of


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7070", ("127.0.0.1", 7070)),
        ("7070", ("127.0.0.1", 7070)),
        ("[::1]:80", ("::1", 80)),
        (":8080", ("0.0.0.0", 8080)),
    ],
)
def test_parse_host_port(text, expected):
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["host", "host:port", "1.2.3.4:70000", "[::1]80"])
def test_parse_host_port_errors(text):
    with pytest.raises(ValueError):
        parse_host_port(text)


def test_token_matcher():
    check = token_matcher("alpha", "beta")
    assert check("alpha") and check("beta") and not check("gamma") and not check("")


async def _chunks(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _read_all(body: bytes, chunk: int):
    async def run():
        reader = MultipartReader(_chunks(body, chunk), b"XyZ")
        out = []
        async for part in reader.parts():
            data = b"".join([c async for c in reader.body()])
            out.append((part.name, part.filename, data))
        return out

    return asyncio.run(run())


BODY = (
    b'preamble\r\n--XyZ\r\nContent-Disposition: form-data; name="artifact"; filename="a.zip"\r\n'
    b"Content-Type: application/zip\r\n\r\n" + b"PK\x03\x04" + b"\r\n-" * 5000 + b"\r\n--XyZ\r\n"
    b'Content-Disposition: form-data; name="spec"\r\n\r\n{"a": 1}\r\n--XyZ--\r\n'
)


@pytest.mark.parametrize("chunk", [1, 7, 64, 65536])
def test_multipart_parts_survive_any_chunking(chunk):
    parts = _read_all(BODY, chunk)
    assert [(n, f) for n, f, _ in parts] == [("artifact", "a.zip"), ("spec", None)]
    assert parts[0][2] == b"PK\x03\x04" + b"\r\n-" * 5000
    assert parts[1][2] == b'{"a": 1}'


@pytest.mark.parametrize(
    "body",
    [
        b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\nno end',
        b"nothing here",
        b"--XyZ\r\nbroken",
    ],
)
def test_multipart_truncated_bodies_are_errors(body):
    with pytest.raises(HTTPError) as err:
        _read_all(body, 16)
    assert err.value.status == 400


@pytest.mark.parametrize(
    ("ctype", "status"),
    [("application/json", 415), ("multipart/form-data", 400), ("", 415)],
)
def test_boundary_errors(ctype, status):
    with pytest.raises(HTTPError) as err:
        boundary_of(ctype)
    assert err.value.status == status


def test_boundary_quoted():
    assert boundary_of('multipart/form-data; boundary="abc"') == b"abc"


def test_server_closes_instead_of_draining_an_unread_chunked_body():
    async def run() -> bytes:
        router = Router(token_check=token_matcher("secret-token-value"))

        async def handler(request):
            return json_response({})

        router.add("PUT", "/upload", handler)
        server = HTTPServer(router)
        await server.start("127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setblocking(False)
        # no token: refused before the body is read; the chunked body never ends
        head = b"PUT /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        await loop.sock_sendall(sock, head)
        data = b""
        while b"\r\n\r\n" not in data:
            data += await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        rest = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        while rest:
            data += rest
            rest = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        sock.close()
        await server.close()
        return data

    answer = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 401")
    assert b"connection: close" in answer.lower()
