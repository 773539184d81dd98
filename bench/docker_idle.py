"""The agent supervising 20 containers, idle: resident memory and CPU averaged over a window.

Anchors measured in the same run: the agent process before its first docker app (the Docker SDK is
imported only then) and dockerd's own CPU over the same window (what the 20 containers cost the engine)."""

from __future__ import annotations

import argparse
import secrets
import subprocess
import time
from pathlib import Path

from _common import Agent, report, rss_and_cpu, workdir

IMAGE = "plum-test/base:bookworm"


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def dockerd_pid() -> int | None:
    try:
        return int(Path("/var/run/docker.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--apps", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = workdir("docker-idle")
    node = f"bench-{secrets.token_hex(3)}"
    agent = Agent(root / "agent", env={"AGENT_NODE_ID": node, "AGENT_RUN_MODE": "process"}).start()
    assert agent.proc is not None
    try:
        time.sleep(1)
        rss_before, _ = rss_and_cpu(agent.proc.pid)
        for i in range(args.apps):
            agent.deploy(f"idle{i}", spec={"image": IMAGE, "start_cmd": "exec sleep 100000", "stop_timeout": 1})
        apps = agent.request("GET", "/v1/apps")["apps"]  # one status round (usage from cgroups), as a user would
        assert sum(a["phase"] == "Running" for a in apps) == args.apps
        time.sleep(2)
        engine = dockerd_pid()
        _, cpu_before = rss_and_cpu(agent.proc.pid)
        engine_before = rss_and_cpu(engine)[1] if engine else 0.0
        time.sleep(args.duration)
        rss, cpu_after = rss_and_cpu(agent.proc.pid)
        engine_after = rss_and_cpu(engine)[1] if engine else 0.0
        threads = len(list(Path(f"/proc/{agent.proc.pid}/task").iterdir()))
        for i in range(args.apps):
            agent.request("DELETE", f"/v1/apps/idle{i}")
    finally:
        agent.kill_all()
        leftovers = docker("ps", "-aq", "--filter", f"label=plum.node={node}").split()
        if leftovers:
            docker("rm", "-f", *leftovers)
    report(
        f"idle with {args.apps} containers over {args.duration:g}s",
        [
            ("plum-agent RSS (MiB)", rss / 2**20),
            ("plum-agent RSS before any docker app (MiB)", rss_before / 2**20),
            ("plum-agent CPU (% of one core)", round(100 * (cpu_after - cpu_before) / args.duration, 3)),
            ("plum-agent threads", threads),
            (
                "dockerd CPU, same window (% of one core)",
                round(100 * (engine_after - engine_before) / args.duration, 3),
            ),
            ("targets", "agent <= 50 MB RSS, <= 1 % CPU"),
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
