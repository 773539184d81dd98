"""Start a real plum-controller process and talk to it over HTTP, as agents and operators would."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from plum.common.multipart import Part, encode_multipart
from plum.controller.config import SECRET_SETTINGS
from support.agent import REPO, wait_until, write_secrets_file

SRC = REPO / "agent" / "src"
LISTENING = re.compile(rb"listening on http://[^:\s]+:(\d+)")
OPERATOR = "operator"  # which token a call uses: "operator", "agent", None or a literal token
CONTROLLER_VARS = ("CONTROLLER_", "HEARTBEAT_", "FAILOVER_", "AUTO_MIGRATION", "SERVICE_")


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CONTROLLER_VARS)}
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:300]!r})"


class ControllerProc:
    """A plum-controller subprocess on a free loopback port with its own data dir."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.env = {
            "CONTROLLER_DATA_DIR": str(data_dir),
            "CONTROLLER_ADDR": "127.0.0.1:0",
            "CONTROLLER_LOG_LEVEL": "info",
            **env,
        }
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.config_path = data_dir.parent / f"{data_dir.name}.env"  # the tokens given in env, if any
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.port = 0
        self.operator = ""
        self.agent = ""

    def start(self) -> ControllerProc:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                env=clean_env({k: v for k, v in self.env.items() if k not in SECRET_SETTINGS}),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def listening() -> Optional[int]:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"controller exited with {self.proc.returncode}:\n{self.log()}")
            match = LISTENING.search(self.log_path.read_bytes()[offset:])
            return int(match.group(1)) if match else None

        self.port = wait_until(listening, 15, what="the controller to listen")
        self.operator = self.env.get("CONTROLLER_OPERATOR_TOKEN") or self._stored("operator.token")
        self.agent = self.env.get("CONTROLLER_AGENT_TOKEN") or self._stored("agent.token")
        return self

    @property
    def command(self) -> list[str]:
        """plum-controller, with the tokens given in env in its --config file (never in its environment)."""
        command = [sys.executable, "-m", "plum.controller.main"]
        secrets = {k: v for k, v in self.env.items() if k in SECRET_SETTINGS}
        if secrets:
            command += ["--config", str(write_secrets_file(self.config_path, secrets))]
        return command

    def _stored(self, name: str) -> str:
        return (self.data_dir / name).read_text().strip()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: Optional[str] = OPERATOR,
        headers: Optional[dict[str, str]] = None,
        raw: Optional[bytes] = None,
        content_type: str = "application/json",
        timeout: float = 10,
    ) -> Reply:
        hdrs = dict(headers or {})
        if token == OPERATOR:
            hdrs["Authorization"] = f"Bearer {self.operator}"
        elif token == "agent":
            hdrs["Authorization"] = f"Bearer {self.agent}"
        elif token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            hdrs.setdefault("Content-Type", content_type)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def ok(self, method: str, path: str, body: Any = None, *, token: str = OPERATOR, status: int = 200) -> Any:
        reply = self.call(method, path, body, token=token)
        assert reply.status == status, reply
        return reply.json

    # -- shortcuts --------------------------------------------------------------------------------

    def heartbeat(self, node_id: str, ip: str = "127.0.0.1", **extra: Any) -> Reply:
        return self.call("POST", "/v1/nodes/heartbeat", {"nodeId": node_id, "ip": ip, **extra}, token="agent")

    def upload(self, data: bytes, filename: str = "app.zip", field: str = "file") -> Reply:
        body, ctype = encode_multipart([Part(field, data, filename, "application/zip")])
        return self.call("POST", "/v1/apps/upload", raw=body, content_type=ctype)

    def feed(self, node_id: str) -> list[dict[str, Any]]:
        return self.ok("GET", f"/v1/assignments?nodeId={node_id}")["items"]


def app_zip(name: str = "demo", version: str = "1.0.0", files: Optional[dict[str, bytes]] = None) -> bytes:
    buf = io.BytesIO()
    content = {
        "start.sh": b"#!/bin/sh\nexec sleep 1000\n",
        "meta.ini": f"name={name}\nversion={version}\nservice=web:http:8080\n".encode(),
    }
    if files is not None:
        content = files
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in content.items():
            info = zipfile.ZipInfo(path, (2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o100755 if path.endswith(".sh") else 0o100644) << 16
            info.compress_type = zipfile.ZIP_STORED if len(data) > 10_000 else zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


class Heartbeater(threading.Thread):
    """Heartbeats one node over HTTP until stopped, as an agent would."""

    def __init__(self, controller: ControllerProc, node_id: str, interval: float = 0.4) -> None:
        super().__init__(daemon=True)
        self.controller = controller
        self.node_id = node_id
        self.interval = interval
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            with contextlib.suppress(OSError):
                self.controller.heartbeat(self.node_id)
            self.halt.wait(self.interval)

    def stop(self) -> None:
        self.halt.set()
        self.join(5)


def read_until(sock: socket.socket, marker: bytes, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {marker!r} within {timeout}s; got {data!r}")
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"stream closed before {marker!r}; got {data!r}")
        data += chunk
    return data


@contextlib.contextmanager
def failover_controller(data_dir: Path, ttl: float, heartbeat_interval: float) -> Iterator[ControllerProc]:
    """A controller with failover on and a short TTL; it must stop cleanly, with no traceback logged."""
    proc = ControllerProc(
        data_dir,
        HEARTBEAT_TTL_SEC=str(ttl),
        HEARTBEAT_INTERVAL_SEC=str(heartbeat_interval),
        FAILOVER_INTERVAL_SEC="0.2",
        AUTO_MIGRATION_ENABLED="true",
    ).start()
    yield proc
    assert proc.stop() == 0, proc.log()
    assert "Traceback" not in proc.log(), proc.log()
