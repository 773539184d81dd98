"""Apps as Docker containers (hybrid mode), driven through the Docker SDK for Python.

The same contract as the process runtime: start returns a handle whose state is saved, recover
re-adopts a running container after an agent restart, and exits reach the supervisor through the
``on_exit`` callback, which then applies the restart policy. Docker's own restart policy stays ``no``.

- engine: the SDK's client, its thread pool, the event stream (reconnecting with back-off), the relist.
- plan: a Launch to the container to create, pure; its fingerprint tells when nothing changed.
- cleaner: which of this node's containers nobody answers for (asks the supervisor what it tracks).
- handle: a supervised container, whose life is one state; runtime: the contract over all of them.

Identity is labels (plum.managed, plum.node, plum.app, plum.instance, plum.version, plum.spec-hash,
plum.plan-hash); every list and the event stream are filtered by this node's label, so two agents
sharing one engine never see each other's containers.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Optional

from plum.agent.config import AgentConfig
from plum.agent.runtimes.docker.engine import engine_answers
from plum.agent.runtimes.docker.runtime import DockerRuntime
from plum.common.config import ConfigError

__all__ = ["DockerRuntime", "docker_runtime"]

log = logging.getLogger(__name__)


def docker_runtime(config: AgentConfig, required: bool) -> Optional[DockerRuntime]:
    """The Docker runtime when it is required (the agent core says so), or when an engine answers.

    Only the SDK's presence is checked here; it is imported once a docker app is deployed or re-adopted.
    """
    if not required and not engine_answers(config.docker.docker_host):
        log.info("no Docker engine answers: docker apps are refused on this agent")
        return None
    if importlib.util.find_spec("docker") is None:
        message = "the Docker SDK for Python is not installed (pip install 'plum[docker]')"
        if required:
            raise ConfigError(f"the Docker runtime is required here: {message}")
        log.warning("%s: docker apps are refused on this agent", message)
        return None
    return DockerRuntime(config, required)
