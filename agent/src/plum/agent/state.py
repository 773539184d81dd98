"""The saved record of each app (desired state, release, running handle, restart counters).

One JSON file per app, replaced atomically, so a kill -9 at any moment leaves either the old or
the new record, never half of one. This is what lets a new agent re-adopt running apps.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

PHASES = ("Starting", "Running", "BackOff", "Failed", "Stopped", "Completed")


@dataclass
class AppRecord:
    name: str
    instance_id: str
    runtime: str
    owner: str = "local"  # local (API, plumctl, Ansible) | controller (assigned by the controller)
    desired: str = "running"  # running | stopped
    phase: str = "Stopped"
    spec: dict[str, Any] = field(default_factory=dict)
    spec_hash: str = ""
    artifact_sha256: Optional[str] = None
    release: Optional[str] = None
    previous_release: Optional[str] = None
    meta: Optional[dict[str, Any]] = None
    handle: Optional[dict[str, Any]] = None
    restarts: int = 0
    tracker: dict[str, Any] = field(default_factory=dict)
    exit_code: Optional[int] = None
    exit_signal: Optional[int] = None
    exit_reason: Optional[str] = None
    message: str = ""
    deployed_at: Optional[float] = None
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    next_restart_at: Optional[float] = None
    last_logs: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> AppRecord:
        data = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: Path) -> None:
        write_json_atomic(path, asdict(self))


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
