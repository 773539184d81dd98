"""The app spec sent with a deploy: how to run the app, validated field by field.

Everything an app is started with (its command, its variables) is checked here to be text that can
be handed to execve: a value that could never start is a 400 naming the field, not a crash loop.
App names and versions follow plum.common.artifact (validate_app_name, validate_version), the rules
the controller applies too.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any, Optional

from plum.agent.appuser import check_user
from plum.agent.restart import RestartPolicy
from plum.common import resources as dres
from plum.common.digest import sha256
from plum.common.vocab import RESTART_POLICIES


class SpecError(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"spec.{field_name}: {message}")
        self.field = field_name
        self.message = f"spec.{field_name}: {message}"


@dataclass(frozen=True)
class AppSpec:
    runtime: Optional[str] = None  # None: the agent's AGENT_RUN_MODE
    start_cmd: Optional[str] = None  # a shell command line, run through /bin/sh -c
    env: dict[str, str] = field(default_factory=dict)
    restart_policy: str = "always"
    max_restarts: int = 0  # the wire field: 0 is no limit
    restart_window: float = 60.0
    stop_timeout: float = 10.0
    user: Optional[str] = None  # NAME|UID[:GROUP|GID]; None: AGENT_APP_USER when the agent is root (plum.agent.appuser)
    # Docker only (see docs/docker-runtime.md); an image app needs no artifact and always runs in Docker.
    image: Optional[str] = None  # repo:tag
    base_image: Optional[str] = None  # zip apps: instead of PLUM_BASE_IMAGE
    pull_policy: str = "if-not-present"
    memory: Optional[int] = None  # bytes; None: PLUM_CONTAINER_MEMORY
    cpus: Optional[float] = None  # None: PLUM_CONTAINER_CPUS
    network_mode: Optional[str] = None  # None: PLUM_CONTAINER_NETWORK_MODE
    ports: tuple[str, ...] = ()  # canonical "[HOST_IP:]HOST:CONTAINER/proto"
    host_lib_paths: tuple[str, ...] = ()
    seccomp_unconfined: bool = False

    @property
    def restart(self) -> RestartPolicy:
        """The restart policy; the wire's max_restarts 0 (no limit) is the policy's None."""
        return RestartPolicy(self.restart_policy, self.max_restarts or None, self.restart_window)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def docker_fields_set(self) -> list[str]:
        """The Docker-only fields this spec sets (a process app must set none)."""
        return [name for name, default in DOCKER_DEFAULTS.items() if getattr(self, name) != default]

    def digest(self) -> str:
        # Fields added later are left out at their defaults, so specs saved before they existed keep their hash.
        data = {k: v for k, v in self.to_dict().items() if k not in LATER_DEFAULTS or v != LATER_DEFAULTS[k]}
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return sha256(canonical.encode()).hexdigest()


DOCKER_DEFAULTS: dict[str, Any] = {
    "image": None,
    "base_image": None,
    "pull_policy": "if-not-present",
    "memory": None,
    "cpus": None,
    "network_mode": None,
    "ports": (),
    "host_lib_paths": (),
    "seccomp_unconfined": False,
}
LATER_DEFAULTS: dict[str, Any] = {**DOCKER_DEFAULTS, "user": None}


def _number(name: str, value: Any, minimum: float, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(name, f"expected a number, got {value!r}")
    if not minimum <= value <= maximum:
        raise SpecError(name, f"must be between {minimum:g} and {maximum:g}, got {value!r}")
    return float(value)


def parse_spec(data: Any, runtimes: tuple[str, ...] = ("process",)) -> AppSpec:
    """Validate a decoded JSON spec; unknown fields are refused so typos never pass silently."""
    if data is None:
        return AppSpec()
    if not isinstance(data, dict):
        raise SpecError("", f"expected a JSON object, got {type(data).__name__}")
    known = set(AppSpec.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(unknown[0], f"unknown field (known fields: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}

    runtime = data.get("runtime")
    if runtime is not None and runtime not in runtimes:
        raise SpecError("runtime", f"{runtime!r} is not available on this agent (choose from {', '.join(runtimes)})")
    values["runtime"] = runtime

    values["start_cmd"] = _start_cmd(data.get("start_cmd"))
    values["env"] = _env(data.get("env"))

    policy = data.get("restart_policy", "always")
    if policy not in RESTART_POLICIES:
        raise SpecError("restart_policy", f"must be one of {', '.join(RESTART_POLICIES)}, got {policy!r}")
    values["restart_policy"] = policy

    max_restarts = data.get("max_restarts", 0)
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise SpecError("max_restarts", f"expected a whole number >= 0 (0: no limit), got {max_restarts!r}")
    values["max_restarts"] = max_restarts
    values["restart_window"] = _number("restart_window", data.get("restart_window", 60.0), 0.1, 86400)
    values["stop_timeout"] = _number("stop_timeout", data.get("stop_timeout", 10.0), 0, 3600)
    user = data.get("user")
    values["user"] = None if user is None else _converted("user", user, check_user)
    values.update(_docker_fields(data, runtimes))
    return AppSpec(**values)


def _start_cmd(value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise SpecError("start_cmd", f"expected a non-empty string, got {value!r}")
    _converted("start_cmd", value, lambda text: dres.check_exec_text(text, "the command"))
    try:
        shlex.split(value)
    except ValueError as exc:
        raise SpecError("start_cmd", f"cannot be parsed as a shell command ({exc}): {value!r}") from None
    return value


def _env(value: Any) -> dict[str, str]:
    """The app's variables, by the rules the controller applies too (plum.common.resources)."""
    if not value:
        return {}
    if not isinstance(value, dict):
        raise SpecError("env", f"expected an object of NAME: value, got {value!r}")
    checked = {}
    for key, item in sorted(value.items()):
        try:
            checked[key] = dres.check_env_var(key, item)
        except ValueError as exc:
            raise SpecError("env", str(exc)) from None
    return checked


