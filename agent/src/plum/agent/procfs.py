"""Process facts read from /proc (Linux): identity (pid + start time + boot id), environment, session leaders, and the
CPU and memory of an instance's processes or of a process group."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Identity:
    """What tells a process apart from a later one given the same pid: its start time and the boot it ran in."""

    pid: int
    start_ticks: int
    boot: str


_boot_id: Optional[str] = None


def boot_id() -> str:
    """This boot's id (read once: it cannot change while the agent runs)."""
    global _boot_id  # noqa: PLW0603 - a cache
    if _boot_id is None:
        try:
            _boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            return ""
    return _boot_id


class _Stat(NamedTuple):
    """The fields of /proc/<pid>/stat the agent reads."""

    state: bytes
    ppid: int
    pgrp: int
    session: int
    cpu_ticks: int  # utime + stime
    start_ticks: int  # the kernel's start time, in clock ticks since boot (never moved by a clock step)
    rss_pages: int


def _stat(pid: int) -> Optional[_Stat]:
    """One read of /proc/<pid>/stat (None when the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()  # the name, in parentheses, may hold spaces
    if len(fields) < 22:
        return None
    return _Stat(
        fields[0],
        int(fields[1]),
        int(fields[2]),
        int(fields[3]),
        int(fields[11]) + int(fields[12]),
        int(fields[19]),
        int(fields[21]),
    )


def _alive(stat: Optional[_Stat]) -> bool:
    return stat is not None and stat.state not in (b"Z", b"X")


def _pids() -> Iterator[int]:
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


def identify(pid: int) -> Optional[Identity]:
    """The identity of a live process (None when it is gone or a zombie), from one read of /proc/<pid>/stat:
    it is on the path of every restart."""
    stat = _stat(pid)
    if stat is None or not _alive(stat):
        return None
    return Identity(pid, stat.start_ticks, boot_id())


def is_same_process(pid: int, ticks: int, boot: str) -> bool:
    """True when pid is alive and still the process we started (not a reused pid, not a zombie)."""
    if boot != boot_id():
        return False
    found = identify(pid)
    return found is not None and found.start_ticks == ticks


def _session_leaders() -> Iterator[tuple[int, int]]:
    """(start ticks, pid) of every live session leader."""
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None and _alive(stat) and stat.session == pid:
            yield stat.start_ticks, pid


def find_session_leader_with_env(variable: str, value: str) -> Optional[int]:
    """The session leader whose environment holds variable=value (fallback for lost pid records)."""
    return next(iter(session_leaders_with_env(variable, value)), None)


def session_leaders_with_env(variable: str, value: str) -> list[int]:
    """Every live session leader whose environment holds variable=value, oldest first."""
    return [pid for _, pid in sorted(found for found in _session_leaders() if _env_has(found[1], variable, value))]


def session_leaders_below(directory: Path) -> list[int]:
    """Live session leaders whose working directory lies in `directory` (processes started without markers)."""
    prefix = str(directory).rstrip("/") + "/"
    found = []
    for ticks, pid in _session_leaders():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(prefix):
            found.append((ticks, pid))
    return [pid for _, pid in sorted(found)]


def _env_has(pid: int, variable: str, value: str) -> bool:
    environ = environ_of(pid)
    return environ is not None and environ.get(variable) == value


def environ_of(pid: int) -> Optional[dict[str, str]]:
    """A process's environment as it was started (None if it is gone or not readable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    environ = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            environ[os.fsdecode(key)] = os.fsdecode(value)
    return environ


class ProcessFacts(NamedTuple):
    ppid: int
    pgrp: int
    cpu_seconds: float
    rss_bytes: int


def _live_processes() -> dict[int, ProcessFacts]:
    facts = {}
    for pid in _pids():
        stat = _stat(pid)  # one read for all four
        if stat is None or not _alive(stat):  # gone since the scan began, or a zombie
            continue
        facts[pid] = ProcessFacts(stat.ppid, stat.pgrp, stat.cpu_ticks / CLOCK_TICKS, stat.rss_pages * PAGE_SIZE)
    return facts


class ProcessTable:
    """Every live process at one moment, from one scan: what the resource use of an instance is read from."""

    def __init__(self) -> None:
        self.facts = _live_processes()
        self.children: dict[int, list[int]] = {}
        self.groups: dict[int, list[int]] = {}
        for pid, fact in self.facts.items():
            self.children.setdefault(fact.ppid, []).append(pid)
            self.groups.setdefault(fact.pgrp, []).append(pid)

    def members(self, leader: int) -> set[int]:
        """An instance's processes: its leader's tree (children that left the group too) and the leader's
        process group (daemons that left the tree by forking twice), as long as the leader lives."""
        if leader not in self.facts:
            return set()
        found, todo = set(self.groups.get(leader, [])), [leader]
        while todo:
            pid = todo.pop()
            found.add(pid)
            todo += [child for child in self.children.get(pid, []) if child not in found]
        return found

    def usage(self, leader: int) -> tuple[float, int]:
        """(cpu seconds, rss bytes) summed over an instance's processes; zeros when its leader is gone."""
        members = [self.facts[pid] for pid in self.members(leader)]
        return sum(m.cpu_seconds for m in members), sum(m.rss_bytes for m in members)


def usage_by_group() -> dict[int, tuple[float, int]]:
    """{process group id: (cpu seconds, rss bytes)} summed over every live process."""
    totals: dict[int, tuple[float, int]] = {}
    for fact in _live_processes().values():
        cpu, rss = totals.get(fact.pgrp, (0.0, 0))
        totals[fact.pgrp] = (cpu + fact.cpu_seconds, rss + fact.rss_bytes)
    return totals
