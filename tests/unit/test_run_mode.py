"""The run mode decides, in one place, what a deploy runs in and whether the agent needs Docker."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from test_docker_helpers import make_config

from plum.agent import main
from plum.agent.config import AgentConfig
from plum.agent.state import AppRecord
from plum.common.vocab import RunMode


def _asked(monkeypatch: pytest.MonkeyPatch, config: AgentConfig) -> list[bool]:
    asked: list[bool] = []

    def docker_runtime(cfg: AgentConfig, required: bool) -> Any:
        asked.append(required)
        return None

    monkeypatch.setattr(main, "docker_runtime", docker_runtime)
    runtimes = main.build_runtimes(config)
    assert set(runtimes) == {"process"}
    return asked


def _save(data_dir: Path, name: str, runtime: str) -> None:
    AppRecord(name, f"{name}-1", runtime).save(data_dir / "apps" / name / "state.json")


def test_process_mode_needs_docker_only_for_saved_docker_apps(tmp_path, monkeypatch):
    config = dataclasses.replace(make_config(tmp_path), run_mode=RunMode.PROCESS)
    assert config.default_runtime == "process" and not config.docker_required
    _save(config.data_dir, "web", "process")
    assert _asked(monkeypatch, config) == [False]
    _save(config.data_dir, "db", "docker")
    assert _asked(monkeypatch, config) == [True], "a saved docker app must be re-adopted"


def test_docker_mode_runs_deploys_in_docker_and_requires_it(tmp_path, monkeypatch):
    config = dataclasses.replace(make_config(tmp_path), run_mode=RunMode.DOCKER)
    assert config.default_runtime == "docker" and config.docker_required
    assert _asked(monkeypatch, config) == [True]


def test_the_run_mode_is_read_as_the_shared_enum(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AGENT_RUN_MODE", "docker")
    assert AgentConfig.load().run_mode is RunMode.DOCKER
