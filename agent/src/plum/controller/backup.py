"""``plum-controller backup DIR`` and ``plum-controller restore DIR``: the controller's state, copied safely.

A backup is a directory (mode 0700: it holds the tokens):

- ``controller.db``: a consistent copy made with SQLite's online backup API, in one step, so it is
  taken while the controller runs and writes (a snapshot of one instant, never a torn file);
- ``artifacts/``: the uploaded zips that copy refers to, checked against their sha256;
- ``agent.token``, ``operator.token``: the generated tokens, when the data directory holds them;
- ``backup.json``: written last (a directory without it is not a backup): the database identity,
  schema version, counts, and every file with its sha256.

Restore needs the controller stopped (it takes the database lock). It checks the whole backup first,
moves the current database files aside (``controller.db.before-restore-<time>``, never deleted),
puts the copy in place with the artifacts, adds token files that are missing (existing ones are
kept: agents use them), and records the identity, so the controller starts on it without
``--init-database`` and agents, seeing the same identity, follow it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

from plum import __version__
from plum.common.artifact import sha256_file
from plum.common.fsio import fsync_dir
from plum.controller.config import ControllerConfig
from plum.controller.database import CLOSED, DatabaseFiles, DatabaseLock, write_identity_file
from plum.controller.migrations import MIGRATIONS
from plum.controller.store import StorageError

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "backup.json"
DB_NAME = "controller.db"
TOKEN_FILES = ("agent.token", "operator.token")
SNAPSHOT_ATTEMPTS = 5
COUNTED = ("nodes", "artifacts", "deployments", "assignments")


@dataclass(frozen=True)
class Snapshot:
    database_id: str
    schema_version: int
    counts: dict[str, int]
    artifacts: list[tuple[str, str]]  # (file name under artifacts/, sha256)


def copy_durably(src: Path, dst: Path) -> None:
    """Copy through a temporary file, fsync it and rename it into place."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        with src.open("rb") as fin, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# ---- reading a database copy ----------------------------------------------------------------------


def describe(db: Path) -> Snapshot:
    """Check a database copy (quick_check) and read what a manifest records about it."""
    conn = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True)
    try:
        problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)") if r[0] != "ok"]
        if problems:
            raise StorageError(f"{db}: the copy is damaged ({'; '.join(problems)})")
        row = conn.execute("SELECT database_id FROM database_identity WHERE singleton=1").fetchone()
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        counts = {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in COUNTED}  # noqa: S608
        artifacts = [
            (str(path)[len("/artifacts/") :], str(sha))
            for path, sha in conn.execute("SELECT path, sha256 FROM artifacts WHERE type='zip' ORDER BY path")
        ]
    except sqlite3.Error as exc:
        raise StorageError(f"{db}: not a controller database ({exc})") from None
    finally:
        conn.close()
    if row is None:
        raise StorageError(f"{db}: the database has no identity (written by an older controller? start it once first)")
    return Snapshot(str(row[0]), int(version or 0), counts, artifacts)


# ---- backup ----------------------------------------------------------------------------------------


def snapshot(src: Path, dst: Path) -> Snapshot:
    """Copy the live database in one backup step: one read transaction, so one consistent instant."""
    try:
        source = sqlite3.connect(f"file:{quote(str(src))}?mode=rw", uri=True)  # never creates a database
    except sqlite3.Error as exc:
        raise StorageError(f"{src}: cannot open the database ({exc})") from None
    try:
        source.execute("PRAGMA busy_timeout=10000")
        dst.unlink(missing_ok=True)
        target = sqlite3.connect(str(dst))
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")  # the copy is one self-contained file
        finally:
            target.close()
    except sqlite3.Error as exc:
        raise StorageError(f"{src}: backup failed ({exc})") from None
    finally:
        source.close()
    os.chmod(dst, 0o600)
    return describe(dst)


def copy_artifacts(snap: Snapshot, artifacts_dir: Path, target: Path) -> list[dict[str, Any]]:
    """The zips the snapshot refers to; FileNotFoundError when one was deleted after the snapshot."""
    target.mkdir(mode=0o700, exist_ok=True)
    listed = []
    for name, sha in snap.artifacts:
        dst = target / name
        if not dst.exists():
            copy_durably(artifacts_dir / name, dst)
        got = sha256_file(dst)
        if sha and got != sha:
            raise StorageError(f"{artifacts_dir / name}: sha256 {got} differs from the recorded {sha}")
        listed.append({"file": f"artifacts/{name}", "sha256": got, "size": dst.stat().st_size})
    return listed


def backup(config: ControllerConfig, dest: Path) -> dict[str, Any]:
    """Write a backup directory at ``dest`` (new or empty); returns its manifest."""
    files = DatabaseFiles(config.db_path)
    if not files.has_content():
        raise StorageError(f"{files.db}: no database to back up")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise StorageError(f"{dest}: already exists and is not an empty directory; name a new one")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True, mode=0o700)
    snap, artifacts = _consistent_copy(files.db, config.artifacts_dir, partial)
    tokens = []
    for name in TOKEN_FILES:
        if (config.data_dir / name).is_file():
            copy_durably(config.data_dir / name, partial / name)
            tokens.append({"file": name, "sha256": sha256_file(partial / name)})
    manifest = {
        "format": FORMAT,
        "databaseId": snap.database_id,
        "schemaVersion": snap.schema_version,
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "controllerVersion": __version__,
        "source": str(files.db),
        "counts": snap.counts,
        "database": {"file": DB_NAME, "sha256": sha256_file(partial / DB_NAME)},
        "artifacts": artifacts,
        "tokens": tokens,
    }
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    for path in [*partial.rglob("*"), partial]:
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
        else:
            fsync_dir(path)
    if dest.exists():
        dest.rmdir()
    os.replace(partial, dest)
    fsync_dir(dest.parent)
    return manifest


