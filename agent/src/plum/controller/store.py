"""The SQLite store: one connection, used from the event loop only, with explicit write transactions.

- WAL journal, ``synchronous=NORMAL`` (a commit costs no fsync; a power cut may lose the last
  commits but never corrupts the file), foreign keys ON, a busy timeout for outside readers.
- ``with store.write() as tx:`` wraps one mutation in ``BEGIN IMMEDIATE`` ... ``COMMIT``. Code inside
  it must not ``await``: the connection is shared by every request, so a suspended transaction would
  swallow other requests' statements. Nodes named with ``tx.nudge(node)`` are handed to the
  ``on_commit`` callback only AFTER the commit succeeded (Plum published before writing).
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

from plum.controller.migrations import MIGRATIONS

log = logging.getLogger(__name__)

Row = sqlite3.Row


class SchemaError(RuntimeError):
    """The database was written by a newer controller, or a migration failed."""


def new_id() -> str:
    """32 hex characters, as Plum's IDs."""
    return secrets.token_hex(16)


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

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> sqlite3.Cursor:
        return self.conn.executemany(sql, rows)

    def nudge(self, *node_ids: str) -> None:
        self.nudges.update(node_ids)


class Store:
    def __init__(self, path: Path, on_commit: Optional[Callable[[set[str]], None]] = None) -> None:
        self.path = path
        self.on_commit = on_commit
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), isolation_level=None, cached_statements=512)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.conn.execute("PRAGMA temp_store=MEMORY")

    def close(self) -> None:
        try:
            self.conn.execute("PRAGMA optimize")
        finally:
            self.conn.close()

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
    def write(self) -> Iterator[Tx]:
        if self.conn.in_transaction:
            raise RuntimeError("nested write transaction (a transaction must not span an await)")
        tx = Tx(self.conn)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield tx
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        if tx.nudges and self.on_commit is not None:
            self.on_commit(tx.nudges)

    def one(self, sql: str, params: Iterable[Any] = ()) -> Optional[Row]:
        row: Optional[Row] = self.conn.execute(sql, tuple(params)).fetchone()
        return row

    def all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, tuple(params)).fetchall()


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
