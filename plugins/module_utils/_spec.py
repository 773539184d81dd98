# -*- coding: utf-8 -*-
# Copyright: Plum Deploy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the plum.deploy collection: it can change at any time, without notice.
"""plum_app's pure logic: the spec it sends, the agent's normalized form of it, and the plan.

Check mode and real runs use the same plan: a real run performs exactly the actions that check
mode reports, and ``changed``/``diff`` come from the same comparison of the wanted artifact and
spec with the status the agent returns (its ``artifact_sha256`` and normalized ``spec``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import math
import re
from pathlib import PurePosixPath
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from ansible_collections.plum.deploy.plugins.module_utils._status import ENDED_PHASES

Json = Dict[str, Any]

# Spec fields and the agent's defaults for them (plum.agent.spec.AppSpec).
SPEC_DEFAULTS: Json = {
    "runtime": None,
    "start_cmd": None,
    "env": {},
    "restart_policy": "always",
    "max_restarts": 0,
    "restart_window": 60.0,
    "stop_timeout": 10.0,
    "user": None,
}

# Options that only apply to the Docker runtime, with the agent's defaults; they go into the spec as they are.
DOCKER_DEFAULTS: Json = {
    "image": None,
    "base_image": None,
    "pull_policy": "if-not-present",
    "memory": None,
    "cpus": None,
    "network_mode": None,
    "ports": [],
    "host_lib_paths": [],
    "seccomp_unconfined": False,
}
DOCKER_OPTIONS = tuple(DOCKER_DEFAULTS)
ALL_DEFAULTS = dict(SPEC_DEFAULTS, **DOCKER_DEFAULTS)
SPEC_OPTIONS = tuple(SPEC_DEFAULTS) + DOCKER_OPTIONS

RESERVED_ENV = ("PLUM_INSTANCE_ID", "PLUM_APP_NAME", "PLUM_APP_VERSION", "PLUM_RELEASE", "PLUM_APP_HOME", "WORKER_NODE_ID")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # the whole name (fullmatch)
_EMPTY: Tuple[Any, ...] = (None, "", [], {}, False)

# The agent's parsing rules for Docker values (plum.agent.runtimes.docker_resources), so that the module
# compares what the agent will store: "1g" is stored as 1073741824, "8080:80" as "8080:80/tcp".
_MIB = 1024 * 1024
_UNITS = {"": 1, "b": 1, "k": 1024, "m": _MIB, "g": 1024 * _MIB, "t": 1024 * 1024 * _MIB}
_MIN_MEMORY = 6 * _MIB  # Docker refuses less
_MAX_MEMORY = 2**50  # 1 PiB: anything above is a typo
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)\s*([kmgt]?)(i?b)?$", re.IGNORECASE)
_PORT = re.compile(r"^(?:(\[[0-9A-Fa-f:.]+\]|[0-9.]+):(\d{1,5})?:|(\d{1,5}):)?(\d{1,5})(?:/(tcp|udp))?$")

# States of the agent's status ``desired`` field.
RUNNING = "running"
STOPPED = "stopped"
ABSENT = "absent"


class SpecError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__("%s: %s" % (field, message))
        self.field = field


def env_values(value: Any) -> Dict[str, str]:
    """The env option as the agent and the controller store it: names checked, values as strings, sorted."""
    if not isinstance(value, dict):
        raise SpecError("env", "expected a dictionary of NAME: value, got %r" % (value,))
    out = {}
    for key, item in value.items():
        key = str(key)
        if not ENV_NAME.fullmatch(key):
            raise SpecError("env", "invalid variable name %r" % key)
        if key in RESERVED_ENV:
            raise SpecError("env", "%s is set by the agent and cannot be overridden" % key)
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise SpecError(
                "env", "value of %s must be a string or a number, got %r (quote it in YAML)" % (key, item)
            )
        out[key] = str(item)
    return dict(sorted(out.items()))


def memory_bytes(value: Any) -> int:
    """Bytes from 536870912, "512m", "1g", "1.5g", "512MiB" (binary units, as Docker's)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SpecError("memory", "expected a size such as 512m, 1.5g or a number of bytes, got %r" % (value,))
    if isinstance(value, str):
        match = _MEMORY.match(value.strip())
        if not match or (match.group(3) and match.group(3).lower() == "ib" and not match.group(2)):
            raise SpecError("memory", "expected a size such as 512m, 1.5g, 512MiB or a number of bytes, got %r"
                            % (value,))
        size = float(match.group(1)) * _UNITS[match.group(2).lower()]
    else:
        size = float(value)
    if not math.isfinite(size) or size < _MIN_MEMORY:
        raise SpecError("memory", "must be at least 6 MiB (Docker's minimum), got %r" % (value,))
    if size > _MAX_MEMORY:
        raise SpecError("memory", "%r is larger than 1 PiB" % (value,))
    return int(size)


def port_mapping(value: Any) -> str:
    """The agent's canonical form of a port mapping: "[HOST_IP:]HOST:CONTAINER/proto", or without a host
    port (Docker picks one) "CONTAINER/proto" / "HOST_IP::CONTAINER/proto"."""
    match = _PORT.match(str(value).strip())
    if not match:
        raise SpecError("ports", 'expected "[[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/tcp|udp]", got %r' % (value,))
    raw_ip, host_with_ip, host_alone, container_port, protocol = match.groups()
    host_port = host_with_ip or host_alone
    prefix = ""
    if raw_ip is not None:
        try:
            ip = str(ipaddress.ip_address(raw_ip.strip("[]")))
        except ValueError:
            raise SpecError("ports", "%r is not an IP address in %r" % (raw_ip, value))
        prefix = "[%s]:" % ip if ":" in ip else "%s:" % ip
    for port in (host_port, container_port):
        if port is not None and not 1 <= int(port) <= 65535:
            raise SpecError("ports", "port %s is not from 1 to 65535 in %r" % (port, value))
    protocol = (protocol or "tcp").lower()
    if host_port is None:
        return "%s:%d/%s" % (prefix, int(container_port), protocol) if prefix else "%d/%s" % (int(container_port), protocol)
    return "%s%d:%d/%s" % (prefix, int(host_port), int(container_port), protocol)


def image_reference(value: Any) -> str:
    """An image reference with ':latest' added when it has no tag or digest, as the agent stores it."""
    image = str(value).strip()
    if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
        image += ":latest"
    return image


def image_tag(value: Any) -> str:
    """The tag of an image reference ('latest' when it has none, or only a digest), as the agent takes an image
    app's version from it."""
    name = str(value).strip().split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def _lib_paths(values: Iterable[Any]) -> List[str]:
    out = []
    for raw in values:
        path = str(PurePosixPath(raw))
        if path not in out:
            out.append(path)
    return out


def build_spec(params: Mapping[str, Any]) -> Json:
    """The spec to send: only the options the user set, so the agent applies its own defaults."""
    spec = {}
    for key in SPEC_OPTIONS:
        value = params.get(key)
        if value is None:
            continue
        if key == "env":
            value = env_values(value)
        elif key in ("restart_window", "stop_timeout", "cpus"):
            value = float(value)
        elif key in ("ports", "host_lib_paths"):
            value = [str(v) for v in value]
        spec[key] = value
    return spec


def _normalize_value(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key == "memory":
        return memory_bytes(value)
    if key == "cpus":
        return round(float(value), 3)
    if key == "ports":
        return [port_mapping(v) for v in value]
    if key in ("image", "base_image"):
        return image_reference(value)
    if key == "host_lib_paths":
        return _lib_paths(value)
    if key == "env":
        return dict(value)
    return value


def normalized(spec: Mapping[str, Any]) -> Json:
    """The spec as the agent stores it: every known field, defaults filled in, values in canonical form."""
    out = {}
    for key, default in ALL_DEFAULTS.items():
        out[key] = _normalize_value(key, spec[key]) if key in spec else _normalize_value(key, default)
    for key, value in spec.items():
        if key not in out:
            out[key] = value
    return out


def _same(want: Any, have: Any) -> bool:
    if want in _EMPTY and have in _EMPTY:
        return True
    if isinstance(want, (int, float)) and isinstance(have, (int, float)) and not isinstance(want, bool):
        return float(want) == float(have)
    return bool(want == have)


def spec_changes(spec: Mapping[str, Any], current: Optional[Mapping[str, Any]]) -> List[str]:
    """Fields whose value would change if ``spec`` were sent to an app whose stored spec is ``current``.

    A field the module does not know (a newer agent) counts as unchanged while the agent holds an
    empty value for it: a deploy resets it to its default, which we take to be empty.
    """
    current = current or {}
    want = normalized(spec)
    changes = []
    for key in sorted(set(want) | set(current)):
        if key in want:
            if not _same(want[key], current.get(key, ALL_DEFAULTS.get(key))):
                changes.append(key)
        elif current.get(key) not in _EMPTY:
            changes.append(key)
    return changes


def expected_spec(spec: Mapping[str, Any], current: Optional[Mapping[str, Any]]) -> Json:
    """The spec the agent will hold after a deploy of ``spec``, for the diff."""
    out = normalized(spec)
    for key, value in (current or {}).items():
        if key not in out:
            out[key] = value if value in _EMPTY else None
    return out


def view(status: Optional[Mapping[str, Any]]) -> Json:
    """The part of an app's status that plum_app manages, for ``diff``."""
    if not status:
        return {"state": ABSENT}
    return {
        "state": status.get("desired"),
        "package": status.get("package"),
        "version": status.get("version"),
        "artifact_sha256": status.get("artifact_sha256"),
        "spec": dict(sorted((status.get("spec") or {}).items())),
    }


class Plan:
    """What a run does: ``actions`` in order, whether the artifact must be sent, the state after."""

    def __init__(self, actions: List[str], upload: bool, after: Json, reasons: List[str]) -> None:
        self.actions = actions  # deploy, deploy-stopped, start, stop, restart, delete
        self.upload = upload
        self.after = after
        self.reasons = reasons

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def _one_shot_done(status: Mapping[str, Any]) -> bool:
    """A one-shot app that ran to completion counts as started (its policy will not run it again)."""
    spec = status.get("spec") or {}
    return status.get("phase") == "Completed" and spec.get("restart_policy", "always") != "always"


def plan(name: str, state: str, current: Optional[Json], artifact_sha256: Optional[str] = None,
         spec: Optional[Json] = None, version: Optional[str] = None, package: Optional[str] = None) -> Plan:
    """Compute the actions that bring app ``name`` to ``state``.

    current: the app's status from the agent, or None when it does not exist.
    artifact_sha256: the artifact to run, or None to keep the app's current one (or for image apps).
    spec: the spec to send (see build_spec), or None when the module does not manage the spec.
    version, package: the new artifact's meta.ini values when known, for the diff.
    """
    reasons: List[str] = []
    if state == ABSENT:
        if current is None:
            return Plan([], False, view(None), reasons)
        return Plan(["delete"], False, view(None), ["the app exists"])

    deploy = False
    upload = False
    if current is None:
        if artifact_sha256 is None and not (spec or {}).get("image"):
            raise SpecError(
                "src",
                "app %r does not exist on the agent; give src, remote_src or image to deploy it" % name,
            )
        deploy = True
        upload = artifact_sha256 is not None
        reasons.append("the app does not exist")
    else:
        if artifact_sha256 is not None and artifact_sha256 != current.get("artifact_sha256"):
            deploy = upload = True
            reasons.append("new artifact %s (running %s)" % (artifact_sha256[:12], (current.get("artifact_sha256") or "none")[:12]))
        if spec is not None:
            changes = spec_changes(spec, current.get("spec"))
            if changes:
                deploy = True
                reasons.append("spec changes: %s" % ", ".join(changes))
        # The node changed mode (bare -> hybrid, ...): the same app now belongs in another runtime.
        on_deploy = current.get("runtime_on_deploy")
        if spec is not None and not deploy and on_deploy and current.get("runtime") and on_deploy != current.get("runtime"):
            deploy = True
            reasons.append("the agent now runs it as %s (it runs as %s)" % (on_deploy, current.get("runtime")))

    after = dict(view(current)) if current is not None else {}
    if deploy:
        image = (spec or {}).get("image")
        if image and artifact_sha256 is None:  # an image app: the agent names it after the app and the tag
            after.update(artifact_sha256=None, package=name, version=image_tag(image))
        elif artifact_sha256 is not None and (current is None or upload):
            after.update(artifact_sha256=artifact_sha256, version=version, package=package)
        if spec is not None:
            after["spec"] = dict(sorted(expected_spec(spec, (current or {}).get("spec")).items()))

    actions: List[str] = []
    now: Json = current or {}
    desired = now.get("desired")
    running_now = current is not None and (desired == RUNNING)
    if state == "started":
        if deploy:
            actions.append("deploy")
        elif desired != RUNNING:
            actions.append("start")
            reasons.append("the app is stopped")
        elif now.get("pid") is None and now.get("phase") in ENDED_PHASES:
            if not _one_shot_done(now):
                actions.append("start")
                reasons.append("the app is %s" % now.get("phase"))
        after["state"] = RUNNING
    elif state == "present":
        if deploy:
            actions.append("deploy-stopped")
        after["state"] = RUNNING if running_now else STOPPED
    elif state == "stopped":
        if current is not None and (desired != STOPPED or now.get("pid") is not None):
            actions.append("stop")
            reasons.append("the app is running")
        if deploy:
            actions.append("deploy-stopped")
        after["state"] = STOPPED
    elif state == "restarted":
        actions.append("deploy" if deploy else "restart")
        after["state"] = RUNNING
    else:
        raise SpecError("state", "unknown state %r" % state)
    return Plan(actions, upload and any(a.startswith("deploy") for a in actions), after, reasons)
