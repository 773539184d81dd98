"""Values an app's runtime settings take (memory, CPUs, ports, images, environment variables).

The agent (spec fields, PLUM_* settings) and the controller (deployment entries) both parse them here,
so a value one side accepts is never refused by the other. Pure functions, no Docker SDK. Parsers raise
ValueError with a message that callers prefix with the field or variable name.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Optional

from plum.common.vocab import GIB, KIB, MIB, PROTOCOLS

MIN_MEMORY = 6 * MIB  # Docker refuses less
MAX_MEMORY = 2**50  # 1 PiB: anything above is a typo
MIN_CPUS = 0.01  # Docker's own lower bound
MAX_CPUS = 1024
NETWORK_MODES = ("host", "bridge", "none")
PULL_POLICIES = ("if-not-present", "always", "never")
TRANSPORTS = ("tcp", "udp")
# Set by the agent for every instance: an app's env can never override them.
RESERVED_ENV = (
    "PLUM_INSTANCE_ID",
    "PLUM_APP_NAME",
    "PLUM_APP_VERSION",
    "PLUM_RELEASE",
    "PLUM_APP_HOME",
    "WORKER_NODE_ID",
)
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9]{1,5}")

# Units are binary, as Docker's own (`--memory 1g` is 1 GiB): k, m, g, t, with an optional b, ib or iB.
_UNITS = {"": 1, "b": 1, "k": KIB, "m": MIB, "g": GIB, "t": 1024 * GIB}
_MEMORY = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
# repository[:tag][@digest], each path component lower-case as Docker requires; an optional registry
# host (with a port) in front.
_IMAGE = re.compile(
    r"(?:[A-Za-z0-9.-]+(?::\d+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@sha256:[0-9a-f]{64})?"
)


# --- memory and CPUs ---------------------------------------------------------------------------


def parse_memory(value: object) -> int:
    """Bytes from 536870912, "512m", "1g", "1.5g", "512MiB", "512mb"; at least Docker's 6 MiB."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a size such as 512m, 1.5g or a number of bytes, got {value!r}")
    if isinstance(value, str):
        match = _MEMORY.fullmatch(value.strip())
        if not match:
            raise ValueError(f"expected a size such as 512m, 1.5g, 512MiB or a number of bytes, got {value!r}")
        number, unit = float(match.group(1)), match.group(2).lower()
        if match.group(3) and match.group(3).lower() == "ib" and not unit:
            raise ValueError(f"expected a size such as 512m, 1.5g, 512MiB or a number of bytes, got {value!r}")
        size = number * _UNITS[unit]
    else:
        size = float(value)
    if not math.isfinite(size) or size < MIN_MEMORY:
        raise ValueError(f"must be at least 6 MiB (Docker's minimum; units k, m, g: 512m, 1g), got {value!r}")
    if size > MAX_MEMORY:
        raise ValueError(f"{value!r} is larger than 1 PiB")
    return int(size)


