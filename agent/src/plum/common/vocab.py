"""The runtime's shared vocabulary, defined once: phases, desired states, restart policies, service
protocols, run modes, owners and the id formats the agent, the controller and plumctl agree on.

The collection's modules cannot import this package (module_utils must stand alone on a target);
their copies are pinned to these definitions by contract tests under tests/unit/plugins/.
"""

from __future__ import annotations

import os
import re
from enum import Enum


class Phase(str, Enum):
    """Where an instance is in its life. The values are the wire names (Plum's), so `Phase.RUNNING == "Running"`."""

    DOWNLOADING = "Downloading"  # reported to the controller while the agent fetches the artifact
    STARTING = "Starting"
    RUNNING = "Running"
    BACKOFF = "BackOff"  # crashed, waiting for the restart policy's delay
    FAILED = "Failed"  # gave up: restart limit reached, or the launch cannot succeed
    STOPPED = "Stopped"
    COMPLETED = "Completed"  # exited 0 under a policy that does not restart it
    UNKNOWN = "Unknown"  # the agent lost the record (a bad state file) and cannot vouch for it

    def __str__(self) -> str:
        return self.value


# Phases in which an instance holds (or is about to hold) a process or a container.
ACTIVE_PHASES = frozenset({Phase.STARTING, Phase.RUNNING, Phase.BACKOFF})
# Phases an agent records for an app (Downloading exists only between agent and controller).
AGENT_PHASES = tuple(p for p in Phase if p is not Phase.DOWNLOADING)
# Phases an agent may report to the controller for an instance.
REPORTED_PHASES = tuple(p for p in Phase if p is not Phase.UNKNOWN)


class Desired(str, Enum):
    """What the agent keeps an app at (its own records, lowercase)."""

    RUNNING = "running"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


class ControllerDesired(str, Enum):
    """What the controller wants of an instance (Plum's wire names)."""

    RUNNING = "Running"
    STOPPED = "Stopped"
    LOST = "Lost"  # the node is gone; failover placed a replacement elsewhere

    def __str__(self) -> str:
        return self.value

    def on_agent(self) -> Desired:
        return Desired.RUNNING if self is ControllerDesired.RUNNING else Desired.STOPPED


class Owner(str, Enum):
    """Who manages an app on an agent: its local API (plumctl, the Ansible modules) or the controller."""

    LOCAL = "local"
    CONTROLLER = "controller"

    def __str__(self) -> str:
        return self.value


RESTART_POLICIES = ("always", "on-failure", "never")
# What a service or a port mapping speaks (Plum's names); everything but udp is published as TCP.
PROTOCOLS = ("http", "https", "tcp", "udp", "grpc")

# Binary units, as Docker's own (`--memory 1g` is 1 GiB): sizes, limits and memory settings.
KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


class RunMode(str, Enum):
    """AGENT_RUN_MODE: how an app without an image runs on this node."""

    PROCESS = "process"
    DOCKER = "docker"

    def __str__(self) -> str:
        return self.value


NODE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
NODE_ID_RE = re.compile(NODE_ID_PATTERN)

# Ids the controller mints: a deployment (or app) is 32 hex digits, as Plum's; an instance is its deployment's
# id, '-', 8 hex digits.
DEPLOYMENT_ID_RE = re.compile(r"[0-9a-f]{32}")
INSTANCE_ID_RE = re.compile(r"(?P<deployment>[0-9a-f]{32})-(?P<suffix>[0-9a-f]{8})")


def new_id() -> str:
    """A deployment's or an app's id."""
    return os.urandom(16).hex()  # secrets.token_hex, without loading OpenSSL (hmac)


def new_instance_id(deployment_id: str) -> str:
    return f"{deployment_id}-{os.urandom(4).hex()}"


def deployment_of(instance_id: str) -> str:
    """The deployment an instance id belongs to; ValueError for an id the controller did not mint."""
    match = INSTANCE_ID_RE.fullmatch(instance_id)
    if match is None:
        raise ValueError(f"not an instance id: {instance_id!r}")
    return match.group("deployment")
