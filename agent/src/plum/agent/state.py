"""The saved record of each app (desired state, release, running handle, restart counters).

One JSON file per app, written durably and atomically (plum.common.fsio), so a kill -9 or a power
loss at any moment leaves either the old or the new record, never half of one. This is what lets a
new agent re-adopt running apps.

A record read back is checked field by field like input from the API: a file that is empty,
truncated, not JSON, or JSON of another shape is refused with a StateFileError naming the file and
the field, never half-used.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from plum.agent.restart import RestartTracker
from plum.agent.spec import AppSpec, SpecError, parse_spec
from plum.common.artifact import AppMeta, ArtifactError, Service, validate_app_name
from plum.common.fsio import write_json_atomic
from plum.common.vocab import AGENT_PHASES, Desired, Owner, Phase

STATE_FILE = "state.json"  # apps/<name>/state.json
MAX_STATE_BYTES = 4 * 1024 * 1024
_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_RUNTIME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
INTENT_FIELDS = ("release", "artifact_sha256", "meta", "spec", "spec_hash", "runtime", "desired")


class StateFileError(ValueError):
    """A saved record that cannot be used as it is; names the file and what is wrong."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        self.message = f"{path}: {reason}"
        super().__init__(self.message)


def meta_from_dict(data: Optional[dict[str, Any]]) -> Optional[AppMeta]:
    if not data:
        return None
    services = tuple(Service(**s) for s in data.get("services", ()))
    return AppMeta(data["name"], data["version"], services)


def meta_to_dict(meta: Optional[AppMeta]) -> Optional[dict[str, Any]]:
    if meta is None:
        return None
    return {
        "name": meta.name,
        "version": meta.version,
        "services": [{"name": s.name, "protocol": s.protocol, "port": s.port} for s in meta.services],
    }


@dataclass(frozen=True)
class Intent:
    """What a deploy (or a restart) is about to run, saved before the old instance is stopped: the record
    fields it sets (INTENT_FIELDS). At start, a record with an intent is reconciled with what actually runs."""

    release: Optional[str]
    artifact_sha256: Optional[str]
    meta: Optional[AppMeta]
    spec: AppSpec
    spec_hash: str
    runtime: str
    desired: Desired

    @classmethod
    def of(cls, record: AppRecord) -> Intent:
        """What the record runs now (a restart's intent)."""
        return cls(**{name: getattr(record, name) for name in INTENT_FIELDS})

    def same_deployment(self, record: AppRecord) -> bool:
        """Whether it runs what the record already describes (a restart, not a new deploy)."""
        return all(
            getattr(record, name) == getattr(self, name)
            for name in ("release", "artifact_sha256", "spec_hash", "runtime")
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "artifact_sha256": self.artifact_sha256,
            "meta": meta_to_dict(self.meta),
            "spec": self.spec.to_dict(),
            "spec_hash": self.spec_hash,
            "runtime": self.runtime,
            "desired": self.desired,
        }


