"""The controller at scale: a sweep of simulated agents against one plum-controller, all on loopback.

Starts its own controller (temporary data dir, a free 127.0.0.1 port, an open-file limit raised for
the sweep) and then, for 100, 1000, 3000, 10000 agents (always: 10000 is the target) and on by 5000
more per step while the controller keeps up (p99 <= 50 ms, no error, heartbeats on schedule):

- joins the new nodes (each gets its node token, as a real agent does), sends their first
  heartbeat, deploys one instance per new node and starts it (setup: not measured);
- runs every agent as Plum's agent does (plum/agent/sync.py): a heartbeat POST every
  HEARTBEAT_INTERVAL_SEC (5 s, the controller's default, taken from its answer) after the previous
  one ended, an assignment GET every SYNC_INTERVAL_SEC (5 s) after the previous one ended, each
  request on a new connection with ``connection: close`` (as the agent's HTTP client), and one
  SSE stream (/v1/stream?nodeId=...) held open for the whole step;
- measures a steady window: latency of every request (connect to the end of the answer), the
  request count, errors, controller CPU (% of one core) and RSS, and whether every node is still
  Healthy at the end.

The agents run in several generator processes (prebuilt request bytes, no HTTP parsing beyond the
status line), each from its own 127.0.0.x source address so ephemeral ports never run out.

    python bench/controller_load.py                 # the sweep (about 5 minutes)
    python bench/controller_load.py --quick         # 100 and 300 agents, a few seconds each
    python bench/controller_load.py --agents 3000   # one step
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import io
import json
import os
import random
import re
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "agent" / "src"
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(SRC))

from _results import Results  # noqa: E402
from plum.common.multipart import Part, encode_multipart  # noqa: E402

LISTENING = re.compile(rb"listening on http://[^:\s]+:(\d+)")
REQUEST_TIMEOUT = 10.0  # the agent's HTTP client timeout
INTERVAL = 5.0  # HEARTBEAT_INTERVAL_SEC and the agent's SYNC_INTERVAL_SEC, both defaults
P99_LIMIT_MS = 50.0
TARGET_AGENTS = 10_000
SWEEP = (100, 1000, 3000, 10_000)
SWEEP_STEP = 5000
SWEEP_BUDGET_S = 330.0  # no new step starts once this much of the sweep has gone by
AGENTS_PER_WORKER = 2500
FD_WANTED = 262_144


def raise_fd_limit() -> int:
    """The open-file limit as high as allowed (root may lift the hard limit too); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (max(hard, FD_WANTED), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            continue
    return soft


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


# ---- the generator (one process per slice of agents) ------------------------------------------


class Call:
    """One request on a new connection: connect, send the prebuilt bytes, read until the server closes."""

    __slots__ = ("due", "head", "kind", "measured", "node", "raw", "sock", "t0", "timer")

    def __init__(self, kind: str, node: str, raw: bytes) -> None:
        self.kind, self.node, self.raw = kind, node, raw
        self.sock: Optional[socket.socket] = None
        self.head = b""
        self.t0 = self.due = 0.0
        self.measured = False
        self.timer: Optional[asyncio.TimerHandle] = None


@dataclass
class Worker:
    """Its agents as plain callbacks on one event loop: no task, coroutine or parser per request."""

    port: int
    source: str
    start: float
    measure_from: float
    measure_to: float
    latencies: dict[str, array] = field(default_factory=lambda: {"heartbeat": array("d"), "assignments": array("d")})
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    lag: array = field(default_factory=lambda: array("d"))
    stream_bytes: int = 0
    streams: list[socket.socket] = field(default_factory=list)
    stopping: bool = False
    active: int = 0

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)

    def _socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        # the port is chosen at connect (one source address serves every destination port)
        sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1)
        sock.bind((self.source, 0))
        return sock

    def fire(self, call: Call) -> None:
        now = time.monotonic()
        if now >= self.measure_to:
            self.active -= 1
            if not self.active:
                self.finished.set_result(None)
            return
        call.measured = self.measure_from <= now
        if call.measured:
            self.lag.append(now - call.due)
        call.t0, call.head = now, b""
        sock = call.sock = self._socket()
        err = sock.connect_ex(("127.0.0.1", self.port))
        if err not in (0, errno.EINPROGRESS):
            self.fail(call, f"connect: {os.strerror(err)}")
            return
        self.loop.add_writer(sock.fileno(), self.writable, call)
        call.timer = self.loop.call_later(REQUEST_TIMEOUT, self.fail, call, "timed out")

    def writable(self, call: Call) -> None:
        sock = call.sock
        assert sock is not None
        self.loop.remove_writer(sock.fileno())
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.fail(call, f"connect: {os.strerror(err)}")
            return
        try:
            sock.send(call.raw)
        except OSError as exc:
            self.fail(call, f"send: {exc}")
            return
        self.loop.add_reader(sock.fileno(), self.readable, call)

    def readable(self, call: Call) -> None:
        sock = call.sock
        assert sock is not None
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(call, f"recv: {exc}")
            return
        if data:
            if len(call.head) < 16:
                call.head += data
            return
        elapsed = time.monotonic() - call.t0
        self.close(call)
        if call.measured:
            self.latencies[call.kind].append(elapsed)
            if not call.head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                self.error(f"{call.kind} {call.node}: {call.head[:16]!r}")
        self.again(call)

    def close(self, call: Call) -> None:
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        if call.sock is not None:
            self.loop.remove_reader(call.sock.fileno())
            self.loop.remove_writer(call.sock.fileno())
            call.sock.close()
            call.sock = None

    def fail(self, call: Call, why: str) -> None:
        self.close(call)
        if call.measured:
            self.error(f"{call.kind} {call.node}: {why}")
        self.again(call)

    def again(self, call: Call) -> None:
        """The agent's timer: the next call INTERVAL after this one ended (plum/agent/sync.py)."""
        call.due = time.monotonic() + INTERVAL
        self.loop.call_at(call.due, self.fire, call)

    def open_stream(self, node: str, token: str) -> None:
        raw = (
            f"GET /v1/stream?nodeId={node} HTTP/1.1\r\nhost: 127.0.0.1:{self.port}\r\nuser-agent: plum-agent\r\n"
            f"accept: text/event-stream\r\nauthorization: Bearer {token}\r\n\r\n"
        ).encode()
        sock = self._socket()
        err = sock.connect_ex(("127.0.0.1", self.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.error(f"stream {node}: connect: {os.strerror(err)}")
            return
        self.loop.add_writer(sock.fileno(), self.stream_connected, sock, node, raw)

    def stream_connected(self, sock: socket.socket, node: str, raw: bytes) -> None:
        self.loop.remove_writer(sock.fileno())
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        try:
            if err:
                raise OSError(err, os.strerror(err))
            sock.send(raw)
        except OSError as exc:
            sock.close()
            self.error(f"stream {node}: {exc}")
            return
        self.streams.append(sock)
        self.loop.add_reader(sock.fileno(), self.stream_data, sock, node)

    def stream_data(self, sock: socket.socket, node: str) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.stream_bytes += len(data)
        if not data:
            self.loop.remove_reader(sock.fileno())
            if not self.stopping:
                self.error(f"stream {node}: closed by the controller")

    async def run(self, agents: list[tuple[str, str]]) -> None:
        self.loop = asyncio.get_running_loop()
        self.finished: asyncio.Future[None] = self.loop.create_future()
        ramp = self.measure_from - self.start - INTERVAL  # streams open before the first full interval
        common = f"host: 127.0.0.1:{self.port}\r\nuser-agent: plum-agent\r\nconnection: close\r\n"
        for node, token in agents:
            hb_body = json.dumps({"nodeId": node, "ip": "127.0.0.1"}).encode()
            auth = f"authorization: Bearer {token}\r\n"
            heartbeat = (
                f"POST /v1/nodes/heartbeat HTTP/1.1\r\n{common}{auth}content-type: application/json\r\n"
                f"content-length: {len(hb_body)}\r\n\r\n"
            ).encode() + hb_body
            poll = f"GET /v1/assignments?nodeId={node} HTTP/1.1\r\n{common}{auth}\r\n".encode()
            self.loop.call_at(self.start + random.uniform(0, max(0.1, ramp)), self.open_stream, node, token)
            for call in (Call("heartbeat", node, heartbeat), Call("assignments", node, poll)):
                call.due = self.start + random.uniform(0, INTERVAL)
                self.loop.call_at(call.due, self.fire, call)
                self.active += 1
        await self.finished
        self.stopping = True
        for sock in self.streams:
            self.loop.remove_reader(sock.fileno())
            sock.close()


def worker_main(spec_path: str) -> int:
    raise_fd_limit()
    spec = json.loads(Path(spec_path).read_text())
    worker = Worker(spec["port"], spec["source"], spec["start"], spec["measure_from"], spec["measure_to"])
    asyncio.run(worker.run([tuple(a) for a in spec["agents"]]))  # type: ignore[misc]
    out = Path(spec["out"])
    with out.open("wb") as fh:
        meta = {
            "errors": worker.errors,
            "error_samples": worker.error_samples,
            "streams": len(worker.streams),
            "stream_bytes": worker.stream_bytes,
            "counts": {k: len(v) for k, v in worker.latencies.items()},
            "lag": len(worker.lag),
        }
        head = json.dumps(meta).encode()
        fh.write(len(head).to_bytes(4, "little") + head)
        for kind in ("heartbeat", "assignments"):
            worker.latencies[kind].tofile(fh)
        worker.lag.tofile(fh)
    return 0


def read_worker(path: Path) -> tuple[dict[str, Any], dict[str, list[float]], list[float]]:
    raw = path.read_bytes()
    size = int.from_bytes(raw[:4], "little")
    meta = json.loads(raw[4 : 4 + size])
    values = array("d")
    values.frombytes(raw[4 + size :])
    at = 0
    lat: dict[str, list[float]] = {}
    for kind in ("heartbeat", "assignments"):
        count = meta["counts"][kind]
        lat[kind] = values[at : at + count].tolist()
        at += count
    return meta, lat, values[at : at + meta["lag"]].tolist()


# ---- the controller and the setup ---------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def app_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("start.sh", "#!/bin/sh\nexec sleep 1000\n")
        zf.writestr("meta.ini", "name=loadapp\nversion=1.0.0\n")
    return buf.getvalue()


def start_controller(data_dir: Path, tokens: tuple[str, str]) -> tuple[subprocess.Popen[bytes], int, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTROLLER_", "HEARTBEAT_", "AUTO_MIGRATION"))}
    env.update(
        {
            "PYTHONPATH": str(SRC) + os.pathsep + env.get("PYTHONPATH", ""),
            "CONTROLLER_ADDR": "127.0.0.1:0",
            "CONTROLLER_DATA_DIR": str(data_dir),
            "CONTROLLER_MAX_CONNECTIONS": str(FD_WANTED),  # the listener caps it below the open-file limit
            "CONTROLLER_LOG_LEVEL": "warning",
        }
    )
    # The tokens go in a private --config file: a daemon refuses them in its environment.
    config = data_dir.parent / "controller.env"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"CONTROLLER_AGENT_TOKEN={tokens[0]}\nCONTROLLER_OPERATOR_TOKEN={tokens[1]}\n")
    log_path = data_dir.parent / "controller.log"
    command = [sys.executable, "-m", "plum.controller.main", "--config", str(config)]
    env["CONTROLLER_LOG_LEVEL"] = "info"  # the 'listening on' line is info
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=log, preexec_fn=raise_fd_limit)  # noqa: PLW1509
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"controller exited with {proc.returncode}:\n{log_path.read_text()}")
        match = LISTENING.search(log_path.read_bytes())
        if match:
            return proc, int(match.group(1)), log_path
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("controller did not start within 20 s")


