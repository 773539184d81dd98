"""A controller and three real agents on loopback:
- `?action=start` to every replica Running (as reported to the controller), small zip app;
- a node lost (its agent killed) to its replicas Running elsewhere, against HEARTBEAT_TTL_SEC."""

from __future__ import annotations

import argparse
import signal
import time
from collections import Counter

from _common import Agent, percentile, wait_until, workdir
from _results import Results
from support.agent import free_port
from support.controller import ControllerProc, app_zip

NODES = ("n1", "n2", "n3")


def phases(ctl: ControllerProc, deployment: str) -> Counter:
    return Counter(a.get("phase") for a in ctl.ok("GET", f"/v1/deployments/{deployment}")["assignments"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--replicas-per-node", type=int, default=3)
    parser.add_argument("--ttl", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.replicas_per_node = 2, 1
    root = workdir("fleet")
    port = free_port()
    ctl = ControllerProc(
        root / "controller",
        CONTROLLER_ADDR=f"127.0.0.1:{port}",
        HEARTBEAT_TTL_SEC=str(args.ttl),
        HEARTBEAT_INTERVAL_SEC=str(args.ttl / 3),
        AUTO_MIGRATION_ENABLED="true",
        FAILOVER_INTERVAL_SEC="0.2",
    ).start()
    agents = {
        node: Agent(
            root / node,
            env={
                "AGENT_NODE_ID": node,
                "CONTROLLER_BASE": f"http://127.0.0.1:{port}",
                "CONTROLLER_AGENT_TOKEN": ctl.agent,
                "AGENT_LOG_LEVEL": "warning",
            },
        ).start()
        for node in NODES
    }
    start_times, failover_times = [], []
    try:
        wait_until(lambda: len(ctl.ok("GET", "/v1/nodes")) == 3, what="three nodes")
        artifact = ctl.upload(app_zip("bench", "1.0.0")).json
        replicas = {node: args.replicas_per_node for node in NODES}
        dep = ctl.ok(
            "POST",
            "/v1/deployments",
            {"name": "bench", "entries": [{"artifactUrl": artifact["url"], "replicas": replicas}]},
        )["deploymentId"]
        total = args.replicas_per_node * len(NODES)
        for _ in range(args.rounds):
            started = time.perf_counter()
            ctl.ok("POST", f"/v1/deployments/{dep}?action=start")
            wait_until(lambda: phases(ctl, dep)["Running"] == total, timeout=30, interval=0.005, what="Running")
            start_times.append(time.perf_counter() - started)
            ctl.ok("POST", f"/v1/deployments/{dep}?action=stop")
            wait_until(lambda: phases(ctl, dep)["Running"] == 0, timeout=30, what="stopped")

        ctl.ok("POST", f"/v1/deployments/{dep}?action=start")
        wait_until(lambda: phases(ctl, dep)["Running"] == total, timeout=30, what="Running")
        victim = agents["n1"]
        victim.kill(signal.SIGKILL)
        killed = time.perf_counter()

        def moved() -> bool:
            detail = ctl.ok("GET", f"/v1/deployments/{dep}")
            live = [a for a in detail["assignments"] if a["desired"] == "Running"]
            return len(live) == total and all(a["nodeId"] != "n1" and a.get("phase") == "Running" for a in live)

        wait_until(moved, timeout=args.ttl + 30, interval=0.02, what="replicas moved")
        failover_times.append(time.perf_counter() - killed)
    finally:
        for agent in agents.values():
            agent.kill_all()
        ctl.stop()
    results = Results(
        "fleet",
        "A controller and three agents",
        method=(
            "A controller and three real agents (process runtime) on loopback, one deployment of a small zip app "
            f"with {args.replicas_per_node} replicas per node. Start: from the `?action=start` answer to every "
            "replica reported Running to the controller (the SSE nudge, the feed, the start, the report), "
            f"{args.rounds} rounds; the first includes the download. Failover: from `kill -9` of one agent to every "
            f"replica Running on the other two, with HEARTBEAT_TTL_SEC={args.ttl:g} (it includes waiting out the TTL)."
        ),
    )
    starts_ms = [t * 1000 for t in start_times]
    results.figure(
        f"action=start to {args.replicas_per_node * len(NODES)} replicas Running, p50",
        percentile(starts_ms, 50),
        unit="ms",
        target_max=1000,
    )
    results.figure(
        f"action=start to {args.replicas_per_node * len(NODES)} replicas Running, max", max(starts_ms), unit="ms"
    )
    results.figure("node lost to replicas Running elsewhere", failover_times[0], unit="s", target_max=args.ttl + 2)
    results.add_series("start", "action=start to all Running", starts_ms)
    results.save(args.out)


if __name__ == "__main__":
    main()
