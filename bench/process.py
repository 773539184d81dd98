"""Process apps (mode "bare"): the agent against supervisord, systemd and a fork/exec floor, all in the same run.

Each run starts a fresh agent, supervisord and floor supervisor (and reuses one systemd test host container) and
gives every one of them the same apps (bench/_anchors.py's APP_SCRIPT, run as nobody):
1. idle: 1, then 20, then 100 apps blocked on their trigger; after one GET /v1/apps, the RSS of each
   supervisor's own process and its CPU over a window (all four idle at the same time);
2. burst: those 100 apps share one trigger FIFO; the bench closes it, all 100 exit 1 at once; per app, the gap
   from its exit timestamp to its restarted instance's first line (one supervisor at a time);
3. one-off crashes: --samples more apps, each with its own trigger, crashed one at a time (round robin over
   the supervisors); the agent's were each deployed with a timed PUT (deploy to Running, against supervisord
   given the same zip unpacked and the program added live), and are stopped with a timed stop.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Optional

from _anchors import App, FloorSide, Side, SupervisordSide, SystemdSide, write_script
from _common import Agent, cpu_seconds, make_zip, percentile, rss_and_cpu, workdir
from _results import Results

MODE = "bare"
MIB = 2**20
RESTART_WAIT = 30.0  # seconds for a restart to show up before the sample is lost


class PlumSide(Side):
    name = "Plum"

    def __init__(self, root: Path, script: Path) -> None:
        self.root = root
        self.agent = Agent(root / "agent", env={"AGENT_LOG_LEVEL": "info"}).start()
        self.artifact = make_zip(
            root / "app.zip", {"start.sh": (script.read_text(), 0o755), "meta.ini": "name=app\nversion=1\n"}
        )

    def deploy(self, app: App) -> float:
        """PUT to an answer saying Running (or to the first status saying so), in ms."""
        started = time.perf_counter()
        status = self.agent.deploy(app.name, self.artifact, {"env": app.env()})["app"]
        if status["phase"] != "Running":
            self.agent.wait_phase(app.name, "Running")
        return (time.perf_counter() - started) * 1000

    def add(self, apps: list[App]) -> None:
        for app in apps:
            self.deploy(app)

    def pid(self) -> int:
        assert self.agent.proc is not None
        return self.agent.proc.pid

    def close(self) -> None:
        self.agent.kill_all()


def make_fifo(path: Path) -> int:
    """A FIFO the apps open for reading; the bench holds it open (O_RDWR never blocks) until the trigger."""
    os.mkfifo(path, 0o666)
    path.chmod(0o666)
    return os.open(path, os.O_RDWR | os.O_NONBLOCK)


def new_apps(folder: Path, prefix: str, first: int, count: int, trigger: Optional[Path]) -> list[App]:
    apps = []
    for i in range(first, first + count):
        mark = folder / f"{prefix}{i}"
        mark.mkdir(parents=True)
        mark.chmod(0o777)
        apps.append(App(f"{prefix}{i}", mark, trigger or mark / "go"))
    return apps


def wait_for(check: Any, timeout: float, what: str, interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")


def pid_exit(pid: int, timeout: float = 15.0) -> None:
    """Block until pid has exited (a zombie counts: it runs no more)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)


def idle_window(sides: list[Side], plum: PlumSide, seconds: float) -> dict[str, tuple[float, float]]:
    """(RSS MiB, CPU % of one core) of every supervisor, over the same window, after one GET /v1/apps."""
    plum.agent.request("GET", "/v1/apps")
    time.sleep(1.0)
    before = {s.name: cpu_seconds(s.pid()) for s in sides}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    out = {}
    for side in sides:
        cpu = cpu_seconds(side.pid())
        rss, _ = rss_and_cpu(side.pid())
        out[side.name] = (rss / MIB, 100 * (cpu - before[side.name]) / elapsed)
    return out


