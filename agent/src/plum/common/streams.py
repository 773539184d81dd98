"""Saving a streamed body (an upload, a download) to a private temp file while hashing it."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Callable


async def save_stream(
    chunks: AsyncIterator[bytes], directory: Path, limit: int, too_large: Callable[[int], Exception]
) -> tuple[Path, str, int]:
    """Write chunks to a new 0600 file in directory; returns (path, sha256 hex, size).

    More than `limit` bytes raises too_large(limit); on any error the file is removed."""
    fd, name = tempfile.mkstemp(dir=directory, prefix="incoming-", suffix=".zip")
    path = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                digest.update(chunk)
                fh.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, digest.hexdigest(), size
