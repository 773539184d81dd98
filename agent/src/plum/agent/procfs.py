"""Process facts through psutil: identity (pid + start time + boot id), environment, session leaders, and the
CPU and memory of an instance's processes or of a process group."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

import psutil

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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


def start_ticks(proc: psutil.Process) -> int:
    """The kernel's start time of a process, in clock ticks since boot.

    psutil adds the boot time to it; that sum moves when the wall clock is stepped, the ticks never do.
    """
    return round((proc.create_time() - psutil.boot_time()) * CLOCK_TICKS)


def identify(pid: int) -> Optional[Identity]:
    """The identity of a live process (None when it is gone or a zombie), from one read of /proc/<pid>/stat:
    it is on the path of every restart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):  # state, ..., starttime is the 22nd field of the line
        return None
    return Identity(pid, int(fields[19]), boot_id())


def is_same_process(pid: int, ticks: int, boot: str) -> bool:
    """True when pid is alive and still the process we started (not a reused pid, not a zombie)."""
    if boot != boot_id():
        return False
    found = identify(pid)
    return found is not None and found.start_ticks == ticks


def _all_processes() -> Iterator[psutil.Process]:
    """Every process, one object at a time: process_iter() would keep an object for every pid on the host
    (bench/agent_idle.py: 0.2 MiB more RSS with 100 apps)."""
    for pid in psutil.pids():
        try:
            yield psutil.Process(pid)
        except psutil.Error:
            continue


def _session_leaders() -> Iterator[psutil.Process]:
    for proc in _all_processes():
        try:
            if os.getsid(proc.pid) == proc.pid and proc.status() != psutil.STATUS_ZOMBIE:
                yield proc
        except (OSError, psutil.Error):
            continue


def _oldest_first(found: list[psutil.Process]) -> list[int]:
    ordered = []
    for proc in found:
        try:
            ordered.append((start_ticks(proc), proc.pid))
        except psutil.Error:
            continue
    return [pid for _, pid in sorted(ordered)]


def find_session_leader_with_env(variable: str, value: str) -> Optional[int]:
    """The session leader whose environment holds variable=value (fallback for lost pid records)."""
    return next(iter(session_leaders_with_env(variable, value)), None)


def session_leaders_with_env(variable: str, value: str) -> list[int]:
    """Every live session leader whose environment holds variable=value, oldest first."""
    found = []
    for proc in _session_leaders():
        try:
            if proc.environ().get(variable) == value:
                found.append(proc)
        except psutil.Error:
            continue
    return _oldest_first(found)


def session_leaders_below(directory: Path) -> list[int]:
    """Live session leaders whose working directory lies in `directory` (processes started without markers)."""
    prefix = str(directory).rstrip("/") + "/"
    found = []
    for proc in _session_leaders():
        try:
            if proc.cwd().startswith(prefix):
                found.append(proc)
        except psutil.Error:
            continue
    return _oldest_first(found)


def environ_of(pid: int) -> Optional[dict[str, str]]:
    """A process's environment as it was started (None if it is gone or not readable)."""
    try:
        return dict(psutil.Process(pid).environ())
    except psutil.Error:
        return None


class ProcessFacts(NamedTuple):
    ppid: int
    pgrp: int
    cpu_seconds: float
    rss_bytes: int


def _live_processes() -> dict[int, ProcessFacts]:
    facts = {}
    for proc in _all_processes():
        try:
            with proc.oneshot():  # /proc/<pid>/stat and statm read once for all four
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                cpu = proc.cpu_times()
                facts[proc.pid] = ProcessFacts(
                    proc.ppid(), os.getpgid(proc.pid), cpu.user + cpu.system, proc.memory_info().rss
                )
        except (OSError, psutil.Error):  # gone since the scan began
            continue
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
