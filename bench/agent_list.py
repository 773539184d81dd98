"""GET /v1/apps with 200 apps: latency of the full status list (with CPU and memory per app).

Anchor, same run: `supervisorctl status` over the same 200 programs."""

from __future__ import annotations

import argparse
import time

from _common import Agent, Supervisord, make_zip, percentile, report, workdir

SCRIPT = "#!/bin/sh\nexec sleep 100000\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = workdir("list")
    agent = Agent(root / "agent").start()
    artifact = make_zip(root / "a.zip", {"start.sh": (SCRIPT, 0o755), "meta.ini": "name=a\nversion=1\n"})
    timings = []
    try:
        for i in range(args.apps):
            agent.deploy(f"app{i}", artifact)
        for _ in range(args.requests):
            started = time.perf_counter()
            apps = agent.request("GET", "/v1/apps")["apps"]
            timings.append(time.perf_counter() - started)
            assert len(apps) == args.apps
        for i in range(args.apps):
            agent.request("DELETE", f"/v1/apps/app{i}")
    finally:
        agent.kill_all()

    script = root / "a.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    sup = Supervisord(root, {f"app{i}": {"command": str(script)} for i in range(args.apps)}).start()
    anchor = []
    try:
        time.sleep(3)
        for _ in range(10):
            started = time.perf_counter()
            sup.ctl("status")
            anchor.append(time.perf_counter() - started)
    finally:
        sup.stop()
    report(
        f"GET /v1/apps with {args.apps} apps (ms)",
        [
            ("plum-agent p50", percentile(timings, 50) * 1000),
            ("plum-agent p95", percentile(timings, 95) * 1000),
            ("supervisorctl status p50", percentile(anchor, 50) * 1000),
            ("target", "agent <= 50 ms"),
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
