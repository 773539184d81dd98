"""Load on one plum-controller from many simulated agents, all on loopback.

Starts its own controller (temporary data dir, a free 127.0.0.1 port), registers ``--agents`` nodes,
deploys a small zip app with ``--replicas-per-node`` instances on every node and starts it, then
runs each agent as Plum's agent loop does: every ``--interval`` seconds (staggered start) a
heartbeat POST and an assignment GET, each agent on its own keep-alive connection. Only the
steady phase (``--duration`` seconds) is measured. Prints p50/p95/p99/max latency, the request count
and the error count as a table, or as JSON with ``--json``.

    python bench/controller_load.py                  # 1000 agents, 60 s
    python bench/controller_load.py --duration 30 --json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from plum.common.multipart import Part, encode_multipart

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "agent" / "src"
LISTENING = re.compile(rb"listening on http://[^:\s]+:(\d+)")
REQUEST_TIMEOUT = 10.0
MAX_AGENTS = 5000
MAX_DURATION = 600


class HTTPFailure(Exception):
    pass


class Connection:
    """A minimal HTTP/1.1 keep-alive client: enough for JSON requests with Content-Length replies."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None

    async def request(self, method: str, path: str, body: Optional[bytes] = None, ctype: str = "") -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n"
        if body is not None:
            head += f"Content-Type: {ctype or 'application/json'}\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        try:
            raw_head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            lines = raw_head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            length = 0
            close = False
            for line in lines[1:]:
                key, _, value = line.partition(":")
                if key.lower() == "content-length":
                    length = int(value)
                elif key.lower() == "connection" and value.strip().lower() == "close":
                    close = True
            data = await asyncio.wait_for(self.reader.readexactly(length), REQUEST_TIMEOUT) if length else b""
        except Exception:
            self.close()
            raise
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"heartbeat": [], "assignments": []})
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary(values: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values]
    return {
        "requests": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2) if ms else 0.0,
        "mean_ms": round(statistics.fmean(ms), 2) if ms else 0.0,
    }


