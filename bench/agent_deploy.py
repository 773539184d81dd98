"""Deploy to Running for a small zip: PUT /v1/apps/{name} until the status says Running.

Anchor, same run: the bare work without an agent (unzip with Python's zipfile + spawn start.sh)."""

from __future__ import annotations

import argparse
import subprocess
import time
import zipfile

from _common import Agent, make_zip, percentile, report, workdir

SCRIPT = "#!/bin/sh\nexec sleep 1000\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = workdir("deploy")
    agent = Agent(root / "agent").start()
    timings, anchor = [], []
    try:
        for i in range(args.samples):
            artifact = make_zip(
                root / f"app{i}.zip", {"start.sh": (SCRIPT, 0o755), "meta.ini": f"name=app\nversion={i}\n"}
            )
            started = time.perf_counter()
            app = agent.deploy(f"app{i}", artifact)["app"]
            if app["phase"] != "Running":
                app = agent.wait_phase(f"app{i}", "Running")
            timings.append(time.perf_counter() - started)
            agent.request("DELETE", f"/v1/apps/app{i}")

            target = root / f"raw{i}"
            started = time.perf_counter()
            with zipfile.ZipFile(artifact) as zf:
                zf.extractall(target)
            (target / "start.sh").chmod(0o755)
            proc = subprocess.Popen(["./start.sh"], cwd=target, start_new_session=True)
            anchor.append(time.perf_counter() - started)
            proc.kill()
            proc.wait()
    finally:
        agent.kill_all()
    p50 = percentile(timings, 50) * 1000
    report(
        "deploy to Running (ms), small zip",
        [
            ("samples", args.samples),
            ("plum-agent p50", p50),
            ("plum-agent p95", percentile(timings, 95) * 1000),
            ("unzip + spawn without agent p50", percentile(anchor, 50) * 1000),
            ("target", "agent p50 <= 150 ms"),
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
