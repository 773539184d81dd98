"""plum.deploy.plum_app with the Docker runtime: the ladder for every state; Docker-only options reach the container.

One agent and one zip app go through every state (started, present, stopped, restarted, absent), each with the
ladder check mode -> real run -> check mode (no change) -> real run (no change), as for the process runtime; an
image app goes through `started`.

Needs a Docker engine and the test base image (scripts/docker-engine.sh and scripts/build-test-image.sh, as
`make test` provides). Without an engine the test is skipped, except under CI, where it fails instead.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from plum_ansible import REPO, Ansible, ansible_available, assert_app_ladder, containers_task, ladder_tasks, play

from support.agent import free_port
from support.docker import BASE_IMAGE, docker, ensure_engine_and_images

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not ansible_available(), reason="ansible-core is not installed in this venv"),
]

HELLO = REPO / "examples" / "apps" / "hello"


@pytest.fixture
def docker_node(agent_factory: Any) -> Any:
    ensure_engine_and_images()
    node = f"ansible-{secrets.token_hex(4)}"
    agent = agent_factory("docker-agent", env={"AGENT_NODE_ID": node, "PLUM_BASE_IMAGE": BASE_IMAGE})
    agent.node = node
    return agent  # agent_factory's teardown kills the agent first, then removes its containers


def container(node: str, app: str) -> dict[str, Any]:
    ids = docker("ps", "-q", "--filter", f"label=plum.node={node}", "--filter", f"label=plum.app={app}").split()
    assert len(ids) == 1, ids
    return json.loads(docker("inspect", ids[0]))[0]


ABSENT = {"exists": False, "apps": []}


def test_docker_ladder_for_every_state_and_options_reach_the_container(docker_node, tmp_path: Path):
    agent = docker_node
    libs = tmp_path / "libs"
    libs.mkdir()
    port = free_port()
    web = {
        "name": "web",
        "src": str(HELLO),
        "runtime": "docker",
        "base_image": BASE_IMAGE,
        "pull_policy": "never",
        "memory": "64m",
        "cpus": 0.5,
        "network_mode": "bridge",
        "ports": [f"127.0.0.1:{port}:8080"],
        "host_lib_paths": [str(libs)],
        "env": {"GREETING": "from ansible"},
        "stop_timeout": 3,
    }
    img = {
        "name": "img",
        "image": BASE_IMAGE,
        "pull_policy": "never",
        "start_cmd": "echo image app up; exec sleep 1000",
        "memory": "1g",
    }
    defaults = {
        "group/plum.deploy.plum": {"agent_url": agent.url, "agent_token": agent.token},
        "plum.deploy.plum_app": {"wait_stable": 0.5},
    }
    ansible = Ansible(tmp_path / "ansible")

    # started, for the zip app with every Docker option and for an image app; then the containers are inspected
    tasks, names = [], []
    for args in (web, img):
        more, registered = ladder_tasks("plum.deploy.plum_app", f"{args['name']}_started", {**args}, info=args["name"])
        tasks += more
        names += registered
    run = ansible.playbook(play("Docker apps started", tasks, names, defaults))
    assert run.rc == 0 and run.data is not None, run.output
    r = run.data
    assert_app_ladder(r, {"web_started": "started"}, before=ABSENT)
    assert_app_ladder(r, {"img_started": "started"}, before=ABSENT)

    started = r["web_started_after"]["apps"][0]
    assert (started["runtime"], started["phase"]) == ("docker", "Running")
    assert r["web_started_real2"]["app"]["pid"] == r["web_started_real1"]["app"]["pid"], "the container is kept"
    assert started["spec"]["memory"] == 64 * 1024 * 1024
    assert started["spec"]["ports"] == [f"127.0.0.1:{port}:8080/tcp"]
    info = container(agent.node, "web")
    assert info["Config"]["Image"] == BASE_IMAGE
    assert info["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert info["HostConfig"]["NanoCpus"] == 500_000_000
    assert info["HostConfig"]["PortBindings"]["8080/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts[str(libs)]["RW"] is False
    assert "GREETING=from ansible" in info["Config"]["Env"]

    image = r["img_started_after"]["apps"][0]
    assert (image["runtime"], image["phase"], image["spec"]["image"]) == ("docker", "Running", BASE_IMAGE)
    assert container(agent.node, "img")["HostConfig"]["Memory"] == 1024**3

    # present (a new env: redeployed, kept running), stopped, restarted and absent, on the same app
    steps = {
        "present": {**web, "env": {"GREETING": "again"}},
        "stopped": {**web, "env": {"GREETING": "again"}},
        "restarted": {"name": "web"},
        "absent": {"name": "web"},
    }
    tasks, names = [], []
    for state, args in steps.items():
        more, registered = ladder_tasks("plum.deploy.plum_app", f"web_{state}", {**args, "state": state}, info="web")
        probe, probe_name = containers_task(f"web_{state}", agent.node, "web")
        tasks += [*more, probe]
        names += [*registered, probe_name]
    run = ansible.playbook(play("The Docker ladder for the other states", tasks, names, defaults))
    assert run.rc == 0 and run.data is not None, run.output
    r = run.data
    assert_app_ladder(r, {f"web_{state}": state for state in steps}, before={"exists": True, "apps": [started]})

    def states(label: str) -> list[str]:
        return r[f"{label}_containers"]["stdout_lines"]

    present = r["web_present_after"]["apps"][0]
    assert r["web_present_check1"]["reasons"] == ["spec changes: env"]
    assert (present["runtime"], present["phase"], present["spec"]["env"]) == (
        "docker",
        "Running",
        {"GREETING": "again"},
    )
    assert present["pid"] != started["pid"], "a new spec makes a new container"
    assert states("web_present") == ["running"], "the old container is gone"

    stopped = r["web_stopped_after"]["apps"][0]
    assert r["web_stopped_real1"]["actions"] == ["stop"]
    assert (stopped["phase"], stopped["desired"]) == ("Stopped", "stopped")
    assert "running" not in states("web_stopped")

    runs = [r[f"web_restarted_{run}"]["app"] for run in ("check1", "real1", "real2")]
    assert runs[0]["pid"] is None, "check mode does not restart the stopped app"
    assert runs[1]["pid"] != runs[2]["pid"] and runs[1]["started_at"] < runs[2]["started_at"], runs
    assert r["web_restarted_after"]["apps"][0]["phase"] == "Running"
    assert states("web_restarted") == ["running"]

    assert (r["web_absent_after"]["exists"], r["web_absent_real1"]["app"]) == (False, {})
    assert states("web_absent") == [], "absent removes the container"
    assert [a["name"] for a in agent.request("GET", "/v1/apps")["apps"]] == ["img"]
