"""Hostile HTTP clients against a real agent and a real controller, each under a 1024 open-files limit.

- slowloris: 1100 connections per daemon that send one more header line every 2 s and never finish
  their request (more connections than the daemon has descriptors). healthz must keep answering,
  the log must stay quiet, and a process app killed during the flood must be restarted.
- a descriptor shortage (the running agent's limit lowered below what it holds, under 200
  connections): accepts back off with one log line instead of one per attempt, an app killed
  meanwhile is retried rather than Failed, and all is well again once descriptors are back.
- bad request bodies: a Content-Length over the cap (refused before the body is sent), a broken
  chunk header, a client leaving mid-body, JSON nested 100k deep: a 4xx JSON answer each, never a
  500 and never a traceback in the daemon's log.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, Optional

import pytest

from support.agent import Agent, app_zip
from support.controller import ControllerProc

NOFILE = 1024
FLOOD_CONNECTIONS = 1100
FLOOD_SECONDS = 12.0
DRIP_EVERY = 2.0
SHORTAGE_SECONDS = 3.0
PROBE_TIMEOUT = 2.0
FD_ERROR = re.compile(r"too many open files|EMFILE", re.IGNORECASE)
# Sets the open-file limit (soft and hard, as systemd's LimitNOFILE) and becomes the daemon.
LIMIT_THEN_EXEC = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])"
)


def limited(command: list[str]) -> list[str]:
    return [sys.executable, "-c", LIMIT_THEN_EXEC, str(NOFILE), *command]


class LimitedAgent(Agent):
    @property
    def command(self) -> list[str]:
        return limited(super().command)


class LimitedController(ControllerProc):
    @property
    def command(self) -> list[str]:
        return limited(super().command)


@pytest.fixture(scope="module")
def room_for_the_flood() -> None:
    """This process holds two floods of sockets: raise its own soft limit (not the daemons')."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * FLOOD_CONNECTIONS + 512
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs {wanted} open files in the test process; the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory, room_for_the_flood: None) -> Iterator[tuple[Agent, Any]]:
    root = tmp_path_factory.mktemp("flood")
    controller = LimitedController(root / "controller").start()
    agent = LimitedAgent(root / "agent").start()
    try:
        yield agent, controller
    finally:
        agent.kill_all()
        controller.stop()


class SlowConnection:
    """One connection that sends one more header line per drip and never ends its request head."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.sock.connect_ex(("127.0.0.1", port))
        self.started = False

    def drip(self) -> bool:
        """False once the server has closed the connection."""
        line = b"X-Drip: 1\r\n" if self.started else b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        try:
            self.sock.send(line)
        except (BlockingIOError, InterruptedError):
            return True  # still connecting (the server's backlog is full): again next round
        except OSError:
            return False
        self.started = True
        return True


class Slowloris(threading.Thread):
    """count slow connections dripping every DRIP_EVERY seconds; one the server closes is opened
    again (an attacker keeps up the pressure)."""

    def __init__(self, port: int, count: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.count = count
        self.halt = threading.Event()
        self.reopened = 0
        self.conns: list[SlowConnection] = []

    def run(self) -> None:
        self.conns = [SlowConnection(self.port) for _ in range(self.count)]
        while not self.halt.is_set():
            for i, conn in enumerate(self.conns):
                if not conn.drip():
                    conn.sock.close()
                    self.conns[i] = SlowConnection(self.port)
                    self.reopened += 1
            self.halt.wait(DRIP_EVERY)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        for conn in self.conns:
            conn.sock.close()


def probe(
    port: int, path: str, token: Optional[str] = None, timeout: float = PROBE_TIMEOUT
) -> tuple[Optional[int], float]:
    """(status or None when it failed, seconds taken)."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    except (OSError, http.client.HTTPException):  # refused, reset, timed out or cut mid-answer
        return None, time.monotonic() - started
    finally:
        conn.close()


def fd_error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if FD_ERROR.search(line)]


