"""Values the Docker runtime accepts (memory, CPUs, ports, image names) and container usage from cgroups.

Parsing lives here, free of the Docker SDK, so spec.py and config.py validate with the same rules the
runtime applies, and a process-mode agent never imports the SDK. Parsers raise ValueError with a
message that callers prefix with the field or variable name.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

MIB = 1024 * 1024
MIN_MEMORY = 6 * MIB  # Docker refuses less
MAX_MEMORY = 2**50  # 1 PiB: anything above is a typo
MIN_CPUS = 0.01  # Docker's own lower bound
NETWORK_MODES = ("host", "bridge", "none")
PULL_POLICIES = ("if-not-present", "always", "never")

# Units are binary, as Docker's own (`--memory 1g` is 1 GiB): k, m, g, t, with an optional b, ib or iB.
_UNITS = {"": 1, "b": 1, "k": 1024, "m": MIB, "g": 1024 * MIB, "t": 1024 * 1024 * MIB}
_MEMORY = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
_PORT = re.compile(r"(?:(\[[0-9A-Fa-f:.]+\]|[0-9.]+):)?(\d{1,5}):(\d{1,5})(?:/(tcp|udp))?", re.IGNORECASE)
# repository[:tag][@digest], each path component lower-case as Docker requires; an optional registry
# host (with a port) in front.
_IMAGE = re.compile(
    r"(?:[A-Za-z0-9.-]+(?::\d+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@sha256:[0-9a-f]{64})?"
)


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
    for unit, factor in (("g", 1024 * MIB), ("m", MIB), ("k", 1024)):
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
    if cpus > 1024:
        raise ValueError(f"{value!r} CPUs is more than any host has")
    return round(cpus, 3)


@dataclass(frozen=True)
class PortMapping:
    host_ip: Optional[str]  # None: the agent's PLUM_PUBLISH_HOST
    host_port: int
    container_port: int
    protocol: str = "tcp"

    def canonical(self) -> str:
        ip = ""
        if self.host_ip is not None:
            ip = f"[{self.host_ip}]:" if ":" in self.host_ip else f"{self.host_ip}:"
        return f"{ip}{self.host_port}:{self.container_port}/{self.protocol}"

    def bound_on(self, default_host: str) -> tuple[str, int, str]:
        return (self.host_ip or default_host, self.host_port, self.protocol)


def parse_port(value: object) -> PortMapping:
    """Parse "[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]", e.g. "8080:80", "127.0.0.1:53:53/udp"."""
    usage = '"[HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]" such as "8080:80" or "127.0.0.1:5353:53/udp"'
    if isinstance(value, dict):
        value = _port_object(value)
    if not isinstance(value, str):
        raise ValueError(f"expected {usage}, got {value!r}")
    match = _PORT.fullmatch(value.strip())
    if not match:
        raise ValueError(f"expected {usage}, got {value!r}")
    raw_ip, host_port, container_port, protocol = match.groups()
    host_ip = None
    if raw_ip is not None:
        try:
            host_ip = str(ipaddress.ip_address(raw_ip.strip("[]")))
        except ValueError:
            raise ValueError(f"{raw_ip!r} is not an IP address in {value!r}") from None
    for port in (host_port, container_port):
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"port {port} is not from 1 to 65535 in {value!r}")
    return PortMapping(host_ip, int(host_port), int(container_port), (protocol or "tcp").lower())


def _port_object(value: dict[str, object]) -> str:
    """The controller's form, {"host": 8080, "container": 80, "protocol": "tcp", "hostIp"?: "127.0.0.1"}."""
    unknown = sorted(set(value) - {"host", "container", "protocol", "hostIp"})
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in {value!r} (keys: host, container, protocol, hostIp)")
    host, container = value.get("host"), value.get("container")
    if host in (None, "", 0) or container in (None, ""):
        raise ValueError(f"both a host and a container port are needed, got {value!r}")
    text = f"{host}:{container}/{value.get('protocol') or 'tcp'}"
    ip = value.get("hostIp")
    if ip:
        text = f"[{ip}]:{text}" if ":" in str(ip) else f"{ip}:{text}"
    return text


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


# --- usage from cgroups ------------------------------------------------------------------------

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read_int(path: Path) -> Optional[int]:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_dirs(pid: int) -> dict[str, Path]:
    """Where the cgroups of a process live: {"memory": dir, "cpuacct": dir} (v1) or {"unified": dir} (v2)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return {}
    found: dict[str, Path] = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        names = controllers.split(",")
        for wanted in ("memory", "cpuacct"):
            if wanted in names:
                for mount in (controllers, wanted):
                    directory = CGROUP_ROOT / mount / path.lstrip("/")
                    if directory.is_dir():
                        found[wanted] = directory
                        break
        if controllers == "" and (CGROUP_ROOT / "cgroup.controllers").exists():
            found["unified"] = CGROUP_ROOT / path.lstrip("/")
    return found


def cgroup_usage(dirs: dict[str, Path]) -> Optional[tuple[float, int]]:
    """(cpu seconds, memory bytes without the reclaimable page cache), as `docker stats` counts them."""
    if "memory" in dirs and "cpuacct" in dirs:
        usage = _read_int(dirs["memory"] / "memory.usage_in_bytes")
        cpu_ns = _read_int(dirs["cpuacct"] / "cpuacct.usage")
        if usage is None or cpu_ns is None:
            return None
        inactive = _stat_value(dirs["memory"] / "memory.stat", "total_inactive_file")
        return cpu_ns / 1e9, max(0, usage - inactive)
    if "unified" in dirs:
        usage = _read_int(dirs["unified"] / "memory.current")
        if usage is None:
            return None
        cpu_us = _stat_value(dirs["unified"] / "cpu.stat", "usage_usec")
        inactive = _stat_value(dirs["unified"] / "memory.stat", "inactive_file")
        return cpu_us / 1e6, max(0, usage - inactive)
    return None
