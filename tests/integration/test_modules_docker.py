"""plum.deploy.plum_app with the Docker runtime: Docker-only options reach the container, and stay idempotent.

Needs a Docker engine and the test base image (scripts/docker-engine.sh and scripts/build-test-image.sh, as
`make test` provides). Without an engine the test is skipped, except under CI, where it fails instead.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from plum_ansible import REPO, Ansible, ansible_available, dump_task

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


def test_docker_options_reach_the_container_and_stay_idempotent(docker_node, tmp_path: Path):
    yaml = pytest.importorskip("yaml")
    agent = docker_node
    libs = tmp_path / "libs"
    libs.mkdir()
    port = free_port()
    zip_app = {
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
    image_app = {
        "name": "img",
        "image": BASE_IMAGE,
        "pull_policy": "never",
        "start_cmd": "echo image app up; exec sleep 1000",
        "memory": "1g",
    }
    tasks, names = [], []
    for label, args in (("zip", zip_app), ("image", image_app)):
        for run, check in (("check1", True), ("real1", False), ("check2", True), ("real2", False)):
            names.append(f"{label}_{run}")
            tasks.append(
                {
                    "name": f"{label} {run}",
                    "plum.deploy.plum_app": args,
                    "check_mode": check,
                    "diff": True,
                    "register": f"{label}_{run}",
                }
            )
    tasks.append(yaml.safe_load(dump_task(names))[0])
    play = [
        {
            "name": "Docker apps",
            "hosts": "localhost",
            "gather_facts": False,
            "module_defaults": {
                "group/plum.deploy.plum": {"agent_url": agent.url, "agent_token": agent.token},
                "plum.deploy.plum_app": {"wait_stable": 0.5},
            },
            "tasks": tasks,
        }
    ]
    ansible = Ansible(tmp_path / "ansible")
    run = ansible.playbook(json.dumps(play, indent=1))  # JSON is YAML
    assert run.rc == 0 and run.data is not None, run.output
    r = run.data
    for label in ("zip", "image"):
        changed = [r[f"{label}_{s}"]["changed"] for s in ("check1", "real1", "check2", "real2")]
        assert changed == [True, True, False, False], (label, changed)
        assert r[f"{label}_check1"]["diff"]["after"]["spec"] == r[f"{label}_real1"]["diff"]["after"]["spec"], label
        assert not any(r[f"{label}_{s}"].get("warnings") for s in ("real1", "real2")), label

    web = r["zip_real2"]["app"]
    assert (web["runtime"], web["phase"]) == ("docker", "Running")
    assert web["spec"]["memory"] == 64 * 1024 * 1024
    assert web["spec"]["ports"] == [f"127.0.0.1:{port}:8080/tcp"]
    info = container(agent.node, "web")
    assert info["Config"]["Image"] == BASE_IMAGE
    assert info["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert info["HostConfig"]["NanoCpus"] == 500_000_000
    assert info["HostConfig"]["PortBindings"]["8080/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts[str(libs)]["RW"] is False
    assert "GREETING=from ansible" in info["Config"]["Env"]

    img = r["image_real2"]["app"]
    assert (img["runtime"], img["phase"], img["spec"]["image"]) == ("docker", "Running", BASE_IMAGE)
    assert container(agent.node, "img")["HostConfig"]["Memory"] == 1024**3
