"""A container's CPU and memory, read from its cgroups (v1 or v2) as `docker stats` counts them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

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
    """(cpu seconds, memory bytes without the reclaimable page cache)."""
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
