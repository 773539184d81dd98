"""The Docker engine as tests and benchmarks see it: the CLI, the test images, cleanup by node label."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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
