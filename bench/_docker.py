"""What the container benchmarks share: the docker CLI, the two agents (hybrid: a host process with the
docker runtime; containerized: the agent in its own container, as roles/plum_agent runs it), the agent
image built from this checkout, and a container's memory as the kernel counts it.

Everything the benchmarks create carries the label plum.bench=docker (the agent's app containers carry
the agent's node label too), so one `docker rm -f` by label cleans up, even after a crash of the bench."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from _common import REPO, Agent, rss_and_cpu, wait_until
from plum.agent.runtimes.docker.cgroups import cgroup_dirs, cgroup_usage

IMAGE = "plum-test/base:bookworm"  # the apps' image, and the agent image's base (it has python3)
BENCH_LABEL = "plum.bench=docker"
AGENT_IMAGE = "plum-bench/agent"
AGENT_UID = 64790  # the containerized agent's user (the role uses the plum-agent service user's uid)
SOCKET = "/var/run/docker.sock"
WHEELHOUSE_CACHE = Path(tempfile.gettempdir()) / "plum-bench-wheelhouse"


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}...: {done.stderr.strip()[-500:]}")
    return done.stdout


def remove_labelled(*labels: str) -> int:
    """Remove every container with all these labels (running or not); returns how many."""
    argv = ["ps", "-aq"]
    for label in labels:
        argv += ["--filter", f"label={label}"]
    ids = docker(*argv).split()
    for start in range(0, len(ids), 50):
        docker("rm", "-f", *ids[start : start + 50], check=False, timeout=300)
    return len(ids)


def dockerd_pid() -> Optional[int]:
    try:
        return int(Path("/var/run/docker.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def container_pid(cid: str) -> int:
    return int(docker("inspect", "-f", "{{.State.Pid}}", cid).strip())


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def container_memory(cid: str) -> tuple[int, int]:
    """(the container's cgroup memory without reclaimable page cache, as `docker stats` counts it;
    the RSS of its containerd-shim, the per-container process of the engine) in bytes."""
    pid = container_pid(cid)
    usage = cgroup_usage(cgroup_dirs(pid))
    shim = parent_pid(pid)
    shim_rss = rss_and_cpu(shim)[0] if "containerd-shim" in Path(f"/proc/{shim}/cmdline").read_text() else 0
    return (usage[1] if usage else 0), shim_rss


# ---- the containerized agent's image ---------------------------------------------------------------


def build_agent_image() -> tuple[str, dict[str, Any]]:
    """plum-bench/agent:KEY from agent/docker/Dockerfile (target agent), the way roles/plum_common builds
    it: the roles' own wheelhouse builder makes the runtime's wheels (this checkout's agent/, extra
    docker) for the base image's Python, then `docker build --network=none` installs them into a venv.
    The same inputs build nothing (the key is the wheelhouse's and the Dockerfile's digest)."""
    python = docker("run", "--rm", "--network=none", "--entrypoint=python3", IMAGE, "-c", PYTHON_PROBE).split()
    builder = REPO / "roles" / "plum_common" / "files" / "plum_wheelhouse.py"
    argv = [sys.executable, str(builder), "--cache", str(WHEELHOUSE_CACHE), "--constraints"]
    argv += [str(REPO / "constraints.txt"), "--python", python[0], "--machine", python[1]]
    argv += ["--source", str(REPO / "agent"), "--extra", "docker"]
    built = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600).stdout)
    dockerfile = REPO / "agent" / "docker" / "Dockerfile"
    import hashlib  # noqa: PLC0415

    key = hashlib.sha256((built["sha256"] + dockerfile.read_text() + IMAGE).encode()).hexdigest()[:12]
    tag = f"{AGENT_IMAGE}:{key}"
    facts = {"agent image": tag, "wheel": built["wheel"], "agent image base": IMAGE}
    if docker("images", "-q", tag).strip():
        return tag, facts
    context = Path(tempfile.mkdtemp(prefix="plum-bench-image-"))
    try:
        (context / "wheelhouse").mkdir()
        with tarfile.open(built["archive"]) as archive:
            archive.extractall(context / "wheelhouse", filter="data")
        shutil.copy(dockerfile, context / "Dockerfile")
        started = time.monotonic()
        docker(
            "build",
            "--network=none",
            "--pull=false",
            "--quiet",
            "--target=agent",
            f"--build-arg=BASE_IMAGE={IMAGE}",
            f"--build-arg=PLUM_REQUIREMENT=plum[docker]=={built['version']}",
            f"--label={BENCH_LABEL}",
            f"--tag={tag}",
            str(context),
            timeout=600,
        )
        facts["agent image build (s)"] = round(time.monotonic() - started, 1)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return tag, facts


PYTHON_PROBE = "import platform, sys; print('%d.%d' % sys.version_info[:2], platform.machine())"


# ---- the two agents -------------------------------------------------------------------------------


def agent_settings(node: str, extra: dict[str, str]) -> dict[str, str]:
    return {
        "AGENT_NODE_ID": node,
        "AGENT_RUN_MODE": "docker",
        "AGENT_LOG_LEVEL": "info",
        "PLUM_BASE_IMAGE": IMAGE,
        **extra,
    }


class HostAgent(Agent):
    """hybrid: the agent as a host process (this checkout's code) with the docker runtime."""

    mode = "hybrid"

    def __init__(self, root: Path, extra: Optional[dict[str, str]] = None) -> None:
        self.node = f"bench-{secrets.token_hex(3)}"
        super().__init__(root / "agent", env=agent_settings(self.node, extra or {}))

    def start(self) -> HostAgent:
        # Started from its own directory: `python -m` puts the working directory first on sys.path, where
        # a module named docker would stand in for the Docker SDK.
        cwd = os.getcwd()
        os.chdir(self.data_dir.parent)
        try:
            super().start()
        finally:
            os.chdir(cwd)
        return self

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def close(self) -> None:
        self.kill_all()
        remove_labelled(f"plum.node={self.node}")


class ContainerAgent(Agent):
    """containerized: the agent in a container of the image built from this checkout, run with the settings
    of roles/plum_agent/templates/plum-agent.compose.yml.j2: the service user (a non-root uid), the Docker
    socket's group, the host's network (its API on the host's loopback), a read-only root filesystem with a
    tmpfs /tmp, no capabilities, no-new-privileges, the socket and the data directory mounted at the host's
    paths, the settings file read-only at /etc/plum/agent.env, host_lib_paths read-only at their paths."""

    mode = "containerized"

    def __init__(self, root: Path, image: str, extra: Optional[dict[str, str]] = None) -> None:
        self.node = f"bench-{secrets.token_hex(3)}"
        super().__init__(root / "agent", env=agent_settings(self.node, extra or {}))
        self.image = image
        self.container = f"plum-bench-agent-{self.node}"

    def start(self) -> ContainerAgent:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chown(self.data_dir, AGENT_UID, AGENT_UID)
        settings = {
            **self.extra_env,
            "AGENT_DATA_DIR": str(self.data_dir),
            "AGENT_API_ADDR": f"127.0.0.1:{self.port}",
            "DOCKER_HOST": f"unix://{SOCKET}",
        }
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        os.chown(self.config_path, AGENT_UID, AGENT_UID)
        self.config_path.chmod(0o600)
        argv = ["run", "-d", "--name", self.container, "--label", BENCH_LABEL]
        argv += ["--user", f"{AGENT_UID}:{AGENT_UID}", "--group-add", str(os.stat(SOCKET).st_gid)]
        argv += ["--network", "host", "--restart", "unless-stopped", "--read-only", "--cap-drop", "ALL"]
        argv += ["--security-opt", "no-new-privileges:true", "--tmpfs", "/tmp", "--stop-timeout", "30"]
        argv += ["-v", f"{SOCKET}:{SOCKET}", "-v", f"{self.data_dir}:{self.data_dir}"]
        argv += ["-v", f"{self.config_path}:/etc/plum/agent.env:ro"]
        for path in filter(None, settings.get("PLUM_HOST_LIB_PATHS", "").split(",")):
            argv += ["-v", f"{path}:{path}:ro"]
        docker(*argv, self.image)
        wait_until(self._container_healthy, timeout=30, what=f"agent container {self.container}")
        return self

    def _container_healthy(self) -> bool:
        if docker("inspect", "-f", "{{.State.Running}}", self.container).strip() != "true":
            raise AssertionError(f"agent container exited: {docker('logs', '--tail', '30', self.container)}")
        return self._healthy()

    def pid(self) -> int:
        """The agent's process on the host (the container's only process)."""
        return container_pid(self.container)

    def kill(self, sig: int = 9) -> None:
        docker("rm", "-f", self.container, check=False)

    def close(self) -> None:
        self.kill()
        remove_labelled(f"plum.node={self.node}")
        with contextlib.suppress(OSError):
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)
