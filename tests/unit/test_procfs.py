"""Process facts the process runtime relies on: identity, finding a lost instance, what an instance uses."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plum.agent import procfs

MIB = 2**20
# A leader with a child that starts its own session (it leaves the group, not the tree) and a grandchild
# forked twice (it leaves the tree, not the group); each holds some memory, then all sleep.
APP = """
import os, time
if os.fork() == 0:
    os.setsid()
    block = bytearray(8 * 2**20)
elif os.fork() == 0:
    if os.fork() == 0:
        block = bytearray(4 * 2**20)
    else:
        os._exit(0)
time.sleep(60)
"""


@dataclass
class Instance:
    marker: str  # its PLUM_INSTANCE_ID
    leader: int
    own_session: int  # the child that called setsid
    double_forked: int  # the grandchild


def settled(leader: int) -> procfs.ProcessTable:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        table = procfs.ProcessTable()
        if len(table.members(leader)) == 3 and table.usage(leader)[1] > 12 * MIB:
            return table
        time.sleep(0.02)
    raise AssertionError("the app's processes never all showed up")


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    release = tmp_path / "releases" / "1"
    release.mkdir(parents=True)
    marker = secrets.token_hex(8)
    env = {**os.environ, "PLUM_INSTANCE_ID": marker}
    proc = subprocess.Popen([sys.executable, "-c", APP], cwd=release, env=env, start_new_session=True)
    members = {proc.pid}
    try:
        table = settled(proc.pid)
        members = table.members(proc.pid)
        (own,) = [pid for pid in members - {proc.pid} if table.facts[pid].pgrp == pid]
        (double,) = members - {proc.pid, own}
        yield Instance(marker, proc.pid, own, double)
    finally:
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()


def test_identity_is_stable_and_is_the_kernels_start_time() -> None:
    first = procfs.identify(os.getpid())
    assert first is not None
    assert procfs.identify(os.getpid()) == first
    stat = Path(f"/proc/{os.getpid()}/stat").read_bytes()
    assert first.start_ticks == int(stat[stat.rfind(b")") + 2 :].split()[19])


def test_a_gone_or_zombie_process_has_no_identity() -> None:
    proc = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while procfs.identify(proc.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)  # exited, not reaped yet: a zombie
    assert procfs.identify(proc.pid) is None
    proc.wait()
    assert procfs.identify(proc.pid) is None


def test_an_instance_uses_what_its_tree_and_its_group_use(instance: Instance) -> None:
    table = procfs.ProcessTable()
    members = {instance.leader, instance.own_session, instance.double_forked}
    assert table.members(instance.leader) == members
    cpu, rss = table.usage(instance.leader)
    assert rss == sum(table.facts[pid].rss_bytes for pid in members) and rss > 12 * MIB
    assert cpu == pytest.approx(sum(table.facts[pid].cpu_seconds for pid in members))
    assert table.usage(-1) == (0.0, 0)


def test_usage_by_group_leaves_out_a_child_in_its_own_session(instance: Instance) -> None:
    by_group = procfs.usage_by_group()
    assert instance.own_session in by_group
    assert by_group[instance.leader][1] < procfs.ProcessTable().usage(instance.leader)[1]


def test_a_lost_instance_is_found_by_its_environment_and_its_folder(instance: Instance, tmp_path: Path) -> None:
    leaders = [instance.leader, instance.own_session]  # both lead a session, the oldest first
    assert procfs.session_leaders_with_env("PLUM_INSTANCE_ID", instance.marker) == leaders
    assert procfs.find_session_leader_with_env("PLUM_INSTANCE_ID", instance.marker) == instance.leader
    assert procfs.find_session_leader_with_env("PLUM_INSTANCE_ID", "nobody") is None
    assert procfs.session_leaders_below(tmp_path / "releases") == leaders
    environ = procfs.environ_of(instance.leader)
    assert environ is not None and environ["PLUM_INSTANCE_ID"] == instance.marker