def one_run(top: Path, index: int, args: argparse.Namespace, systemd: Optional[SystemdSide]) -> dict[str, Any]:
    root = top / f"run{index}"
    root.mkdir()
    root.chmod(0o755)
    script = write_script(root / "app.sh")
    (root / "plum").mkdir()
    plum = PlumSide(root / "plum", script)
    (root / "sup").mkdir()
    sup = SupervisordSide(root / "sup", script)
    floor = FloorSide(root, script)
    sides: list[Side] = [plum, sup, floor]
    if systemd is not None:
        systemd.script = script
        sides.insert(2, systemd)
    names = {s.name: s for s in sides}
    marks = {s.name: root / "marks" / s.name.replace("/", "-").replace(" ", "-") for s in sides}
    triggers: dict[Path, int] = {}  # trigger FIFO -> the bench's open end (closing it is the trigger)
    result: dict[str, Any] = {"idle": {}, "burst": {}, "crash": {n: [] for n in names}, "deploy": {}, "stop": {}}
    try:
        # 1. idle with 1, 20, 100 apps
        burst_apps: dict[str, list[App]] = {}
        for side in sides:
            marks[side.name].mkdir(parents=True)
            marks[side.name].chmod(0o755)
            trigger = marks[side.name] / "burst.fifo"
            triggers[trigger] = make_fifo(trigger)
            burst_apps[side.name] = new_apps(marks[side.name], "b", 0, args.burst, trigger)
        have = 0
        for count in args.counts:
            for side in sides:
                side.add(burst_apps[side.name][have:count])
            have = count
            for side in sides:
                for app in burst_apps[side.name][:count]:
                    wait_for(app.ready, 30, f"{side.name} {app.name} ready", 0.02)
            result["idle"][count] = idle_window(sides, plum, args.window)

        # 2. burst: all of one supervisor's apps exit at once
        for side in sides:
            apps = burst_apps[side.name]
            time.sleep(0.5)
            os.close(triggers.pop(apps[0].trigger))
            time.sleep(0.5)
            result["burst"][side.name] = wait_for(
                lambda apps=apps: all_gaps(apps), RESTART_WAIT, f"{side.name} burst", 0.05
            )

        # 3. one-off crashes, with deploy and stop for the agent and supervisord
        crash_apps = {s.name: new_apps(marks[s.name], "c", 0, args.samples, None) for s in sides}
        for apps in crash_apps.values():
            triggers.update({a.trigger: make_fifo(a.trigger) for a in apps})
        result["deploy"]["Plum"] = [plum.deploy(a) for a in crash_apps["Plum"]]
        result["deploy"]["supervisord"] = [supervisord_deploy(sup, plum.artifact, a) for a in crash_apps[sup.name]]
        for side in sides[2:]:
            side.add(crash_apps[side.name])
        for name, apps in crash_apps.items():
            for app in apps:
                wait_for(app.ready, 30, f"{name} {app.name} ready", 0.01)
        time.sleep(0.5)
        for i in range(args.samples):
            for side in sides:
                app = crash_apps[side.name][i]
                os.close(triggers.pop(app.trigger))
                result["crash"][side.name].append(wait_for(app.gap_ms, RESTART_WAIT, f"{side.name} {app.name}"))
                time.sleep(0.02)
        result["stop"]["Plum"] = [plum_stop(plum, a) for a in crash_apps["Plum"]]
        result["stop"]["supervisord"] = [supervisord_stop(sup, a) for a in crash_apps[sup.name]]
    finally:
        for fd in triggers.values():
            os.close(fd)
        for side in (plum, sup, floor):
            with contextlib.suppress(Exception):
                side.close()
        if systemd is not None:
            systemd.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    return result


def all_gaps(apps: list[App]) -> Optional[list[float]]:
    gaps = [a.gap_ms() for a in apps]
    return None if None in gaps else [g for g in gaps if g is not None]


