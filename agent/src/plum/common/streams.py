"""Saving a streamed body (an upload, a download) to a private temp file while hashing it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Callable

from plum.common.digest import sha256
from plum.common.fsio import StorageError, is_storage_error


async def save_stream(
    chunks: AsyncIterator[bytes], directory: Path, limit: int, too_large: Callable[[int], Exception]
) -> tuple[Path, str, int]:
    """Write chunks to a new 0600 file in directory; returns (path, sha256 hex, size).

    More than `limit` bytes raises too_large(limit); on any error the file is removed."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix="incoming-", suffix=".zip")
    except OSError as exc:
        raise StorageError.from_os_error("save the upload in", directory, exc) from None
    path = Path(name)
    digest = sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                digest.update(chunk)
                fh.write(chunk)
    except OSError as exc:
        path.unlink(missing_ok=True)
        if is_storage_error(exc):  # a full disk, not a bad upload
            raise StorageError.from_os_error("save the upload to", path, exc) from None
        raise
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, digest.hexdigest(), size