def format_memory(size: int) -> str:
    for unit, factor in (("g", GIB), ("m", MIB), ("k", KIB)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def parse_cpus(value: object) -> float:
    """A positive number of CPUs (fractions allowed: 0.5), as a number or a numeric string."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a positive number of CPUs such as 0.5 or 2, got {value!r}")
    try:
        cpus = float(value)
    except ValueError:
        raise ValueError(f"expected a positive number of CPUs such as 0.5 or 2, got {value!r}") from None
    if not math.isfinite(cpus) or cpus < MIN_CPUS:
        raise ValueError(f"must be a number of CPUs of at least {MIN_CPUS} (0.5 is half a CPU), got {value!r}")
    if cpus > MAX_CPUS:
        raise ValueError(f"{value!r} CPUs is more than any host has")
    return round(cpus, 3)


# --- ports ---------------------------------------------------------------------------------------

PORT_USAGE = (
    '"[[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/tcp|udp]" such as "8080:80", "127.0.0.1:5353:53/udp" or "80" '
    '(Docker picks the host port), or {"host"?, "container", "protocol"?, "hostIp"?}'
)


class PortError(ValueError):
    """A bad port; ``key`` names the key of the object form at fault (container, host, ...), if any."""

    def __init__(self, message: str, key: Optional[str] = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class PortMapping:
    host_ip: Optional[str]  # None: the agent's PLUM_PUBLISH_HOST
    host_port: Optional[int]  # None: Docker picks a free one when the container starts
    container_port: int
    protocol: str = "tcp"

    def canonical(self) -> str:
        """ "[HOST_IP:]HOST:CONTAINER/proto", or "[HOST_IP::]CONTAINER/proto" without a host port (as docker -p)."""
        ip = ""
        if self.host_ip is not None:
            ip = f"[{self.host_ip}]:" if ":" in self.host_ip else f"{self.host_ip}:"
        if self.host_port is None:
            return f"{ip}:{self.container_port}/{self.protocol}" if ip else f"{self.container_port}/{self.protocol}"
        return f"{ip}{self.host_port}:{self.container_port}/{self.protocol}"

    def bound_on(self, default_host: str) -> tuple[str, Optional[int], str]:
        return (self.host_ip or default_host, self.host_port, self.protocol)

    def to_object(self) -> dict[str, object]:
        """The controller's form: {"container", "protocol", "host"?, "hostIp"?}."""
        data: dict[str, object] = {"container": self.container_port, "protocol": self.protocol}
        if self.host_port is not None:
            data["host"] = self.host_port
        if self.host_ip is not None:
            data["hostIp"] = self.host_ip
        return data


def parse_port(value: object) -> PortMapping:
    """A port to publish: "[[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/tcp|udp]" or the object form.

    "8080:80", "127.0.0.1:5353:53/udp", "[::1]:8443:443"; without a host port ("80", "80/udp",
    "127.0.0.1::80") Docker picks a free one. The object form is the controller's and Plum's:
    {"host"?: 8080, "container": 80, "protocol"?: "tcp", "hostIp"?: "127.0.0.1", "serviceName"?: "web"}
    (serviceName is ignored; a service protocol such as http is published as TCP).
    """
    if isinstance(value, dict):
        return _port_object(value)
    if not isinstance(value, str):
        raise PortError(f"expected {PORT_USAGE}, got {value!r}")
    text, slash, protocol = value.strip().partition("/")
    if slash and protocol.lower() not in TRANSPORTS:
        raise PortError(f"expected {PORT_USAGE}, got {value!r}")
    raw_ip: Optional[str] = None
    if text.startswith("["):  # [IPv6]:HOST:CONTAINER
        raw_ip, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise PortError(f"expected {PORT_USAGE}, got {value!r}")
        parts = rest[1:].split(":")
        if len(parts) != 2:
            raise PortError(f"expected {PORT_USAGE}, got {value!r}")
        raw_host, raw_container = parts
    else:
        parts = text.split(":")
        if len(parts) == 1:
            raw_host, raw_container = "", parts[0]
        elif len(parts) == 2:
            raw_host, raw_container = parts
            if not raw_host:
                raise PortError(f"expected {PORT_USAGE}, got {value!r}")
        elif len(parts) == 3:
            raw_ip, raw_host, raw_container = parts
        else:
            raise PortError(f"expected {PORT_USAGE}, got {value!r}")
    if not _NUMBER.fullmatch(raw_container) or (raw_host and not _NUMBER.fullmatch(raw_host)):
        raise PortError(f"expected {PORT_USAGE}, got {value!r}")
    host_ip = None if raw_ip is None else _ip(raw_ip, value, None)
    host_port = _port_number(raw_host, value, None) if raw_host else None
    container_port = _port_number(raw_container, value, None)
    return PortMapping(host_ip, host_port, container_port, (protocol or "tcp").lower())


def _port_number(raw: object, value: object, key: Optional[str]) -> int:
    if (
        isinstance(raw, bool)
        or not isinstance(raw, (int, str))
        or (isinstance(raw, str) and not _NUMBER.fullmatch(raw))
    ):
        raise PortError(f"expected a port number from 1 to 65535, got {raw!r} in {value!r}", key)
    if not 1 <= int(raw) <= 65535:
        raise PortError(f"port {raw} is not from 1 to 65535 in {value!r}", key)
    return int(raw)


def _ip(raw: object, value: object, key: Optional[str]) -> str:
    try:
        return str(ipaddress.ip_address(str(raw).strip("[]")))
    except ValueError:
        raise PortError(f"{raw!r} is not an IP address in {value!r}", key) from None


def _port_object(value: dict[str, object]) -> PortMapping:
    keys = ("host", "container", "protocol", "hostIp", "serviceName")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise PortError(f"unknown key {unknown[0]!r} in {value!r} (keys: {', '.join(keys)})", unknown[0])
    if value.get("container") in (None, ""):
        raise PortError(f"a container port is needed, got {value!r}", "container")
    container_port = _port_number(value["container"], value, "container")
    host = value.get("host")
    host_port = None if host in (None, "") else _port_number(host, value, "host")
    protocol = value.get("protocol") or "tcp"
    if not isinstance(protocol, str) or protocol.lower() not in PROTOCOLS:
        raise PortError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}", "protocol")
    ip = value.get("hostIp")
    host_ip = None if ip in (None, "") else _ip(ip, value, "hostIp")
    service = value.get("serviceName")
    if service is not None and not isinstance(service, str):
        raise PortError(f"serviceName must be a string, got {service!r}", "serviceName")
    return PortMapping(host_ip, host_port, container_port, "udp" if protocol.lower() == "udp" else "tcp")


# --- images ----------------------------------------------------------------------------------------


def validate_image(value: object) -> str:
    """An image reference: repository[:tag][@digest]; ':latest' is added when no tag or digest is given."""
    if not isinstance(value, str) or not _IMAGE.fullmatch(value.strip()) or len(value) > 255:
        raise ValueError(f"expected an image name such as repo/name:tag (lower-case repository), got {value!r}")
    image = value.strip()
    last = image.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in image:
        image += ":latest"
    return image


def image_tag(image: str) -> str:
    """The tag of an image reference ('latest' when only a digest names it)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


# --- environment variables ---------------------------------------------------------------------------


def check_env_var(name: object, value: object) -> str:
    """An app's variable: a valid name the agent does not set itself, a string or number value (as a string)."""
    if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid variable name {name!r}")
    if name in RESERVED_ENV:
        raise ValueError(f"{name} is set by the agent and cannot be overridden")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"value of {name} must be a string or number, got {value!r}")
    return check_exec_text(str(value), f"value of {name}")


def check_exec_text(text: str, what: str) -> str:
    """Text handed to execve (a command line, a variable's value): refused here when it could never be
    passed, instead of making the app fail to start on every restart."""
    if "\x00" in text:
        raise ValueError(f"{what} contains a NUL byte (at character {text.index(chr(0))})")
    try:
        text.encode("utf-8")  # a lone surrogate from JSON: neither execve nor a database can store it
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} contains {text[exc.start]!r} (at character {exc.start}), not valid text") from None
    return text
