from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.agent import Agent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The dockerd restart test goes last: it takes the engine away from every other test."""
    items.sort(key=lambda item: "engine_restart" in item.nodeid)


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
        agent.kill_all()


@pytest.fixture
def agent(agent_factory) -> Agent:
    return agent_factory()
