"""Crash to restart of a container: the agent's Docker runtime against Docker's own --restart=always.

Each sample is a container that runs briefly, exits 1 once, and stays up after its restart. The time is
from the app's last line before exiting to the first line of the restarted app, both written by `date`
into a bind-mounted directory (the agent's per-app data dir, /app/data), so both figures include the same
costs: noticing the exit, then starting a container (a new one for the agent, the same one for Docker).
Docker's first restart comes after its fixed 100 ms back-off, which is part of what is compared."""

from __future__ import annotations

import argparse
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

from _common import Agent, percentile, report, wait_until, workdir

IMAGE = "plum-test/base:bookworm"
SCRIPT = (
    "if [ -f /app/data/crashed ]; then date +%s.%N >> /app/data/start; exec sleep 1000; fi; "
    "touch /app/data/crashed; sleep 0.3; date +%s.%N > /app/data/exit; exit 1"
)


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def gap(mark: Path) -> float:
    def started() -> str:
        path = mark / "start"
        return path.read_text() if path.exists() and path.read_text().endswith("\n") else ""

    restarted_at = float(wait_until(started, timeout=20, what=f"restart in {mark}").split()[0])
    return restarted_at - float((mark / "exit").read_text())


class AgentSide:
    """One agent in docker mode for all samples."""

    def __init__(self, root: Path) -> None:
        self.node = f"bench-{secrets.token_hex(3)}"
        self.agent = Agent(root / "agent", env={"AGENT_NODE_ID": self.node, "AGENT_RUN_MODE": "docker"}).start()
        self.count = 0

    def sample(self) -> float:
        name = f"crash{self.count}"
        self.count += 1
        self.agent.deploy(name, spec={"image": IMAGE, "start_cmd": SCRIPT, "stop_timeout": 1})
        try:
            return gap(self.agent.data_dir / "apps" / name / "data")
        finally:
            self.agent.request("DELETE", f"/v1/apps/{name}")

    def close(self) -> None:
        self.agent.kill_all()
        leftovers = docker("ps", "-aq", "--filter", f"label=plum.node={self.node}").split()
        if leftovers:
            docker("rm", "-f", *leftovers)


def docker_sample(root: Path) -> float:
    mark = Path(tempfile.mkdtemp(dir=root, prefix="docker-"))
    name = f"plum-bench-restart-{secrets.token_hex(3)}"
    docker("run", "-d", "--name", name, "--restart=always", "-v", f"{mark}:/app/data", IMAGE, "sh", "-c", SCRIPT)
    try:
        return gap(mark)
    finally:
        docker("rm", "-f", name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = workdir("docker-restart")
    started = time.monotonic()
    agent: list[float] = []
    plain: list[float] = []
    side = AgentSide(root)
    try:
        for _ in range(args.samples):  # interleaved, so a busy moment of the machine hits both alike
            agent.append(side.sample())
            plain.append(docker_sample(root))
    finally:
        side.close()
    a50, a95 = percentile(agent, 50) * 1000, percentile(agent, 95) * 1000
    d50, d95 = percentile(plain, 50) * 1000, percentile(plain, 95) * 1000
    report(
        "container crash to restart (ms)",
        [
            ("samples", args.samples),
            ("plum-agent (docker runtime) p50", a50),
            ("plum-agent (docker runtime) p95", a95),
            ("docker --restart=always p50", d50),
            ("docker --restart=always p95", d95),
            ("ratio p50 agent/docker", round(a50 / d50, 3)),
            ("target", "ratio <= 1.0"),
            ("wall time (s)", time.monotonic() - started),
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
