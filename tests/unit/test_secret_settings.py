"""Tokens come from files only: refused in a daemon's environment, read from --config or NAME_FILE."""

from __future__ import annotations

import os

import pytest

from plum.agent.config import AgentConfig
from plum.common.config import ConfigError
from plum.controller.config import ControllerConfig

TOKEN = "t0ken-that-is-long-enough"
SECRETS = [
    (AgentConfig, "AGENT_API_TOKEN", "api_token"),
    (AgentConfig, "CONTROLLER_AGENT_TOKEN", "controller_token"),
    (ControllerConfig, "CONTROLLER_AGENT_TOKEN", "agent_token"),
    (ControllerConfig, "CONTROLLER_OPERATOR_TOKEN", "operator_token"),
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith(("AGENT_", "CONTROLLER_", "PLUM_", "HEARTBEAT_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AGENT_DATA_DIR", str(tmp_path / "agent"))
    monkeypatch.setenv("CONTROLLER_DATA_DIR", str(tmp_path / "controller"))


@pytest.mark.parametrize(("daemon", "name", "attr"), SECRETS)
def test_a_token_in_the_environment_is_refused_with_where_to_put_it(monkeypatch, daemon, name, attr):
    monkeypatch.setenv(name, TOKEN)
    with pytest.raises(ConfigError) as err:
        daemon.load()
    message = str(err.value)
    assert message.startswith(f"{name} is set in the process environment")
    assert "--config" in message and f"{name}_FILE" in message and "(value hidden)" in message
    assert TOKEN not in message


@pytest.mark.parametrize(("daemon", "name", "attr"), SECRETS)
def test_a_token_from_the_config_file(tmp_path, daemon, name, attr):
    config = tmp_path / "daemon.env"
    config.write_text(f"{name}={TOKEN}\n")
    assert getattr(daemon.load(str(config)), attr) == TOKEN


@pytest.mark.parametrize(("daemon", "name", "attr"), SECRETS)
def test_a_token_from_its_file_setting_in_the_environment(monkeypatch, tmp_path, daemon, name, attr):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.setenv(f"{name}_FILE", str(token_file))  # a path is no secret
    assert getattr(daemon.load(), attr) == TOKEN


@pytest.mark.parametrize(("daemon", "name", "attr"), SECRETS)
def test_token_file_problems_name_the_setting_and_the_path(monkeypatch, tmp_path, daemon, name, attr):
    missing = tmp_path / "missing"
    monkeypatch.setenv(f"{name}_FILE", str(missing))
    with pytest.raises(ConfigError, match=f"{name}_FILE='{missing}': cannot read the file"):
        daemon.load()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    monkeypatch.setenv(f"{name}_FILE", str(empty))
    with pytest.raises(ConfigError, match=f"{name}_FILE='{empty}': the file is empty"):
        daemon.load()
    if attr == "controller_token":
        return  # the agent passes the controller's token on; the controller judges it
    short = tmp_path / "short"
    short.write_text("short\n")
    monkeypatch.setenv(f"{name}_FILE", str(short))
    with pytest.raises(ConfigError, match=name) as err:
        daemon.load()
    assert "short'" not in str(err.value)  # the value stays hidden


def test_a_token_and_its_file_setting_together_are_refused(monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = tmp_path / "agent.env"
    config.write_text(f"AGENT_API_TOKEN={TOKEN}\nAGENT_API_TOKEN_FILE={token_file}\n")
    with pytest.raises(ConfigError, match="AGENT_API_TOKEN and AGENT_API_TOKEN_FILE are both set"):
        AgentConfig.load(str(config))


def test_an_empty_token_variable_holds_no_secret_and_is_ignored(monkeypatch):
    monkeypatch.setenv("AGENT_API_TOKEN", "")
    assert AgentConfig.load().api_token is None