async def call(port: int, token: str, method: str, path: str, body: Optional[bytes] = None, ctype: str = "") -> Any:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\nconnection: close\r\n"
    if body is not None:
        head += f"content-type: {ctype or 'application/json'}\r\ncontent-length: {len(body)}\r\n"
    writer.write(head.encode() + b"\r\n" + (body or b""))
    raw = await asyncio.wait_for(reader.read(), 120)
    writer.close()
    head_raw, _, data = raw.partition(b"\r\n\r\n")
    status = int(head_raw.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head_raw.lower():
        data = dechunk(data)
    if status >= 300:
        raise SystemExit(f"{method} {path}: {status} {data[:300]!r}")
    return json.loads(data) if data.strip() else None


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if not size:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


async def setup(port: int, tokens: tuple[str, str], nodes: list[str], artifact: str) -> dict[str, str]:
    """The new nodes join (their own token) and send a first heartbeat; one instance each is deployed
    and started. Not measured."""
    limiter = asyncio.Semaphore(32)
    node_tokens: dict[str, str] = {}

    async def join(node: str) -> None:
        async with limiter:
            answer = await call(port, tokens[0], "POST", f"/v1/nodes/{node}/join")
            node_tokens[node] = answer["nodeToken"]
            body = json.dumps({"nodeId": node, "ip": "127.0.0.1"}).encode()
            await call(port, node_tokens[node], "POST", "/v1/nodes/heartbeat", body)

    await asyncio.gather(*(join(n) for n in nodes))
    spec = {"name": f"load-{nodes[0]}", "entries": [{"artifactUrl": artifact, "replicas": dict.fromkeys(nodes, 1)}]}
    reply = await call(port, tokens[1], "POST", "/v1/deployments", json.dumps(spec).encode())
    await call(port, tokens[1], "POST", f"/v1/deployments/{reply['deploymentId']}?action=start")
    return node_tokens


async def upload(port: int, operator: str) -> str:
    body, ctype = encode_multipart([Part("file", app_zip(), "app.zip", "application/zip")])
    return str((await call(port, operator, "POST", "/v1/apps/upload", body, ctype))["url"])


# ---- one step -------------------------------------------------------------------------------------


@dataclass
class Step:
    agents: int
    window_s: float
    latencies: list[float]
    by_kind: dict[str, list[float]]
    errors: int
    error_samples: list[str]
    expected: int
    cpu_percent: float
    rss_mib: float
    unhealthy: int
    streams: int
    lag_p99_ms: float
    workers: int
    setup_s: float

    def pct(self, q: float, kind: Optional[str] = None) -> float:
        values = self.by_kind[kind] if kind else self.latencies
        return percentile(values, q) * 1000

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def behind(self) -> bool:
        """Fewer requests than the schedule asks (5% slack for the window's edges), or a node gone Unhealthy."""
        return self.requests < 0.95 * self.expected or self.unhealthy > 0

    @property
    def broke(self) -> Optional[str]:
        if self.errors:
            return f"{self.errors} errors"
        if self.pct(99) > P99_LIMIT_MS:
            return f"p99 {self.pct(99):.1f} ms > {P99_LIMIT_MS:g} ms"
        if self.behind:
            return f"behind schedule ({self.requests} of {self.expected} requests, {self.unhealthy} nodes Unhealthy)"
        return None


def run_step(
    tmp: Path,
    proc: subprocess.Popen[bytes],
    port: int,
    operator: str,
    agents: list[tuple[str, str]],
    window: float,
    setup_s: float,
) -> Step:
    n = len(agents)
    workers = max(1, min(4, -(-n // AGENTS_PER_WORKER)))
    ramp = min(6.0, 1.0 + n / 2500)
    start = time.monotonic() + 1.0 + n / 20000  # the workers' own start-up
    measure_from = start + ramp + INTERVAL
    measure_to = measure_from + window
    procs = []
    outs = []
    for w in range(workers):
        out = tmp / f"worker-{w}.bin"
        spec = tmp / f"worker-{w}.json"
        spec.write_text(
            json.dumps(
                {
                    "port": port,
                    "source": f"127.0.0.{10 + w}",
                    "start": start,
                    "measure_from": measure_from,
                    "measure_to": measure_to,
                    "agents": agents[w::workers],
                    "out": str(out),
                }
            )
        )
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", str(spec)]))
        outs.append(out)
    time.sleep(max(0.0, measure_from - time.monotonic()))
    cpu0, wall0 = proc_cpu_seconds(proc.pid), time.monotonic()
    time.sleep(max(0.0, measure_to - time.monotonic()))
    cpu1, wall1 = proc_cpu_seconds(proc.pid), time.monotonic()
    rss = proc_rss_mib(proc.pid)
    nodes = asyncio.run(call(port, operator, "GET", "/v1/nodes"))
    unhealthy = sum(1 for node in nodes if node["health"] != "Healthy")
    for p in procs:
        if p.wait(REQUEST_TIMEOUT * 3 + 30) != 0:
            raise SystemExit(f"a load generator failed ({p.returncode})")
    errors, samples, streams = 0, [], 0
    by_kind: dict[str, list[float]] = {"heartbeat": [], "assignments": []}
    lag: list[float] = []
    for out in outs:
        meta, lat, lags = read_worker(out)
        errors += meta["errors"]
        samples += meta["error_samples"]
        streams += meta["streams"]
        for kind, values in lat.items():
            by_kind[kind] += values
        lag += lags
    for values in by_kind.values():
        values.sort()
    lag.sort()
    everything = sorted(by_kind["heartbeat"] + by_kind["assignments"])
    if streams < n:
        errors += n - streams
        samples.append(f"{n - streams} SSE streams not open")
    return Step(
        agents=n,
        window_s=window,
        latencies=everything,
        by_kind=by_kind,
        errors=errors,
        error_samples=samples[:5],
        expected=int(2 * n * window / INTERVAL),
        cpu_percent=100 * (cpu1 - cpu0) / (wall1 - wall0),
        rss_mib=rss,
        unhealthy=unhealthy,
        streams=streams,
        lag_p99_ms=percentile(lag, 99) * 1000,
        workers=workers,
        setup_s=setup_s,
    )


def window_for(n: int, quick: bool) -> float:
    if quick:
        return 4.0
    return 15.0 if n <= 3000 else 10.0


def sweep_sizes(args: argparse.Namespace) -> list[int]:
    if args.agents:
        return [args.agents]
    if args.quick:
        return [100, 300]
    return [*SWEEP, *range(SWEEP[-1] + SWEEP_STEP, 200_001, SWEEP_STEP)]


def sweep(args: argparse.Namespace) -> tuple[list[Step], Optional[Step], dict[str, Any]]:
    began = time.monotonic()
    tokens = (secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    steps: list[Step] = []
    broke: Optional[Step] = None
    facts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="plum-bench-ctl-") as tmp_name:
        tmp = Path(tmp_name)
        proc, port, log_path = start_controller(tmp / "data", tokens)
        try:
            facts["controller open-file limit"] = (
                Path(f"/proc/{proc.pid}/limits").read_text().split("Max open files")[1].split()[0]
            )
            artifact = asyncio.run(upload(port, tokens[1]))
            agents: list[tuple[str, str]] = []
            for n in sweep_sizes(args):
                if steps and time.monotonic() - began > SWEEP_BUDGET_S:
                    facts["sweep stopped"] = f"time budget ({SWEEP_BUDGET_S:g} s) spent before {n} agents"
                    break
                t0 = time.monotonic()
                new = [f"node-{i:05d}" for i in range(len(agents), n)]
                joined = asyncio.run(setup(port, tokens, new, artifact))
                agents += [(node, joined[node]) for node in new]
                step = run_step(tmp, proc, port, tokens[1], agents, window_for(n, args.quick), time.monotonic() - t0)
                print(step_line(step), flush=True)
                steps.append(step)
                if step.broke and broke is None:
                    broke = step
                if step.broke and n >= SWEEP[-1]:  # the fixed steps always run: 10000 is the target
                    break
                if proc.poll() is not None:
                    raise SystemExit(f"the controller died:\n{log_path.read_text()[-3000:]}")
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if args.keep_log:
                Path(args.keep_log).write_bytes(log_path.read_bytes())
    facts["sweep wall time (s)"] = round(time.monotonic() - began, 1)
    return steps, broke, facts


def step_line(step: Step) -> str:
    return (
        f"{step.agents:>6} agents {step.requests:>7} req {step.pct(50):>7.2f} {step.pct(95):>7.2f} "
        f"{step.pct(99):>7.2f} {step.pct(100):>8.2f} ms  err {step.errors:<4} CPU {step.cpu_percent:5.1f}%  "
        f"RSS {step.rss_mib:6.1f} MiB  streams {step.streams}  unhealthy {step.unhealthy}  "
        f"timer lag p99 {step.lag_p99_ms:.1f} ms  setup {step.setup_s:.1f} s"
        + (f"  BROKE: {step.broke}" if step.broke else "")
        + "".join(f"\n      e.g. {e}" for e in step.error_samples)
    )


METHOD = (
    "One plum-controller (SQLite in a temporary directory) and simulated agents on loopback, in {workers} "
    "generator processes. Each agent behaves as plum/agent/sync.py: a heartbeat POST every 5 s "
    "(HEARTBEAT_INTERVAL_SEC) and an assignment GET every 5 s (SYNC_INTERVAL_SEC), each timed from the connect "
    "to the end of the answer on a new connection (the agent's client sends connection: close), plus one SSE "
    "stream held open per agent; every node has joined (its own token) and runs one instance of a started "
    "deployment. Steps of 100, 1000, 3000, 10000 agents (always), then +5000 until p99 > 50 ms, an error, or "
    "heartbeats falling behind (fewer requests than scheduled or a node Unhealthy); each step measures a steady window "
    "({windows}) after its streams opened and one full interval ran. Controller CPU (% of one core) and RSS "
    "from /proc over the window. The machine has {cpus} cores shared by the controller and the generators."
)


def main(argv: Optional[list[str]] = None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--worker":
        return worker_main(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 and 300 agents, a few seconds each")
    parser.add_argument("--agents", type=int, help="one step of this many agents instead of the sweep")
    parser.add_argument("--out", help="write the results (JSON, bench/_results.py) here")
    parser.add_argument("--keep-log", metavar="FILE", help="copy the controller's log here")
    args = parser.parse_args(argv)
    if args.agents is not None and not 1 <= args.agents <= 100_000:
        parser.error("--agents must be between 1 and 100000")
    raise_fd_limit()
    print(f"{'':>13}{'':>12}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>9}")
    steps, broke, facts = sweep(args)
    windows = sorted({s.window_s for s in steps})
    results = Results(
        "controller_scale",
        "The controller at scale",
        method=METHOD.format(
            workers="up to 4" if len(steps) > 1 else str(steps[0].workers),
            windows=" or ".join(f"{w:g} s" for w in windows)
            + (" (the shorter from 10000 agents on)" if len(windows) > 1 else ""),
            cpus=os.cpu_count(),
        ),
    )
    for step in steps:
        n = step.agents
        target = P99_LIMIT_MS if n == TARGET_AGENTS else None
        results.figure(f"p50 latency, {n} agents", round(step.pct(50), 2), unit="ms")
        results.figure(f"p99 latency, {n} agents", round(step.pct(99), 2), unit="ms", target_max=target)
        results.figure(f"controller CPU, {n} agents", round(step.cpu_percent, 1), unit="%")
        results.figure(f"controller RSS, {n} agents", round(step.rss_mib, 1), unit="MiB")
    xs = [float(s.agents) for s in steps]
    for q, label in ((50, "p50"), (95, "p95"), (99, "p99")):
        ys = [round(s.pct(q), 2) for s in steps]
        results.add_curve(label, f"{label} latency", xs, ys, "simulated agents", "latency (ms)")
    last_ok = [s.agents for s in steps if not s.broke and (broke is None or s.agents < broke.agents)]
    if broke is not None:
        facts["break point"] = f"{broke.agents} agents ({broke.broke}); kept up at {last_ok[-1] if last_ok else 0}"
    else:
        facts["break point"] = f"not reached: kept up at every step up to {steps[-1].agents} agents"
    facts["requests per step"] = {str(s.agents): s.requests for s in steps}
    facts["errors per step"] = {str(s.agents): s.errors for s in steps}
    facts["max latency per step (ms)"] = {str(s.agents): round(s.pct(100), 1) for s in steps}
    facts["generator timer lag p99 per step (ms)"] = {str(s.agents): round(s.lag_p99_ms, 1) for s in steps}
    facts["python"] = sys.version.split()[0]
    results.facts.update(facts)
    results.save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
