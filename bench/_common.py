"""Shared pieces of the benchmarks: a real agent (the tests' harness), supervisord as the anchor,
percentiles and a results table. Every benchmark is bounded and talks to loopback only."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.agent import Agent, make_zip, wait_until  # noqa: E402

__all__ = [
    "Agent",
    "Supervisord",
    "cpu_seconds",
    "make_zip",
    "percentile",
    "report",
    "rss_and_cpu",
    "wait_until",
    "workdir",
]


def workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"plum-bench-{name}-"))


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def rss_and_cpu(pid: int) -> tuple[int, float]:
    """(resident bytes, cpu seconds) of one process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(status.split("VmRSS:")[1].split()[0])
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    return rss_kb * 1024, ticks / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time of a process's live threads, to the nanosecond (/proc/<pid>/task/*/schedstat); the clock ticks of
    rss_and_cpu are 10 ms, too coarse for an idle process over a short window. Exited threads' time is not in it."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
    return total / 1e9


def report(title: str, rows: list[tuple[str, Any]], as_json: bool = False) -> None:
    if as_json:
        print(json.dumps({"benchmark": title, **{k: v for k, v in rows}}))
        return
    print(f"\n== {title}")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"  {key.ljust(width)}  {shown}")


class Supervisord:
    """supervisord with generated [program:x] sections; the anchor the agent is compared with."""

    def __init__(self, root: Path, programs: dict[str, dict[str, str]]) -> None:
        self.root = root
        self.conf = root / "supervisord.conf"
        self.sock = root / "supervisor.sock"
        lines = [
            "[supervisord]",
            f"logfile={root}/supervisord.log",
            f"pidfile={root}/supervisord.pid",
            "nodaemon=true",
            "loglevel=warn",
            "[unix_http_server]",
            f"file={self.sock}",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]",
            f"serverurl=unix://{self.sock}",
        ]
        for name, options in programs.items():
            lines.append(f"[program:{name}]")
            lines += [f"{k}={v}" for k, v in options.items()]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Supervisord:
        exe = shutil.which("supervisord") or str(Path(sys.executable).parent / "supervisord")
        with (self.root / "supervisord.out").open("ab") as out:
            self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=out, stderr=out, start_new_session=True)
        wait_until(self.sock.exists, timeout=15, what="supervisord socket")
        return self

    def ctl(self, *args: str) -> str:
        exe = shutil.which("supervisorctl") or str(Path(sys.executable).parent / "supervisorctl")
        return subprocess.run([exe, "-c", str(self.conf), *args], capture_output=True, text=True, check=False).stdout

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def median(values: list[float]) -> float:
    return statistics.median(values)