def _consistent_copy(db: Path, artifacts_dir: Path, partial: Path) -> tuple[Snapshot, list[dict[str, Any]]]:
    """Snapshot, then the artifacts it names; again if an app was deleted in between."""
    for _ in range(SNAPSHOT_ATTEMPTS):
        snap = snapshot(db, partial / DB_NAME)
        try:
            return snap, copy_artifacts(snap, artifacts_dir, partial / "artifacts")
        except FileNotFoundError as exc:
            log.info("artifact %s went away during the backup (app deleted); taking a new snapshot", exc.filename)
    raise StorageError(f"{artifacts_dir}: artifacts kept changing during {SNAPSHOT_ATTEMPTS} backup attempts; retry")


# ---- restore ---------------------------------------------------------------------------------------


def read_manifest(source: Path) -> dict[str, Any]:
    path = source / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StorageError(f"{path}: missing; {source} is not a complete backup") from None
    except (OSError, ValueError) as exc:
        raise StorageError(f"{path}: unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StorageError(f"{path}: not a backup of format {FORMAT}")
    return manifest


def verify(source: Path, manifest: dict[str, Any]) -> Snapshot:
    """Every file of the backup against the manifest, before anything in the data directory changes."""
    known = MIGRATIONS[-1][0]
    if int(manifest.get("schemaVersion") or 0) > known:
        raise StorageError(
            f"{source}: schema version {manifest['schemaVersion']} is newer than this controller knows ({known})"
        )
    listed = [manifest["database"], *manifest.get("artifacts", []), *manifest.get("tokens", [])]
    for entry in listed:
        path = source / str(entry["file"])
        if ".." in Path(str(entry["file"])).parts or not path.is_file():
            raise StorageError(f"{path}: listed in {MANIFEST} but missing")
        if sha256_file(path) != entry["sha256"]:
            raise StorageError(f"{path}: sha256 differs from {MANIFEST} (damaged backup)")
    snap = describe(source / DB_NAME)
    if snap.database_id != manifest.get("databaseId"):
        raise StorageError(
            f"{source / DB_NAME}: database {snap.database_id}, but {MANIFEST} names {manifest.get('databaseId')}"
        )
    return snap


def restore(config: ControllerConfig, source: Path) -> dict[str, Any]:
    """Put a verified backup in place of the current database; returns the manifest."""
    manifest = read_manifest(source)
    snap = verify(source, manifest)
    files = DatabaseFiles(config.db_path)
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    files.db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = DatabaseLock.acquire(files.lock, purpose="restore")
    try:
        _set_aside_current(files)
        copy_durably(source / DB_NAME, files.db)
        config.artifacts_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        restored = [files.db, files.lock]
        for name, sha in snap.artifacts:
            dst = config.artifacts_dir / name
            if not dst.exists() or sha256_file(dst) != sha:
                copy_durably(source / "artifacts" / name, dst)
                restored.append(dst)
        for entry in manifest.get("tokens", []):
            dst = config.data_dir / str(entry["file"])
            if dst.exists():
                log.info("keeping the existing %s (agents use it)", dst)
            else:
                copy_durably(source / str(entry["file"]), dst)
                restored.append(dst)
        write_identity_file(files.identity, snap.database_id, CLOSED)
        restored.append(files.identity)
        for directory in {files.db.parent, config.artifacts_dir, config.data_dir}:
            fsync_dir(directory)
        _give_to_owner_of(config.data_dir, restored)
    finally:
        lock.release()
    return manifest


def _set_aside_current(files: DatabaseFiles) -> None:
    """Keep the database being replaced, WAL included, as a pair SQLite can still open."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    kept = files.sibling(f".before-restore-{stamp}")
    for current, suffix in ((files.db, ""), (files.wal, "-wal"), (files.shm, "-shm")):
        if current.exists():
            os.replace(current, kept.with_name(kept.name + suffix))
            log.info("moved %s aside to %s", current, kept.with_name(kept.name + suffix))


def _give_to_owner_of(directory: Path, paths: list[Path]) -> None:
    """Run as root for a controller that runs as its own user: the restored files must stay readable to it."""
    if os.geteuid() != 0:
        return
    owner = directory.stat()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, owner.st_uid, owner.st_gid)


def summary(manifest: dict[str, Any]) -> str:
    counts: Optional[dict[str, int]] = manifest.get("counts")
    parts = ", ".join(f"{n} {table}" for table, n in (counts or {}).items())
    files = len(manifest["artifacts"])
    return f"database {manifest['databaseId']} (schema {manifest['schemaVersion']}; {parts}; {files} artifact file(s))"
