"""One controller and three agents on this machine: deployments end to end, failover, restarts."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from support.agent import Agent, APIError, pid_alive, wait_until
from support.controller import ControllerProc, app_zip
from support.fleet import controller_with_agents

NODES = ("n1", "n2", "n3")


@pytest.fixture
def fleet(tmp_path: Path):
    with controller_with_agents(
        tmp_path, NODES, ttl=2, AUTO_MIGRATION_ENABLED="true", FAILOVER_INTERVAL_SEC="0.2"
    ) as both:
        yield both


def running(agents: dict[str, Agent]) -> dict[str, dict[str, Any]]:
    """instance id -> {node, pid} for every app Running on any live agent."""
    out: dict[str, dict[str, Any]] = {}
    for node, agent in agents.items():
        if agent.proc is None or agent.proc.poll() is not None:
            continue
        for app in agent.request("GET", "/v1/apps")["apps"]:
            if app["phase"] == "Running":
                assert app["name"] not in out, f"instance {app['name']} runs on two nodes"
                out[app["name"]] = {"node": node, "pid": app["pid"]}
    return out


def deploy(ctl: ControllerProc, name: str, replicas: dict[str, int]) -> tuple[str, list[str]]:
    artifact = ctl.upload(app_zip(name, "1.0.0")).json
    created = ctl.ok(
        "POST", "/v1/deployments", {"name": name, "entries": [{"artifactUrl": artifact["url"], "replicas": replicas}]}
    )
    ctl.ok("POST", f"/v1/deployments/{created['deploymentId']}?action=start")
    return created["deploymentId"], created["instances"]


def phases(ctl: ControllerProc, deployment: str) -> Counter:
    detail = ctl.ok("GET", f"/v1/deployments/{deployment}")
    return Counter(a.get("phase") for a in detail["assignments"])


def test_deployments_start_stop_scale_delete_across_three_agents(fleet):
    ctl, agents = fleet
    dep_a, inst_a = deploy(ctl, "alpha", {"n1": 1, "n2": 1, "n3": 1})
    dep_b, inst_b = deploy(ctl, "beta", {"n1": 2})
    wait_until(lambda: set(running(agents)) == set(inst_a + inst_b), timeout=10, what="all five replicas")
    placed = running(agents)
    assert sorted(placed[i]["node"] for i in inst_a) == ["n1", "n2", "n3"]
    assert [placed[i]["node"] for i in inst_b] == ["n1", "n1"]
    wait_until(lambda: phases(ctl, dep_a) == Counter(Running=3), what="controller to see alpha Running")
    environ = Path(f"/proc/{placed[inst_a[0]]['pid']}/environ").read_bytes()
    assert f"PLUM_INSTANCE_ID={inst_a[0]}".encode() in environ

    ctl.ok("POST", f"/v1/deployments/{dep_a}?action=stop")
    wait_until(lambda: set(running(agents)) == set(inst_b), what="alpha to stop everywhere")
    for instance in inst_a:
        assert not pid_alive(placed[instance]["pid"])
        stopped = agents[placed[instance]["node"]].app(instance)
        assert stopped["phase"] == "Stopped", "a stopped deployment keeps its instances (data, release)"

    ctl.ok("PATCH", f"/v1/deployments/{dep_b}", {"replicas": {"n1": 1, "n2": 2}})
    wait_until(
        lambda: Counter(r["node"] for r in running(agents).values()) == Counter(n1=1, n2=2),
        what="beta scaled to n1:1 n2:2",
    )
    ctl.ok("POST", f"/v1/deployments/{dep_a}?action=start")
    wait_until(lambda: len(running(agents)) == 6, what="alpha back")
    ctl.call("DELETE", f"/v1/deployments/{dep_b}")
    wait_until(lambda: len(running(agents)) == 3, what="beta deleted")
    assert {r["node"] for r in running(agents).values()} == set(NODES)


def test_failover_moves_replicas_and_the_returning_node_stops_its_stale_copy(fleet):
    ctl, agents = fleet
    dep, _ = deploy(ctl, "gamma", {"n1": 1, "n2": 1})
    wait_until(lambda: len(running(agents)) == 2, what="two replicas")
    lost = next(i for i, r in running(agents).items() if r["node"] == "n1")
    lost_pid = running(agents)[lost]["pid"]
    agents["n1"].kill(signal.SIGKILL)  # the node goes silent; its app keeps running, unsupervised
    assert pid_alive(lost_pid)

    def moved() -> bool:
        now = running(agents)
        return len(now) == 2 and lost not in now and {r["node"] for r in now.values()} == {"n2", "n3"}

    wait_until(moved, timeout=2 + 2 + 3, what="failover to n3 (the node with the fewest instances)")
    agents["n1"].start()  # the node returns: its agent must stop the stale instance
    wait_until(lambda: not pid_alive(lost_pid), timeout=10, what="n1 to stop its stale copy")
    wait_until(lambda: lost not in running(agents), timeout=5, what="n1 to forget the lost instance")
    now = running(agents)
    assert len(now) == 2 and {r["node"] for r in now.values()} == {"n2", "n3"}
    detail = ctl.ok("GET", f"/v1/deployments/{dep}")
    live = [a for a in detail["assignments"] if a["desired"] == "Running"]
    assert len(live) == 2, "never duplicated replicas, never lost ones"


def test_controller_restart_loses_nothing(fleet):
    ctl, agents = fleet
    dep, instances = deploy(ctl, "delta", {"n1": 1, "n2": 1, "n3": 1})
    wait_until(lambda: set(running(agents)) == set(instances), what="three replicas")
    before = running(agents)
    ctl.stop()
    # controller down: apps keep running, agents keep retrying
    assert running(agents) == before
    ctl.start()
    wait_until(lambda: phases(ctl, dep) == Counter(Running=3), what="statuses after the restart")
    assert running(agents) == before, "same instances, same processes: nothing restarted or duplicated"
    ctl.ok("POST", f"/v1/deployments/{dep}?action=stop")
    wait_until(lambda: running(agents) == {}, what="stop after the controller restart")


def test_status_is_reported_on_change_not_every_round(fleet):
    ctl, _ = fleet
    dep, instances = deploy(ctl, "eps", {"n2": 1})
    wait_until(lambda: phases(ctl, dep) == Counter(Running=1), what="Running")
    history = ctl.ok("GET", f"/v1/instances/{instances[0]}/statuses")["items"]
    time.sleep(2.5)  # more than two sync rounds (SYNC_INTERVAL_SEC=1)
    assert ctl.ok("GET", f"/v1/instances/{instances[0]}/statuses")["items"] == history
    seen = Counter(h["phase"] for h in history)
    assert seen["Downloading"] == 1 and seen["Running"] == 1 and set(seen) <= {"Downloading", "Starting", "Running"}
    assert history[0]["phase"] == "Running"  # newest first


def test_local_and_controller_apps_live_side_by_side(fleet, tmp_path):
    ctl, agents = fleet
    agent = agents["n3"]
    local = agent.deploy("local-app", app_zip_file(tmp_path))["app"]
    dep, instances = deploy(ctl, "zeta", {"n3": 1})
    wait_until(lambda: instances[0] in running(agents), what="controller instance")
    with pytest.raises(APIError) as err:
        agent.request("POST", f"/v1/apps/{instances[0]}/stop")
    assert err.value.status == 409 and "managed by the controller" in err.value.body["error"]
    ctl.ok("POST", f"/v1/deployments/{dep}?action=stop")
    wait_until(lambda: instances[0] not in running(agents), what="controller instance stopped")
    assert agent.app("local-app")["pid"] == local["pid"], "the controller never touches local apps"


def app_zip_file(tmp_path: Path) -> Path:
    path = tmp_path / "local.zip"
    path.write_bytes(app_zip("local", "1.0.0"))
    return path


def test_services_from_meta_ini_are_registered_while_running(fleet):
    ctl, _ = fleet
    dep, instances = deploy(ctl, "web", {"n1": 1, "n2": 1})

    def endpoints() -> list:
        return ctl.ok("GET", "/v1/discovery?service=web&all=true")

    found = wait_until(lambda: len(endpoints()) == 2 and endpoints(), what="two registered endpoints")
    assert sorted(e["instanceId"] for e in found) == sorted(instances)
    assert {(e["nodeId"], e["port"], e["protocol"]) for e in found} == {("n1", 8080, "http"), ("n2", 8080, "http")}

    # The registry loses one (an operator deletes it, a database is restored): its agent registers it again.
    lost = next(e for e in found if e["nodeId"] == "n1")
    key = f"service=web&instanceId={lost['instanceId']}&ip={lost['ip']}&port=8080&protocol=http"
    assert ctl.call("DELETE", f"/v1/services/endpoint?{key}").status == 204
    wait_until(lambda: len(endpoints()) == 2, what="the lost endpoint registered again")

    ctl.ok("POST", f"/v1/deployments/{dep}?action=stop")
    wait_until(lambda: endpoints() == [], what="endpoints deregistered after the stop")


def test_a_refused_assignment_is_reported_once_and_not_downloaded_again(fleet):
    ctl, _ = fleet
    artifact = ctl.upload(app_zip("refused", "1.0.0")).json
    entry = {"artifactUrl": artifact["url"], "replicas": {"n1": 1}, "runtime": "process", "memory": "64m"}
    created = ctl.ok("POST", "/v1/deployments", {"name": "refused", "entries": [entry]})
    ctl.ok("POST", f"/v1/deployments/{created['deploymentId']}?action=start")
    instance = created["instances"][0]

    def statuses() -> list:
        return ctl.ok("GET", f"/v1/instances/{instance}/statuses")["items"]

    wait_until(lambda: statuses() and statuses()[0]["phase"] == "Failed", what="Failed reported")
    assert "memory" in statuses()[0]["message"]
    history = statuses()
    time.sleep(2.5)  # more than two sync rounds: no new download, no new report
    assert statuses() == history
    assert [h["phase"] for h in history].count("Downloading") == 1