def test_a_slowloris_flood_leaves_healthz_answering_logs_quiet_and_apps_supervised(daemons, tmp_path):
    agent, controller = daemons
    agent.deploy("victim", app_zip(tmp_path / "victim.zip", "victim"))
    first_pid = agent.wait_phase("victim", "Running")["pid"]
    floods = [Slowloris(agent.port, FLOOD_CONNECTIONS), Slowloris(controller.port, FLOOD_CONNECTIONS)]
    for flood in floods:
        flood.start()
    probes: dict[str, list[tuple[Optional[int], float]]] = {"agent": [], "controller": []}
    phases: list[tuple[str, Optional[int]]] = []
    killed = False
    started = time.monotonic()
    try:
        while time.monotonic() - started < FLOOD_SECONDS:
            probes["agent"].append(probe(agent.port, "/healthz"))
            probes["controller"].append(probe(controller.port, "/healthz"))
            if not killed and time.monotonic() - started > 3:
                os.killpg(first_pid, signal.SIGKILL)  # the app dies while every descriptor is wanted
                killed = True
            if killed:
                phases.append(app_phase(agent, "victim"))
            time.sleep(0.2)
    finally:
        for flood in floods:
            flood.stop()

    worst = {name: max(seconds for _, seconds in got) for name, got in probes.items()}
    failed = {name: [p for p in got if p[0] != 200] for name, got in probes.items()}
    agent_log, controller_log = agent.log_path.read_text(errors="replace"), controller.log()
    fd_lines = {"agent": len(fd_error_lines(agent_log)), "controller": len(fd_error_lines(controller_log))}
    print(
        f"\nslowloris {FLOOD_CONNECTIONS} x 2 for {FLOOD_SECONDS:g}s: "
        f"probes {len(probes['agent'])} per daemon, slowest healthz agent {worst['agent']:.3f}s "
        f"controller {worst['controller']:.3f}s, failed {len(failed['agent'])}/{len(failed['controller'])}, "
        f"'too many open files' lines agent {fd_lines['agent']} controller {fd_lines['controller']}, "
        f"connections reopened by the attacker {floods[0].reopened}/{floods[1].reopened}, "
        f"victim phases {sorted({p for p, _ in phases})}"
    )
    assert not failed["agent"] and not failed["controller"], failed
    assert max(fd_lines.values()) <= 5, fd_lines
    assert "Traceback" not in agent_log and "Traceback" not in controller_log
    assert floods[0].reopened and floods[1].reopened, "the caps never closed a slow connection"
    assert "Failed" not in {p for p, _ in phases}, phases
    restarted = [pid for phase, pid in phases if phase == "Running" and pid not in (None, first_pid)]
    assert restarted, f"the killed app was not restarted during the flood: {phases}"
    assert agent.app("victim")["phase"] == "Running"


def app_phase(agent: Agent, name: str) -> tuple[str, Optional[int]]:
    """(phase, pid) of an app, ("unreachable", None) when the agent did not answer."""
    try:
        app = agent.app(name)
    except (OSError, ValueError, http.client.HTTPException):
        return "unreachable", None
    return app["phase"], app["pid"]


def test_a_descriptor_shortage_backs_off_quietly_and_apps_and_serving_resume(daemons, tmp_path):
    agent, _ = daemons
    assert agent.proc is not None
    agent.deploy("shortage", app_zip(tmp_path / "shortage.zip", "shortage"))
    first_pid = agent.wait_phase("shortage", "Running")["pid"]
    pid = agent.proc.pid
    before = len(fd_error_lines(agent.log_path.read_text(errors="replace")))
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use - 2, NOFILE))  # not one descriptor left
    flood = Slowloris(agent.port, 200)
    flood.start()
    probes: list[Optional[int]] = []
    try:
        time.sleep(0.5)
        os.killpg(first_pid, signal.SIGKILL)  # its restart finds no descriptor to start with
        shortage_ends = time.monotonic() + SHORTAGE_SECONDS
        while time.monotonic() < shortage_ends:  # asyncio's own server logged every failed accept
            probes.append(probe(agent.port, "/healthz", timeout=1.0)[0])
            time.sleep(0.2)
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
        flood.stop()
    assert probe(agent.port, "/healthz")[0] == 200
    app = agent.wait_app("shortage", lambda a: a["phase"] in ("Running", "Failed"), "to settle")
    log = agent.log_path.read_text(errors="replace")
    lines = fd_error_lines(log)[before:]
    accept_lines = [line for line in lines if "cannot accept" in line]
    print(
        f"\ndescriptor shortage for {SHORTAGE_SECONDS:g}s under 200 connections: healthz answered "
        f"{probes.count(200)}/{len(probes)} probes, {len(lines)} 'too many open files' lines "
        f"({len(accept_lines)} from accepting), the killed app: {app['phase']} after {app['restarts']} restarts"
    )
    assert app["phase"] == "Running" and app["pid"] != first_pid, app
    assert len(accept_lines) == 1, accept_lines  # the first failure is reported; the rest are counted
    assert len(lines) <= 10, lines  # with the supervisor's own retries and the state it could not save
    assert "Traceback" not in log


# ---- bad request bodies ------------------------------------------------------------------------


