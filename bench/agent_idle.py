"""Idle agent with N supervised apps (50 by default): resident memory and CPU averaged over a window.

Anchor, same run: supervisord supervising the same N programs (--no-anchor skips it, to compare two
versions of the agent on the same machine)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import Agent, Supervisord, make_zip, report, rss_and_cpu, workdir

SCRIPT = "#!/bin/sh\nexec sleep 100000\n"


def measure(pid: int, seconds: float) -> tuple[float, float]:
    _, cpu_before = rss_and_cpu(pid)
    time.sleep(seconds)
    rss, cpu_after = rss_and_cpu(pid)
    return rss / 2**20, 100 * (cpu_after - cpu_before) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-anchor", action="store_true", help="measure the agent alone")
    args = parser.parse_args()
    root = workdir("idle")
    agent = Agent(root / "agent").start()
    artifact = make_zip(root / "idle.zip", {"start.sh": (SCRIPT, 0o755), "meta.ini": "name=idle\nversion=1\n"})
    try:
        for i in range(args.apps):
            agent.deploy(f"idle{i}", artifact)
        agent.request("GET", "/v1/apps")  # one status round, as a user would
        time.sleep(2)
        agent_rss, agent_cpu = measure(agent.proc.pid, args.duration)
        for i in range(args.apps):
            agent.request("DELETE", f"/v1/apps/idle{i}")
    finally:
        agent.kill_all()
    rows = [("plum-agent RSS (MiB)", agent_rss), ("plum-agent CPU (% of one core)", round(agent_cpu, 3))]
    if not args.no_anchor:
        rows += measure_supervisord(root, args.apps, args.duration)
    rows.append(("targets", "agent <= 30 MiB RSS, <= 1 % CPU"))
    report(f"idle with {args.apps} apps over {args.duration:g}s", rows, args.json)


def measure_supervisord(root: Path, apps: int, duration: float) -> list[tuple[str, float]]:
    script = root / "idle.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    programs = {f"idle{i}": {"command": str(script), "autorestart": "true"} for i in range(apps)}
    sup = Supervisord(root, programs).start()
    try:
        time.sleep(2)
        assert sup.proc is not None
        sup_rss, sup_cpu = measure(sup.proc.pid, duration)
    finally:
        sup.stop()
    return [("supervisord RSS (MiB)", sup_rss), ("supervisord CPU (% of one core)", round(sup_cpu, 3))]


if __name__ == "__main__":
    main()
