"""Durable writes and safe removal for the daemons' stored state.

A write goes to a temporary file in the target's directory, is fsynced, renamed over the target,
and the directory is fsynced, so a kill -9 or a power loss leaves the old content or the new one,
never half of one. Every failure is a StorageError naming the path and the reason the OS gave
(``cannot save /var/lib/plum/agent/apps/x/state.json: no space left on device``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

# The disk, not the caller: the same call may work once space is freed or the device is back.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG})
# What the agent's own host is short of when it cannot start an app: never the app's fault.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.ENOSPC, errno.EDQUOT})
MAX_PATH_IN_MESSAGE = 300


def os_reason(exc: OSError) -> str:
    """The OS's words for an error, as a message continues them: "no space left on device"."""
    text = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    return text[:1].lower() + text[1:]


def is_storage_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def is_resource_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS


def _shown(path: PathLike) -> str:
    text = os.fspath(path)
    return text if len(text) <= MAX_PATH_IN_MESSAGE else "..." + text[-MAX_PATH_IN_MESSAGE:]


class StorageError(Exception):
    """Stored state could not be written, moved or removed; nothing was changed by the failed call."""

    def __init__(self, action: str, path: PathLike, reason: str, errno_value: Optional[int] = None) -> None:
        self.action = action
        self.path = os.fspath(path)
        self.reason = reason
        self.errno = errno_value
        self.message = f"cannot {action} {_shown(path)}: {reason}"
        super().__init__(self.message)

    @classmethod
    def from_os_error(cls, action: str, path: PathLike, exc: OSError) -> StorageError:
        return cls(action, path, os_reason(exc), exc.errno)

    @property
    def disk_full(self) -> bool:
        """No space (or quota) left: HTTP 507 Insufficient Storage rather than 500."""
        return self.errno in (errno.ENOSPC, errno.EDQUOT)


# ---- durable writes -----------------------------------------------------------------------------


def fsync_dir(path: PathLike) -> None:
    """Make a rename or an unlink in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: PathLike, data: bytes, *, mode: int = 0o600, action: str = "save") -> None:
    """Replace `path` with `data` durably; StorageError (the old content is kept) on any failure."""
    target = Path(path)
    tmp: Optional[str] = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = None
        fsync_dir(target.parent)
    except OSError as exc:
        raise StorageError.from_os_error(action, target, exc) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_json_atomic(path: PathLike, data: Any, *, mode: int = 0o600, action: str = "save") -> None:
    write_atomic(path, json.dumps(data, separators=(",", ":")).encode(), mode=mode, action=action)


def replace_durably(source: PathLike, target: PathLike, *, action: str = "install") -> None:
    """Rename source to target (same file system) and make the rename durable."""
    try:
        os.replace(source, target)
        fsync_dir(Path(target).parent)
        if Path(source).parent != Path(target).parent:
            fsync_dir(Path(source).parent)
    except OSError as exc:
        raise StorageError.from_os_error(action, target, exc) from None


def move_aside(path: PathLike, label: str = "bad") -> Path:
    """Rename a file that must not be read again to `<name>.<label>-<UTC time>`, keeping it for a post-mortem."""
    source = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = source.with_name(f"{source.name}.{label}-{stamp}")
    counter = 1
    while target.exists():
        counter += 1
        target = source.with_name(f"{source.name}.{label}-{stamp}-{counter}")
    replace_durably(source, target, action="move aside")
    return target


# ---- removal ------------------------------------------------------------------------------------


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OWNER_RWX = stat.S_IRWXU


def remove_path(path: PathLike) -> None:
    """Remove a file, a symlink or a whole directory tree; a missing path is fine. StorageError otherwise."""
    target = Path(path)
    try:
        st = target.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError.from_os_error("remove", target, exc) from None
    if stat.S_ISDIR(st.st_mode):
        remove_tree(target)
        return
    try:
        target.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError.from_os_error("remove", target, exc) from None


def remove_tree(path: PathLike) -> None:
    """Remove a directory tree of any depth, bottom-up, without recursion, with at most two directories open.

    Paths are never built (a deep tree's paths are longer than PATH_MAX): the walk moves by directory
    descriptors, going down by name and back up through "..". A directory the owner cannot read,
    write or enter is made so first. A failure raises StorageError naming the entry; what was removed
    before it stays removed, and calling again continues the work.
    """
    root = Path(path)
    try:
        _make_usable(root)
        fd = os.open(root, _DIR_FLAGS)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError.from_os_error("remove", root, exc) from None
    names: list[str] = []  # the way down from root, one name per level entered
    pending: list[list[str]] = []  # per level: the subdirectories still to remove
    entered = True
    try:
        while True:
            if entered:
                try:
                    pending.append(_clear_files(fd))
                except OSError as exc:
                    raise _removal_error(root, names, exc) from None
                entered = False
            if pending[-1]:
                name = pending[-1].pop()
                try:
                    _make_usable(name, dir_fd=fd)
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise _removal_error(root, [*names, name], exc) from None
                os.close(fd)
                fd, entered = child, True
                names.append(name)
                continue
            pending.pop()  # this level holds nothing any more: leave it, then remove it from its parent
            if not names:
                break
            name = names.pop()
            try:
                parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _removal_error(root, names, exc) from None
            os.close(fd)
            fd = parent
            try:
                os.rmdir(name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.ENOTEMPTY:
                    raise _removal_error(root, [*names, name], exc) from None
                pending[-1].append(name)  # written to while we worked: once more
    finally:
        os.close(fd)
    try:
        os.rmdir(root)
        fsync_dir(root.parent)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:
            remove_tree(root)  # written to while we worked: one more pass
            return
        raise StorageError.from_os_error("remove", root, exc) from None


def _make_usable(name: PathLike, dir_fd: Optional[int] = None) -> None:
    """Give the owner rwx on a directory (an extracted release may hold read-only ones)."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode) and (st.st_mode & _OWNER_RWX) != _OWNER_RWX:
        os.chmod(name, stat.S_IMODE(st.st_mode) | _OWNER_RWX, dir_fd=dir_fd)


def _clear_files(fd: int) -> list[str]:
    """Unlink every non-directory in the directory fd; returns the names of its subdirectories."""
    subdirs = []
    with os.scandir(fd) as entries:
        listed = list(entries)
    for entry in listed:
        if entry.is_dir(follow_symlinks=False):
            subdirs.append(entry.name)
            continue
        try:
            os.unlink(entry.name, dir_fd=fd)
        except FileNotFoundError:
            continue
    return subdirs


def _removal_error(root: Path, names: list[str], exc: OSError) -> StorageError:
    where = os.path.join(root, *names[-20:]) if len(names) <= 20 else os.path.join(root, "...", *names[-20:])
    return StorageError.from_os_error("remove", where, exc)
