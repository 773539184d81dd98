"""Per-app log files: apps write to them directly (so they outlive the agent); the agent rotates
them by size with copy-and-truncate, which keeps the apps' open O_APPEND descriptors valid.

An app's output is not trusted to be reasonable: reading its last lines costs at most
TAIL_BYTES_PER_LINE per line asked for, however long its lines are (an app writing megabytes without
a newline included), and a line longer than MAX_LINE_CHARS is cut, so what reaches an app's status
and its saved state stays small. The live log and its rotated copies are LOG_MODE (0640).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import BinaryIO

from plum.agent.config import private_dir

LOG_MODE = 0o640
MAX_LINE_CHARS = 4096
TRUNCATED = "…[truncated]"
TAIL_BYTES_PER_LINE = MAX_LINE_CHARS + 1  # a full line and its newline
TAIL_MIN_BYTES = 64 * 1024  # what a few lines may take: short tails still cost next to nothing
_BLOCK = 64 * 1024
_COPY_CHUNK = 1024 * 1024


def open_for_append(path: Path) -> int:
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, LOG_MODE)
    os.fchmod(fd, LOG_MODE)  # whatever the umask, or an older file's mode
    return fd


def rotated(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def rotate_if_large(path: Path, max_bytes: int, backups: int) -> bool:
    """Rotate path -> path.1 -> ... -> path.N when it is larger than max_bytes.

    Blocking (it copies the file): callers on the event loop run it in a thread. The copy stops at the
    size the file had when rotation began, so an app writing fast cannot make it last forever; what
    the app writes between the end of the copy and the truncation is lost, as with logrotate's
    copytruncate.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size <= max_bytes:
        return False
    if backups > 0:
        for index in range(backups - 1, 0, -1):
            older = rotated(path, index)
            if older.exists():
                os.replace(older, rotated(path, index + 1))
        _copy_head(path, rotated(path, 1), size)
    os.truncate(path, 0)
    return True


def _copy_head(source: Path, target: Path, size: int) -> None:
    """The first `size` bytes of source into target, created (or replaced) as LOG_MODE."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, LOG_MODE)
    try:
        os.fchmod(fd, LOG_MODE)
        with source.open("rb") as src:
            left = size
            while left > 0:
                chunk = src.read(min(_COPY_CHUNK, left))
                if not chunk:
                    break  # truncated meanwhile
                os.write(fd, chunk)  # a regular file: written in full
                left -= len(chunk)
    finally:
        os.close(fd)


def restrict_modes(log_dir: Path) -> None:
    """Give every log file in an app's log folder LOG_MODE (earlier versions made rotated copies 0644)."""
    for entry in os.scandir(log_dir) if log_dir.is_dir() else ():
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mode & 0o7777 != LOG_MODE:
                os.chmod(entry.path, LOG_MODE)
        except FileNotFoundError:  # rotated away meanwhile
            continue


def replace_with_lines(path: Path, lines: list[str]) -> None:
    """Replace a log with these lines (a container's last words, kept once it is gone), as LOG_MODE."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, LOG_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), LOG_MODE)
        fh.write("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


def tail(path: Path, lines: int, max_line: int = MAX_LINE_CHARS) -> list[str]:
    """The last `lines` lines of a file, read backwards from its end, each cut to `max_line` characters.

    At most max(TAIL_MIN_BYTES, lines * TAIL_BYTES_PER_LINE) bytes are read. When they hold fewer lines
    than asked, the oldest one shown may be the end of a longer line: it starts with TRUNCATED.
    """
    if lines <= 0:
        return []
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return []
    with fh:
        data, from_line_start = _read_tail(fh, lines, max(TAIL_MIN_BYTES, lines * TAIL_BYTES_PER_LINE))
    text = data.decode("utf-8", "replace").splitlines()
    shown = text[-lines:]
    cut = [_cut(line, max_line) for line in shown]
    if shown and not from_line_start and len(shown) == len(text):  # the oldest began before what was read
        cut[0] = TRUNCATED + shown[0][-max_line:]
    return cut


def _read_tail(fh: BinaryIO, lines: int, budget: int) -> tuple[bytes, bool]:
    """The end of an open file: enough for `lines` lines, at most `budget` bytes; and whether that
    starts at the beginning of a line."""
    end = fh.seek(0, os.SEEK_END)
    chunks: list[bytes] = []
    newlines = 0
    start = end
    while start > 0 and newlines <= lines and end - start < budget:
        size = min(_BLOCK, start, budget - (end - start))
        start -= size
        fh.seek(start)
        chunk = fh.read(size)
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    if start == 0:
        return data, True
    fh.seek(start - 1)
    return data, fh.read(1) == b"\n"


def _cut(line: str, max_line: int) -> str:
    if len(line) <= max_line:
        return line
    return line[:max_line] + TRUNCATED


async def tail_async(path: Path, lines: int, max_line: int = MAX_LINE_CHARS) -> list[str]:
    """tail() in a worker thread, for callers on the event loop."""
    return await asyncio.to_thread(tail, path, lines, max_line)