def exchange(port: int, head: bytes, body: bytes = b"", *, half_close: bool = False) -> tuple[int, dict[str, Any]]:
    """Send head (+ body) on a raw connection; the status and JSON answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"closed without an answer: {data!r}"
            data += chunk
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head_bytes).group(1))  # type: ignore[union-attr]
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk, f"closed mid-answer: {data!r}"
            rest += chunk
    return int(head_bytes.split()[1]), json.loads(rest)


def request_head(method: str, path: str, token: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", f"Authorization: Bearer {token}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_quiet_and_serving(agent: Agent, controller: Any) -> None:
    """The daemon logged no traceback (a client's fault is not a bug) and still answers."""
    for port in (agent.port, controller.port):
        assert probe(port, "/healthz")[0] == 200
    for log in (agent.log_path.read_text(errors="replace"), controller.log()):
        assert "Traceback" not in log
        assert "unhandled error" not in log


MULTIPART = "Content-Type: multipart/form-data; boundary=XyZ"
JSON = "Content-Type: application/json"


def targets(agent: Agent, controller: Any) -> dict[str, tuple[int, str, str, str]]:
    """A body-reading route per daemon: (port, method, path, token, content type)."""
    return {
        "agent": (agent.port, "PUT", "/v1/apps/bodytest", agent.token, MULTIPART),
        "controller": (controller.port, "POST", "/v1/nodes/heartbeat", controller.agent, JSON),
    }


@pytest.mark.parametrize("daemon", ["agent", "controller"])
def test_a_content_length_over_the_cap_is_refused_before_the_body_is_sent(daemons, daemon):
    agent, controller = daemons
    port, method, path, token, ctype = targets(agent, controller)[daemon]
    huge = 50 * 1024**3  # 50 GiB: never sent
    status, answer = exchange(port, request_head(method, path, token, ctype, f"Content-Length: {huge}"))
    assert status == 413, answer
    assert "request body too large" in answer["error"]
    assert str(huge) in answer["error"]
    assert_quiet_and_serving(agent, controller)


@pytest.mark.parametrize("daemon", ["agent", "controller"])
def test_a_broken_chunk_header_is_a_400(daemons, daemon):
    agent, controller = daemons
    port, method, path, token, ctype = targets(agent, controller)[daemon]
    head = request_head(method, path, token, ctype, "Transfer-Encoding: chunked")
    status, answer = exchange(port, head, b"not-hex\r\n{}\r\n0\r\n\r\n")
    assert status == 400, answer
    assert "chunk" in answer["error"]
    assert_quiet_and_serving(agent, controller)


@pytest.mark.parametrize("daemon", ["agent", "controller"])
def test_a_client_leaving_mid_body_is_a_400(daemons, daemon):
    agent, controller = daemons
    port, method, path, token, ctype = targets(agent, controller)[daemon]
    head = request_head(method, path, token, ctype, "Content-Length: 5000")
    status, answer = exchange(port, head, b"--XyZ\r\n" + b"x" * 100, half_close=True)
    assert status == 400, answer
    assert "incomplete request body" in answer["error"]
    assert_quiet_and_serving(agent, controller)


def test_json_nested_100k_deep_is_a_400_on_both_daemons(daemons):
    agent, controller = daemons
    nested = b"[" * 100_000 + b"]" * 100_000
    head = request_head("POST", "/v1/nodes/heartbeat", controller.agent, JSON, f"Content-Length: {len(nested)}")
    status, answer = exchange(controller.port, head, nested)
    assert status == 400, answer
    assert "nested more than" in answer["error"]

    form = b'--XyZ\r\nContent-Disposition: form-data; name="spec"\r\n\r\n' + nested + b"\r\n--XyZ--\r\n"
    head = request_head("PUT", "/v1/apps/bodytest", agent.token, MULTIPART, f"Content-Length: {len(form)}")
    status, answer = exchange(agent.port, head, form)
    assert status == 400, answer
    assert answer["field"] == "spec"
    assert "nested more than" in answer["error"]
    assert_quiet_and_serving(agent, controller)


@pytest.mark.parametrize("daemon", ["agent", "controller"])
def test_a_client_vanishing_mid_body_leaves_no_trace(daemons, daemon):
    agent, controller = daemons
    port, method, path, token, ctype = targets(agent, controller)[daemon]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_head(method, path, token, ctype, "Content-Length: 5000") + b"--XyZ\r\n")
        time.sleep(0.2)  # the handler is reading the body
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
    time.sleep(0.2)
    assert_quiet_and_serving(agent, controller)
