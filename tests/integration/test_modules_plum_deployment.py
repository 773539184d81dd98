"""plum.deploy.plum_deployment run for real against a real controller, with real agents following it.

The ladder (check -> real -> check -> real) for creating and starting, scaling to a number the controller
places, rolling out new settings in place, pinning replicas again, `present` (a rollout that keeps the deployment
running), stopping and deleting; with the Docker runtime, a deployment created with `present` (stopped), then
started, stopped and deleted; a crash-looping deployment fails the wait with each node's reason; a rollout whose
new replicas crash is rolled back by the controller and fails the task with its message; the same task after a
failover changes nothing.

Every test but the Docker ladder needs the controller's placement and rolling updates (the pinned API).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from plum_ansible import LADDER, REPO, Ansible, ansible_available, containers_task, ladder_tasks, play

from support.agent import Agent, wait_until
from support.controller import ControllerProc
from support.docker import BASE_IMAGE, container_ids, ensure_engine_and_images
from support.fleet import controller_with_agents

pytestmark = pytest.mark.skipif(not ansible_available(), reason="ansible-core is not installed in this venv")

HELLO = REPO / "examples" / "apps" / "hello"
CRASHY = REPO / "examples" / "apps" / "crashy"
NODES = ("n1", "n2")


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


PLACED = {"replicas": 3, "nodes": ["n1", "n2"]}
FAST = {"min_healthy_seconds": 1}  # the rollouts' health gate, short for the tests
STEPS: list[tuple[str, dict[str, Any]]] = [
    ("create", {"state": "started", "src": "{{ hello }}", "replicas": {"n1": 1, "n2": 1}, "labels": {"team": "a"}}),
    ("scale", {"state": "started", "src": "{{ hello }}", **PLACED, "labels": {"team": "a"}}),
    ("settings", {"state": "started", "src": "{{ hello }}", **PLACED, "env": {"GREETING": "hi"}, "update": FAST}),
    ("pin", {"state": "started", "src": "{{ hello }}", "replicas": {"n1": 1}, "env": {"GREETING": "hi"}}),
    ("present", {"state": "present", "src": "{{ hello }}", "env": {"GREETING": "hello again"}, "update": FAST}),
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


def instance_ids(result: dict[str, Any]) -> set[str]:
    return {a["instanceId"] for a in result["deployment"]["assignments"]}


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
    assert scale["reasons"] == ["3 replicas placed by the controller (pinned per node now)"]
    assert scale["deployment_id"] == create["deployment_id"], "replicas change in place"
    entry = scale["deployment"]["entries"][0]
    assert (entry["desiredReplicas"], entry["placement"]) == (3, {"nodes": ["n1", "n2"]})
    assert sum(entry["replicas"].values()) == 3 and set(entry["replicas"]) == {"n1", "n2"}, "spread over both"
    assert instance_ids(create) <= instance_ids(scale), "the running replicas stay"
    assert scale["diff"]["after"]["replicas"] == 3
    assert scale["rollout"] == {}, "a scale rolls nothing out"

    settings = r["settings_real1"]
    assert settings["actions"] == ["update"], "new settings are rolled out in place"
    assert settings["reasons"] == ["setting changes: env"]
    assert settings["deployment_id"] == create["deployment_id"]
    assert instance_ids(settings) == instance_ids(scale), "the same instances, on the new revision"
    assert settings["deployment"]["entries"][0]["env"] == {"GREETING": "hi"}
    assert settings["rollout"]["state"] == "Succeeded", settings["rollout"]
    assert settings["rollout"]["total"] == 3
    assert settings["diff"]["after"]["labels"] == {"team": "a"}, "labels not given are kept"
    assert [a["phase"] for a in settings["deployment"]["assignments"]] == ["Running"] * 3

    pin = r["pin_real1"]
    assert pin["actions"] == ["update"]
    assert pin["reasons"] == ["replicas pinned per node (the controller places 3)"]
    assert pin["deployment"]["entries"][0]["replicas"] == {"n1": 1}
    assert "desiredReplicas" not in pin["deployment"]["entries"][0]
    assert pin["rollout"]["revision"] == settings["rollout"]["revision"], "pinning rolls nothing out"

    present = r["present_real1"]
    assert present["actions"] == ["update"], "a rollout keeps a running deployment running"
    assert present["reasons"] == ["setting changes: env"]
    assert present["deployment_id"] == create["deployment_id"]
    assert present["deployment"]["deployment"]["Status"] == "Running"
    assert present["deployment"]["entries"][0]["env"] == {"GREETING": "hello again"}
    assert present["deployment"]["entries"][0]["replicas"] == {"n1": 1}, "replicas not given are kept"
    assert present["rollout"]["state"] == "Succeeded"
    assert present["rollout"]["revision"] > settings["rollout"]["revision"]

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


def one_task(args: dict[str, Any], register: str) -> dict[str, Any]:
    return {"name": register, "plum.deploy.plum_deployment": args, "ignore_errors": True, "register": register}


def test_a_rollout_whose_replicas_crash_is_rolled_back_and_fails_the_task(fleet, tmp_path):
    """The controller stops the rollout at the first crash and puts the replicas back on the old revision."""
    ctl, _agents = fleet
    base = {"name": "crashy", "src": "{{ crashy }}", "replicas": 2, "wait_timeout": 60}
    tasks = [
        one_task({**base, "env": {"CRASH_AFTER": "3600"}}, "healthy"),
        one_task({**base, "env": {"CRASH_AFTER": "0.3"}}, "crashing"),
    ]
    defaults = {
        "group/plum.deploy.plum": {
            "controller_url": "{{ controller_url }}",
            "controller_token": "{{ controller_token }}",
        },
        "plum.deploy.plum_deployment": {"wait_stable": 0.5, "update": {"min_healthy_seconds": 2}},
    }
    text = play("A rollout rolled back", tasks, ["healthy", "crashing"], defaults)
    run = Ansible(tmp_path / "ansible").playbook(text, *extra_vars(ctl, crashy=CRASHY), timeout=300)
    assert run.data is not None and run.rc == 0, run.output
    healthy, crashing = run.data["healthy"], run.data["crashing"]
    assert not healthy.get("failed"), healthy.get("msg")
    assert crashing["failed"] is True and crashing["changed"] is True
    assert crashing["actions"] == ["update"]
    rollout = crashing["rollout"]
    assert rollout["state"] == "RolledBack", rollout
    assert crashing["msg"] == (
        f"deployment crashy: the rollout of revision {rollout['revision']} ended RolledBack: {rollout['message']}"
    )
    assert crashing["deployment_id"] == healthy["deployment_id"], "never deleted"

    def back_on_the_old_revision() -> bool:
        detail = ctl.ok("GET", f"/v1/deployments/{healthy['deployment_id']}")
        return [a["phase"] for a in detail["assignments"]] == ["Running", "Running"]

    wait_until(back_on_the_old_revision, timeout=30, what="the replicas Running on the old revision")


@pytest.fixture
def failover_fleet(tmp_path: Path) -> Iterator[tuple[ControllerProc, dict[str, Agent]]]:
    with controller_with_agents(tmp_path, NODES, ttl=3, AUTO_MIGRATION_ENABLED="true") as both:
        yield both


def test_the_same_task_after_a_failover_changes_nothing(failover_fleet, tmp_path):
    """The controller keeps the placement: the task does not put a replica back on the dead node."""
    ctl, agents = failover_fleet
    task = one_task({"name": "hello", "src": "{{ hello }}", "replicas": 2, "nodes": list(NODES)}, "deploy")
    defaults = {
        "group/plum.deploy.plum": {
            "controller_url": "{{ controller_url }}",
            "controller_token": "{{ controller_token }}",
        },
        "plum.deploy.plum_deployment": {"wait_stable": 0.5},
    }
    ansible = Ansible(tmp_path / "ansible")
    first = ansible.playbook(play("Deploy", [task], ["deploy"], defaults), *extra_vars(ctl, hello=HELLO))
    assert first.data is not None and first.rc == 0, first.output
    deployed = first.data["deploy"]
    assert not deployed.get("failed"), deployed.get("msg")
    assert deployed["deployment"]["entries"][0]["replicas"] == {"n1": 1, "n2": 1}
    dep_id = deployed["deployment_id"]

    agents["n1"].kill_all()

    def moved() -> bool:
        return ctl.ok("GET", f"/v1/deployments/{dep_id}")["entries"][0]["replicas"] == {"n2": 2}

    wait_until(moved, timeout=20, what="failover to put both replicas on n2")
    again = ansible.playbook(play("Again", [task], ["deploy"], defaults), *extra_vars(ctl, hello=HELLO))
    assert again.data is not None and again.rc == 0, again.output
    result = again.data["deploy"]
    assert not result.get("failed"), result.get("msg")
    assert (result["changed"], result["actions"]) == (False, [])
    assert result["deployment"]["entries"][0]["replicas"] == {"n2": 2}, "nothing goes back to the dead node"
