"""Reading a multipart body back as the agent's and the controller's APIs do, for tests of the encoders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Optional

from plum.common.multipart import MultipartReader, boundary_of

# Data that looks like the framing: a reader that trusted it would cut the part short.
FRAMING_LOOKALIKE = b"\r\n--plum-\r\n\r\n--\x00\xff" * 50

ReadPart = tuple[str, Optional[str], str, bytes]


async def _chunks_of(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def read_parts(body: bytes, content_type: str, chunk: int) -> list[ReadPart]:
    """(name, filename, content type, data) of every part, with the body arriving in chunks of `chunk` bytes."""

    async def read() -> list[ReadPart]:
        reader = MultipartReader(_chunks_of(body, chunk), boundary_of(content_type))
        found = []
        async for header in reader.parts():
            data = b"".join([piece async for piece in reader.body()])
            found.append((header.name, header.filename, header.content_type, data))
        return found

    return asyncio.run(read())
