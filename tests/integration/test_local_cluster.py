"""`make cluster` (scripts/local_cluster.py): the README's local cluster comes up and goes away cleanly."""

from __future__ import annotations

import subprocess
import sys

from support.agent import REPO, pid_alive


def test_local_cluster_up_and_down():
    script = [sys.executable, str(REPO / "scripts" / "local_cluster.py")]
    try:
        up = subprocess.run([*script, "up"], capture_output=True, text=True, timeout=120, check=False)
        assert up.returncode == 0, up.stderr
        assert up.stdout.count("phase=Running") == 2, up.stdout
        assert "node=node1" in up.stdout and "node=node2" in up.stdout
        again = subprocess.run([*script, "up"], capture_output=True, text=True, timeout=120, check=False)
        assert again.stdout.count("already running") == 3, "a second `up` reuses the running cluster"
        assert again.stdout.count("phase=Running") == 2
    finally:
        pids = [int(p.read_text()) for p in (REPO / ".run" / "cluster").glob("*.pid")]
        down = subprocess.run([*script, "down"], capture_output=True, text=True, timeout=120, check=False)
    assert down.returncode == 0, down.stderr
    assert pids and not any(pid_alive(pid) for pid in pids)
