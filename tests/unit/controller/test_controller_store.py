"""Migrations, pragmas and constraints of the SQLite store."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

import plum.controller.store as store_module
from plum.controller.migrations import MIGRATIONS
from plum.controller.store import SchemaError, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "c.db")
    s.migrate()
    return s


def seed(store: Store) -> None:
    now = time.time()
    with store.write() as tx:
        tx.execute(
            "INSERT INTO nodes(node_id, ip, last_seen) VALUES ('n1', '127.0.0.1', ?)",
            (now,),
        )
        tx.execute(
            "INSERT INTO artifacts(artifact_id, app_name, version, type, path, created_at)"
            " VALUES ('art1', 'demo', '1.0', 'zip', '/artifacts/demo_1.0_abcd.zip', 0)"
        )
        tx.execute(
            "INSERT INTO deployments(deployment_id, name, created_at, updated_at) VALUES ('d1', 'web', ?, ?)",
            (now, now),
        )
        tx.execute("INSERT INTO deployment_entries(deployment_id, position, artifact_id) VALUES ('d1', 0, 'art1')")
        tx.execute(
            "INSERT INTO assignments(instance_id, deployment_id, entry_id, node_id, desired, created_at)"
            " VALUES ('d1-1', 'd1', 1, 'n1', 'Running', ?)",
            (now,),
        )
        tx.execute(
            "INSERT INTO statuses(instance_id, phase, healthy, received_at) VALUES ('d1-1', 'Running', 1, ?)",
            (now,),
        )


def test_migrations_are_versioned_and_idempotent(tmp_path: Path) -> None:
    s = Store(tmp_path / "c.db")
    assert s.migrate() == [m[0] for m in MIGRATIONS]
    assert s.schema_version() == MIGRATIONS[-1][0]
    assert s.migrate() == []
    s.close()
    again = Store(tmp_path / "c.db")
    assert again.migrate() == []
    rows = again.all("SELECT version, description FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == [m[0] for m in MIGRATIONS]


def test_pragmas(store: Store) -> None:
    assert store.one("PRAGMA journal_mode")[0] == "wal"
    assert store.one("PRAGMA foreign_keys")[0] == 1
    assert store.one("PRAGMA synchronous")[0] == 1  # NORMAL


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    s = Store(tmp_path / "c.db")
    s.migrate()
    s.conn.execute("INSERT INTO schema_version VALUES (999, 'future', datetime('now'))")
    with pytest.raises(SchemaError, match="999"):
        s.migrate()


def test_indexes_exist(store: Store) -> None:
    names = {r[0] for r in store.all("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {
        "assignments_node",
        "assignments_deployment",
        "statuses_instance",
        "endpoints_instance",
    } <= names
    plan = store.all(
        "EXPLAIN QUERY PLAN SELECT * FROM assignments WHERE node_id=? AND desired != 'Lost'",
        ("n1",),
    )
    assert any("assignments_node" in r[3] for r in plan)


def test_unique_deployment_name_and_app_version(store: Store) -> None:
    seed(store)
    with pytest.raises(sqlite3.IntegrityError), store.write() as tx:
        tx.execute("INSERT INTO deployments(deployment_id, name, created_at, updated_at) VALUES ('d2', 'web', 0, 0)")
    with pytest.raises(sqlite3.IntegrityError), store.write() as tx:
        tx.execute(
            "INSERT INTO artifacts(artifact_id, app_name, version, type, created_at)"
            " VALUES ('art2', 'demo', '1.0', 'image', 0)"
        )
    # the failed transactions left nothing behind
    assert store.one("SELECT COUNT(*) FROM deployments")[0] == 1
    assert store.one("SELECT COUNT(*) FROM artifacts")[0] == 1


def test_foreign_keys_cascade_and_restrict(store: Store) -> None:
    seed(store)
    with pytest.raises(sqlite3.IntegrityError), store.write() as tx:  # node in use
        tx.execute("DELETE FROM nodes WHERE node_id='n1'")
    with pytest.raises(sqlite3.IntegrityError), store.write() as tx:  # artifact in use
        tx.execute("DELETE FROM artifacts WHERE artifact_id='art1'")
    with pytest.raises(sqlite3.IntegrityError), store.write() as tx:  # unknown node
        tx.execute(
            "INSERT INTO assignments(instance_id, deployment_id, entry_id, node_id, desired, created_at)"
            " VALUES ('d1-2', 'd1', 1, 'ghost', 'Running', 0)"
        )
    with store.write() as tx:
        tx.execute("DELETE FROM deployments WHERE deployment_id='d1'")
    for table in ("deployment_entries", "assignments", "statuses"):
        assert store.one(f"SELECT COUNT(*) FROM {table}")[0] == 0, table  # noqa: S608


def test_check_constraints(store: Store) -> None:
    seed(store)
    with pytest.raises(sqlite3.IntegrityError), store.write() as tx:
        tx.execute("UPDATE assignments SET desired='Sleeping'")
    with pytest.raises(sqlite3.IntegrityError), store.write() as tx:
        tx.execute("UPDATE deployments SET status='Paused'")


def test_nudges_are_published_only_after_commit(store: Store) -> None:
    published: list[set[str]] = []
    store.on_commit = published.append
    with store.write() as tx:
        tx.nudge("n1")
        assert published == []  # not before the commit
    assert published == [{"n1"}]
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.nudge("n2")
        raise RuntimeError("boom")
    assert published == [{"n1"}]  # a rolled-back write nudges nobody


def test_nested_write_is_refused(store: Store) -> None:
    with pytest.raises(RuntimeError, match="nested"), store.write(), store.write():
        pass


def test_new_migrations_apply_in_order_and_a_failed_one_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Store(tmp_path / "c.db")
    s.migrate()
    base = MIGRATIONS[-1][0]
    extra = (
        *MIGRATIONS,
        (
            base + 1,
            "node zone",
            "ALTER TABLE nodes ADD COLUMN zone TEXT NOT NULL DEFAULT '';",
        ),
        (
            base + 2,
            "broken",
            "CREATE TABLE half_done (x INTEGER); CREATE TABLE nodes (x INTEGER);",
        ),
    )
    monkeypatch.setattr(store_module, "MIGRATIONS", extra)
    with pytest.raises(SchemaError, match="broken"):
        s.migrate()
    assert s.schema_version() == base + 1  # the good one stayed applied
    columns = {r[1] for r in s.all("PRAGMA table_info(nodes)")}
    assert "zone" in columns
    tables = {r[0] for r in s.all("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "half_done" not in tables  # the failed migration was rolled back as a whole
    assert not s.conn.in_transaction


def test_generation_moves_with_writes_that_may_change_a_feed(store: Store) -> None:
    """What the cached assignment feeds (api.py) check: a write that changed rows moves it, a write
    declared feed-neutral or one that changed nothing does not, a failed one always does."""
    seed(store)
    before = store.generation
    with store.write(feeds=False) as tx:
        tx.execute("UPDATE nodes SET last_seen=last_seen+1 WHERE node_id='n1'")
    with store.write() as tx:
        tx.execute("UPDATE nodes SET last_seen=1 WHERE node_id='nobody'")
    assert store.generation == before
    with store.write() as tx:
        tx.execute("UPDATE assignments SET desired='Stopped'")
    assert store.generation == before + 1
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.execute("UPDATE assignments SET desired='Running'")
        raise RuntimeError("boom")
    assert store.generation == before + 2
