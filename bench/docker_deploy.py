"""Deploy to Running through the agent's Docker runtime against a plain `docker run -d` of the same image.

Agent side: the time of one PUT /v1/apps/{name} (the agent answers once the container runs), for an image
app and for a small zip app (upload, unpack, container with the release mounted at /app). Docker side, same
run: `docker run -d` of the same image and command through the CLI, the way an operator starts one, and
the same through the Docker SDK (no CLI start-up cost), the stricter anchor. Samples are interleaved."""

from __future__ import annotations

import argparse
import secrets
import subprocess
import time
from typing import Any, Callable

from _common import Agent, make_zip, percentile, report, workdir

IMAGE = "plum-test/base:bookworm"
COMMAND = "exec sleep 1000"


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import docker as sdk  # noqa: PLC0415 - the bench's own anchor; the agent imports it in its process

    client = sdk.from_env()
    root = workdir("docker-deploy")
    node = f"bench-{secrets.token_hex(3)}"
    agent = Agent(root / "agent", env={"AGENT_NODE_ID": node, "AGENT_RUN_MODE": "docker", "PLUM_BASE_IMAGE": IMAGE})
    agent.start()
    artifact = make_zip(
        root / "app.zip", {"start.sh": ("#!/bin/sh\nexec sleep 1000\n", 0o755), "meta.ini": "name=z\nversion=1\n"}
    )
    image_app: list[float] = []
    zip_app: list[float] = []
    cli: list[float] = []
    api: list[float] = []
    started = time.monotonic()
    try:
        for i in range(args.samples):
            spec = {"image": IMAGE, "start_cmd": COMMAND, "stop_timeout": 1}
            image_app.append(timed(agent.deploy, f"img{i}", spec=spec)[0])
            zip_app.append(timed(agent.deploy, f"zip{i}", artifact, {"stop_timeout": 1})[0])
            name = f"plum-bench-deploy-{secrets.token_hex(3)}"
            cli.append(timed(docker, "run", "-d", "--name", name, IMAGE, "sh", "-c", COMMAND)[0])
            docker("rm", "-f", name)
            seconds, container = timed(client.containers.run, IMAGE, ["sh", "-c", COMMAND], detach=True)
            api.append(seconds)
            container.remove(force=True)
            assert agent.app(f"img{i}")["phase"] == "Running" and agent.app(f"zip{i}")["phase"] == "Running"
            agent.request("DELETE", f"/v1/apps/img{i}")
            agent.request("DELETE", f"/v1/apps/zip{i}")
    finally:
        agent.kill_all()
        leftovers = docker("ps", "-aq", "--filter", f"label=plum.node={node}").split()
        if leftovers:
            docker("rm", "-f", *leftovers)
    samples = {"image": image_app, "zip": zip_app, "cli": cli, "api": api}
    ms = {key: (percentile(v, 50) * 1000, percentile(v, 95) * 1000) for key, v in samples.items()}
    report(
        "deploy to Running (ms)",
        [
            ("samples", args.samples),
            ("plum-agent image app p50", ms["image"][0]),
            ("plum-agent image app p95", ms["image"][1]),
            ("plum-agent zip app p50", ms["zip"][0]),
            ("plum-agent zip app p95", ms["zip"][1]),
            ("docker run -d (CLI) p50", ms["cli"][0]),
            ("docker run -d (CLI) p95", ms["cli"][1]),
            ("docker SDK containers.run p50", ms["api"][0]),
            ("ratio p50 image app / docker run", round(ms["image"][0] / ms["cli"][0], 3)),
            ("ratio p50 zip app / docker run", round(ms["zip"][0] / ms["cli"][0], 3)),
            ("ratio p50 image app / SDK run", round(ms["image"][0] / ms["api"][0], 3)),
            ("target", "image app <= 1.2 x docker run"),
            ("wall time (s)", time.monotonic() - started),
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
