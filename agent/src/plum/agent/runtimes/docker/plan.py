"""The container planner: a Launch and the agent's Docker settings in, the container to create out.

Pure but for reading the release (its start.sh) and checking that host library paths exist; it never
talks to the engine, so it is unit-tested without one. A plan's fingerprint, kept as a label on its
container, tells whether an exited container can simply be started again (nothing changed).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

from plum.agent.appenv import is_base_env
from plum.agent.config import AgentConfig, DockerSettings
from plum.agent.runtimes.base import Launch, StartError, start_command
from plum.agent.runtimes.docker.engine import LABEL_MANAGED, LABEL_NODE, EngineFacts
from plum.agent.runtimes.docker.ports import HostPort, host_ports, port_mappings
from plum.common.digest import sha256
from plum.common.resources import image_tag

LABEL_APP = "plum.app"
LABEL_INSTANCE = "plum.instance"
LABEL_VERSION = "plum.version"
LABEL_SPEC = "plum.spec-hash"
LABEL_PLAN = "plum.plan-hash"
LOCALHOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")  # noqa: S104 - names to rewrite, not bound
HOST_GATEWAY_NAME = "host.docker.internal"
DEFAULT_GATEWAY = "172.17.0.1"


@dataclass
class Plan:
    """One container to create, computed from a Launch before anything touches the engine."""

    name: str
    image: str
    pull_policy: str
    command: Optional[list[str]]
    env: dict[str, str]
    labels: dict[str, str]
    working_dir: Optional[str]
    host_config: dict[str, Any]
    exposed: list[tuple[int, str]]
    host_ports: set[HostPort] = field(default_factory=set)  # the explicit ones, checked and held
    stop_timeout: int = 10
    data_dir: Optional[Path] = None
    user: Optional[str] = None  # spec.user, resolved by the image; None: the image's own user
    release: Optional[Path] = None  # a zip app's release, mounted at /app

    def fingerprint(self) -> str:
        """What the container is, without its name: equal fingerprints, interchangeable containers."""
        labels = {k: v for k, v in self.labels.items() if k != LABEL_PLAN}
        what: list[Any] = [self.image, self.command, self.env, labels, self.working_dir, self.host_config]
        what += [self.exposed, self.stop_timeout, self.user]
        return sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def rewrite_controller_base(base: str, controller_host: Optional[str], gateway: str) -> str:
    """CONTROLLER_BASE as seen from a bridge-mode container: a loopback host becomes the host's address.

    The port and path are kept as they are; no port means none is added (never a trailing colon).
    """
    parts = urlsplit(base)
    if (parts.hostname or "") not in LOCALHOSTS:
        return base
    host = controller_host or gateway
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def container_env(launch: Launch, settings: DockerSettings, network_mode: str, gateway: str) -> dict[str, str]:
    env = dict(settings.env)
    env.update({k: v for k, v in launch.env.items() if not is_base_env(k)})  # the image has its own
    env.update(launch.spec.env)  # the spec may set PATH & co. on purpose
    base = env.get("CONTROLLER_BASE")
    if base and network_mode == "bridge":
        env["CONTROLLER_BASE"] = rewrite_controller_base(base, settings.controller_host, gateway)
    if launch.app_dir is not None and (launch.app_dir / "lib").is_dir():
        current = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = f"{current}:/app/lib" if current else "/app/lib"
    return env


def plan_container(launch: Launch, config: AgentConfig, facts: EngineFacts) -> Plan:
    spec, settings = launch.spec, config.docker
    network_mode = spec.network_mode or settings.network_mode
    binds: dict[str, dict[str, str]] = {}
    data_dir = None
    if launch.app_dir is not None:  # a zip app: its release directory is /app
        image = spec.base_image or settings.base_image
        binds[str(launch.app_dir)] = {"bind": "/app", "mode": "rw"}
        working_dir: Optional[str] = "/app"
        command: Optional[list[str]] = start_command(launch.app_dir, spec.start_cmd)
    else:  # an image app: its own command, a data directory at /app/data
        assert spec.image is not None
        image, working_dir, data_dir = spec.image, None, launch.data_dir
        binds[str(launch.data_dir)] = {"bind": "/app/data", "mode": "rw"}
        command = ["/bin/sh", "-c", spec.start_cmd] if spec.start_cmd else None
    for path in (*settings.host_lib_paths, *spec.host_lib_paths):
        if not Path(path).exists():
            raise StartError(f"host library path {path} does not exist (spec.host_lib_paths/PLUM_HOST_LIB_PATHS)")
        binds.setdefault(path, {"bind": path, "mode": "ro"})

    mappings = port_mappings(spec, launch.meta, network_mode)
    port_bindings: dict[str, list[tuple[str, Optional[int]]]] = {}
    exposed: list[tuple[int, str]] = []
    for mapping in mappings:
        host_ip, host_port, protocol = mapping.bound_on(settings.publish_host)
        key = f"{mapping.container_port}/{protocol}"
        if key not in port_bindings:
            exposed.append((mapping.container_port, protocol))
        port_bindings.setdefault(key, []).append((host_ip, host_port))  # None: Docker picks the host port

    host_config: dict[str, Any] = {
        "binds": binds,
        "network_mode": network_mode,
        "restart_policy": {"Name": "no"},  # the agent is the one that restarts
        "init": True,  # signals reach the app, zombies are reaped
        "log_config": {
            "type": "json-file",
            "config": {"max-size": str(config.log_max_bytes), "max-file": str(config.log_backups + 1)},
        },
    }
    if port_bindings:
        host_config["port_bindings"] = port_bindings
    gateway = facts.gateway or DEFAULT_GATEWAY
    if network_mode == "bridge" and facts.host_gateway:
        host_config["extra_hosts"] = {HOST_GATEWAY_NAME: "host-gateway"}
        gateway = HOST_GATEWAY_NAME
    memory = spec.memory or settings.memory
    if memory:
        host_config["mem_limit"] = memory
        host_config["memswap_limit"] = memory  # no swap: over the limit is an OOM kill, not a crawl
    cpus = spec.cpus or settings.cpus
    if cpus:
        host_config["nano_cpus"] = int(cpus * 1e9)
    if spec.seccomp_unconfined:
        host_config["security_opt"] = ["seccomp=unconfined"]

    plan = Plan(
        name=f"plum-{config.node_id}-{launch.app_name}-{os.urandom(3).hex()}",
        image=image,
        pull_policy=spec.pull_policy,
        command=command,
        env=container_env(launch, settings, network_mode, gateway),
        labels={
            LABEL_MANAGED: "true",
            LABEL_NODE: config.node_id,
            LABEL_APP: launch.app_name,
            LABEL_INSTANCE: launch.instance_id,
            LABEL_VERSION: launch.version or image_tag(image),
            LABEL_SPEC: spec.digest(),
        },
        working_dir=working_dir,
        host_config=host_config,
        exposed=exposed,
        host_ports=set(host_ports(mappings, settings.publish_host)),
        stop_timeout=math.ceil(spec.stop_timeout),
        data_dir=data_dir,
        user=spec.user,
        release=launch.app_dir,
    )
    plan.labels[LABEL_PLAN] = plan.fingerprint()
    return plan
