"""The SQLite store: one connection, used from the event loop only, with explicit write transactions.

- WAL journal, ``synchronous=NORMAL`` (a commit costs no fsync; a power cut may lose the last
  commits but never corrupts the file), foreign keys ON, a busy timeout for outside readers.
- Opened through ``plum.controller.database.open_store`` by the daemon: one controller per database
  (a lock), and no silent start on a missing or emptied database.
- ``with store.write() as tx:`` wraps one mutation in ``BEGIN IMMEDIATE`` ... ``COMMIT``. Code inside
  it must not ``await``: the connection is shared by every request, so a suspended transaction would
  swallow other requests' statements. Nodes named with ``tx.nudge(node)`` are handed to the
  ``on_commit`` callback only AFTER the commit succeeded (Plum published before writing).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from plum.controller.migrations import MIGRATIONS

log = logging.getLogger(__name__)

Row = sqlite3.Row


class StorageError(RuntimeError):
    """The database cannot be used as it is; the message names the file and what to do."""


class SchemaError(StorageError):
    """The database was written by a newer controller, or a migration failed."""


RESTORE_HINT = "restore a backup (plum-controller restore BACKUP_DIR)"


class Guard(Protocol):
    """What keeps a database to one controller and records a clean stop (see plum.controller.database)."""

    def closed_cleanly(self) -> None: ...

    def release(self) -> None: ...


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def loads(text: Optional[str], default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


class Tx:
    """The open transaction: run statements and name the nodes to nudge after the commit."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.nudges: set[str] = set()

    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        return self.conn.executemany(sql, rows)

    def nudge(self, *node_ids: str) -> None:
        self.nudges.update(node_ids)


class Store:
    def __init__(self, path: Path, on_commit: Optional[Callable[[set[str]], None]] = None) -> None:
        self.path = path
        self.on_commit = on_commit
        self.guard: Optional[Guard] = None
        self._identity: Optional[str] = None  # served with every feed: read once
        # Bumped by every committed write that changed rows, unless the writer declared it cannot change
        # an assignment feed (heartbeats, credentials, the service registry): what cached feeds check.
        self.generation = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(str(path), isolation_level=None, cached_statements=512)
        except sqlite3.Error as exc:
            raise StorageError(
                f"{path}: cannot open the database ({exc}); check that it is a file the controller can read and write"
            ) from None
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute("PRAGMA busy_timeout=5000")
            self.conn.execute("PRAGMA temp_store=MEMORY")
        except sqlite3.Error as exc:
            self.conn.close()
            raise unusable(path, exc) from None

    def close(self) -> None:
        """Checkpoint, record a clean stop when nothing is left in the WAL, close, then release the guard."""
        try:
            self.conn.execute("PRAGMA optimize")
            if self.checkpoint() and self.guard is not None:
                self.guard.closed_cleanly()
        finally:
            self.conn.close()
            if self.guard is not None:
                self.guard.release()

    def checkpoint(self) -> bool:
        """Copy the WAL into the database file and empty it; False when a reader kept part of it."""
        row = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return row is not None and int(row[0]) == 0

    # -- what the file holds --------------------------------------------------------------------

    def check_integrity(self) -> None:
        """``PRAGMA quick_check``: a truncated or damaged file is refused at start, not at its first query."""
        try:
            rows = self.conn.execute("PRAGMA quick_check(5)").fetchall()
        except sqlite3.Error as exc:
            raise unusable(self.path, exc) from None
        problems = [str(r[0]) for r in rows if r[0] != "ok"]
        if problems:
            raise unusable(self.path, "; ".join(problems))

    def is_empty(self) -> bool:
        """No table at all: a new file, or one whose content never left a lost WAL."""
        return self.one("SELECT 1 FROM sqlite_master LIMIT 1") is None

    def identity(self) -> Optional[str]:
        """The database's UUID (migration 2), None before it was migrated."""
        if self._identity is None:
            self._identity = self._read_identity()
        return self._identity

    def _read_identity(self) -> Optional[str]:
        if self.one("SELECT 1 FROM sqlite_master WHERE type='table' AND name='database_identity'") is None:
            return None
        row = self.one("SELECT database_id FROM database_identity WHERE singleton=1")
        return str(row[0]) if row else None

    def renew_identity(self) -> str:
        """A new UUID: the database no longer holds the history agents followed (lost or replaced)."""
        identity = str(uuid.uuid4())
        with self.write() as tx:
            tx.execute(
                "UPDATE database_identity SET database_id=?, created_at=datetime('now') WHERE singleton=1", (identity,)
            )
        self._identity = identity
        return identity

    # -- schema ---------------------------------------------------------------------------------

    def schema_version(self) -> int:
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        row = self.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def migrate(self) -> list[int]:
        """Apply the migrations this database has not seen; returns the versions applied."""
        current = self.schema_version()
        known = MIGRATIONS[-1][0] if MIGRATIONS else 0
        if current > known:
            raise SchemaError(
                f"{self.path}: schema version {current} is newer than this controller knows ({known}); "
                "run the newer controller or restore a backup"
            )
        applied = []
        for version, description, sql in MIGRATIONS:
            if version <= current:
                continue
            script = (
                "BEGIN IMMEDIATE;\n"
                f"{sql}\n"
                "INSERT INTO schema_version(version, description, applied_at) "
                f"VALUES ({int(version)}, {_sql_text(description)}, datetime('now'));\n"
                "COMMIT;"
            )
            try:
                self.conn.executescript(script)
            except sqlite3.Error as exc:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise SchemaError(f"{self.path}: migration {version} ({description}) failed: {exc}") from exc
            log.info("database %s: applied migration %d (%s)", self.path, version, description)
            applied.append(version)
        return applied

    # -- transactions ---------------------------------------------------------------------------

    @contextmanager
    def write(self, feeds: bool = True) -> Iterator[Tx]:
        """A write transaction. ``feeds=False``: it cannot change what an assignment feed shows (node rows,
        credentials, services), so cached feeds stay valid."""
        if self.conn.in_transaction:
            raise RuntimeError("nested write transaction (a transaction must not span an await)")
        tx = Tx(self.conn)
        changes = self.conn.total_changes
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield tx
            self.conn.execute("COMMIT")
        except BaseException:
            self._roll_back()
            self.generation += 1  # whatever happened, cached feeds are not trusted after a failed write
            raise
        if feeds and self.conn.total_changes != changes:
            self.generation += 1
        if tx.nudges and self.on_commit is not None:
            self.on_commit(tx.nudges)

    def _roll_back(self) -> None:
        """Undo the open transaction, unless the failure (a failed COMMIT) already ended it."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def one(self, sql: str, params: Iterable[Any] = ()) -> Optional[Row]:
        row: Optional[Row] = self.conn.execute(sql, tuple(params)).fetchone()
        return row

    def all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, tuple(params)).fetchall()


def unusable(path: Path, reason: object) -> StorageError:
    # quick_check reports span lines ("*** in database main ***\nPage 4: ..."): one line, as every start error
    reason = " ".join(str(reason).replace("*** in database main ***", "").split())
    return StorageError(
        f"{path}: not a usable SQLite database ({reason}); {RESTORE_HINT}, or move the file aside and start "
        "with --init-database for an empty one"
    )


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
