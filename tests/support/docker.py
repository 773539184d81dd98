"""The Docker engine as tests and benchmarks see it: the CLI, the test images, cleanup by node label."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional

import pytest

from support.agent import REPO

BASE_IMAGE = "plum-test/base:bookworm"
IMAGES_DIR = REPO / "tests" / "images"


def docker(*args: str, check: bool = True, timeout: float = 60) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def engine_up() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def container_ids(node: str, app: Optional[str] = None, running_only: bool = False) -> list[str]:
    filters = ["--filter", f"label=plum.node={node}"]
    if app is not None:
        filters += ["--filter", f"label=plum.app={app}"]
    out = docker("ps", "-q", "--no-trunc", *([] if running_only else ["-a"]), *filters)
    return out.split()


def inspect(cid: str) -> dict[str, Any]:
    return json.loads(docker("inspect", cid))[0]


def remove_node_containers(node: str) -> None:
    ids = container_ids(node)
    if ids:
        docker("rm", "-f", *ids, check=False)


def ensure_engine_and_images() -> None:
    """The engine answers and the test images exist (built here: there is no registry)."""
    if not engine_up():
        if os.environ.get("CI"):
            pytest.fail("CI is set but no Docker engine answers `docker info` (run scripts/docker-engine.sh)")
        pytest.skip("no Docker engine answers `docker info` (scripts/docker-engine.sh starts one; CI unset)")
    if not docker("images", "-q", BASE_IMAGE).strip():
        subprocess.run([str(REPO / "scripts" / "build-test-image.sh")], check=True, timeout=600)
    for directory in sorted(p for p in IMAGES_DIR.iterdir() if (p / "Dockerfile").exists()):
        docker("build", "-q", "-t", f"plum-test/{directory.name}:1", str(directory), timeout=300)


def engine_socket() -> str:
    """The real engine's unix socket path (DOCKER_HOST when it names one, else the default)."""
    host = os.environ.get("DOCKER_HOST", "")
    return host[len("unix://") :] if host.startswith("unix://") else "/var/run/docker.sock"


class EngineProxy:
    """A unix socket in front of the real engine, which a test takes away and brings back.

    Down, the socket is gone and every connection through it is cut: to an agent, the engine stopped;
    up again, it answers. The containers keep running meanwhile, as with a dockerd restart with
    live-restore (or an engine that stops answering for a while), without touching the shared engine.
    """

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="plum-engine-")) / "docker.sock"  # short: sun_path is 108 bytes
        self.url = f"unix://{self.path}"
        self._listener: Optional[socket.socket] = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> EngineProxy:
        self.path.parent.mkdir(exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def down(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # down
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                engine.connect(engine_socket())
            except OSError:
                client.close()
                engine.close()
                continue
            with self._lock:
                self._open.update((client, engine))
            for source, target in ((client, engine), (engine, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, target):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            with self._lock:
                self._open.discard(source)
                self._open.discard(target)
