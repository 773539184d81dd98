"""Opening the controller's database so that one missing file can never wipe the fleet.

Next to the database (``controller.db`` by default) the controller keeps two small files:

- ``controller.db.lock``: held with ``flock`` while a controller runs, so a second controller on the
  same database is refused, naming the holder. The kernel releases it when the process dies, even
  on ``kill -9``; the file itself stays (removing it would race with the next holder).
- ``controller.db.identity``: the database's identity (a UUID kept in the database itself) and
  whether the last controller stopped cleanly. It is what tells a fresh install from a data
  directory whose database went missing.

At start, before anything is written, the controller refuses (one line naming the file and what to
do) when the database is missing or empty although the data directory shows earlier use (the
identity file, a leftover ``-wal``/``-shm``, uploaded artifacts), when its WAL disappeared after an
unclean stop, or when the file is another database than the one recorded. ``--init-database``
(``CONTROLLER_INIT_DATABASE=true``) accepts the database as it is, a new empty one if it is missing,
and gives it a new identity, so that agents keep their instances until an operator accepts it.
With nothing wrong, the setting changes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from plum.common import fsio
from plum.controller.config import ControllerConfig
from plum.controller.store import RESTORE_HINT, StorageError, Store

log = logging.getLogger(__name__)

OPEN, CLOSED = "open", "closed"
INIT_HINT = "start once with --init-database (CONTROLLER_INIT_DATABASE=true)"


@dataclass(frozen=True)
class DatabaseFiles:
    """The database file and the files SQLite and the controller keep beside it."""

    db: Path

    def sibling(self, suffix: str) -> Path:
        return self.db.with_name(self.db.name + suffix)

    @property
    def wal(self) -> Path:
        return self.sibling("-wal")

    @property
    def shm(self) -> Path:
        return self.sibling("-shm")

    @property
    def lock(self) -> Path:
        return self.sibling(".lock")

    @property
    def identity(self) -> Path:
        return self.sibling(".identity")

    def has_content(self) -> bool:
        try:
            return self.db.stat().st_size > 0
        except FileNotFoundError:
            return False


# ---- errors ----------------------------------------------------------------------------------------


def describe_os_error(path: Path, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{path}: {reason} (the controller needs to write in {path.parent})"
    return f"{path}: {reason}"


# ---- the lock --------------------------------------------------------------------------------------


class DatabaseLock:
    """An exclusive ``flock`` on ``<db>.lock`` whose content names the holder (pid, host, since)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: Optional[int] = fd

    @classmethod
    def acquire(cls, path: Path, purpose: str = "controller") -> DatabaseLock:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot lock the database: {describe_os_error(path, exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "a process that wrote no details"
            os.close(fd)
            database = path.with_name(path.name[: -len(".lock")])
            raise StorageError(
                f"{database}: in use by another controller ({holder}; lock {path}); stop it first: two "
                "controllers on one database would both place and fail over instances"
            ) from None
        holder = (
            f"{purpose} pid {os.getpid()} on host {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, (holder + "\n").encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


# ---- the identity file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentityRecord:
    database_id: str
    state: str  # OPEN while a controller runs (or after it died), CLOSED after a clean stop


def read_identity_file(path: Path) -> Optional[IdentityRecord]:
    """The recorded identity; None when there is no file. A damaged file still counts as earlier use."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read the identity file: {describe_os_error(path, exc)}") from None
    try:
        data = json.loads(raw)
        return IdentityRecord(str(data["databaseId"]), str(data["state"]))
    except (ValueError, KeyError, TypeError):
        log.warning("%s: unreadable identity file (kept as evidence of earlier use, rewritten at start)", path)
        return IdentityRecord("unknown", CLOSED)


def write_identity_file(path: Path, database_id: str, state: str) -> None:
    record = {
        "databaseId": database_id,
        "database": path.name[: -len(".identity")],
        "state": state,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "updatedAt": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        fsio.write_atomic(
            path, (json.dumps(record, indent=1) + "\n").encode(), action="record the database identity in"
        )
    except fsio.StorageError as exc:
        raise StorageError(f"{exc.message} (the controller needs to write in {path.parent})") from None


class DataDirGuard:
    """Held by the open store: marks a clean stop in the identity file, then releases the lock."""

    def __init__(self, files: DatabaseFiles, lock: DatabaseLock, database_id: str) -> None:
        self.files = files
        self.lock = lock
        self.database_id = database_id

    def closed_cleanly(self) -> None:
        try:
            write_identity_file(self.files.identity, self.database_id, CLOSED)
        except StorageError as exc:  # the next start then checks the WAL as after a crash
            log.warning("%s", exc)

    def release(self) -> None:
        self.lock.release()


# ---- deciding whether the database can be used -----------------------------------------------------


def earlier_use(files: DatabaseFiles, record: Optional[IdentityRecord], artifacts_dir: Path) -> Optional[str]:
    """What shows that a controller ran here before (the token files do not: installers create them)."""
    if record is not None:
        return f"{files.identity} (database {record.database_id})"
    for leftover in (files.wal, files.shm):
        if leftover.exists():
            return f"the leftover {leftover}"
    with contextlib.suppress(OSError):
        count = sum(1 for p in artifacts_dir.iterdir() if p.is_file())
        if count:
            return f"{artifacts_dir} ({count} uploaded artifact(s))"
    return None


def loss_of(
    files: DatabaseFiles, record: Optional[IdentityRecord], store: Optional[Store], wal_found: bool, artifacts: Path
) -> str:
    """Why this database is not the one the data directory last served; '' when it is.

    ``wal_found``: whether the WAL existed before the database was opened (opening creates one)."""
    if record is not None and record.state == OPEN and store is not None and not wal_found:
        return (
            f"{files.wal} is missing after an unclean stop (crash, kill or power loss): the changes it held "
            f"are lost from {files.db}"
        )
    empty = "missing" if not files.db.exists() else "empty"
    if store is None or store.is_empty():
        evidence = earlier_use(files, record, artifacts)
        return (
            f"{files.db} is {empty}, but {evidence} shows that a controller used this data directory"
            if evidence
            else ""
        )
    found = store.identity()
    if record is not None and found is not None and record.database_id not in (found, "unknown"):
        return f"{files.db} is database {found}, but {files.identity} records database {record.database_id}"
    return ""


def set_aside(path: Path) -> None:
    """Keep a stale file for inspection instead of letting SQLite apply it to a new database."""
    if path.exists():
        try:
            target = fsio.move_aside(path, "stale")
        except fsio.StorageError as exc:
            raise StorageError(exc.message) from None
        log.warning("moved %s aside to %s", path, target)


def open_store(config: ControllerConfig, on_commit: Optional[Callable[[set[str]], None]] = None) -> Store:
    """The controller's store, locked to this process, migrated, and known to be the expected one."""
    files = DatabaseFiles(config.db_path)
    try:
        files.db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StorageError(f"cannot create the database directory: {describe_os_error(files.db.parent, exc)}") from None
    lock = DatabaseLock.acquire(files.lock)
    try:
        store = _open_checked(files, config, on_commit)
        database_id = store.identity()
        assert database_id is not None
        write_identity_file(files.identity, database_id, OPEN)
    except BaseException:
        lock.release()
        raise
    store.guard = DataDirGuard(files, lock, database_id)
    log.info("database %s: identity %s", files.db, database_id)
    return store


def _open_checked(
    files: DatabaseFiles, config: ControllerConfig, on_commit: Optional[Callable[[set[str]], None]]
) -> Store:
    record = read_identity_file(files.identity)
    wal_found = files.wal.exists()
    store: Optional[Store] = None
    if files.has_content():  # never open an empty file: SQLite could replay a stale WAL into it
        store = Store(files.db, on_commit)
        try:
            store.check_integrity()
        except StorageError:
            store.conn.close()
            raise
    loss = loss_of(files, record, store, wal_found, config.artifacts_dir)
    if loss and not config.init_database:
        if store is not None:
            store.conn.close()
        raise StorageError(f"{loss}; {RESTORE_HINT}, or {INIT_HINT} to go on with it and a new identity")
    if loss:
        log.warning("%s; going on as --init-database asks: agents hold their instances until accepted", loss)
    if store is None:
        for stale in (files.wal, files.shm):
            set_aside(stale)
        store = Store(files.db, on_commit)
        log.info("database %s: created", files.db)
    store.migrate()
    if loss:
        log.warning("database %s: new identity %s", files.db, store.renew_identity())
    return store