def _converted(name: str, value: Any, convert: Any) -> Any:
    try:
        return convert(value)
    except ValueError as exc:
        raise SpecError(name, str(exc)) from None


def _string_list(name: str, value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise SpecError(name, f"expected a list, got {value!r}")
    return list(value)


def _docker_fields(data: dict[str, Any], runtimes: tuple[str, ...]) -> dict[str, Any]:
    """The Docker fields, each validated; an image app is refused where Docker is not available."""
    values: dict[str, Any] = {}
    for name in ("image", "base_image"):
        raw = data.get(name)
        values[name] = None if raw is None else _converted(name, raw, dres.validate_image)
    if values["image"] is not None:
        if "docker" not in runtimes:
            raise SpecError("runtime", "image apps run in Docker, and no Docker engine is available on this agent")
        if data.get("runtime") not in (None, "docker"):
            raise SpecError("runtime", f"image apps always run in Docker, got {data['runtime']!r}")
        if values["base_image"] is not None:
            raise SpecError("base_image", "only for zip apps (an image app runs its own image)")

    pull_policy = data.get("pull_policy", "if-not-present")
    if pull_policy not in dres.PULL_POLICIES:
        raise SpecError("pull_policy", f"must be one of {', '.join(dres.PULL_POLICIES)}, got {pull_policy!r}")
    values["pull_policy"] = pull_policy

    values["memory"] = None if data.get("memory") is None else _converted("memory", data["memory"], dres.parse_memory)
    values["cpus"] = None if data.get("cpus") is None else _converted("cpus", data["cpus"], dres.parse_cpus)

    network_mode = data.get("network_mode")
    if network_mode is not None and network_mode not in dres.NETWORK_MODES:
        raise SpecError("network_mode", f"must be one of {', '.join(dres.NETWORK_MODES)}, got {network_mode!r}")
    values["network_mode"] = network_mode

    ports = [_converted("ports", raw, dres.parse_port) for raw in _string_list("ports", data.get("ports"))]
    seen: set[tuple[Optional[str], Optional[int], str]] = set()
    for port in (p for p in ports if p.host_port is not None):  # Docker-picked host ports never collide
        key = (port.host_ip, port.host_port, port.protocol)
        if key in seen:
            raise SpecError("ports", f"host port {port.host_port}/{port.protocol} is published twice")
        seen.add(key)
    if ports and network_mode in ("host", "none"):
        raise SpecError("ports", f"cannot publish ports with network_mode {network_mode!r} (only with bridge)")
    values["ports"] = tuple(p.canonical() for p in ports)

    paths = []
    for raw in _string_list("host_lib_paths", data.get("host_lib_paths")):
        if not isinstance(raw, str) or not raw.startswith("/") or "\0" in raw or ":" in raw:
            raise SpecError("host_lib_paths", f"expected absolute paths without ':', got {raw!r}")
        path = str(PurePosixPath(raw))
        if path == "/" or ".." in PurePosixPath(raw).parts:
            raise SpecError("host_lib_paths", f"{raw!r} cannot be mounted (use a specific directory)")
        paths.append(path)
    values["host_lib_paths"] = tuple(dict.fromkeys(paths))

    seccomp = data.get("seccomp_unconfined", False)
    if not isinstance(seccomp, bool):
        raise SpecError("seccomp_unconfined", f"expected true or false, got {seccomp!r}")
    values["seccomp_unconfined"] = seccomp
    return values
