"""plum.deploy.plum_deployment run for real against a real controller, with two real agents following it.

The ladder (check -> real -> check -> real) for creating and starting, scaling in place, replacing on a
settings change, stopping and deleting; a crash-looping deployment fails the wait with each node's reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plum_ansible import REPO, Ansible, ansible_available, dump_task

from support.agent import Agent, free_port, wait_until
from support.controller import ControllerProc

pytestmark = pytest.mark.skipif(not ansible_available(), reason="ansible-core is not installed in this venv")

HELLO = REPO / "examples" / "apps" / "hello"
CRASHY = REPO / "examples" / "apps" / "crashy"
NODES = ("n1", "n2")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[ControllerProc, dict[str, Agent]]]:
    port = free_port()
    ctl = ControllerProc(
        tmp_path / "controller",
        CONTROLLER_ADDR=f"127.0.0.1:{port}",
        HEARTBEAT_TTL_SEC="3",
        HEARTBEAT_INTERVAL_SEC="0.5",
    ).start()
    agents: dict[str, Agent] = {}
    try:
        for node in NODES:
            env = {
                "AGENT_NODE_ID": node,
                "CONTROLLER_BASE": f"http://127.0.0.1:{port}",
                "CONTROLLER_AGENT_TOKEN": ctl.agent,
                "SYNC_INTERVAL_SEC": "1",
            }
            agents[node] = Agent(tmp_path / node, env=env).start()
        wait_until(lambda: len(ctl.ok("GET", "/v1/nodes")) == len(NODES), what="the nodes' heartbeats")
        yield ctl, agents
    finally:
        for agent in agents.values():
            agent.kill_all()
        ctl.stop()


STEPS: list[tuple[str, dict[str, Any]]] = [
    ("create", {"state": "started", "src": "{{ hello }}", "replicas": {"n1": 1, "n2": 1}, "labels": {"team": "a"}}),
    (
        "scale",
        {"state": "started", "src": "{{ hello }}", "replicas": 3, "nodes": ["n1", "n2"], "labels": {"team": "a"}},
    ),
    ("settings", {"state": "started", "src": "{{ hello }}", "replicas": {"n1": 1}, "env": {"GREETING": "hi"}}),
    ("stop", {"state": "stopped"}),
    ("delete", {"state": "absent"}),
]


def ladder_playbook() -> str:
    tasks = []
    names = []
    for step, args in STEPS:
        lines = [f"      {k}: {v!r}" for k, v in {"name": "hello", **args}.items()]
        for run, check in (("check1", True), ("real1", False), ("check2", True), ("real2", False)):
            names.append(f"{step}_{run}")
            tasks.append(
                f"- name: {step} - {run}\n  plum.deploy.plum_deployment:\n"
                + "\n".join(line[2:] for line in lines)
                + f"\n  check_mode: {str(check).lower()}\n  diff: true\n  register: {step}_{run}\n"
            )
    names.append("crash")
    tasks.append(
        "- name: A deployment whose replicas crash\n  plum.deploy.plum_deployment:\n    name: crashy\n"
        "    src: '{{ crashy }}'\n    replicas: {n1: 1, n2: 1}\n    env: {CRASH_AFTER: '0.3'}\n"
        "    wait_timeout: 30\n    wait_stable: 3\n"
        "  ignore_errors: true\n  register: crash\n"
    )
    body = "\n".join(tasks) + "\n" + dump_task(names)
    indented = "\n".join("    " + line if line else line for line in body.splitlines())
    return f"""\
- name: The plum_deployment ladder
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/plum.deploy.plum:
      controller_url: "{{{{ controller_url }}}}"
      controller_token: "{{{{ controller_token }}}}"
    plum.deploy.plum_deployment:
      wait_stable: 0.5
  tasks:
{indented}
"""


def replicas_running(agents: dict[str, Agent]) -> dict[str, int]:
    counts = {}
    for node, agent in agents.items():
        counts[node] = sum(1 for a in agent.request("GET", "/v1/apps")["apps"] if a["phase"] == "Running")
    return counts


def test_deployment_ladder_against_a_real_controller(fleet, tmp_path):
    ctl, agents = fleet
    ansible = Ansible(tmp_path / "ansible")
    extra = {
        "controller_url": f"http://127.0.0.1:{ctl.port}",
        "controller_token": ctl.operator,
        "hello": HELLO,
        "crashy": CRASHY,
    }
    argv = [arg for key, value in extra.items() for arg in ("-e", f"{key}={value}")]
    run = ansible.playbook(ladder_playbook(), *argv, timeout=300)
    assert run.data is not None and run.rc == 0, run.output
    r = run.data

    for step, _ in STEPS:
        check1, real1, check2, real2 = (r[f"{step}_{s}"] for s in ("check1", "real1", "check2", "real2"))
        assert (check1["changed"], real1["changed"], check2["changed"], real2["changed"]) == (
            True,
            True,
            False,
            False,
        ), step
        assert check1["actions"] == real1["actions"], step
        assert check2["actions"] == real2["actions"] == [], step
        assert check1["diff"]["after"]["state"] == real1["diff"]["after"]["state"], step
        assert check2["diff"]["before"] == real1["diff"]["after"], step

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
    assert "node n1 instance" in msg or "node n2 instance" in msg
    assert "BackOff" in msg or "Failed" in msg or "restart" in msg, msg
    assert crash["replicas"] and {"node", "instance", "phase", "message", "exit_code"} <= set(crash["replicas"][0])