def supervisord_deploy(sup: SupervisordSide, artifact: Path, app: App) -> float:
    """The same zip unpacked into a folder of its own, the program added live, to RUNNING, in ms."""
    started = time.perf_counter()
    target = app.mark / "release"
    with zipfile.ZipFile(artifact) as zf:
        zf.extractall(target)
    (target / "start.sh").chmod(0o755)
    sup.add_sections({app.name: sup.section(app.name, app.env(), command=str(target / "start.sh"), cwd=str(target))})
    wait_for(lambda: sup.state(app.name) == "RUNNING", 10, f"supervisord {app.name} RUNNING", 0.001)
    return (time.perf_counter() - started) * 1000


def restarted_pid(app: App) -> int:
    return int((app.mark / "start").read_text().split()[1])


def plum_stop(plum: PlumSide, app: App) -> float:
    """POST /v1/apps/{name}/stop to the answer with the app's process gone, in ms."""
    pid = restarted_pid(app)
    started = time.perf_counter()
    plum.agent.request("POST", f"/v1/apps/{app.name}/stop")
    pid_exit(pid)
    return (time.perf_counter() - started) * 1000


def supervisord_stop(sup: SupervisordSide, app: App) -> float:
    """stopProcess(name, wait=True) over XML-RPC to the answer with the process gone, in ms."""
    pid = restarted_pid(app)
    started = time.perf_counter()
    sup.rpc.stopProcess(app.name, True)
    pid_exit(pid)
    return (time.perf_counter() - started) * 1000


