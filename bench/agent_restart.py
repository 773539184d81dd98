"""Crash to restart for a one-off crash: the agent against supervisord (autorestart, startsecs=0).

Each sample is an app that runs briefly, exits 1 once, and stays up after its restart; the time is
from the app's last line before exiting to the first line of the new process (both from `date`, so
the same fork costs are in both figures)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import Agent, Supervisord, make_zip, percentile, report, wait_until, workdir

SCRIPT = """#!/bin/sh
if [ -f "$MARK/crashed" ]; then date +%s.%N >> "$MARK/start"; exec sleep 1000; fi
touch "$MARK/crashed"
sleep 0.3
date +%s.%N > "$MARK/exit"
exit 1
"""


def gap(mark: Path) -> float:
    def started() -> str:
        path = mark / "start"
        return path.read_text() if path.exists() and path.read_text().endswith("\n") else ""

    restarted_at = float(wait_until(started, timeout=15, what=f"restart in {mark}").split()[0])
    return restarted_at - float((mark / "exit").read_text())


def run_agent(root: Path, samples: int) -> list[float]:
    agent = Agent(root / "agent").start()
    artifact = make_zip(root / "crash.zip", {"start.sh": (SCRIPT, 0o755), "meta.ini": "name=crash\nversion=1\n"})
    out = []
    try:
        for i in range(samples):
            mark = root / f"agent-{i}"
            mark.mkdir()
            agent.deploy(f"crash{i}", artifact, {"env": {"MARK": str(mark)}})
            out.append(gap(mark))
            agent.request("DELETE", f"/v1/apps/crash{i}")
    finally:
        agent.kill_all()
    return out


def run_supervisord(root: Path, samples: int) -> list[float]:
    script = root / "crash.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    programs = {}
    for i in range(samples):
        (root / f"sup-{i}").mkdir()
        programs[f"crash{i}"] = {
            "command": str(script),
            "autostart": "false",
            "autorestart": "true",
            "startsecs": "0",
            "environment": f'MARK="{root}/sup-{i}"',
            "stopasgroup": "true",
            "killasgroup": "true",
        }
    sup = Supervisord(root, programs).start()
    out = []
    try:
        for i in range(samples):
            sup.ctl("start", f"crash{i}")
            out.append(gap(root / f"sup-{i}"))
            sup.ctl("stop", f"crash{i}")
    finally:
        sup.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = workdir("restart")
    started = time.monotonic()
    agent = run_agent(root, args.samples)
    sup = run_supervisord(root, args.samples)
    a50, a95 = percentile(agent, 50) * 1000, percentile(agent, 95) * 1000
    s50, s95 = percentile(sup, 50) * 1000, percentile(sup, 95) * 1000
    report(
        "crash to restart (ms), one-off crash",
        [
            ("samples", args.samples),
            ("plum-agent p50", a50),
            ("plum-agent p95", a95),
            ("supervisord p50", s50),
            ("supervisord p95", s95),
            ("ratio p50 agent/supervisord", f"{a50 / s50:.4f}"),
            ("targets", "agent p50 <= 20 ms, p95 <= 50 ms"),
            ("wall time (s)", time.monotonic() - started),
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
