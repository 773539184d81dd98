"""Crash to restart of a container: the agent's Docker runtime against Docker's own --restart=always.

Four shapes, each with --samples apps on the agent and as many twins under Docker's own restart policy:
a zip app in the base image and an image app, each either killed from outside (SIGKILL to the
container's init from the host) after a run of at least 10 s, or exiting by itself with code 1. A twin
is `docker run --restart=always` with what the agent gave its app's container: the same image,
command, init, memory and CPU limits, log settings and mount point (a directory of its own).

The time runs from the kill (taken just before it is sent) or from the app's last line before its exit,
to the first line of the restarted app; both are written by `date` into the mounted directory, so both
sides pay the same costs: noticing the exit, then starting the container again. Samples of the agent
and of Docker alternate, so a busy moment of the machine hits both alike."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import Agent, make_zip, percentile, report, wait_until, workdir

IMAGE = "plum-test/base:bookworm"
LONG_RUN = 10.5  # Docker resets its restart back-off after a run of 10 s
SPACING = 1.0  # seconds between two exits of the self-exit shapes
# Waits for the bench to write when to exit (a file in the mount), then sleeps until then.
WAIT_FOR_EXIT_TIME = (
    "python3 -c 'import os, time\n"
    'path = "{mark}/exit_at"\n'
    "while not os.path.exists(path): time.sleep(0.05)\n"
    "time.sleep(max(0.0, float(open(path).read()) - time.time()))'"
)


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def script(mark: str, killed: bool) -> str:
    """The app: on its restart, one line first thing; on its first run, either sleep or exit 1 when told."""
    first_run_end = "exec sleep 1000" if killed else WAIT_FOR_EXIT_TIME.format(mark=mark)
    return (
        f"if [ -e {mark}/ran ]; then date +%s.%N >> {mark}/start; exec sleep 1000; fi\n"
        f"touch {mark}/ran\n{first_run_end}\ndate +%s.%N > {mark}/exit; exit 1\n"
    )


@dataclass(frozen=True)
class Shape:
    name: str
    zip_app: bool
    killed: bool

    @property
    def mark(self) -> str:
        return "/app" if self.zip_app else "/app/data"  # a zip app's release is /app, an image app's data dir


SHAPES = (
    Shape("zip app, killed after a long run", zip_app=True, killed=True),
    Shape("image app, killed after a long run", zip_app=False, killed=True),
    Shape("zip app, exits by itself", zip_app=True, killed=False),
    Shape("image app, exits by itself", zip_app=False, killed=False),
)


@dataclass
class Sample:
    """One container to crash: where its marks are, and its container's id (for the kill)."""

    mark_dir: Path
    container: str
    started: float

    def kill(self) -> float:
        pid = int(docker("inspect", "-f", "{{.State.Pid}}", self.container).strip())
        at = time.time()
        os.kill(pid, signal.SIGKILL)
        return at

    def restarted_at(self) -> float:
        def started() -> str:
            path = self.mark_dir / "start"
            return path.read_text() if path.exists() and path.read_text().endswith("\n") else ""

        return float(wait_until(started, timeout=30, what=f"the restart in {self.mark_dir}").split()[0])

    def exited_at(self) -> float:
        return float((self.mark_dir / "exit").read_text())


def mount_source(info: dict[str, Any], destination: str) -> Path:
    return Path(next(m["Source"] for m in info["Mounts"] if m["Destination"] == destination))


