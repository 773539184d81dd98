"""The controller's /metrics: the fleet as Prometheus sees it (nodes, instances, failovers, rollouts, API latency).

The gauges are read from the registry and the database at scrape time, so a scrape always shows
what the API would answer; the counters and the latency histogram live in memory since the start.
"""

from __future__ import annotations

from typing import Callable

from plum import __version__
from plum.common import prometheus
from plum.controller.api import Context
from plum.controller.deployments import PHASES
from plum.controller.nodes import HEALTHY, UNHEALTHY
from plum.controller.rollout import RUNNING, STATES

NO_REPORT = "Pending"  # an instance its agent has not reported on yet

_INSTANCES_SQL = """
SELECT d.deployment_id, d.name, a.phase, COUNT(*) AS n
FROM assignments a JOIN deployments d ON d.deployment_id = a.deployment_id
WHERE a.desired != 'Lost'
GROUP BY d.deployment_id, d.name, a.phase
ORDER BY d.name, d.deployment_id, a.phase
"""


_ROLLOUTS_SQL = """
SELECT r.deployment_id, d.name, r.state, r.updated, r.healthy, r.total
FROM rollouts r JOIN deployments d ON d.deployment_id = r.deployment_id
ORDER BY d.name, r.deployment_id
"""


class ControllerMetrics:
    def __init__(self, failovers: Callable[[], int] = lambda: 0) -> None:
        self.failovers = failovers  # instances moved off unhealthy nodes since the start
        self.api_latency = prometheus.Histogram(
            "plum_controller_http_request_duration_seconds",
            "Time to answer an API request (streams excluded), by method, route and status code.",
            ("method", "route", "code"),
            prometheus.LATENCY_BUCKETS,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.api_latency.observe((method, route, str(status)), seconds)

    def render(self, ctx: Context) -> str:
        health = [node["health"] for node in ctx.nodes.listing()]
        lines = prometheus.family(
            "plum_controller_info",
            "gauge",
            "Controller build and database identity.",
            [({"version": __version__, "database": ctx.store.identity() or ""}, 1)],
        )
        lines += prometheus.family(
            "plum_controller_nodes",
            "gauge",
            "Nodes by health (heartbeat within HEARTBEAT_TTL_SEC).",
            [({"health": state}, health.count(state)) for state in (HEALTHY, UNHEALTHY)],
        )
        lines += prometheus.family(
            "plum_controller_instances",
            "gauge",
            f"Instances by deployment and last reported phase ({NO_REPORT}: not reported yet).",
            self._instances(ctx),
        )
        lines += prometheus.family(
            "plum_controller_failovers_total",
            "counter",
            "Instances moved off unhealthy nodes since the controller started.",
            [({}, self.failovers())],
        )
        rollouts = ctx.store.all(_ROLLOUTS_SQL)
        lines += prometheus.family(
            "plum_controller_rollouts",
            "gauge",
            "Deployments by the state of their last rollout (Running: an update is being rolled out now).",
            [({"state": state}, sum(1 for r in rollouts if r["state"] == state)) for state in STATES],
        )
        lines += prometheus.family(
            "plum_controller_rollout_instances",
            "gauge",
            "Progress of the rollouts running now: instances updated, healthy on the new revision, in all.",
            [
                ({"deployment": r["deployment_id"], "name": r["name"], "count": key}, r[key])
                for r in rollouts
                if r["state"] == RUNNING
                for key in ("updated", "healthy", "total")
            ],
        )
        lines += prometheus.family(
            "plum_controller_streams",
            "gauge",
            "Open event streams (agents and operators following changes).",
            [({}, ctx.hub.stream_count())],
        )
        lines += self.api_latency.render()
        return "\n".join(lines) + "\n"

    @staticmethod
    def _instances(ctx: Context) -> list[prometheus.Sample]:
        counts: dict[tuple[str, str, str], int] = {}
        for row in ctx.store.all(_INSTANCES_SQL):
            phase = row["phase"] if row["phase"] in PHASES else NO_REPORT
            key = (row["deployment_id"], row["name"], phase)
            counts[key] = counts.get(key, 0) + row["n"]
        return [({"deployment": d, "name": n, "phase": p}, count) for (d, n, p), count in counts.items()]
