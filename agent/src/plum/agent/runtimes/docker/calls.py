"""Blocking calls on one container, each run in the engine's pool as fn(client, *args)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from plum.agent import appuser, logfiles
from plum.agent.runtimes.base import StartError
from plum.agent.runtimes.docker.engine import sdk
from plum.agent.runtimes.docker.plan import LABEL_PLAN, Plan

log = logging.getLogger(__name__)

CAPTURED_LINES = 1000  # log lines kept in the app's log file when its container ends


def published_from_inspect(ports: Optional[dict[str, Any]]) -> list[str]:
    """Where an inspected container's ports are published (NetworkSettings.Ports): "127.0.0.1:32768->80/tcp"."""
    found = []
    for key, bindings in sorted((ports or {}).items()):
        for binding in bindings or ():
            ip, port = binding.get("HostIp") or "", binding.get("HostPort") or ""
            if port:
                found.append(f"{f'[{ip}]' if ':' in ip else ip}:{port}->{key}")
    return found


def published_from_summary(summary: dict[str, Any]) -> list[str]:
    """The same from a container list entry (its Ports)."""
    ports: dict[str, list[dict[str, str]]] = {}
    for item in summary.get("Ports") or ():
        if item.get("PublicPort"):
            key = f"{item.get('PrivatePort')}/{item.get('Type') or 'tcp'}"
            ports.setdefault(key, []).append({"HostIp": item.get("IP") or "", "HostPort": str(item["PublicPort"])})
    return published_from_inspect(ports)


@dataclass(frozen=True)
class Started:
    """A container the engine started: its id, its main process, and where its ports are published."""

    container_id: str
    name: str
    pid: Optional[int]
    running: bool
    published: list[str]
    image_id: str


@dataclass(frozen=True)
class Ended:
    """A container that ended by itself, kept to be started again: what it was made from."""

    container_id: str
    plan_hash: str
    image_id: str


def _started(api: Any, cid: str) -> Started:
    inspected = api.inspect_container(cid)
    state = inspected["State"]
    published = published_from_inspect((inspected.get("NetworkSettings") or {}).get("Ports"))
    name = str(inspected.get("Name") or "").lstrip("/")
    running = bool(state.get("Running"))
    return Started(cid, name, state.get("Pid") or None, running, published, str(inspected.get("Image") or ""))


def inspect_state(api: Any, cid: str) -> Optional[dict[str, Any]]:
    """The container's State; None when it is gone."""
    try:
        return dict(api.inspect_container(cid)["State"])
    except sdk().errors.NotFound:
        return None


def container_logs(api: Any, cid: str, lines: int) -> list[str]:
    raw = api.logs(cid, stdout=True, stderr=True, tail=lines)
    return bytes(raw).decode("utf-8", "replace").splitlines()[-lines:]


def capture_logs(api: Any, cid: str, path: Path) -> None:
    """Keep the last lines of an ending container in the app's log file (served once it is gone)."""
    try:
        lines = container_logs(api, cid, CAPTURED_LINES)
    except sdk().errors.APIError as exc:  # gone, or being removed: nothing left to keep
        log.debug("no logs from container %s: %s", cid[:12], exc)
        return
    logfiles.replace_with_lines(path, lines)


def stop(api: Any, cid: str, timeout: float) -> None:
    with contextlib.suppress(sdk().errors.NotFound):
        api.stop(cid, timeout=math.ceil(timeout))


def remove(api: Any, cid: str) -> None:
    try:
        api.remove_container(cid, force=True)
    except sdk().errors.NotFound:
        pass
    except sdk().errors.APIError as exc:
        if exc.status_code != 409:  # 409: a removal is already in progress
            raise


def ensure_image(api: Any, image: str, policy: str) -> None:
    docker = sdk()
    if policy != "always":
        try:
            api.inspect_image(image)
            return
        except docker.errors.ImageNotFound:
            if policy == "never":
                raise StartError(
                    f"image {image} is not on this Docker engine and spec.pull_policy is 'never' "
                    "(load it with docker load or build it first)"
                ) from None
    repository, tag = docker.utils.parse_repository_tag(image)
    try:
        for line in api.pull(repository, tag=tag, stream=True, decode=True):
            if isinstance(line, dict) and line.get("error"):
                raise StartError(f"cannot pull image {image}: {line['error']}")
    except docker.errors.APIError as exc:
        hint = " (it is not on this engine either)" if policy != "always" else ""
        raise StartError(f"cannot pull image {image}{hint}: {exc.explanation or exc}") from None


def image_id(api: Any, image: str) -> str:
    return str(api.inspect_image(image)["Id"])


def start_again(api: Any, ended: Ended, plan: Plan, current_image_id: Optional[str] = None) -> Optional[Started]:
    """Start a container that ended by itself again, as Docker's own restart policy does, when it was made
    from this plan and the image behind the tag is still its own. None when that cannot be done (the plan
    changed, pull_policy always, gone, refused): a new container is created instead.

    No inspect of the container first: the engine holds it until its clean-up is over, so the start alone
    waits. current_image_id: what the plan's image resolves to, when it was looked up already."""
    if plan.pull_policy == "always" or ended.plan_hash != plan.labels[LABEL_PLAN]:
        return None
    docker = sdk()
    cid = ended.container_id
    try:
        if (current_image_id or image_id(api, plan.image)) != ended.image_id:
            return None
        api.start(cid)  # its mounts were opened to its user when it was created
        return _started(api, cid)
    except docker.errors.APIError as exc:
        log.info("container %s cannot be started again (%s): creating a new one", cid[:12], exc)
        return None


def create_and_start(api: Any, plan: Plan, again: bool = False) -> Started:
    """Create and start the planned container.

    again: a retry after the engine did not answer; what the first attempt may have created goes first.
    """
    docker = sdk()
    if again:
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_container(plan.name, force=True)
    ensure_image(api, plan.image, plan.pull_policy)
    if plan.data_dir is not None:
        plan.data_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    open_mounts_to(plan)
    try:
        container = api.create_container(
            plan.image,
            command=plan.command,
            name=plan.name,
            environment=plan.env,
            labels=plan.labels,
            working_dir=plan.working_dir,
            ports=plan.exposed or None,
            stop_timeout=plan.stop_timeout,
            user=plan.user,
            host_config=api.create_host_config(**plan.host_config),
        )
    except docker.errors.APIError as exc:
        raise StartError(f"cannot create a container from {plan.image}: {exc.explanation or exc}") from None
    cid = str(container["Id"])
    try:
        api.start(cid)
        return _started(api, cid)
    except docker.errors.APIError as exc:
        with contextlib.suppress(Exception):
            api.remove_container(cid, force=True)
        raise StartError(f"cannot start the container from {plan.image}: {exc.explanation or exc}") from None
    except BaseException:
        with contextlib.suppress(Exception):
            api.remove_container(cid, force=True)
        raise


def open_mounts_to(plan: Plan) -> None:
    """A numeric UID:GID user may read the release and own the data dir; a name means nothing on the host,
    so then the release is readable by any user (only through the container's mount)."""
    ids = appuser.numeric_ids(plan.user) if appuser.agent_is_root() else None
    try:
        if ids is None:  # the image's own user, unknown here: any user may read the release
            if plan.release is not None:
                appuser.open_release_to_any_user(plan.release)
            return
        if plan.release is not None:
            appuser.share_release(plan.release, ids[1])
        if plan.data_dir is not None:
            os.chown(plan.data_dir, *ids)
    except OSError as exc:
        raise StartError(f"cannot give the app's files to user {plan.user}: {exc.strerror}") from None
