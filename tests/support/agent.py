"""Start a real plum-agent process and talk to it over HTTP, as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from plum.agent.config import SECRET_SETTINGS
from plum.common.multipart import Part, encode_multipart

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "apps"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def write_secrets_file(path: Path, settings: dict[str, str]) -> Path:
    """A private (0600) env file for a daemon's --config: secrets never go into a daemon's environment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"{name}={value}\n" for name, value in settings.items())
    return path


def make_zip(path: Path, files: dict[str, Any]) -> Path:
    """files: name -> str/bytes content, or (content, unix mode)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, entry in files.items():
            content, mode = entry if isinstance(entry, tuple) else (entry, 0o644)
            info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return path


def app_zip(path: Path, name: str = "demo", version: str = "1.0.0", script: str = "exec sleep 1000\n") -> Path:
    return make_zip(
        path,
        {"start.sh": ("#!/bin/sh\n" + script, 0o755), "meta.ini": f"name={name}\nversion={version}\n"},
    )


class APIError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class Agent:
    """A plum-agent subprocess with its own data dir and port."""

    def __init__(self, data_dir: Path, port: Optional[int] = None, env: Optional[dict[str, str]] = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log_path = data_dir.parent / f"{data_dir.name}-agent.log"
        self.config_path = data_dir.parent / f"{data_dir.name}-agent.env"  # the secrets of extra_env

    @property
    def env(self) -> dict[str, str]:
        """The agent's process environment: everything but the secrets, which go to its --config file."""
        env = {k: v for k, v in os.environ.items() if k not in SECRET_SETTINGS}
        env.update(
            AGENT_DATA_DIR=str(self.data_dir),
            AGENT_API_ADDR=f"127.0.0.1:{self.port}",
            AGENT_NODE_ID="test-node",
            AGENT_LOG_LEVEL="debug",
        )
        env.update({k: v for k, v in self.extra_env.items() if k not in SECRET_SETTINGS})
        return env

    @property
    def command(self) -> list[str]:
        command = [sys.executable, "-m", "plum.agent.main"]
        secrets = {k: v for k, v in self.extra_env.items() if k in SECRET_SETTINGS}
        if secrets:
            command += ["--config", str(write_secrets_file(self.config_path, secrets))]
        return command

    def start(self) -> Agent:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_until(self._healthy, timeout=15, what=f"agent on {self.url} (log: {self.log_path})")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"agent exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def app_pids(self) -> list[int]:
        """Process group leaders of this agent's apps, from its saved state."""
        pids = []
        for state in self.data_dir.glob("apps/*/state.json"):
            handle = _saved(state).get("handle") or {}
            if isinstance(handle, dict) and isinstance(handle.get("pid"), int):
                pids.append(handle["pid"])
        return pids

    def kill_all(self) -> None:
        """Kill the agent, then every app it left behind: process groups and containers of its node.

        The agent goes first: alive, it would restart what is removed after it."""
        self.kill()
        for pid in {*self.app_pids(), *app_instances(self.data_dir)}:
            for member in group_members(pid):
                with contextlib.suppress(OSError):
                    os.kill(member, signal.SIGKILL)
        if any(_saved(p).get("runtime") == "docker" for p in self.data_dir.glob("apps/*/state.json")):
            from support.docker import remove_node_containers  # noqa: PLC0415 - support.docker imports this module

            remove_node_containers(self.env["AGENT_NODE_ID"])

    @property
    def token(self) -> str:
        return self.extra_env.get("AGENT_API_TOKEN") or (self.data_dir / "agent.token").read_text().strip()

    def request(
        self,
        method: str,
        path: str,
        body: Optional[bytes] = None,
        content_type: str = "",
        token: Optional[str] = "default",  # noqa: S107 - a marker, not a secret
    ) -> Any:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if token == "default":
            token = self.token
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                raw = response.read()
                if response.headers.get("content-type", "").startswith("application/json"):
                    return json.loads(raw)
                return raw.decode()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise APIError(exc.code, parsed) from None

    def deploy(
        self, name: str, artifact: Optional[Path] = None, spec: Optional[dict[str, Any]] = None, start: bool = True
    ) -> Any:
        parts = []
        if artifact is not None:
            parts.append(Part("artifact", artifact.read_bytes(), "app.zip", "application/zip"))
        if spec is not None:
            parts.append(Part("spec", json.dumps(spec).encode(), content_type="application/json"))
        body, content_type = encode_multipart(parts)
        query = "" if start else "?start=false"
        return self.request("PUT", f"/v1/apps/{name}{query}", body, content_type)

    def app(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/apps/{name}")

    def wait_app(self, name: str, predicate: Any, what: str, timeout: float = 10.0) -> dict[str, Any]:
        """Poll the app's status until predicate(status) holds; returns that status."""

        def check() -> Optional[dict[str, Any]]:
            status = self.app(name)
            return status if predicate(status) else None

        return wait_until(check, timeout=timeout, what=f"{name}: {what}")

    def wait_phase(self, name: str, phase: str, timeout: float = 10.0) -> dict[str, Any]:
        return self.wait_app(name, lambda a: a["phase"] == phase, f"phase {phase}", timeout)


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            members.append(int(entry.name))
    return members


def _saved(state: Path) -> dict[str, Any]:
    """An app's saved record, or {} when it is unreadable (tests break them on purpose)."""
    try:
        data = json.loads(state.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw.split(b"\0") if b"=" in item)


def app_instances(data_dir: Path, name: Optional[str] = None) -> list[int]:
    """Live session leaders the agent of data_dir started (for app `name`), by their PLUM_APP_HOME marker."""
    apps = str(data_dir / "apps")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not pid_alive(int(entry.name)):
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2 :].split()[3]) != int(entry.name):
            continue  # not a session leader
        home = environ_of(int(entry.name)).get("PLUM_APP_HOME", "")
        wanted = (home == f"{apps}/{name}") if name else home.startswith(f"{apps}/")
        if wanted:
            found.append(int(entry.name))
    return sorted(found)


@contextlib.contextmanager
def world_dir(prefix: str, mode: int) -> Iterator[Path]:
    """A folder outside the private /tmp/pytest-* tree, for apps that run as another user than the tests."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(mode)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
