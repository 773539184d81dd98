"""Process facts the process runtime relies on: identity, finding a lost instance, usage of its tree."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plum.agent import procfs

# A session leader that forks a child holding 8 MiB, then both sleep.
TREE = (
    "import os, time\n"
    "if os.fork() == 0:\n"
    "    block = bytearray(8 * 2**20)\n"
    "    time.sleep(60)\n"
    "else:\n"
    "    time.sleep(60)\n"
)


@pytest.fixture
def leader(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PLUM_INSTANCE_ID": f"test-{tmp_path.name}"}
    proc = subprocess.Popen([sys.executable, "-c", TREE], cwd=tmp_path, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def wait_for_child(pid: int) -> procfs.ProcessTable:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        table = procfs.ProcessTable()
        if table.children.get(pid) and table.tree_usage(pid)[1] > 8 * 2**20:
            return table
        time.sleep(0.02)
    raise AssertionError("the child never showed up")


def test_identity_is_stable_and_matches_the_kernel_start_time() -> None:
    first = procfs.identify(os.getpid())
    assert first is not None
    assert procfs.identify(os.getpid()) == first
    stat = Path(f"/proc/{os.getpid()}/stat").read_bytes()
    assert first.start_ticks == int(stat[stat.rfind(b")") + 2 :].split()[19])


def test_a_gone_or_zombie_process_has_no_identity() -> None:
    proc = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while procfs.identify(proc.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)  # not reaped yet: a zombie
    assert procfs.identify(proc.pid) is None
    proc.wait()
    assert procfs.identify(proc.pid) is None


def test_usage_sums_the_whole_tree(leader: subprocess.Popen[bytes]) -> None:
    table = wait_for_child(leader.pid)
    cpu, rss = table.tree_usage(leader.pid)
    (child,) = table.children[leader.pid]
    assert rss == table.facts[leader.pid].rss_bytes + table.facts[child].rss_bytes
    assert cpu >= table.facts[leader.pid].cpu_seconds
    assert table.tree_usage(-1) == (0.0, 0)


def test_usage_by_group_counts_the_leader_and_its_child(leader: subprocess.Popen[bytes]) -> None:
    tree = wait_for_child(leader.pid).tree_usage(leader.pid)
    assert procfs.usage_by_group()[leader.pid][1] == pytest.approx(tree[1], rel=0.2)


def test_a_lost_instance_is_found_by_its_environment_and_its_folder(
    leader: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    wait_for_child(leader.pid)  # the child shares the environment but leads no session
    assert procfs.session_leaders_with_env("PLUM_INSTANCE_ID", f"test-{tmp_path.name}") == [leader.pid]
    assert procfs.find_session_leader_with_env("PLUM_INSTANCE_ID", "nobody") is None
    assert procfs.session_leaders_below(tmp_path.parent) == [leader.pid]
    environ = procfs.environ_of(leader.pid)
    assert environ is not None and environ["PLUM_INSTANCE_ID"] == f"test-{tmp_path.name}"
