"""Opening the controller's database: first install, refusals, --init-database, the lock; backup and restore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plum.common.config import Settings
from plum.controller import backup
from plum.controller.config import ControllerConfig
from plum.controller.database import (
    DatabaseFiles,
    DatabaseLock,
    open_store,
    read_identity_file,
)
from plum.controller.failover import Failover
from plum.controller.nodes import NodeRepo
from plum.controller.store import StorageError, Store


def config(data: Path, **extra: str) -> ControllerConfig:
    return ControllerConfig.from_settings(Settings({"CONTROLLER_DATA_DIR": str(data), **extra}))


def add_deployment(store: Store, name: str) -> None:
    with store.write() as tx:
        tx.execute(
            "INSERT INTO deployments(deployment_id, name, created_at, updated_at) VALUES (?, ?, 0, 0)",
            (name, name),
        )


def names(store: Store) -> list[str]:
    return [r[0] for r in store.all("SELECT name FROM deployments ORDER BY name")]


def test_a_first_start_creates_the_database_and_records_its_identity(
    tmp_path: Path,
) -> None:
    store = open_store(config(tmp_path / "data"))
    identity = store.identity()
    assert identity is not None and len(identity) == 36 and identity[14] == "4"
    files = DatabaseFiles(store.path)
    assert read_identity_file(files.identity).state == "open"
    store.close()
    record = read_identity_file(files.identity)
    assert (record.database_id, record.state) == (identity, "closed")
    again = open_store(config(tmp_path / "data"))
    assert again.identity() == identity, "kept across restarts"
    again.close()


def test_a_first_install_with_token_files_already_in_place_initialises(
    tmp_path: Path,
) -> None:
    """The roles write the token files before the first start: they are no sign of an earlier database."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "agent.token").write_text("a" * 32)
    (data / "operator.token").write_text("o" * 32)
    open_store(config(data)).close()


@pytest.mark.parametrize("evidence", ["identity", "wal", "artifacts"])
def test_a_missing_database_in_a_used_data_directory_is_refused(tmp_path: Path, evidence: str) -> None:
    data = tmp_path / "data"
    store = open_store(config(data))
    add_deployment(store, "kept")
    store.close()
    files = DatabaseFiles(data / "controller.db")
    files.db.unlink()
    if evidence != "identity":
        files.identity.unlink()
    if evidence == "wal":
        files.wal.write_bytes(b"x")
    if evidence == "artifacts":
        (data / "artifacts").mkdir(exist_ok=True)
        (data / "artifacts" / "demo_1.0_abcd1234.zip").write_bytes(b"zip")
    with pytest.raises(
        StorageError,
        match=r"is missing, but .* shows that a controller used this data directory",
    ):
        open_store(config(data))
    assert not files.db.exists(), "nothing was created"
    store = open_store(config(data, CONTROLLER_INIT_DATABASE="true"))
    assert names(store) == []
    store.close()


def test_init_database_gives_a_new_identity_and_changes_nothing_when_all_is_well(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    store = open_store(config(data))
    first = store.identity()
    add_deployment(store, "kept")
    store.close()
    store = open_store(config(data, CONTROLLER_INIT_DATABASE="true"))
    assert (store.identity(), names(store)) == (first, ["kept"]), "nothing wrong: the setting does nothing"
    store.close()
    (data / "controller.db").write_bytes(b"")
    store = open_store(config(data, CONTROLLER_INIT_DATABASE="true"))
    assert store.identity() != first
    assert read_identity_file(DatabaseFiles(store.path).identity).database_id == store.identity()
    store.close()


def test_another_database_file_than_the_recorded_one_is_refused(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    open_store(config(one)).close()
    open_store(config(two)).close()
    (one / "controller.db").write_bytes((two / "controller.db").read_bytes())
    with pytest.raises(StorageError, match="records database"):
        open_store(config(one))


def test_the_lock_names_its_holder_and_is_released_on_close(tmp_path: Path) -> None:
    store = open_store(config(tmp_path / "data"))
    with pytest.raises(
        StorageError,
        match=r"in use by another controller \(controller pid \d+ on host ",
    ):
        open_store(config(tmp_path / "data"))
    with pytest.raises(StorageError, match="in use"):
        DatabaseLock.acquire(DatabaseFiles(store.path).lock, purpose="restore")
    store.close()
    open_store(config(tmp_path / "data")).close()


def test_a_controller_that_stood_still_gives_nodes_a_ttl_before_judging_them() -> None:
    now = [1000.0]
    store = Store(Path(":memory:"))
    store.migrate()
    nodes = NodeRepo(store, ttl=2.0, clock=lambda: now[0])
    nodes.heartbeat("n1", "10.0.0.1", None)
    failover = Failover(store, nodes, interval=0.2, clock=lambda: now[0])
    now[0] += 2.1
    failover.run_once()
    assert failover.started_at == 1000.0, "a normal round: no new grace period"
    now[0] += 10  # SIGSTOP, a suspended VM: no round ran and no heartbeat was heard
    failover.run_once()
    assert failover.started_at == now[0]


def test_backup_and_restore_round_trip(tmp_path: Path) -> None:
    cfg = config(tmp_path / "data")
    store = open_store(cfg)
    for i in range(3):
        add_deployment(store, f"d{i}")
    (cfg.data_dir / "agent.token").write_text("agent-token-0123456789\n")
    manifest = backup.backup(cfg, tmp_path / "bk")  # while the store is open, as with a running controller
    identity = store.identity()
    add_deployment(store, "after")
    store.close()
    assert manifest["databaseId"] == identity and manifest["counts"]["deployments"] == 3
    assert (tmp_path / "bk").stat().st_mode & 0o777 == 0o700
    with pytest.raises(StorageError, match="not an empty directory"):
        backup.backup(cfg, tmp_path / "bk")

    backup.restore(cfg, tmp_path / "bk")
    assert list(cfg.data_dir.glob("controller.db.before-restore-*")), "the replaced database is kept"
    store = open_store(cfg)
    assert (store.identity(), names(store)) == (identity, ["d0", "d1", "d2"])
    store.close()

    fresh = config(tmp_path / "new-host")
    backup.restore(fresh, tmp_path / "bk")
    assert (fresh.data_dir / "agent.token").read_text() == "agent-token-0123456789\n"


def test_a_damaged_backup_is_refused_before_anything_changes(tmp_path: Path) -> None:
    cfg = config(tmp_path / "data")
    store = open_store(cfg)
    add_deployment(store, "live")
    backup.backup(cfg, tmp_path / "bk")
    store.close()
    db = tmp_path / "bk" / "controller.db"
    data = bytearray(db.read_bytes())
    data[-100] ^= 0xFF
    db.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="sha256 differs"):
        backup.restore(cfg, tmp_path / "bk")
    manifest = json.loads((tmp_path / "bk" / "backup.json").read_text())
    (tmp_path / "bk" / "backup.json").unlink()
    with pytest.raises(StorageError, match="not a complete backup"):
        backup.restore(cfg, tmp_path / "bk")
    assert manifest["format"] == 1
    assert not list(cfg.data_dir.glob("*.before-restore-*"))
