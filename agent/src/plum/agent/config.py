"""The agent's configuration: Plum's variable names plus the agent API's own."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, TypeVar

from plum.agent import appuser
from plum.agent.appuser import DEFAULT_APP_USER
from plum.common import resources as dres
from plum.common.config import ConfigError, Settings
from plum.common.vocab import NODE_ID_PATTERN, RunMode

DEFAULT_DATA_DIR = "/var/lib/plum/agent"
DEFAULT_API_ADDR = "127.0.0.1:7070"
# The data directory and every folder the agent keeps in it: no access for other users, whatever the umask.
PRIVATE_DIR_MODE = 0o750

# Every variable the agent reads; anything else in a --config file is refused as a likely typo.
KNOWN_SETTINGS = (
    "AGENT_NODE_ID",
    "AGENT_DATA_DIR",
    "AGENT_RUN_MODE",
    "AGENT_API_ADDR",
    "AGENT_API_TOKEN",
    "AGENT_API_TOKEN_FILE",
    "AGENT_APP_USER",
    "AGENT_LOG_LEVEL",
    "AGENT_IP",
    "AGENT_METRICS_PUBLIC",
    "AGENT_LOG_MAX_BYTES",
    "AGENT_LOG_BACKUPS",
    "AGENT_MAX_ARTIFACT_BYTES",
    "AGENT_MAX_CONNECTIONS",
    "AGENT_ARTIFACT_CACHE_BYTES",
    "CONTROLLER_BASE",
    "CONTROLLER_AGENT_TOKEN",
    "CONTROLLER_AGENT_TOKEN_FILE",
    "SYNC_INTERVAL_SEC",
    # Docker runtime (docs/docker-runtime.md)
    "PLUM_BASE_IMAGE",
    "PLUM_CONTAINER_MEMORY",
    "PLUM_CONTAINER_CPUS",
    "PLUM_CONTAINER_ENV",
    "PLUM_HOST_LIB_PATHS",
    "PLUM_CONTAINER_NETWORK_MODE",
    "PLUM_CONTROLLER_HOST",
    "PLUM_PUBLISH_HOST",
    "DOCKER_HOST",
)
# Refused in the process environment (readable in /proc/<pid>/environ): the --config file or NAME_FILE only.
SECRET_SETTINGS = ("AGENT_API_TOKEN", "CONTROLLER_AGENT_TOKEN")
DEFAULT_BASE_IMAGE = "ubuntu:22.04"
T = TypeVar("T")
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


@dataclass(frozen=True)
class DockerSettings:
    """The Docker runtime's agent-wide settings (each app's spec may override most of them)."""

    base_image: str = DEFAULT_BASE_IMAGE
    memory: Optional[int] = None  # bytes; None: unlimited
    cpus: Optional[float] = None  # None: unlimited
    env: dict[str, str] = field(default_factory=dict)
    host_lib_paths: tuple[str, ...] = ()
    network_mode: str = "bridge"
    controller_host: Optional[str] = None
    publish_host: str = "127.0.0.1"
    docker_host: Optional[str] = None  # None: the SDK's default (DOCKER_HOST or the local socket)


def _docker_value(name: str, raw: Optional[str], convert: Callable[[str], T]) -> Optional[T]:
    if raw is None:
        return None
    try:
        return convert(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from None


def parse_container_env(raw: Optional[str]) -> dict[str, str]:
    """PLUM_CONTAINER_ENV is a JSON object, {"NAME": "value, commas welcome", ...}: unambiguous."""
    if raw is None:
        return {}
    name = "PLUM_CONTAINER_ENV"
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f'{name}={raw!r}: expected a JSON object such as {{"A": "1", "B": "x,y"}} ({exc})') from None
    if not isinstance(data, dict):
        raise ConfigError(f'{name}={raw!r}: expected a JSON object such as {{"A": "1", "B": "x,y"}}')
    env = {}
    for key, value in data.items():
        try:
            env[key] = dres.check_env_var(key, value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return env


def parse_host_lib_paths(raw: Optional[str]) -> tuple[str, ...]:
    """Comma-separated absolute paths, each of which must exist (mounted read-only at the same path)."""
    if raw is None:
        return ()
    paths = []
    for item in raw.split(","):
        path = item.strip().rstrip("/")
        if not path:
            continue
        if not path.startswith("/") or ":" in path:
            raise ConfigError(f"PLUM_HOST_LIB_PATHS={raw!r}: {item.strip()!r} is not an absolute path")
        if not Path(path).exists():
            raise ConfigError(f"PLUM_HOST_LIB_PATHS={raw!r}: {path} does not exist")
        paths.append(path)
    return tuple(dict.fromkeys(paths))


def private_dir(path: Path) -> Path:
    """path as a folder of PRIVATE_DIR_MODE: made if missing (missing parents as mkdir -p makes them, since
    they may be shared, such as /var/lib/plum), its mode corrected if it exists with another one."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if os.stat(path).st_mode & 0o7777 != PRIVATE_DIR_MODE:
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


def load_app_user(s: Settings) -> str:
    """AGENT_APP_USER; it must exist when the agent runs as root (it is used only then)."""
    value = s.text("AGENT_APP_USER", DEFAULT_APP_USER)
    try:
        if appuser.agent_is_root():
            appuser.resolve(value)
        return appuser.check_user(value)
    except ValueError as exc:
        raise ConfigError(f"AGENT_APP_USER: {exc}") from None


