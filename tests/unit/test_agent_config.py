from __future__ import annotations

import os
import stat

import pytest

from plum.agent.config import AgentConfig
from plum.agent.main import main
from plum.common.config import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith(("AGENT_", "CONTROLLER_", "PLUM_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AGENT_DATA_DIR", str(tmp_path / "data"))


def test_defaults(monkeypatch):
    config = AgentConfig.load()
    assert (config.api_host, config.api_port) == ("127.0.0.1", 7070)
    assert config.run_mode == "process"
    assert config.node_id


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("AGENT_API_ADDR", "nonsense", "AGENT_API_ADDR='nonsense'"),
        ("AGENT_API_ADDR", "127.0.0.1:99999", "port"),
        ("AGENT_RUN_MODE", "vm", "AGENT_RUN_MODE='vm'"),
        ("AGENT_NODE_ID", "bad id!", "AGENT_NODE_ID='bad id!'"),
        ("AGENT_LOG_MAX_BYTES", "ten", "AGENT_LOG_MAX_BYTES='ten'"),
        ("AGENT_METRICS_PUBLIC", "maybe", "AGENT_METRICS_PUBLIC"),
        ("CONTROLLER_BASE", "ftp://x", "CONTROLLER_BASE"),
        ("AGENT_API_TOKEN", "short", "AGENT_API_TOKEN"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, name, value, words):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        AgentConfig.load()
    assert words in str(err.value)


def test_env_file_and_environment_precedence(monkeypatch, tmp_path):
    env_file = tmp_path / "agent.env"
    env_file.write_text("# comment\nexport AGENT_NODE_ID=from-file\nAGENT_API_ADDR='127.0.0.1:7171'\n\n")
    assert AgentConfig.load(str(env_file)).node_id == "from-file"
    monkeypatch.setenv("AGENT_NODE_ID", "from-env")
    config = AgentConfig.load(str(env_file))
    assert config.node_id == "from-env" and config.api_port == 7171


@pytest.mark.parametrize(
    ("content", "words"),
    [("AGENT_NODEID=x\n", "unknown setting AGENT_NODEID"), ("junk\n", "KEY=VALUE")],
)
def test_env_file_errors_name_the_line(tmp_path, content, words):
    env_file = tmp_path / "agent.env"
    env_file.write_text(content)
    with pytest.raises(ConfigError) as err:
        AgentConfig.load(str(env_file))
    assert words in str(err.value) and f"{env_file}:1" in str(err.value)


def test_token_is_generated_once_with_mode_0600(tmp_path):
    config = AgentConfig.load()
    token = config.ensure_token()
    assert len(token) >= 32
    assert stat.S_IMODE(config.token_file.stat().st_mode) == 0o600
    assert config.ensure_token() == token


def test_check_config_exit_codes(monkeypatch, capsys):
    assert main(["--check-config"]) == 0
    assert "configuration OK" in capsys.readouterr().out
    monkeypatch.setenv("AGENT_RUN_MODE", "vm")
    assert main(["--check-config"]) == 2
    assert "AGENT_RUN_MODE" in capsys.readouterr().err
