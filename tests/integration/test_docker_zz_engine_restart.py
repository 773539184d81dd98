"""A restart of dockerd puts every app back under supervision.

The engine runs without live-restore, so the containers die with it; the agent's event stream breaks,
reconnects with backoff once the engine is back, relists, and restarts what died. This restarts the
machine's shared engine, so it lives in its own module, named to run after the other docker tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import test_docker_runtime as suite  # the docker suite's helpers

from support.agent import REPO, app_zip, wait_until
from support.docker import BASE_IMAGE, container_ids, docker, engine_up, ensure_engine_and_images

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PID_FILE = Path("/var/run/docker.pid")


def dockerd_pid() -> int:
    try:
        pid = int(PID_FILE.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        pytest.skip("dockerd is not a local process started from /var/run/docker.pid (a managed or remote engine)")
    return pid


def restart_dockerd() -> None:
    pid = dockerd_pid()
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=60, interval=0.2, what="dockerd to exit")
    subprocess.run([str(REPO / "scripts" / "docker-engine.sh")], check=True, timeout=120)


@pytest.fixture
def docker_agent(agent_factory):
    ensure_engine_and_images()
    agents = suite.DockerAgents(agent_factory)
    yield agents
    agents.cleanup()


def test_a_restart_of_dockerd_puts_every_app_back_under_supervision(docker_agent, tmp_path):
    agent = docker_agent()
    agent.deploy("zipped", app_zip(tmp_path / "z.zip"), {"stop_timeout": 1})
    agent.deploy("imaged", spec={"image": BASE_IMAGE, "start_cmd": "exec sleep 1000", "stop_timeout": 1})
    before = {name: suite.current_container(agent, name) for name in ("zipped", "imaged")}
    try:
        restart_dockerd()
    finally:
        if not engine_up():  # never leave the machine without its engine
            subprocess.run([str(REPO / "scripts" / "docker-engine.sh")], check=False, timeout=120)

    def back(app: dict) -> bool:
        return app["phase"] == "Running" and app["restarts"] >= 1

    for name, old_container in before.items():
        suite.app_when(agent, name, back, timeout=60, what=f"{name} to run again after the engine restart")
        assert suite.current_container(agent, name) != old_container
    wait_until(
        lambda: len(container_ids(agent.node)) == 2, timeout=90, interval=0.5, what="the dead containers removed"
    )
    # the event stream is live again: a crash is seen at once, not at the next relist
    victim = suite.current_container(agent, "zipped")
    restarts = agent.app("zipped")["restarts"]
    docker("kill", victim)
    started = time.monotonic()
    suite.app_when(agent, "zipped", lambda a: a["restarts"] == restarts + 1 and a["phase"] == "Running", timeout=10)
    assert time.monotonic() - started < 5
