"""`make cluster` (scripts/local_cluster.py): the README's local cluster comes up and goes away cleanly."""

from __future__ import annotations

import socket
import subprocess
import sys

from support.agent import REPO, pid_alive


def three_free_ports() -> int:
    """A base port with the two above it free too (the script uses base, base+1, base+2)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + 2 > 65535:
            continue
        try:
            with socket.socket() as one, socket.socket() as two:
                one.bind(("127.0.0.1", base + 1))
                two.bind(("127.0.0.1", base + 2))
            return base
        except OSError:
            continue
    raise AssertionError("no three consecutive free ports")


def test_local_cluster_up_and_down(tmp_path, monkeypatch):
    # its own directory and ports, so a `make cluster` the developer runs is left alone
    monkeypatch.setenv("PLUM_CLUSTER_DIR", str(tmp_path / "cluster"))
    monkeypatch.setenv("PLUM_CLUSTER_PORT", str(three_free_ports()))
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
        pids = [int(p.read_text()) for p in (tmp_path / "cluster").glob("*.pid")]
        down = subprocess.run([*script, "down"], capture_output=True, text=True, timeout=120, check=False)
    assert down.returncode == 0, down.stderr
    assert pids and not any(pid_alive(pid) for pid in pids)