def load_docker_settings(s: Settings) -> DockerSettings:
    base_image = _docker_value("PLUM_BASE_IMAGE", s.optional("PLUM_BASE_IMAGE"), dres.validate_image)
    publish_host = s.text("PLUM_PUBLISH_HOST", "127.0.0.1")
    try:
        publish_host = str(ipaddress.ip_address(publish_host))
    except ValueError:
        raise ConfigError(f"PLUM_PUBLISH_HOST={publish_host!r}: expected an IP address such as 127.0.0.1") from None
    controller_host = s.optional("PLUM_CONTROLLER_HOST")
    if controller_host is not None and not _HOST_NAME.fullmatch(controller_host):
        try:
            ipaddress.ip_address(controller_host)
        except ValueError:
            raise ConfigError(f"PLUM_CONTROLLER_HOST={controller_host!r}: expected a host name or IP address") from None
    docker_host = s.optional("DOCKER_HOST")
    if docker_host is not None and not docker_host.startswith(("unix://", "tcp://", "ssh://", "http://", "https://")):
        raise ConfigError(f"DOCKER_HOST={docker_host!r}: expected unix:///path, tcp://host:port or ssh://host")
    return DockerSettings(
        base_image=str(base_image or DEFAULT_BASE_IMAGE),
        memory=_docker_value("PLUM_CONTAINER_MEMORY", s.optional("PLUM_CONTAINER_MEMORY"), dres.parse_memory),
        cpus=_docker_value("PLUM_CONTAINER_CPUS", s.optional("PLUM_CONTAINER_CPUS"), dres.parse_cpus),
        env=parse_container_env(s.optional("PLUM_CONTAINER_ENV")),
        host_lib_paths=parse_host_lib_paths(s.optional("PLUM_HOST_LIB_PATHS")),
        network_mode=s.choice("PLUM_CONTAINER_NETWORK_MODE", "bridge", dres.NETWORK_MODES),
        controller_host=controller_host,
        publish_host=publish_host,
        docker_host=docker_host,
    )


@dataclass(frozen=True)
class AgentConfig:
    node_id: str
    data_dir: Path
    run_mode: RunMode
    api_host: str
    api_port: int
    api_token: Optional[str]
    log_level: str
    metrics_public: bool
    log_max_bytes: int
    log_backups: int
    max_artifact_bytes: int
    controller_base: Optional[str]
    controller_token: Optional[str] = None
    artifact_cache_bytes: int = 1024 * 1024 * 1024
    advertise_ip: Optional[str] = None  # None: the address this host uses to reach the controller
    sync_interval: float = 5.0
    docker: DockerSettings = field(default_factory=DockerSettings)
    max_connections: int = 512  # open API connections; lowered to fit the open-file limit
    app_user: str = DEFAULT_APP_USER  # who process apps run as when the agent is root and their spec names no user

    @property
    def default_runtime(self) -> str:
        """The runtime of a deploy whose spec names none (an image app always runs in Docker)."""
        return "docker" if self.run_mode == RunMode.DOCKER else "process"

    @property
    def docker_required(self) -> bool:
        """Whether the run mode alone makes Docker required (saved docker apps do too: see main.build_runtimes)."""
        return self.run_mode == RunMode.DOCKER

    @property
    def token_file(self) -> Path:
        return self.data_dir / "agent.token"

    @classmethod
    def load(cls, config_file: Optional[str] = None) -> AgentConfig:
        s = Settings.load(config_file, KNOWN_SETTINGS, secrets=SECRET_SETTINGS)
        host, port = s.address("AGENT_API_ADDR", DEFAULT_API_ADDR)
        controller = s.optional("CONTROLLER_BASE")
        if controller and not controller.startswith(("http://", "https://")):
            raise ConfigError(f"CONTROLLER_BASE={controller!r}: must start with http:// or https://")
        token = s.secret("AGENT_API_TOKEN")
        if token is not None and len(token) < 16:
            raise ConfigError("AGENT_API_TOKEN: must be at least 16 characters (value hidden)")
        return cls(
            node_id=s.pattern(
                "AGENT_NODE_ID",
                socket.gethostname(),
                NODE_ID_PATTERN,
                f"must match {NODE_ID_PATTERN} (letters, digits, '_', '.', '-')",
            ),
            data_dir=s.path("AGENT_DATA_DIR", DEFAULT_DATA_DIR),
            run_mode=RunMode(s.choice("AGENT_RUN_MODE", RunMode.PROCESS.value, tuple(m.value for m in RunMode))),
            api_host=host,
            api_port=port,
            api_token=token,
            log_level=s.choice("AGENT_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            metrics_public=s.boolean("AGENT_METRICS_PUBLIC", False),
            log_max_bytes=s.integer("AGENT_LOG_MAX_BYTES", 10 * 1024 * 1024, minimum=4096),
            log_backups=s.integer("AGENT_LOG_BACKUPS", 3, minimum=0),
            max_artifact_bytes=s.integer("AGENT_MAX_ARTIFACT_BYTES", 512 * 1024 * 1024, minimum=1024),
            controller_base=controller.rstrip("/") if controller else None,
            controller_token=s.secret("CONTROLLER_AGENT_TOKEN"),
            artifact_cache_bytes=s.integer("AGENT_ARTIFACT_CACHE_BYTES", 1024 * 1024 * 1024, minimum=0),
            advertise_ip=s.optional("AGENT_IP"),
            sync_interval=s.number("SYNC_INTERVAL_SEC", 5.0, minimum=0.1),
            docker=load_docker_settings(s),
            max_connections=s.integer("AGENT_MAX_CONNECTIONS", 512, minimum=16),
            app_user=load_app_user(s),
        )

    def ensure_token(self) -> str:
        """The configured token, else the one in agent.token, created (0600) on first start."""
        if self.api_token:
            return self.api_token
        try:
            existing = self.token_file.read_text().strip()
        except FileNotFoundError:
            existing = ""
        if existing:
            return existing
        token = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()  # secrets.token_urlsafe(32)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        return token
