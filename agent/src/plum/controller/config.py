"""The controller's configuration: Plum's variable names, checked at start with errors naming the variable."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import unquote

from plum.common.config import ConfigError, Settings

DEFAULT_ADDR = "127.0.0.1:8080"
DEFAULT_DATA_DIR = "/var/lib/plum/controller"
MIN_TOKEN_LENGTH = 16

# Every variable the controller reads; anything else in a --config file is refused as a likely typo.
KNOWN_SETTINGS = (
    "CONTROLLER_ADDR",
    "CONTROLLER_DB",
    "CONTROLLER_DATA_DIR",
    "CONTROLLER_INIT_DATABASE",
    "HEARTBEAT_TTL_SEC",
    "HEARTBEAT_INTERVAL_SEC",
    "FAILOVER_INTERVAL_SEC",
    "AUTO_MIGRATION_ENABLED",
    "SERVICE_HEALTH_TTL_SEC",
    "SERVICE_CHECK_INTERVAL_SEC",
    "CONTROLLER_MAX_ARTIFACT_BYTES",
    "CONTROLLER_MAX_CONNECTIONS",
    "CONTROLLER_STATUS_HISTORY",
    "CONTROLLER_LOG_LEVEL",
    "CONTROLLER_LEGACY_AGENTS",
    "CONTROLLER_METRICS_PUBLIC",
    "CONTROLLER_AGENT_TOKEN",
    "CONTROLLER_AGENT_TOKEN_FILE",
    "CONTROLLER_OPERATOR_TOKEN",
    "CONTROLLER_OPERATOR_TOKEN_FILE",
)
# Refused in the process environment (readable in /proc/<pid>/environ): the --config file or NAME_FILE only.
SECRET_SETTINGS = ("CONTROLLER_AGENT_TOKEN", "CONTROLLER_OPERATOR_TOKEN")


def parse_db_location(raw: Optional[str], data_dir: Path) -> Path:
    """CONTROLLER_DB as a path, or Plum's ``file:controller.db?_pragma=...`` URI form.

    Query parameters of the URI form are Go driver options (busy timeout, journal mode); the
    controller always sets its own pragmas, so they are ignored. A relative path is resolved
    against CONTROLLER_DATA_DIR (not the working directory, which is '/' under systemd).
    """
    if raw is None:
        return data_dir / "controller.db"
    value = raw.strip()
    if value.startswith("file:"):
        value = unquote(value[len("file:") :].split("?", 1)[0].split("#", 1)[0])
        if value.startswith("//"):  # file:///abs/path or file://localhost/abs/path
            value = "/" + value[2:].split("/", 1)[1] if "/" in value[2:] else ""
    if not value or value == ":memory:" or "mode=memory" in raw:
        raise ConfigError(f"CONTROLLER_DB={raw!r}: must name a database file (an in-memory database loses state)")
    path = Path(value).expanduser()
    return path if path.is_absolute() else data_dir / path


@dataclass(frozen=True)
class ControllerConfig:
    host: str
    port: int
    db_path: Path
    data_dir: Path
    heartbeat_ttl: float
    heartbeat_interval: float
    failover_interval: float
    auto_migration: bool
    service_health_ttl: float
    service_check_interval: float
    max_artifact_bytes: int
    status_history: int
    log_level: str
    agent_token: Optional[str]
    operator_token: Optional[str]
    max_connections: int = 4096  # open API connections (each agent holds one event stream)
    # accept a database that is missing, emptied or lost its WAL although the data dir was used (database.py)
    init_database: bool = False
    # accept the shared join token on the agent routes of nodes that never joined (credentials.py)
    legacy_agents: bool = True
    metrics_public: bool = False  # /metrics without the operator token (a Prometheus without a token file)

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    @classmethod
    def load(cls, config_file: Optional[str] = None) -> ControllerConfig:
        return cls.from_settings(Settings.load(config_file, KNOWN_SETTINGS, secrets=SECRET_SETTINGS))

    @classmethod
    def from_settings(cls, s: Settings) -> ControllerConfig:
        host, port = s.address("CONTROLLER_ADDR", DEFAULT_ADDR)
        data_dir = s.path("CONTROLLER_DATA_DIR", DEFAULT_DATA_DIR)
        ttl = s.number("HEARTBEAT_TTL_SEC", 15.0, minimum=0.1)
        interval = s.number("HEARTBEAT_INTERVAL_SEC", 5.0, minimum=0.05)
        if ttl <= 2 * interval:
            raise ConfigError(
                f"HEARTBEAT_TTL_SEC={ttl:g} must be greater than 2 x HEARTBEAT_INTERVAL_SEC={interval:g} "
                f"(otherwise a live node flaps Unhealthy between two heartbeats)"
            )
        agent_token = _token(s, "CONTROLLER_AGENT_TOKEN")
        operator_token = _token(s, "CONTROLLER_OPERATOR_TOKEN")
        if agent_token and operator_token and agent_token == operator_token:
            raise ConfigError(
                "CONTROLLER_AGENT_TOKEN and CONTROLLER_OPERATOR_TOKEN must differ "
                "(an agent would otherwise hold operator rights)"
            )
        return cls(
            host=host,
            port=port,
            db_path=parse_db_location(s.optional("CONTROLLER_DB"), data_dir),
            data_dir=data_dir,
            heartbeat_ttl=ttl,
            heartbeat_interval=interval,
            failover_interval=s.number("FAILOVER_INTERVAL_SEC", 1.0, minimum=0.05),
            auto_migration=s.boolean("AUTO_MIGRATION_ENABLED", False),
            service_health_ttl=s.number("SERVICE_HEALTH_TTL_SEC", 15.0, minimum=0.1),
            service_check_interval=s.number("SERVICE_CHECK_INTERVAL_SEC", 5.0, minimum=0.1),
            max_artifact_bytes=s.integer("CONTROLLER_MAX_ARTIFACT_BYTES", 512 * 1024 * 1024, minimum=1024),
            status_history=s.integer("CONTROLLER_STATUS_HISTORY", 50, minimum=1),
            log_level=s.choice("CONTROLLER_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            agent_token=agent_token,
            operator_token=operator_token,
            max_connections=s.integer("CONTROLLER_MAX_CONNECTIONS", 4096, minimum=16),
            init_database=s.boolean("CONTROLLER_INIT_DATABASE", False),
            legacy_agents=s.boolean("CONTROLLER_LEGACY_AGENTS", True),
            metrics_public=s.boolean("CONTROLLER_METRICS_PUBLIC", False),
        )


def _token(s: Settings, name: str) -> Optional[str]:
    token: Optional[str] = s.secret(name)
    if token is None:
        return None
    token = token.strip()
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        raise ConfigError(f"{name}: must be at least {MIN_TOKEN_LENGTH} characters without spaces (value hidden)")
    return token


@dataclass(frozen=True)
class Tokens:
    agent: str
    operator: str


def ensure_tokens(config: ControllerConfig) -> Tokens:
    """The configured tokens, else those saved in the data dir, created (mode 0600) on first start."""
    agent = config.agent_token or _stored_token(config.data_dir / "agent.token")
    operator = config.operator_token or _stored_token(config.data_dir / "operator.token")
    if agent == operator:
        raise ConfigError("CONTROLLER_AGENT_TOKEN and CONTROLLER_OPERATOR_TOKEN must differ")
    return Tokens(agent, operator)


def _stored_token(path: Path) -> str:
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return token
