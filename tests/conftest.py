from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.agent import Agent, group_members


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator:
    """Start agents; on teardown kill them and every app process they left behind."""
    agents: list[Agent] = []

    def start(name: str = "agent", **kwargs) -> Agent:
        agent = Agent(tmp_path / name, **kwargs).start()
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.kill()
        pids = set()
        for state in agent.data_dir.glob("apps/*/state.json"):
            handle = json.loads(state.read_text()).get("handle") or {}
            if handle.get("pid"):
                pids.add(handle["pid"])
        for pid in pids:
            for member in group_members(pid):
                with contextlib.suppress(OSError):
                    os.kill(member, signal.SIGKILL)


@pytest.fixture
def agent(agent_factory) -> Agent:
    return agent_factory()
