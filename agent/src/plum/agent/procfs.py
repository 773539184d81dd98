"""Reading /proc: process identity (pid + start time + boot id) and resource use per process group."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str
    pgrp: int
    session: int
    cpu_ticks: int
    start_ticks: int
    rss_pages: int


def read_stat(pid: int) -> Optional[ProcStat]:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # the command name may hold spaces or parentheses: split after the last ')'
    fields = raw[raw.rfind(b")") + 2 :].split()
    return ProcStat(
        pid=pid,
        state=fields[0].decode(),
        pgrp=int(fields[2]),
        session=int(fields[3]),
        cpu_ticks=int(fields[11]) + int(fields[12]),
        start_ticks=int(fields[19]),
        rss_pages=int(fields[21]),
    )


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def is_same_process(pid: int, start_ticks: int, boot: str) -> bool:
    """True when pid is alive and still the process we started (not a reused pid, not a zombie)."""
    if boot != boot_id():
        return False
    stat = read_stat(pid)
    return stat is not None and stat.start_ticks == start_ticks and stat.state not in ("Z", "X")


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def find_session_leader_with_env(variable: str, value: str) -> Optional[int]:
    """The session leader whose environment holds variable=value (fallback for lost pid records)."""
    return next(iter(session_leaders_with_env(variable, value)), None)


def session_leaders_with_env(variable: str, value: str) -> list[int]:
    """Every live session leader whose environment holds variable=value, oldest first."""
    needle = f"{variable}={value}".encode()
    found = []
    for pid in all_pids():
        stat = read_stat(pid)
        if stat is None or stat.session != pid or stat.state in ("Z", "X"):
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append((stat.start_ticks, pid))
    return [pid for _, pid in sorted(found)]


def session_leaders_below(directory: Path) -> list[int]:
    """Live session leaders whose working directory lies in `directory` (processes started without markers)."""
    found = []
    prefix = str(directory).rstrip("/") + "/"
    for pid in all_pids():
        stat = read_stat(pid)
        if stat is None or stat.session != pid or stat.state in ("Z", "X"):
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(prefix):
            found.append((stat.start_ticks, pid))
    return [pid for _, pid in sorted(found)]


def environ_of(pid: int) -> Optional[dict[str, str]]:
    """A process's environment as it was started (None if it is gone or not readable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    variables = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep:
            variables[name.decode(errors="replace")] = value.decode(errors="replace")
    return variables


def usage_by_group() -> dict[int, tuple[float, int]]:
    """{process group id: (cpu seconds, rss bytes)} summed over every live process."""
    totals: dict[int, list[int]] = {}
    for pid in all_pids():
        stat = read_stat(pid)
        if stat is None or stat.state == "Z":
            continue
        entry = totals.setdefault(stat.pgrp, [0, 0])
        entry[0] += stat.cpu_ticks
        entry[1] += stat.rss_pages
    return {pgrp: (ticks / CLOCK_TICKS, pages * PAGE_SIZE) for pgrp, (ticks, pages) in totals.items()}
