"""Multipart/form-data: the streaming reader the daemons use (parts arrive as name, filename and a chunk
iterator), and the one encoder their clients (plumctl, tests, scripts, benchmarks) send with.

Written here rather than taken from PyPI to keep the agent's one runtime dependency (h11): only what uploads
need, part names, file names and streamed part bodies, tested under any chunking.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Optional

from plum.common.httpserver import HTTPError


def boundary_of(content_type: str) -> bytes:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise HTTPError(415, f"expected multipart/form-data, got {kind.strip() or 'no content type'!r}")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value:
            boundary = value.strip('"')
            if len(boundary) > 200:
                raise HTTPError(400, "multipart boundary is too long")
            return boundary.encode("latin-1")
    raise HTTPError(400, "multipart/form-data without a boundary")


@dataclass
class PartHeader:
    name: str
    filename: Optional[str]
    content_type: str


def _parse_part_headers(raw: bytes) -> PartHeader:
    name: Optional[str] = None
    filename: Optional[str] = None
    content_type = "text/plain"
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "content-disposition":
            for item in value.split(";")[1:]:
                k, _, v = item.strip().partition("=")
                v = v.strip().strip('"')
                if k.lower() == "name":
                    name = v
                elif k.lower() == "filename":
                    filename = v
        elif key == "content-type":
            content_type = value.strip()
    if not name:
        raise HTTPError(400, "multipart part without a name")
    return PartHeader(name, filename, content_type)


class MultipartReader:
    """Reads parts one after another from a chunk stream.

    Usage: ``async for header in reader.parts(): async for data in reader.body(): ...``;
    a part body that is not read is skipped.
    """

    def __init__(self, chunks: AsyncIterator[bytes], boundary: bytes, max_parts: int = 16) -> None:
        self._chunks = chunks
        self._delimiter = b"\r\n--" + boundary
        self._buf = bytearray(b"\r\n")  # lets the first delimiter match like the others
        self._eof = False
        self._in_body = False
        self._max_parts = max_parts

    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._eof = True
            return False
        self._buf += chunk
        return True

    async def _skip_preamble(self) -> None:
        while True:
            idx = self._buf.find(self._delimiter)
            if idx >= 0:
                del self._buf[: idx + len(self._delimiter)]
                return
            keep = len(self._delimiter)
            if len(self._buf) > keep:
                del self._buf[:-keep]
            if not await self._fill():
                raise HTTPError(400, "multipart body has no parts")

    async def parts(self) -> AsyncIterator[PartHeader]:
        await self._skip_preamble()
        count = 0
        while True:
            # after a delimiter: "--" ends the body, "\r\n" starts a part
            while len(self._buf) < 2 and await self._fill():
                pass
            if self._buf[:2] == b"--":
                return
            if self._buf[:2] != b"\r\n":
                raise HTTPError(400, "malformed multipart body")
            del self._buf[:2]
            while (end := self._buf.find(b"\r\n\r\n")) < 0:
                if len(self._buf) > 16 * 1024:
                    raise HTTPError(400, "multipart part headers too large")
                if not await self._fill():
                    raise HTTPError(400, "multipart body ended inside part headers")
            header = _parse_part_headers(bytes(self._buf[:end]))
            del self._buf[: end + 4]
            count += 1
            if count > self._max_parts:
                raise HTTPError(400, f"too many multipart parts (more than {self._max_parts})")
            self._in_body = True
            yield header
            if self._in_body:
                async for _ in self.body():
                    pass

    async def body(self) -> AsyncIterator[bytes]:
        """The current part's data, up to the next delimiter."""
        keep = len(self._delimiter)
        while self._in_body:
            idx = self._buf.find(self._delimiter)
            if idx >= 0:
                if idx:
                    yield bytes(self._buf[:idx])
                del self._buf[: idx + keep]
                self._in_body = False
                return
            if len(self._buf) > keep:
                out = bytes(self._buf[:-keep])
                del self._buf[:-keep]
                yield out
            if not await self._fill():
                raise HTTPError(400, "multipart body ended inside a part")

    async def read_small(self, limit: int) -> bytes:
        data = bytearray()
        async for chunk in self.body():
            data += chunk
            if len(data) > limit:
                raise HTTPError(413, f"multipart field larger than {limit} bytes")
        return bytes(data)


@dataclass(frozen=True)
class Part:
    """One part to send: a form field (no filename) or a file."""

    name: str
    data: bytes
    filename: Optional[str] = None
    content_type: str = "application/octet-stream"


def encode_multipart(parts: list[Part]) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type, for the clients of the runtime's APIs."""
    boundary = "plum-" + os.urandom(12).hex()
    out = bytearray()
    for part in parts:
        disposition = f'form-data; name="{part.name}"' + (f'; filename="{part.filename}"' if part.filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        out += f"Content-Type: {part.content_type}\r\n\r\n".encode()
        out += part.data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"