def p(values: list[float], pct: float) -> float:
    return percentile(values, pct)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=20, help="one-off crashes (and deploys, stops) per run")
    parser.add_argument("--burst", type=int, default=100, help="apps in the burst (and the largest idle count)")
    parser.add_argument("--window", type=float, default=12.0, help="seconds of each idle window")
    parser.add_argument("--quick", action="store_true", help="1 run, small sizes (a smoke test, < 60 s)")
    parser.add_argument("--out", help="write the results JSON here")
    parser.add_argument("--no-systemd", action="store_true", help="leave out the systemd anchor (needs Docker)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.samples, args.window = 1, 4, 1.0
    args.counts = sorted({1, min(20, args.burst), args.burst})
    wall = time.monotonic()
    top = workdir("process")
    top.chmod(0o755)
    notes = []
    systemd: Optional[SystemdSide] = None
    if not args.no_systemd:
        try:  # each run sets its script
            systemd = SystemdSide(top, top / "app.sh", f"plum-bench-process-{os.getpid()}")
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            notes.append(f"no systemd anchor in this run: its test host did not start ({exc})")
            print(f"warning: {notes[-1]}", file=sys.stderr)
    runs = []
    try:
        for index in range(args.runs):
            runs.append(one_run(top, index, args, systemd))
            print(f"run {index + 1}/{args.runs} done at {time.monotonic() - wall:.0f}s", flush=True)
    finally:
        if systemd is not None:
            systemd.close()
        shutil.rmtree(top, ignore_errors=True)
    results = summarise(runs, args, systemd.version if systemd is not None else "left out")
    results.notes += notes
    results.facts["wall time (s)"] = round(time.monotonic() - wall, 1)
    results.save(args.out)


ANCHORS = ("systemd", "supervisord", "fork/exec floor")  # the first one present is a latency figure's anchor


def summarise(runs: list[dict[str, Any]], args: argparse.Namespace, systemd_version: str) -> Results:
    n_small, n_big = args.counts[0], args.counts[-1]
    results = Results(
        "process",
        "Process apps (bare): agent vs supervisord, systemd and a fork/exec floor",
        method=(
            f"{args.runs} run(s); each gives the agent, supervisord (autorestart=true, startsecs=0), systemd as PID 1 "
            "of a test host container (Restart=always, RestartSec=0) and a minimal posix_spawn+pidfd supervisor the "
            "same bash app, run as nobody. Crash to restart: the app writes $EPOCHREALTIME just before exit 1, the "
            "restarted instance writes it first thing; the gap between the two, for "
            f"{args.samples} one-off crashes per supervisor and run (one at a time, {n_big} other apps up), and for "
            f"a burst of {n_big} apps whose shared trigger FIFO is closed at once. Deploy: PUT of a small zip to the "
            "answer saying Running; stop: POST .../stop to the answer with the process gone. RSS and CPU: the "
            f"supervisor's own process (systemd: PID 1), over a {args.window:g} s window after one GET /v1/apps, all "
            f"four idle at once. Memory per app = (RSS with {n_big} apps - RSS with {n_small}) / {n_big - n_small}. "
            "Each figure is the median over the runs of a per-run value."
        ),
    )
    anchors = tuple(a for a in ANCHORS if a in runs[0]["crash"])
    every = ("Plum", *anchors)

    def per_run(kind: str, who: str, pct: Optional[float]) -> list[float]:
        values = []
        for run in runs:
            samples = run[kind][who]
            values.append(max(samples) if pct is None else p(samples, pct))
        return values

    def rows(
        what: str, kind: str, pct: Optional[float], target: Optional[float], primary: str, anchors: tuple[str, ...]
    ) -> None:
        ordered = [a for a in (primary, *anchors) if a in runs[0][kind]]
        ordered = list(dict.fromkeys(ordered))
        for i, anchor in enumerate(ordered):
            results.figure(
                what,
                per_run(kind, "Plum", pct),
                unit="ms",
                anchor=anchor,
                anchor_values=per_run(kind, anchor, pct),
                target_max=target if i == 0 else None,
                mode=MODE,
            )

    rows("deploy to Running", "deploy", 50, 150, "supervisord", ("supervisord",))
    rows("stop", "stop", 50, None, "supervisord", ("supervisord",))
    for pct, target, label in ((50, 20, "p50"), (95, 50, "p95"), (None, None, "max")):
        rows(f"crash to restart {label}", "crash", pct, target, anchors[0], anchors)
    for pct, target, label in ((50, None, "p50"), (99, 5, "p99"), (None, None, "max")):
        rows(f"burst of 100: restart {label}", "burst", pct, target, anchors[0], anchors)

    def idle(who: str, count: int, which: int) -> list[float]:
        return [run["idle"][count][who][which] for run in runs]

    def per_app(who: str) -> list[float]:
        return [(i - s) / (n_big - n_small) for i, s in zip(idle(who, n_big, 0), idle(who, n_small, 0))]

    # The floor is a latency floor: a Python process's own memory says nothing about supervising.
    idle_anchors = [a for a in ("supervisord", "systemd") if a in anchors]
    for anchor in idle_anchors:
        results.figure(
            "memory per app", per_app("Plum"), unit="MiB", anchor=anchor, anchor_values=per_app(anchor), mode=MODE
        )
    for count, label in zip(args.counts, ("1 app", "20 apps", "100 apps")):
        for what, which, target in (("agent RSS", 0, 25 if count == n_big else None), ("agent idle CPU", 1, 1)):
            for i, anchor in enumerate(idle_anchors):
                results.figure(
                    f"{what}, {label}",
                    idle("Plum", count, which),
                    unit="MiB" if which == 0 else "%",
                    anchor=anchor,
                    anchor_values=idle(anchor, count, which),
                    target_max=target if i == 0 else None,
                    mode=MODE,
                )
    for kind, label in (("crash", "one-off crash"), ("burst", f"burst of {n_big}")):
        for who in every:
            key = f"{kind}-{who.replace('/', '-').replace(' ', '-')}"
            name = "Plum agent" if who == "Plum" else who
            results.add_series(key, f"{name}: {label}", [x for r in runs for x in r[kind][who]])
    results.facts["runs"] = args.runs
    results.facts["one-off crashes per supervisor and run"] = args.samples
    results.facts["apps in the burst and the idle counts"] = list(args.counts)
    results.facts["idle window (s)"] = args.window
    results.facts["systemd"] = systemd_version
    if args.quick:
        results.notes.append(f"--quick: 1 run, {args.samples} crashes, burst of {n_big}: a smoke test, not figures.")
    return results


if __name__ == "__main__":
    main()
