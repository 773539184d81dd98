"""plum.deploy.plum_deployment run for real against a real controller, with real agents following it.

The ladder (check -> real -> check -> real) for creating and starting, scaling in place, replacing on a
settings change, `present` (a replacement that keeps the deployment running), stopping and deleting; with the
Docker runtime, a deployment created with `present` (stopped), then started, stopped and deleted; a
crash-looping deployment fails the wait with each node's reason.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from plum_ansible import LADDER, REPO, Ansible, ansible_available, containers_task, ladder_tasks, play

from support.agent import Agent, free_port, wait_until
from support.controller import ControllerProc
from support.docker import BASE_IMAGE, container_ids, ensure_engine_and_images

pytestmark = pytest.mark.skipif(not ansible_available(), reason="ansible-core is not installed in this venv")

HELLO = REPO / "examples" / "apps" / "hello"
CRASHY = REPO / "examples" / "apps" / "crashy"
NODES = ("n1", "n2")


@contextlib.contextmanager
def controller_with_agents(tmp_path: Path, nodes: tuple[str, ...]) -> Iterator[tuple[ControllerProc, dict[str, Agent]]]:
    """A controller and one agent per node following it; on exit the agents are killed with their apps."""
    port = free_port()
    ctl = ControllerProc(
        tmp_path / "controller",
        CONTROLLER_ADDR=f"127.0.0.1:{port}",
        HEARTBEAT_TTL_SEC="3",
        HEARTBEAT_INTERVAL_SEC="0.5",
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
        ctl.stop()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[ControllerProc, dict[str, Agent]]]:
    with controller_with_agents(tmp_path, NODES) as both:
        yield both


def ladder_play(
    steps: list[tuple[str, dict[str, Any]]],
    names: list[str],
    after: Optional[dict[str, tuple[dict[str, Any], str]]] = None,
    extra_tasks: tuple[dict[str, Any], ...] = (),
) -> str:
    """The ladder of plum_deployment for each (label, args) step on deployment hello, each followed by the task
    ``after[label]`` (task, registered name) when given, then EXTRA_TASKS. NAMES gets the registered names."""
    tasks: list[dict[str, Any]] = []
    for label, args in steps:
        more, registered = ladder_tasks("plum.deploy.plum_deployment", label, {"name": "hello", **args})
        tasks += more
        names += registered
        if after and label in after:
            tasks.append(after[label][0])
            names.append(after[label][1])
    defaults = {
        "group/plum.deploy.plum": {
            "controller_url": "{{ controller_url }}",
            "controller_token": "{{ controller_token }}",
        },
        "plum.deploy.plum_deployment": {"wait_stable": 0.5},
    }
    return play("The plum_deployment ladder", [*tasks, *extra_tasks], names, defaults)


def extra_vars(ctl: ControllerProc, **more: Any) -> list[str]:
    values = {"controller_url": f"http://127.0.0.1:{ctl.port}", "controller_token": ctl.operator, **more}
    return [arg for key, value in values.items() for arg in ("-e", f"{key}={value}")]


def assert_deployment_ladder(r: dict[str, Any], labels: list[str]) -> None:
    """check mode predicts the real run (same actions, same state after), and the second runs change nothing."""
    for label in labels:
        check1, real1, check2, real2 = (r[f"{label}_{run}"] for run, _ in LADDER)
        changed = (check1["changed"], real1["changed"], check2["changed"], real2["changed"])
        assert changed == (True, True, False, False), (label, changed)
        assert check1["actions"] == real1["actions"], label
        assert check2["actions"] == real2["actions"] == [], label
        assert check1["diff"]["after"]["state"] == real1["diff"]["after"]["state"], label
        assert check2["diff"]["before"] == real1["diff"]["after"], label
        for result in (check1, real1, check2, real2):
            assert not result.get("warnings"), (label, result.get("warnings"))


STEPS: list[tuple[str, dict[str, Any]]] = [
    ("create", {"state": "started", "src": "{{ hello }}", "replicas": {"n1": 1, "n2": 1}, "labels": {"team": "a"}}),
    (
        "scale",
        {"state": "started", "src": "{{ hello }}", "replicas": 3, "nodes": ["n1", "n2"], "labels": {"team": "a"}},
    ),
    ("settings", {"state": "started", "src": "{{ hello }}", "replicas": {"n1": 1}, "env": {"GREETING": "hi"}}),
    ("present", {"state": "present", "src": "{{ hello }}", "env": {"GREETING": "hello again"}}),
    ("stop", {"state": "stopped"}),
    ("delete", {"state": "absent"}),
]

CRASH_TASK = {
    "name": "A deployment whose replicas crash",
    "plum.deploy.plum_deployment": {
        "name": "crashy",
        "src": "{{ crashy }}",
        "replicas": {"n1": 1, "n2": 1},
        "env": {"CRASH_AFTER": "0.3"},
        "wait_timeout": 30,
        "wait_stable": 3,
    },
    "ignore_errors": True,
    "register": "crash",
}


def replicas_running(agents: dict[str, Agent]) -> dict[str, int]:
    counts = {}
    for node, agent in agents.items():
        counts[node] = sum(1 for a in agent.request("GET", "/v1/apps")["apps"] if a["phase"] == "Running")
    return counts


def test_deployment_ladder_against_a_real_controller(fleet, tmp_path):
    ctl, agents = fleet
    ansible = Ansible(tmp_path / "ansible")
    names = ["crash"]
    text = ladder_play(STEPS, names, extra_tasks=(CRASH_TASK,))
    run = ansible.playbook(text, *extra_vars(ctl, hello=HELLO, crashy=CRASHY), timeout=300)
    assert run.data is not None and run.rc == 0, run.output
    r = run.data
    assert_deployment_ladder(r, [step for step, _ in STEPS])

    create = r["create_real1"]
    assert create["actions"] == ["upload", "create", "start"]
    assert r["create_check1"]["deployment"] == {}, "check mode created nothing"
    assert r["create_check1"]["diff"]["after"]["app"] == {
        "name": "hello",
        "version": "1.0.0",
        "sha256": create["deployment"]["entries"][0].get("artifactSha256") or r["create_check1"]["artifact"]["sha256"],
        "type": "zip",
    }
    phases = [a["phase"] for a in create["deployment"]["assignments"]]
    assert phases == ["Running", "Running"]
    assert create["deployment"]["deployment"]["Labels"] == {"team": "a"}

    scale = r["scale_real1"]
    assert scale["actions"] == ["update"]
    assert scale["deployment_id"] == create["deployment_id"], "replicas change in place"
    assert scale["deployment"]["entries"][0]["replicas"] == {"n1": 2, "n2": 1}

    settings = r["settings_real1"]
    assert settings["actions"] == ["replace", "start"]
    assert settings["deployment_id"] != create["deployment_id"]
    assert settings["reasons"] == ["setting changes: env"]
    assert settings["deployment"]["entries"][0]["env"] == {"GREETING": "hi"}
    assert settings["deployment"]["entries"][0]["replicas"] == {"n1": 1}
    assert settings["diff"]["after"]["labels"] == {"team": "a"}, "labels not given are kept"

    present = r["present_real1"]
    assert present["actions"] == ["replace", "start"], "a replacement keeps a running deployment running"
    assert present["reasons"] == ["setting changes: env"]
    assert present["deployment_id"] != settings["deployment_id"]
    assert present["deployment"]["deployment"]["Status"] == "Running"
    assert present["deployment"]["entries"][0]["env"] == {"GREETING": "hello again"}
    assert present["deployment"]["entries"][0]["replicas"] == {"n1": 1}, "replicas not given are kept"

    stop = r["stop_real1"]
    assert stop["actions"] == ["stop"]
    assert stop["deployment"]["deployment"]["Status"] == "Stopped"
    assert r["delete_real1"]["actions"] == ["delete"] and r["delete_real2"]["deployment"] == {}
    assert all(d["name"] != "hello" for d in ctl.ok("GET", "/v1/deployments"))
    wait_until(lambda: replicas_running(agents) == {"n1": 0, "n2": 0}, timeout=15, what="hello to stop everywhere")

    apps = ctl.ok("GET", "/v1/apps")
    assert [a["name"] for a in apps].count("hello") == 1, "the same zip was uploaded once"

    crash = r["crash"]
    assert crash["failed"] is True
    msg = crash["msg"]
    assert msg.startswith("deployment crashy has replicas that fail or restart:"), msg
    assert re.search(r"^  node n[12] instance \S+: phase \w+", msg, re.MULTILINE), msg
    assert "BackOff" in msg or "Failed" in msg or "restart" in msg, msg
    assert crash["replicas"] and {"node", "instance", "phase", "message", "exit_code"} <= set(crash["replicas"][0])


DOCKER_ENTRY = {"src": "{{ hello }}", "runtime": "docker", "base_image": BASE_IMAGE, "memory": "64m"}


@pytest.mark.docker
def test_docker_deployment_ladder_for_every_state(tmp_path):
    """present (created stopped) -> started -> stopped -> absent, for an entry with runtime docker."""
    ensure_engine_and_images()
    node = f"dk-{secrets.token_hex(4)}"  # containers are found (and removed) by their node label
    with controller_with_agents(tmp_path, (node,)) as (ctl, _agents):
        replicas = {"replicas": {node: 1}}
        steps = [(state, {"state": state, **DOCKER_ENTRY, **replicas}) for state in ("present", "started", "stopped")]
        steps.append(("absent", {"state": "absent"}))
        probes = {state: containers_task(state, node) for state in ("present", "started", "stopped")}
        text = ladder_play(steps, [], after=probes)
        ansible = Ansible(tmp_path / "ansible")
        run = ansible.playbook(text, *extra_vars(ctl, hello=HELLO), timeout=300)
        assert run.data is not None and run.rc == 0, run.output
        r = run.data
        assert_deployment_ladder(r, [state for state, _ in steps])

        def containers(state: str) -> list[str]:
            return r[f"{state}_containers"]["stdout_lines"]

        present = r["present_real1"]
        assert present["actions"] == ["upload", "create"]
        assert r["present_check1"]["diff"]["after"]["state"] == "Stopped", "present creates a stopped deployment"
        entry = present["deployment"]["entries"][0]
        assert (entry["runtime"], entry["image"], entry["memory"]) == ("docker", BASE_IMAGE, "64m")
        assert present["deployment"]["deployment"]["Status"] == "Stopped"
        assert containers("present") == [], "nothing runs"

        started = r["started_real1"]
        assert started["actions"] == ["start"]
        assert started["deployment_id"] == present["deployment_id"]
        assert [a["phase"] for a in started["deployment"]["assignments"]] == ["Running"]
        assert containers("started") == ["running"]

        assert r["stopped_real1"]["actions"] == ["stop"]
        assert "running" not in containers("stopped")
        assert r["absent_real1"]["actions"] == ["delete"] and r["absent_real2"]["deployment"] == {}
        wait_until(lambda: not container_ids(node), timeout=15, what="the deployment's containers to be removed")
