"""The controller's /metrics, scraped as Prometheus would: nodes, instances, failovers, rollouts, API latency."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from support.agent import REPO, wait_until
from support.controller import ControllerProc, Heartbeater, app_zip, failover_controller

TTL = 1.0
LATENCY = "plum_controller_http_request_duration_seconds"
SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? -?[0-9.e+Inf-]+$')


@pytest.fixture
def ctl(tmp_path) -> Iterator[ControllerProc]:
    with failover_controller(tmp_path / "data", TTL, heartbeat_interval=0.3) as proc:
        yield proc


def scrape(ctl: ControllerProc) -> dict[str, float]:
    reply = ctl.call("GET", "/metrics")
    assert reply.status == 200, reply
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in reply.body.decode().splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) plum_controller_\w+ ", line), line
            continue
        assert SAMPLE.match(line), line
        series, value = line.rsplit(" ", 1)
        assert series not in samples, f"{series} twice"
        samples[series] = float(value)
    return samples


def test_metrics_need_the_operator_token(ctl: ControllerProc) -> None:
    assert ctl.call("GET", "/metrics", token=None).status == 401
    assert ctl.call("GET", "/metrics", token="agent").status == 403


def test_a_scrape_shows_nodes_instances_failovers_and_api_latency(ctl: ControllerProc) -> None:
    beat_a, beat_b = Heartbeater(ctl, "m-a", interval=0.2), Heartbeater(ctl, "m-b", interval=0.2)
    beat_a.start()
    beat_b.start()
    try:
        wait_until(lambda: len(ctl.ok("GET", "/v1/nodes")) == 2, 5, what="both nodes")
        app = ctl.upload(app_zip("metered")).json
        dep = ctl.ok(
            "POST",
            "/v1/deployments",
            {"name": "metered", "entries": [{"artifactUrl": app["url"], "replicas": {"m-a": 2, "m-b": 1}}]},
        )
        dep_id = dep["deploymentId"]
        ctl.ok("POST", f"/v1/deployments/{dep_id}?action=start")
        on_b = next(a for a in ctl.ok("GET", f"/v1/deployments/{dep_id}")["assignments"] if a["nodeId"] == "m-b")
        status = {"instanceId": on_b["instanceId"], "phase": "Running"}
        assert ctl.call("POST", "/v1/instances/status", status, token="agent").status == 204

        first = scrape(ctl)
        assert first['plum_controller_nodes{health="Healthy"}'] == 2
        assert first['plum_controller_nodes{health="Unhealthy"}'] == 0
        running = f'plum_controller_instances{{deployment="{dep_id}",name="metered",phase="Running"}}'
        pending = f'plum_controller_instances{{deployment="{dep_id}",name="metered",phase="Pending"}}'
        assert (first[running], first[pending]) == (1, 2)
        assert first["plum_controller_failovers_total"] == 0
        created = LATENCY + '_count{method="POST",route="/v1/deployments",code="200"}'
        assert first[created] == 1
        infinite = LATENCY + '_bucket{method="POST",route="/v1/deployments",code="200",le="+Inf"}'
        assert first[infinite] == 1
        routed = LATENCY + '_count{method="GET",route="/v1/deployments/{id}",code="200"}'
        assert first[routed] == 1  # by route, never by id: the number of series stays bounded

        time.sleep(TTL + 0.3)  # past the controller's start-up grace period
        beat_a.stop()
        wait_until(lambda: scrape(ctl)["plum_controller_failovers_total"] == 2, TTL + 5, what="two failovers")
        after = scrape(ctl)
        assert after['plum_controller_nodes{health="Unhealthy"}'] == 1
        assert after[pending] == 2  # the moved instances, not reported yet on their new node
    finally:
        beat_a.stop()
        beat_b.stop()


def test_a_scrape_shows_the_rollout_in_progress(ctl: ControllerProc) -> None:
    beat = Heartbeater(ctl, "m-a", interval=0.2)
    beat.start()
    try:
        wait_until(lambda: len(ctl.ok("GET", "/v1/nodes")) == 1, 5, what="the node")
        v1, v2 = ctl.upload(app_zip("rolled", "1.0.0")).json, ctl.upload(app_zip("rolled", "2.0.0")).json
        dep = ctl.ok(
            "POST", "/v1/deployments", {"name": "rolled", "entries": [{"artifactUrl": v1["url"], "replicas": 2}]}
        )
        dep_id = dep["deploymentId"]
        ctl.ok("POST", f"/v1/deployments/{dep_id}?action=start")
        for instance in dep["instances"]:
            status = {"instanceId": instance, "phase": "Running"}
            assert ctl.call("POST", "/v1/instances/status", status, token="agent").status == 204
        before = scrape(ctl)
        assert [before[f'plum_controller_rollouts{{state="{s}"}}'] for s in ("Running", "Succeeded")] == [0, 0]

        ctl.ok("PATCH", f"/v1/deployments/{dep_id}", {"entries": [{"artifactUrl": v2["url"]}]})
        progress = f'plum_controller_rollout_instances{{deployment="{dep_id}",name="rolled",count="%s"}}'
        # No agent reports the new version: the rollout's first step updates one instance, then waits on it.
        during = wait_until(lambda: (m := scrape(ctl))[progress % "updated"] and m, 5, what="the first step")
        assert during['plum_controller_rollouts{state="Running"}'] == 1
        assert (during[progress % "updated"], during[progress % "healthy"], during[progress % "total"]) == (1, 0, 2)
    finally:
        beat.stop()


def test_metrics_can_be_public(tmp_path) -> None:
    proc = ControllerProc(tmp_path / "data", CONTROLLER_METRICS_PUBLIC="true").start()
    try:
        reply = proc.call("GET", "/metrics", token=None)
        assert reply.status == 200
        assert "plum_controller_nodes" in reply.body.decode()
        assert proc.call("GET", "/v1/nodes", token=None).status == 401  # only the metrics
    finally:
        assert proc.stop() == 0


def test_the_grafana_dashboard_reads_only_metrics_the_controller_serves(ctl: ControllerProc) -> None:
    ctl.ok("GET", "/v1/nodes")  # one request, so the latency histogram has a series
    page = ctl.call("GET", "/metrics").body.decode()
    served = set(re.findall(r"^# TYPE (\w+) ", page, re.MULTILINE))
    dashboard = json.loads((REPO / "docs" / "grafana" / "plum-fleet.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {re.sub(r"_(bucket|count|sum)$", "", name) for expr in exprs for name in re.findall(r"plum_\w+", expr)}
    assert used and used <= served, used - served
