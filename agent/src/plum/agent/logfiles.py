"""Per-app log files: apps write to them directly (so they outlive the agent); the agent rotates
them by size with copy-and-truncate, which keeps the apps' open O_APPEND descriptors valid."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def open_for_append(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)


def rotate_if_large(path: Path, max_bytes: int, backups: int) -> bool:
    """Rotate path -> path.1 -> ... -> path.N when it is larger than max_bytes."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    if backups == 0:
        os.truncate(path, 0)
        return True
    for index in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    os.truncate(path, 0)
    return True


def tail(path: Path, lines: int, block: int = 8192) -> list[str]:
    """The last `lines` lines of a file, reading backwards from its end."""
    if lines <= 0:
        return []
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return []
    with fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        data = b""
        while end > 0 and data.count(b"\n") <= lines:
            start = max(0, end - block)
            fh.seek(start)
            data = fh.read(end - start) + data
            end = start
    text = data.decode("utf-8", "replace").splitlines()
    return text[-lines:]
