"""Rolling updates for real: a controller and two agents following it; a PATCH changes the app in place.

A good version rolls out one instance at a time and keeps the deployment and instance ids; a version that
crashes is rolled back automatically while the old version keeps serving; a PATCH of the app during a
rollout is refused with 409.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.agent import Agent, wait_until
from support.controller import ControllerProc, app_zip, read_until
from support.fleet import controller_with_agents

NODES = ("ro-a", "ro-b")
SLEEPER = b"#!/bin/sh\nexec sleep 1000\n"
CRASHER = b"#!/bin/sh\necho 'v3 cannot start' >&2\nexit 3\n"


def release(name: str, version: str, script: bytes) -> bytes:
    return app_zip(
        name,
        version,
        files={
            "start.sh": script,
            "meta.ini": f"name={name}\nversion={version}\n".encode(),
        },
    )


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[ControllerProc, dict[str, Agent]]]:
    with controller_with_agents(tmp_path, NODES) as both:
        yield both


def detail(ctl: ControllerProc, dep_id: str) -> dict[str, Any]:
    result: dict[str, Any] = ctl.ok("GET", f"/v1/deployments/{dep_id}")
    return result


def all_running(ctl: ControllerProc, dep_id: str, version: str) -> bool:
    assignments = detail(ctl, dep_id)["assignments"]
    return bool(assignments) and all(a["phase"] == "Running" and a["appVersion"] == version for a in assignments)


def versions_on_agents(agents: dict[str, Agent]) -> dict[str, str]:
    """instance id -> the version its agent runs, for the instances that run."""
    out = {}
    for agent in agents.values():
        for app in agent.request("GET", "/v1/apps")["apps"]:
            if app["phase"] == "Running":
                out[app["name"]] = app["version"]
    return out


def rollout_state(ctl: ControllerProc, dep_id: str, state: str) -> dict[str, Any] | None:
    rollout: dict[str, Any] | None = detail(ctl, dep_id)["deployment"]["rollout"]
    return rollout if rollout is not None and rollout["state"] == state else None


def start_v1(ctl: ControllerProc, replicas: Any, update: dict[str, Any]) -> tuple[str, list[str], dict[str, Any]]:
    v1 = ctl.upload(release("roll", "1.0.0", SLEEPER)).json
    dep = ctl.ok(
        "POST",
        "/v1/deployments",
        {
            "name": "roll",
            "entries": [{"artifactUrl": v1["url"], "replicas": replicas}],
            "update": update,
        },
    )
    dep_id = dep["deploymentId"]
    ctl.ok("POST", f"/v1/deployments/{dep_id}?action=start")
    wait_until(lambda: all_running(ctl, dep_id, "1.0.0"), 20, what="v1 running everywhere")
    return dep_id, sorted(dep["instances"]), v1


def test_a_good_version_rolls_out_in_place_and_a_patch_meanwhile_is_refused(
    fleet,
) -> None:
    ctl, agents = fleet
    policy = {
        "maxUnavailable": 1,
        "minHealthySeconds": 1.5,
        "progressDeadlineSeconds": 30,
    }
    dep_id, ids, _ = start_v1(ctl, 2, policy)
    entry = detail(ctl, dep_id)["entries"][0]
    assert entry["desiredReplicas"] == 2
    assert entry["replicas"] == {"ro-a": 1, "ro-b": 1}, "the controller spreads the replicas"
    assert detail(ctl, dep_id)["deployment"]["rollout"] is None

    v2 = ctl.upload(release("roll", "2.0.0", SLEEPER)).json
    events = socket.create_connection(("127.0.0.1", ctl.port), timeout=5)
    request = f"GET /v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ctl.operator}\r\n\r\n"
    events.sendall(request.encode())
    read_until(events, b"event: ping", 5)
    ctl.ok("PATCH", f"/v1/deployments/{dep_id}", {"entries": [{"artifactUrl": v2["url"]}]})
    rollout = detail(ctl, dep_id)["deployment"]["rollout"]
    assert rollout["state"] == "Running" and rollout["previousRevision"] == 1 and rollout["revision"] == 2

    busy = ctl.call("PATCH", f"/v1/deployments/{dep_id}", {"entries": [{"env": {"MODE": "other"}}]})
    assert busy.status == 409, busy
    assert "rolling out revision 2" in busy.json["error"]

    # one instance at a time: the second only moves once the first is healthy on v2
    wait_until(
        lambda: rollout_state(ctl, dep_id, "Running") and rollout_state(ctl, dep_id, "Running")["updated"] == 1,
        10,
        what="the first instance switched",
    )
    assert sorted(versions_on_agents(agents).values()) in (
        ["1.0.0", "1.0.0"],
        ["1.0.0", "2.0.0"],
    )

    done = wait_until(
        lambda: rollout_state(ctl, dep_id, "Succeeded"),
        40,
        what="the rollout to succeed",
    )
    assert done["updated"] == done["healthy"] == done["total"] == 2
    assert done["finishedAt"] is not None
    after = detail(ctl, dep_id)
    assert after["deployment"]["deploymentId"] == dep_id
    assert sorted(a["instanceId"] for a in after["assignments"]) == ids, "the same instances, updated in place"
    assert after["entries"][0]["appVersion"] == "2.0.0"
    wait_until(
        lambda: versions_on_agents(agents) == dict.fromkeys(ids, "2.0.0"),
        10,
        what="v2 on both agents",
    )
    assert [d["rollout"]["state"] for d in ctl.ok("GET", "/v1/deployments")] == ["Succeeded"]
    with events:  # the operators' stream told the story: started, progress, finished
        seen = read_until(events, b'"event": "finished"', 5)
    rollouts = [json.loads(line[6:]) for line in seen.split(b"\n") if line.startswith(b"data: {")]
    kinds = [r["event"] for r in rollouts]
    assert kinds[0] == "started" and "progress" in kinds
    assert rollouts[-1]["rollout"]["state"] == "Succeeded" and rollouts[-1]["deploymentId"] == dep_id

    # the same request again changes nothing: no new rollout, no new instance
    ctl.ok(
        "PATCH",
        f"/v1/deployments/{dep_id}",
        {"entries": [{"artifactUrl": v2["url"], "replicas": 2}]},
    )
    again = detail(ctl, dep_id)
    assert again["deployment"]["rollout"]["revision"] == 2
    assert sorted(a["instanceId"] for a in again["assignments"]) == ids


def test_a_crashing_version_is_rolled_back_and_the_old_one_keeps_serving(fleet) -> None:
    ctl, agents = fleet
    policy = {
        "maxUnavailable": 1,
        "minHealthySeconds": 3,
        "progressDeadlineSeconds": 30,
    }
    dep_id, ids, _ = start_v1(ctl, {"ro-a": 1, "ro-b": 1}, policy)
    v3 = ctl.upload(release("roll", "3.0.0", CRASHER)).json
    ctl.ok("PATCH", f"/v1/deployments/{dep_id}", {"entries": [{"artifactUrl": v3["url"]}]})

    back = wait_until(lambda: rollout_state(ctl, dep_id, "RolledBack"), 40, what="the rollback")
    assert back["updated"] == 1, "the rollout stopped at the first instance"
    assert "rolled back" in back["message"]
    wait_until(
        lambda: all_running(ctl, dep_id, "1.0.0"),
        20,
        what="v1 running everywhere again",
    )
    after = detail(ctl, dep_id)
    assert sorted(a["instanceId"] for a in after["assignments"]) == ids
    assert after["entries"][0]["appVersion"] == "1.0.0", "the entry reads the previous revision again"
    wait_until(
        lambda: versions_on_agents(agents) == dict.fromkeys(ids, "1.0.0"),
        15,
        what="v1 on both agents",
    )
    assert "rollout of revision 2 RolledBack" in ctl.log()

    # once it finished, the app can change again
    ok = ctl.call("PATCH", f"/v1/deployments/{dep_id}", {"entries": [{"env": {"MODE": "calm"}}]})
    assert ok.status == 200, ok
    assert ok.json["deployment"]["rollout"]["revision"] == 3


def test_placement_over_the_api(tmp_path: Path) -> None:
    ctl = ControllerProc(tmp_path / "data", HEARTBEAT_TTL_SEC="30").start()
    try:
        for node, zone in (("pl-a", "x"), ("pl-b", "x"), ("pl-c", "y")):
            assert ctl.heartbeat(node, ip=f"127.0.0.{ord(node[-1]) - 90}", labels={"zone": zone}).status == 200
        app = ctl.upload(release("place", "1.0.0", SLEEPER)).json
        entry = {"artifactUrl": app["url"], "replicas": 3, "placement": {"labels": {"zone": "x"}}}
        dep = ctl.ok("POST", "/v1/deployments", {"name": "placed", "entries": [entry]})
        got = detail(ctl, dep["deploymentId"])["entries"][0]
        assert got["replicas"] == {"pl-a": 2, "pl-b": 1}
        assert got["desiredReplicas"] == 3 and got["placement"] == {"labels": {"zone": "x"}}

        for body, status, field in (
            ({**entry, "placement": {"labels": {"zone": "z"}}}, 503, "entries[0].placement (labels zone=z)"),
            ({**entry, "placement": {"nodes": "pl-a"}}, 400, "entries[0].placement.nodes"),
            ({**entry, "placement": {"nodes": ["ghost"]}}, 400, "entries[0].placement.nodes"),
            ({**entry, "placement": {"zone": "x"}}, 400, "entries[0].placement.zone"),
            ({**entry, "replicas": {"pl-a": 1}}, 400, "entries[0].placement"),
            ({**entry, "replicas": -1}, 400, "entries[0].replicas"),
            ({**entry, "ports": [{"host": 8080, "container": 80}], "runtime": "docker"}, 503, None),
        ):
            reply = ctl.call("POST", "/v1/deployments", {"name": "bad", "entries": [body]})
            assert reply.status == status, (body, reply)
            if status == 400:
                assert reply.json["field"] == field, (body, reply)
            elif field is not None:
                assert reply.json["placement"] == field
        assert [d["name"] for d in ctl.ok("GET", "/v1/deployments")] == ["placed"]

        # a bad PATCH names its field and changes nothing
        dep_path = f"/v1/deployments/{dep['deploymentId']}"
        before = detail(ctl, dep["deploymentId"])
        for body, field in (
            ({"entries": [{"placement": {"nodes": ["ghost"]}}]}, "entries[0].placement.nodes"),
            ({"entries": [{"placement": {"nodes": ["bad id"]}}]}, "entries[0].placement.nodes[0]"),
            ({"entries": [{"replicas": "3"}]}, "entries[0].replicas"),
            ({"entries": [{}, {}]}, "entries"),
            ({"update": {"autoRollback": "yes"}}, "update.autoRollback"),
            ({"replicas": 2, "entries": [{}]}, "replicas"),
        ):
            reply = ctl.call("PATCH", dep_path, body)
            assert (reply.status, reply.json["field"]) == (400, field), (body, reply)
        assert detail(ctl, dep["deploymentId"]) == before

        # a setting given empty is cleared (a Stopped deployment's rollout finishes on its first step)
        for memory in ("64m", ""):
            ctl.ok("PATCH", dep_path, {"entries": [{"memory": memory}]})
            wait_until(lambda: rollout_state(ctl, dep["deploymentId"], "Succeeded"), 10, what="the change rolled out")
            assert detail(ctl, dep["deploymentId"])["entries"][0]["memory"] == memory

        # an update policy is kept with the deployment and checked
        bad_policy = ctl.call(
            "POST", "/v1/deployments", {"name": "p", "entries": [entry], "update": {"maxUnavailable": 0}}
        )
        assert bad_policy.status == 400 and bad_policy.json["field"] == "update.maxUnavailable"
    finally:
        assert ctl.stop() == 0
