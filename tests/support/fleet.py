"""A controller and agents following it, all real processes: the fleet the integration tests drive."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from support.agent import Agent, free_port, wait_until
from support.controller import ControllerProc


@contextlib.contextmanager
def controller_with_agents(
    tmp_path: Path, nodes: tuple[str, ...], *, ttl: float = 5, **settings: str
) -> Iterator[tuple[ControllerProc, dict[str, Agent]]]:
    """A controller (heartbeat TTL ``ttl``, more SETTINGS) and one agent per node following it. On exit the
    agents are killed with their apps; the controller must stop cleanly and must not have logged a traceback."""
    port = free_port()
    ctl = ControllerProc(
        tmp_path / "controller",
        CONTROLLER_ADDR=f"127.0.0.1:{port}",
        HEARTBEAT_TTL_SEC=f"{ttl:g}",
        HEARTBEAT_INTERVAL_SEC="0.5",
        **settings,
    ).start()
    agents: dict[str, Agent] = {}
    try:
        for node in nodes:
            env = {
                "AGENT_NODE_ID": node,
                "CONTROLLER_BASE": f"http://127.0.0.1:{port}",
                "CONTROLLER_AGENT_TOKEN": ctl.agent,
                "SYNC_INTERVAL_SEC": "1",
            }
            agents[node] = Agent(tmp_path / node, env=env).start()
        wait_until(lambda: len(ctl.ok("GET", "/v1/nodes")) == len(nodes), what="the nodes' heartbeats")
        yield ctl, agents
    finally:
        for agent in agents.values():
            agent.kill_all()
        assert ctl.stop() == 0, ctl.log()
    assert "Traceback" not in ctl.log(), ctl.log()
