"""Apps: uploaded zip artifacts (files under ``<data>/artifacts``) and registered image apps."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Optional

from plum.common.artifact import VERSION_PATTERN
from plum.common.vocab import new_id
from plum.controller.errors import Conflict, NotFound
from plum.controller.store import Row, Store, dumps, loads

log = logging.getLogger(__name__)

# Plum's example apps use names such as "Hello", so the controller accepts upper case too.
APP_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
VERSION_RE = re.compile(VERSION_PATTERN)  # the agent's rule too
FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
IMAGE_PREFIX = "image://"
ARTIFACTS_PREFIX = "/artifacts/"


def sanitize(text: str) -> str:
    """Plum's file-name rule: keep ``[A-Za-z0-9._-]``, replace anything else with '-'."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)


def artifact_url(row: Row) -> str:
    return row["path"] if row["type"] == "zip" else f"{IMAGE_PREFIX}{row['artifact_id']}"


def app_json(row: Row) -> dict[str, Any]:
    """Plum's AppInfo, plus the services declared in meta.ini."""
    data: dict[str, Any] = {
        "artifactId": row["artifact_id"],
        "name": row["app_name"],
        "version": row["version"],
        "url": row["path"],
        "sha256": row["sha256"],
        "sizeBytes": row["size_bytes"],
        "createdAt": row["created_at"],
        "type": row["type"],
        "services": loads(row["services"], []),
    }
    if row["type"] == "image":
        data["imageRepository"] = row["image_repository"]
        data["imageTag"] = row["image_tag"]
        data["portMappings"] = row["port_mappings"]
    return data


class AppRepo:
    def __init__(self, store: Store, artifacts_dir: Path) -> None:
        self.store = store
        self.dir = artifacts_dir

    def get(self, artifact_id: str) -> Row:
        row = self.store.one("SELECT * FROM artifacts WHERE artifact_id=?", (artifact_id,))
        if row is None:
            raise NotFound(f"no such app: {artifact_id}", field="id")
        return row

    def listing(self) -> list[dict[str, Any]]:
        rows = self.store.all("SELECT * FROM artifacts ORDER BY app_name, created_at, version")
        return [app_json(r) for r in rows]

    def resolve(self, url: str) -> Optional[Row]:
        """An artifact from a deployment's ``artifactUrl``: ``image://<id>``, ``/artifacts/<file>``
        (also as a full URL), or an artifact id."""
        if url.startswith(IMAGE_PREFIX):
            return self.store.one(
                "SELECT * FROM artifacts WHERE artifact_id=? AND type='image'", (url[len(IMAGE_PREFIX) :],)
            )
        idx = url.find(ARTIFACTS_PREFIX)
        if idx >= 0:
            return self.by_file(url[idx + len(ARTIFACTS_PREFIX) :])
        return self.store.one("SELECT * FROM artifacts WHERE artifact_id=?", (url,))

    def by_file(self, name: str) -> Optional[Row]:
        if not FILE_RE.fullmatch(name):
            return None
        return self.store.one("SELECT * FROM artifacts WHERE path=? AND type='zip'", (ARTIFACTS_PREFIX + name,))

    def file_path(self, row: Row) -> Path:
        url: str = row["path"]
        return self.dir / url[len(ARTIFACTS_PREFIX) :]

    def check_new(self, name: str, version: str) -> None:
        row = self.store.one("SELECT artifact_id FROM artifacts WHERE app_name=? AND version=?", (name, version))
        if row is not None:
            raise Conflict(
                f"app {name} version {version} already exists (artifactId {row['artifact_id']}); "
                "bump the version or delete the old one",
                field="version",
                artifactId=row["artifact_id"],
            )

    def add_zip(
        self, *, name: str, version: str, sha256: str, size: int, services: list[dict[str, Any]], tmp: Path
    ) -> Row:
        """Move a validated upload into place and record it; the file never outlives a failed insert."""
        self.check_new(name, version)
        filename = f"{sanitize(name)}_{sanitize(version)}_{sha256[:8]}.zip"
        final = self.dir / filename
        os.replace(tmp, final)
        artifact_id = new_id()
        try:
            with self.store.write() as tx:
                tx.execute(
                    "INSERT INTO artifacts(artifact_id, app_name, version, type, path, sha256, size_bytes,"
                    " created_at, services) VALUES (?, ?, ?, 'zip', ?, ?, ?, ?, ?)",
                    (
                        artifact_id,
                        name,
                        version,
                        ARTIFACTS_PREFIX + filename,
                        sha256,
                        size,
                        int(time.time()),
                        dumps(services),
                    ),
                )
        except Exception:
            with contextlib.suppress(OSError):
                final.unlink()
            raise
        log.info("app %s %s uploaded as %s (%d bytes, sha256 %s)", name, version, filename, size, sha256)
        return self.get(artifact_id)

    def add_image(
        self, *, name: str, version: str, repository: str, tag: str, port_mappings: list[dict[str, Any]]
    ) -> Row:
        self.check_new(name, version)
        artifact_id = new_id()
        with self.store.write() as tx:
            tx.execute(
                "INSERT INTO artifacts(artifact_id, app_name, version, type, path, created_at, image_repository,"
                " image_tag, port_mappings) VALUES (?, ?, ?, 'image', '', ?, ?, ?, ?)",
                (
                    artifact_id,
                    name,
                    version,
                    int(time.time()),
                    repository,
                    tag,
                    dumps(port_mappings) if port_mappings else "",
                ),
            )
        log.info("image app %s %s registered as %s:%s", name, version, repository, tag)
        return self.get(artifact_id)

    def delete(self, artifact_id: str) -> None:
        row = self.get(artifact_id)
        users = self.store.all(
            "SELECT DISTINCT d.name FROM deployment_entries e JOIN deployments d USING (deployment_id)"
            " WHERE e.artifact_id=? OR e.entry_id IN (SELECT entry_id FROM entry_revisions WHERE artifact_id=?)"
            " ORDER BY d.name",
            (artifact_id, artifact_id),
        )
        if users:
            names = ", ".join(r["name"] for r in users)
            raise Conflict(
                f"app in use: {row['app_name']} {row['version']} is used by deployment(s) {names}",
                field="id",
                deployments=[r["name"] for r in users],
            )
        with self.store.write() as tx:
            tx.execute("DELETE FROM artifacts WHERE artifact_id=?", (artifact_id,))
        if row["type"] == "zip":
            try:
                self.file_path(row).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("app %s deleted but its file stays: %s", artifact_id, exc)
        log.info("app %s %s (%s) deleted", row["app_name"], row["version"], artifact_id)