@dataclass
class AppRecord:
    name: str
    instance_id: str
    runtime: str
    owner: Owner = Owner.LOCAL
    desired: Desired = Desired.RUNNING
    phase: Phase = Phase.STOPPED
    spec: AppSpec = field(default_factory=AppSpec)
    spec_hash: str = ""
    artifact_sha256: Optional[str] = None
    release: Optional[str] = None
    previous_release: Optional[str] = None
    meta: Optional[AppMeta] = None
    handle: Optional[dict[str, Any]] = None
    restarts: int = 0
    tracker: RestartTracker = field(default_factory=RestartTracker)
    exit_code: Optional[int] = None
    exit_signal: Optional[int] = None
    exit_reason: Optional[str] = None
    message: str = ""
    deployed_at: Optional[float] = None
    started_at: Optional[float] = None
    finished_at: Optional[float] = None
    next_restart_at: Optional[float] = None
    last_logs: list[str] = field(default_factory=list)
    intent: Optional[Intent] = None

    @classmethod
    def load(cls, path: Path) -> AppRecord:
        """The record saved at apps/<name>/state.json; StateFileError if it is not a usable record of <name>."""
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise StateFileError(path, f"cannot read it ({exc.strerror})") from None
        if not raw.strip():
            raise StateFileError(path, "the file is empty")
        if len(raw) > MAX_STATE_BYTES:
            raise StateFileError(path, f"larger than {MAX_STATE_BYTES} bytes")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:  # RecursionError is a RuntimeError: see below
            raise StateFileError(path, f"not valid JSON ({exc})") from None
        except RecursionError:
            raise StateFileError(path, "not valid JSON (nested too deeply)") from None
        return cls.from_dict(data, path, expected_name=path.parent.name)

    @classmethod
    def from_dict(cls, data: Any, path: Path, expected_name: Optional[str] = None) -> AppRecord:
        if not isinstance(data, dict):
            raise StateFileError(path, f"expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("name", "instance_id", "runtime"):
            if name not in values:
                raise StateFileError(path, f"field {name!r} is missing")
        for name, value in values.items():
            problem = _field_problem(name, value)
            if problem is not None:
                raise StateFileError(path, f"field {name!r}: {problem}, got {_short(value)}")
        if expected_name is not None and values["name"] != expected_name:
            shown = _short(values["name"])
            raise StateFileError(path, f"field 'name': {shown} is not the name of the app's folder {expected_name!r}")
        values["spec"] = _parsed_spec(path, "spec", values.get("spec", {}), values["runtime"])
        intent = values.get("intent")
        if intent is not None:
            for name in INTENT_FIELDS:
                if name not in intent:
                    raise StateFileError(path, f"field 'intent': {name!r} is missing")
                problem = _field_problem(name, intent[name])
                if problem is not None:
                    raise StateFileError(path, f"field 'intent.{name}': {problem}, got {_short(intent[name])}")
            values["intent"] = Intent(
                release=intent["release"],
                artifact_sha256=intent["artifact_sha256"],
                meta=meta_from_dict(intent["meta"]),
                spec=_parsed_spec(path, "intent.spec", intent["spec"], intent["runtime"]),
                spec_hash=intent["spec_hash"],
                runtime=intent["runtime"],
                desired=Desired(intent["desired"]),
            )
        for name, kind in (("owner", Owner), ("desired", Desired), ("phase", Phase)):
            if name in values:
                values[name] = kind(values[name])
        if "meta" in values:
            values["meta"] = meta_from_dict(values["meta"])
        if "tracker" in values:
            values["tracker"] = RestartTracker.from_state(values["tracker"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The record as saved: plain JSON, the same shape every version of the agent wrote."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(
            spec=self.spec.to_dict(),
            meta=meta_to_dict(self.meta),
            tracker=self.tracker.to_state(),
            intent=self.intent.to_dict() if self.intent is not None else None,
            last_logs=list(self.last_logs),
        )
        return data

    def save(self, path: Path) -> None:
        """Durably replace the saved record; StorageError (and the old file kept) if it cannot be written."""
        write_json_atomic(path, self.to_dict())

    def apply_deploy(self, intent: Intent, now: float) -> None:
        """Describe the deployment of an intent (a deploy carried out, or finished at start): a fresh start."""
        if self.release != intent.release:
            self.previous_release = self.release
        for name in INTENT_FIELDS:
            setattr(self, name, getattr(intent, name))
        self.restarts, self.tracker, self.deployed_at = 0, RestartTracker(), now
        self.exit_code = self.exit_signal = self.exit_reason = None
        self.message, self.last_logs, self.intent = "", [], None

    def restore(self, other: AppRecord) -> None:
        """Take every field of `other` (a snapshot), keeping this object (listeners hold it)."""
        for f in fields(self):
            setattr(self, f.name, getattr(other, f.name))


def _parsed_spec(path: Path, where: str, spec: dict[str, Any], runtime: str) -> AppSpec:
    """The saved spec must still be one the agent accepts: else the app could not be started from it."""
    try:
        return parse_spec(spec, runtimes=(runtime,))
    except SpecError as exc:
        raise StateFileError(path, f"field {where!r}: {exc.message}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optional(check: Any) -> Any:
    return lambda v: v is None or check(v)


def _name(value: Any) -> bool:
    try:
        validate_app_name(value)  # the rule names from the API follow
    except ArtifactError:
        return False
    return True


def _tracker(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    history = value.get("history", [])
    return _is_int(value.get("consecutive", 0)) and isinstance(history, list) and all(map(_is_number, history))


def _meta(value: Any) -> bool:
    if not isinstance(value, dict) or not all(isinstance(value.get(key), str) for key in ("name", "version")):
        return False
    services = value.get("services", [])
    return isinstance(services, list) and all(
        isinstance(s, dict)
        and set(s) == {"name", "protocol", "port"}
        and isinstance(s["name"], str)
        and isinstance(s["protocol"], str)
        and _is_int(s["port"])
        for s in services
    )


_OWNERS = tuple(o.value for o in Owner)
_DESIRED = tuple(d.value for d in Desired)
_PHASES = tuple(p.value for p in AGENT_PHASES)
_CHECKS: dict[str, tuple[Any, str]] = {
    "name": (_name, "expected an app name"),
    "instance_id": (_name, "expected an instance id (an app name)"),
    "runtime": (lambda v: isinstance(v, str) and _RUNTIME.fullmatch(v), "expected a runtime name"),
    "owner": (lambda v: v in _OWNERS, f"expected one of {', '.join(_OWNERS)}"),
    "desired": (lambda v: v in _DESIRED, f"expected one of {', '.join(_DESIRED)}"),
    "phase": (lambda v: v in _PHASES, f"expected one of {', '.join(_PHASES)}"),
    "spec": (lambda v: isinstance(v, dict), "expected an object"),
    "spec_hash": (lambda v: isinstance(v, str), "expected a string"),
    "artifact_sha256": (_optional(lambda v: isinstance(v, str) and _SHA256.fullmatch(v)), "expected a sha256"),
    "release": (_optional(lambda v: isinstance(v, str) and _RELEASE.fullmatch(v)), "expected a release name"),
    "previous_release": (_optional(lambda v: isinstance(v, str) and _RELEASE.fullmatch(v)), "expected a release name"),
    "meta": (_optional(_meta), "expected {name, version, services}"),
    "handle": (_optional(lambda v: isinstance(v, dict)), "expected an object"),
    "restarts": (lambda v: _is_int(v) and v >= 0, "expected a whole number >= 0"),
    "tracker": (_tracker, "expected {consecutive, history}"),
    "exit_code": (_optional(_is_int), "expected a whole number"),
    "exit_signal": (_optional(_is_int), "expected a whole number"),
    "exit_reason": (_optional(lambda v: isinstance(v, str)), "expected a string"),
    "message": (lambda v: isinstance(v, str), "expected a string"),
    "deployed_at": (_optional(_is_number), "expected a time"),
    "started_at": (_optional(_is_number), "expected a time"),
    "finished_at": (_optional(_is_number), "expected a time"),
    "next_restart_at": (_optional(_is_number), "expected a time"),
    "last_logs": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "expected a list of lines"),
    "intent": (_optional(lambda v: isinstance(v, dict)), "expected an object"),
}


def _field_problem(name: str, value: Any) -> Optional[str]:
    check, expected = _CHECKS[name]
    return None if check(value) else expected


def saved_runtimes(apps_dir: Path) -> set[str]:
    """The runtimes the apps saved under apps_dir run in (what the agent needs to re-adopt them); unreadable
    records are skipped here: the supervisor reports them."""
    found = set()
    for path in sorted(apps_dir.glob(f"*/{STATE_FILE}")):
        try:
            found.add(AppRecord.load(path).runtime)
        except StateFileError:
            continue
    return found
