"""Failover over real HTTP: two simulated nodes heartbeat, one stops, its instances move."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from support.agent import wait_until
from support.controller import ControllerProc, Heartbeater, app_zip, failover_controller

TTL = 2.0


def running_on(ctl: ControllerProc, node: str) -> list:
    """The node's feed without the instances it must keep stopped (those of a Stopped deployment)."""
    return [i for i in ctl.feed(node) if i["desired"] == "Running"]


@pytest.fixture
def failover_ctl(tmp_path) -> Iterator[ControllerProc]:
    with failover_controller(tmp_path / "data", TTL, heartbeat_interval=0.5) as proc:
        yield proc


def live(ctl: ControllerProc, dep_id: str) -> list[dict]:
    return ctl.ok("GET", f"/v1/deployments/{dep_id}")["assignments"]


def test_instances_move_off_a_dead_node_without_duplicates(failover_ctl: ControllerProc) -> None:
    ctl = failover_ctl
    beat_a, beat_b = Heartbeater(ctl, "fo-a"), Heartbeater(ctl, "fo-b")
    beat_a.start()
    beat_b.start()
    try:
        wait_until(lambda: len(ctl.ok("GET", "/v1/nodes")) == 2, 5, what="both nodes")
        app = ctl.upload(app_zip("fo")).json
        dep = ctl.ok(
            "POST",
            "/v1/deployments",
            {"name": "fo", "entries": [{"artifactUrl": app["url"], "replicas": {"fo-a": 2, "fo-b": 1}}]},
        )
        dep_id = dep["deploymentId"]
        stopped = ctl.ok(
            "POST",
            "/v1/deployments",
            {"name": "fo-stopped", "entries": [{"artifactUrl": app["url"], "replicas": {"fo-a": 1}}]},
        )
        ctl.ok("POST", f"/v1/deployments/{dep_id}?action=start")
        on_a = {i["instanceId"] for i in running_on(ctl, "fo-a")}
        assert len(on_a) == 2
        time.sleep(TTL + 0.2)  # past the controller's start-up grace period, both nodes still alive
        assert {i["instanceId"] for i in running_on(ctl, "fo-a")} == on_a  # live nodes never fail over

        beat_a.stop()
        t0 = time.monotonic()
        wait_until(lambda: len(running_on(ctl, "fo-b")) == 3, TTL + 4, interval=0.05, what="instances on fo-b")
        elapsed = time.monotonic() - t0
        assert elapsed <= TTL + 2, f"failover took {elapsed:.2f}s"

        assignments = live(ctl, dep_id)
        assert len(assignments) == 3  # no duplicate, none lost
        assert Counter(a["nodeId"] for a in assignments) == {"fo-b": 3}
        assert not on_a & {a["instanceId"] for a in assignments}
        with_lost = ctl.ok("GET", f"/v1/deployments/{dep_id}?lost=true")["assignments"]
        assert {a["instanceId"] for a in with_lost if a["desired"] == "Lost"} == on_a
        assert ctl.ok("GET", "/v1/deployments")[0]["instances"] == 3
        # the stopped deployment's instance is not moved
        assert live(ctl, stopped["deploymentId"])[0]["nodeId"] == "fo-a"
        assert running_on(ctl, "fo-a") == []  # a returning agent stops what it no longer sees

        # the node comes back: nothing returns to it and nothing is duplicated
        beat_a = Heartbeater(ctl, "fo-a")
        beat_a.start()
        wait_until(lambda: ctl.ok("GET", "/v1/nodes/fo-a")["health"] == "Healthy", 3, what="fo-a back")
        time.sleep(0.5)
        assert running_on(ctl, "fo-a") == []
        assert len(live(ctl, dep_id)) == 3

        # stop then start never resurrects the lost instances
        ctl.ok("POST", f"/v1/deployments/{dep_id}?action=stop")
        ctl.ok("POST", f"/v1/deployments/{dep_id}?action=start")
        assert running_on(ctl, "fo-a") == []
        assert len(running_on(ctl, "fo-b")) == 3
        lost_id = next(iter(on_a))
        revive = ctl.call("PATCH", f"/v1/assignments/{lost_id}", {"desired": "Running"})
        assert revive.status == 409

        # fo-b dies too while fo-a is back: the fewest-instances node (fo-a) takes them
        beat_b.stop()
        wait_until(lambda: len(running_on(ctl, "fo-a")) == 3, TTL + 4, what="instances back on fo-a")
        assert Counter(a["nodeId"] for a in live(ctl, dep_id)) == {"fo-a": 3}
        assert "failover: instance" in ctl.log()
    finally:
        beat_a.stop()
        beat_b.stop()


def test_nothing_moves_when_no_node_is_healthy(failover_ctl: ControllerProc) -> None:
    ctl = failover_ctl
    assert ctl.heartbeat("lonely").status == 200
    app = ctl.upload(app_zip("lonely")).json
    dep = ctl.ok("POST", "/v1/deployments", {"name": "lonely", "artifactUrl": app["url"], "replicas": {"lonely": 2}})
    ctl.ok("POST", f"/v1/deployments/{dep['deploymentId']}?action=start")
    time.sleep(TTL + 1.5)
    assert ctl.ok("GET", "/v1/nodes/lonely")["health"] == "Unhealthy"
    assignments = ctl.ok("GET", f"/v1/deployments/{dep['deploymentId']}?lost=true")["assignments"]
    assert [(a["nodeId"], a["desired"]) for a in assignments] == [("lonely", "Running")] * 2
    assert "no healthy node" in ctl.log()