def app_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("start.sh", "#!/bin/sh\nexec sleep 1000\n")
        zf.writestr("meta.ini", "name=loadapp\nversion=1.0.0\nservice=web:http:8080\n")
    return buf.getvalue()


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_controller(data_dir: Path, interval: float, tokens: tuple[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTROLLER_", "HEARTBEAT_", "AUTO_MIGRATION"))}
    env.update(
        {
            "PYTHONPATH": str(SRC) + os.pathsep + env.get("PYTHONPATH", ""),
            "CONTROLLER_ADDR": "127.0.0.1:0",
            "CONTROLLER_DATA_DIR": str(data_dir),
            "HEARTBEAT_INTERVAL_SEC": str(interval),
            "HEARTBEAT_TTL_SEC": str(interval * 3),
            "CONTROLLER_LOG_LEVEL": "info",
        }
    )
    # The tokens go in a private --config file: a daemon refuses them in its environment.
    config = data_dir.parent / "controller.env"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"CONTROLLER_AGENT_TOKEN={tokens[0]}\nCONTROLLER_OPERATOR_TOKEN={tokens[1]}\n")
    log_path = data_dir.parent / "controller.log"
    command = [sys.executable, "-m", "plum.controller.main", "--config", str(config)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"controller exited with {proc.returncode}:\n{log_path.read_text()}")
        match = LISTENING.search(log_path.read_bytes())
        if match:
            return proc, int(match.group(1))
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("controller did not start within 20 s")


async def setup(port: int, tokens: tuple[str, str], agents: list[str], replicas: int) -> None:
    """Nodes join, one app is uploaded and deployed on every node, and started (not measured)."""
    limiter = asyncio.Semaphore(50)

    async def join(node: str) -> None:
        async with limiter:
            conn = Connection(port, tokens[0])
            status, body = await conn.request(
                "POST", "/v1/nodes/heartbeat", json.dumps({"nodeId": node, "ip": "127.0.0.1"}).encode()
            )
            conn.close()
            if status != 200:
                raise SystemExit(f"heartbeat of {node} failed: {status} {body!r}")

    await asyncio.gather(*(join(n) for n in agents))
    op = Connection(port, tokens[1])
    body, ctype = encode_multipart([Part("file", app_zip(), "app.zip", "application/zip")])
    status, reply = await op.request("POST", "/v1/apps/upload", body, ctype)
    if status != 200:
        raise SystemExit(f"upload failed: {status} {reply!r}")
    url = json.loads(reply)["url"]
    if replicas:
        spec = {"name": "load", "entries": [{"artifactUrl": url, "replicas": dict.fromkeys(agents, replicas)}]}
        status, reply = await op.request("POST", "/v1/deployments", json.dumps(spec).encode())
        if status != 200:
            raise SystemExit(f"deployment failed: {status} {reply!r}")
        dep_id = json.loads(reply)["deploymentId"]
        status, reply = await op.request("POST", f"/v1/deployments/{dep_id}?action=start")
        if status != 200:
            raise SystemExit(f"start failed: {status} {reply!r}")
    op.close()


async def agent_loop(
    node: str, port: int, token: str, interval: float, start: float, end: float, stats: Stats, replicas: int
) -> None:
    conn = Connection(port, token)
    heartbeat = json.dumps({"nodeId": node, "ip": "127.0.0.1"}).encode()
    tick = start + random.uniform(0, interval)
    try:
        while True:
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            if time.monotonic() >= end:
                return
            for kind, method, path, body in (
                ("heartbeat", "POST", "/v1/nodes/heartbeat", heartbeat),
                ("assignments", "GET", f"/v1/assignments?nodeId={node}", None),
            ):
                t0 = time.perf_counter()
                try:
                    status, data = await conn.request(method, path, body)
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                    stats.error(f"{kind} {node}: {type(exc).__name__} {exc}")
                    continue
                stats.latencies[kind].append(time.perf_counter() - t0)
                if status != 200:
                    stats.error(f"{kind} {node}: HTTP {status} {data[:200]!r}")
                elif kind == "assignments" and len(json.loads(data)["items"]) != replicas:
                    stats.error(f"{kind} {node}: wrong item count")
            tick += interval
    finally:
        conn.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tokens = (secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    with tempfile.TemporaryDirectory(prefix="plum-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        proc, port = start_controller(data_dir, args.interval, tokens)
        try:
            agents = [f"node-{i:04d}" for i in range(args.agents)]
            t_setup = time.monotonic()
            await setup(port, tokens, agents, args.replicas_per_node)
            setup_s = time.monotonic() - t_setup
            stats = Stats()
            cpu0, wall0 = proc_cpu_seconds(proc.pid), time.monotonic()
            start = time.monotonic()
            end = start + args.duration
            await asyncio.gather(
                *(
                    agent_loop(n, port, tokens[0], args.interval, start, end, stats, args.replicas_per_node)
                    for n in agents
                )
            )
            cpu = proc_cpu_seconds(proc.pid) - cpu0
            wall = time.monotonic() - wall0
            rss = proc_rss_mib(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    everything = stats.latencies["heartbeat"] + stats.latencies["assignments"]
    return {
        "agents": args.agents,
        "duration_s": args.duration,
        "interval_s": args.interval,
        "instances": args.agents * args.replicas_per_node,
        "setup_s": round(setup_s, 2),
        "all": summary(everything),
        "heartbeat": summary(stats.latencies["heartbeat"]),
        "assignments": summary(stats.latencies["assignments"]),
        "errors": stats.errors,
        "error_samples": stats.error_samples,
        "requests_per_s": round(len(everything) / args.duration, 1),
        "controller_cpu_percent": round(100 * cpu / wall, 1) if wall else 0.0,
        "controller_rss_mib": round(rss, 1),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['agents']} agents, {result['instances']} instances, every {result['interval_s']:g} s, "
        f"measured for {result['duration_s']:g} s (setup {result['setup_s']} s)",
        f"{'requests':<12}{'count':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}",
    ]
    for kind in ("heartbeat", "assignments", "all"):
        s = result[kind]
        lines.append(
            f"{kind:<12}{s['requests']:>8}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['max_ms']:>9.2f}"
        )
    lines.append(
        f"errors: {result['errors']}   throughput: {result['requests_per_s']} req/s   "
        f"controller CPU: {result['controller_cpu_percent']}%   RSS: {result['controller_rss_mib']} MiB"
    )
    lines.extend(f"  e.g. {e}" for e in result["error_samples"])
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=1000, help="simulated agents (default 1000)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds (default 60)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between an agent's rounds (default 5)")
    parser.add_argument("--replicas-per-node", type=int, default=1, help="instances deployed on each node (default 1)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 unless p99 <= 50 ms and there are no errors")
    args = parser.parse_args(argv)
    if not 1 <= args.agents <= MAX_AGENTS:
        parser.error(f"--agents must be between 1 and {MAX_AGENTS}")
    if not 1 <= args.duration <= MAX_DURATION:
        parser.error(f"--duration must be between 1 and {MAX_DURATION} seconds")
    if not 0.1 <= args.interval <= 60:
        parser.error("--interval must be between 0.1 and 60 seconds")
    if not 0 <= args.replicas_per_node <= 10:
        parser.error("--replicas-per-node must be between 0 and 10")
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2) if args.json else table(result))
    if args.check and (result["errors"] or result["all"]["p99_ms"] > 50):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
