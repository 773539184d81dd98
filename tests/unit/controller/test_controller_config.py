"""ControllerConfig: defaults, Plum's names, and errors that name the variable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from plum.common.config import ConfigError, Settings
from plum.controller.config import ControllerConfig, ensure_tokens, parse_db_location


def load(**values: str) -> ControllerConfig:
    return ControllerConfig.from_settings(Settings(values))


def test_defaults_are_loopback_and_plum_like() -> None:
    cfg = load()
    assert (cfg.host, cfg.port) == ("127.0.0.1", 8080)
    assert cfg.data_dir == Path("/var/lib/plum/controller")
    assert cfg.db_path == Path("/var/lib/plum/controller/controller.db")
    assert cfg.artifacts_dir == Path("/var/lib/plum/controller/artifacts")
    assert cfg.heartbeat_ttl == 15
    assert cfg.heartbeat_interval == 5
    assert cfg.failover_interval == 1
    assert cfg.auto_migration is False
    assert cfg.service_health_ttl == 15
    assert cfg.max_artifact_bytes == 512 * 1024 * 1024
    assert cfg.status_history == 50
    assert cfg.log_level == "info"
    assert cfg.agent_token is None
    assert cfg.operator_token is None


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", "TRUE"])
def test_auto_migration_truthy_values(value: str) -> None:
    assert load(AUTO_MIGRATION_ENABLED=value).auto_migration is True


@pytest.mark.parametrize(
    ("ttl", "interval"),
    [("10", "5"), ("3", "5"), ("1", "0.5")],
)
def test_ttl_must_exceed_twice_the_interval(ttl: str, interval: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(HEARTBEAT_TTL_SEC=ttl, HEARTBEAT_INTERVAL_SEC=interval)
    assert "HEARTBEAT_TTL_SEC" in str(err.value)
    assert "HEARTBEAT_INTERVAL_SEC" in str(err.value)


def test_short_ttl_for_tests_is_accepted() -> None:
    cfg = load(HEARTBEAT_TTL_SEC="2", HEARTBEAT_INTERVAL_SEC="0.5")
    assert (cfg.heartbeat_ttl, cfg.heartbeat_interval) == (2, 0.5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONTROLLER_ADDR", "nowhere"),
        ("CONTROLLER_ADDR", "127.0.0.1:99999"),
        ("HEARTBEAT_TTL_SEC", "soon"),
        ("FAILOVER_INTERVAL_SEC", "0"),
        ("AUTO_MIGRATION_ENABLED", "maybe"),
        ("SERVICE_HEALTH_TTL_SEC", "-1"),
        ("CONTROLLER_MAX_ARTIFACT_BYTES", "1.5"),
        ("CONTROLLER_STATUS_HISTORY", "0"),
        ("CONTROLLER_LOG_LEVEL", "loud"),
        ("CONTROLLER_AGENT_TOKEN", "short"),
        ("CONTROLLER_OPERATOR_TOKEN", "has spaces in it but long"),
        ("CONTROLLER_DB", ":memory:"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(**{name: value})
    assert name in str(err.value)


def test_tokens_must_differ() -> None:
    token = "x" * 32
    with pytest.raises(ConfigError, match="CONTROLLER_AGENT_TOKEN and CONTROLLER_OPERATOR_TOKEN"):
        load(CONTROLLER_AGENT_TOKEN=token, CONTROLLER_OPERATOR_TOKEN=token)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "/data/controller.db"),
        ("/srv/plum.db", "/srv/plum.db"),
        ("state/plum.db", "/data/state/plum.db"),
        ("file:controller.db?_pragma=busy_timeout(5000)", "/data/controller.db"),
        (
            "file:/app/data/controller.db?_pragma=busy_timeout(5000)&_journal=WAL",
            "/app/data/controller.db",
        ),
        ("file:///abs/c.db?cache=shared", "/abs/c.db"),
    ],
)
def test_db_location_accepts_plum_uri_form(raw: str | None, expected: str) -> None:
    assert parse_db_location(raw, Path("/data")) == Path(expected)


def test_env_file_unknown_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("CONTROLLER_", "HEARTBEAT_")):
            monkeypatch.delenv(key)
    env = tmp_path / "controller.env"
    env.write_text("CONTROLLER_ADDR=127.0.0.1:9000\nHEARTBEAT_TTL=3\n")
    with pytest.raises(ConfigError, match="HEARTBEAT_TTL"):
        ControllerConfig.load(str(env))
    env.write_text("CONTROLLER_ADDR=127.0.0.1:9000\nHEARTBEAT_TTL_SEC=30\n")
    cfg = ControllerConfig.load(str(env))
    assert (cfg.port, cfg.heartbeat_ttl) == (9000, 30)


def test_tokens_are_generated_once_with_mode_0600(tmp_path: Path) -> None:
    cfg = load(CONTROLLER_DATA_DIR=str(tmp_path / "data"))
    first = ensure_tokens(cfg)
    second = ensure_tokens(cfg)
    assert first == second
    assert first.agent != first.operator
    assert len(first.agent) >= 40
    for name in ("agent.token", "operator.token"):
        mode = stat.S_IMODE((tmp_path / "data" / name).stat().st_mode)
        assert mode == 0o600


def test_configured_tokens_win(tmp_path: Path) -> None:
    cfg = load(
        CONTROLLER_DATA_DIR=str(tmp_path),
        CONTROLLER_AGENT_TOKEN="a" * 20,
        CONTROLLER_OPERATOR_TOKEN="o" * 20,
    )
    tokens = ensure_tokens(cfg)
    assert (tokens.agent, tokens.operator) == ("a" * 20, "o" * 20)
    assert not (tmp_path / "agent.token").exists()