class AgentSide:
    """One agent in docker mode for all samples (with container limits, so that the twins get them too)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.node = f"bench-{secrets.token_hex(3)}"
        env = {
            "AGENT_NODE_ID": self.node,
            "AGENT_RUN_MODE": "docker",
            "AGENT_LOG_LEVEL": "info",
            "PLUM_BASE_IMAGE": IMAGE,
            "PLUM_CONTAINER_MEMORY": "256m",
            "PLUM_CONTAINER_CPUS": "1",
        }
        self.agent = Agent(root / "agent", env=env).start()
        self.apps: list[str] = []
        self.count = 0

    def deploy(self, shape: Shape, index: int) -> tuple[Sample, dict[str, Any]]:
        name = f"crash{self.count}"
        self.count += 1
        self.apps.append(name)
        body = script(shape.mark, shape.killed)
        if shape.zip_app:
            artifact = make_zip(
                self.root / f"{name}.zip",
                {"start.sh": ("#!/bin/sh\n" + body, 0o755), "meta.ini": f"name={name}\nversion=1\n"},
            )
            self.agent.deploy(name, artifact, {"stop_timeout": 1})
        else:
            self.agent.deploy(name, spec={"image": IMAGE, "start_cmd": body, "stop_timeout": 1})
        started = time.time()
        ids = docker(
            "ps", "-q", "--no-trunc", "--filter", f"label=plum.node={self.node}", "--filter", f"label=plum.app={name}"
        )
        info = json.loads(docker("inspect", ids.split()[0]))[0]
        return Sample(mount_source(info, shape.mark), info["Id"], started), info

    def remove_apps(self) -> None:
        for name in self.apps:
            self.agent.request("DELETE", f"/v1/apps/{name}")
        self.apps.clear()

    def close(self) -> None:
        self.agent.kill_all()
        leftovers = docker("ps", "-aq", "--filter", f"label=plum.node={self.node}").split()
        if leftovers:
            docker("rm", "-f", *leftovers)


class DockerSide:
    """Twins of the agent's containers under Docker's own restart policy."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.names: list[str] = []
        self.count = 0

    def twin(self, shape: Shape, info: dict[str, Any]) -> Sample:
        mark = self.root / f"twin{self.count}"
        self.count += 1
        source = mount_source(info, shape.mark)
        if shape.zip_app:  # the same release, without the marks of the agent's app
            shutil.copytree(source, mark, ignore=shutil.ignore_patterns("ran", "start", "exit", "exit_at"))
        else:
            mark.mkdir()
        name = f"plum-bench-twin-{secrets.token_hex(4)}"
        self.names.append(name)
        config, host = info["Config"], info["HostConfig"]
        log = host["LogConfig"]
        argv = ["run", "-d", "--name", name, "--restart=always", "-v", f"{mark}:{shape.mark}"]
        argv += ["--memory", str(host["Memory"]), "--memory-swap", str(host["MemorySwap"])]
        argv += ["--cpus", str(host["NanoCpus"] / 1e9), "--log-driver", log["Type"]]
        argv += [f"--log-opt={key}={value}" for key, value in log["Config"].items()]
        argv += ["--init"] if host.get("Init") else []
        argv += ["-w", config["WorkingDir"]] if config.get("WorkingDir") else []
        argv += [config["Image"], *config["Cmd"]]
        container = docker(*argv).strip()
        return Sample(mark, container, time.time())

    def remove_all(self) -> None:
        if self.names:
            docker("rm", "-f", *self.names)
        self.names.clear()


def run_shape(shape: Shape, samples: int, agent: AgentSide, plain: DockerSide) -> tuple[list[float], list[float]]:
    pairs = []
    for index in range(samples):
        sample, info = agent.deploy(shape, index)
        pairs.append((sample, plain.twin(shape, info)))
    ours: list[float] = []
    theirs: list[float] = []
    try:
        if shape.killed:
            time.sleep(max(0.0, max(s.started for pair in pairs for s in pair) + LONG_RUN - time.time()))
            for mine, twin in pairs:
                for sample, gaps in ((mine, ours), (twin, theirs)):
                    killed_at = sample.kill()
                    gaps.append(sample.restarted_at() - killed_at)
                    time.sleep(0.3)  # what follows a restart (log capture, cleanup) is over before the next one
        else:
            first = time.time() + 1.0
            for index, (mine, twin) in enumerate(pairs):
                (mine.mark_dir / "exit_at").write_text(str(first + 2 * index * SPACING))
                (twin.mark_dir / "exit_at").write_text(str(first + (2 * index + 1) * SPACING))
            for mine, twin in pairs:
                ours.append(mine.restarted_at() - mine.exited_at())
                theirs.append(twin.restarted_at() - twin.exited_at())
    finally:
        agent.remove_apps()
        plain.remove_all()
    return ours, theirs


def figures(values: list[float]) -> tuple[float, float, float]:
    return percentile(values, 50) * 1000, percentile(values, 95) * 1000, max(values) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=10, help="samples per shape and side")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = workdir("docker-restart")
    started = time.monotonic()
    agent, plain = AgentSide(root), DockerSide(root)
    rows: list[tuple[str, Any]] = [("samples per shape", args.samples)]
    try:
        for shape in SHAPES:
            ours, theirs = run_shape(shape, args.samples, agent, plain)
            (a50, a95, amax), (d50, d95, dmax) = figures(ours), figures(theirs)
            rows += [
                (f"{shape.name}: plum-agent p50/p95/max", f"{a50:.0f} / {a95:.0f} / {amax:.0f}"),
                (f"{shape.name}: docker --restart=always p50/p95/max", f"{d50:.0f} / {d95:.0f} / {dmax:.0f}"),
                (f"{shape.name}: ratio agent/docker p50, p95", f"{a50 / d50:.2f}, {a95 / d95:.2f}"),
            ]
    finally:
        agent.close()
        plain.remove_all()
    rows += [("target", "ratio < 1.0 in every shape"), ("wall time (s)", time.monotonic() - started)]
    report("container crash to restart (ms)", rows, args.json)


if __name__ == "__main__":
    main()
