"""The container modes side by side: the agent's Docker runtime as a host process ("hybrid") and the agent in
its own container ("containerized", built from this checkout's wheel and run as roles/plum_agent runs it),
each against Docker itself in the same run.

Per mode, one agent with container limits (256 MiB, 1 CPU; the twins get the same):
- deploy to Running / stop: PUT /v1/apps/{name} of an image app (the headline) and of a zip app in the base
  image, until the answer says Running; POST .../stop until it answers (container stopped and removed).
  Anchor "docker run floor": `docker run -d --init` of the same image and command, `docker stop` of it.
- crash to restart: image apps exit with code 1 when told (they block on a FIFO in their data dir), each
  next to a twin under Docker's own --restart=always (same image, command, init, limits, log options and
  mounts); from the app's last line before the exit to the restarted app's first line, both written by
  `date` into the mounted directory. Agent and Docker samples alternate, one restart at a time, each
  container runs >= 10.5 s between two crashes (no back-off on either side).
- idle: the agent's RSS and CPU (/proc of its process; containerized: the agent container's process) over
  a window with 1, 20 and 100 apps; anchor: dockerd's RSS and CPU in the same window.
- memory per app: the container's cgroup memory (without page cache, as docker stats) plus the RSS of its
  containerd-shim, the mean over the 100 apps; anchor: the same of the 100 twins.
- burst of 100: the 100 apps and 100 twins all block on one FIFO in a directory mounted into each; opening
  it for writing wakes them at once, they exit 1 together (each for the first time: no back-off on either
  side); per-app gaps as for the crash to restart, 200 restarts competing for one engine.

Progress goes to stderr; the table and --out come at the end. (Not named bench/docker.py: a module named
docker among the sources would stand in for the Docker SDK, for ruff's import sorting and for a Python
started in bench/.)
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from _common import make_zip, percentile, rss_and_cpu, wait_until
from _docker import (
    BENCH_LABEL,
    IMAGE,
    ContainerAgent,
    HostAgent,
    build_agent_image,
    container_memory,
    docker,
    dockerd_pid,
    remove_labelled,
)
from _results import Results

MODES = ("hybrid", "containerized")
LONG_RUN = 10.5  # Docker (and the agent) reset the restart back-off after a run of 10 s
LIMITS = {"PLUM_CONTAINER_MEMORY": "256m", "PLUM_CONTAINER_CPUS": "1"}
SLEEP = "exec sleep 100000"
MiB = 2**20


@dataclass(frozen=True)
class Sizes:
    deploy_runs: int = 3
    deploy_samples: int = 4
    crash_pairs: int = 6
    crash_rounds: int = 3
    idle: tuple[int, int, int] = (1, 20, 100)
    idle_windows: tuple[int, int, int] = (3, 3, 1)
    window: tuple[float, float, float] = (4.0, 4.0, 20.0)
    parallel: int = 4  # deploys (and twin starts) in flight while filling up to 100 apps


QUICK = Sizes(
    deploy_runs=1,
    deploy_samples=1,
    crash_pairs=2,
    crash_rounds=1,
    idle=(1, 3, 6),
    idle_windows=(1, 1, 1),
    window=(1.0, 1.0, 1.0),
)


STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    started = time.perf_counter()
    fn(*args, **kwargs)
    return (time.perf_counter() - started) * 1000


def mkfifo(path: Path) -> Path:
    os.mkfifo(path, 0o666)
    path.chmod(0o666)
    return path


def pull_trigger(fifo: Path, timeout: float = 30) -> float:
    """Wake whoever waits in open() on the FIFO (as soon as someone does); the time just before."""
    deadline = time.monotonic() + timeout
    while True:
        at = time.time()
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
            continue
        os.close(fd)  # the readers see EOF and go on
        return at


def lines(path: Path) -> list[float]:
    try:
        text = path.read_text()
    except OSError:
        return []
    return [float(x) for x in text.splitlines()[: text.count("\n")] if x.strip()]


def crash_script(mark: str, trigger: str, once: bool) -> str:
    """An app that writes a line when it (re)starts, then waits on a FIFO and exits 1 once it opens.
    once: after its first restart it only sleeps (the burst); else it waits for the next crash again."""
    restarted = f"date +%s.%N >> {mark}/start; exec sleep 100000" if once else f"date +%s.%N >> {mark}/start"
    return (
        f"if [ -e {mark}/ran ]; then {restarted}; fi\ntouch {mark}/ran\n"
        f"while [ ! -p {trigger} ]; do sleep 0.05; done\n"
        f"read _ < {trigger}\ndate +%s.%N >> {mark}/exit\nexit 1\n"
    )


@dataclass
class Crashing:
    """One container that is made to crash: where its marks are and how it is told to exit."""

    marks: Path
    trigger: Path
    container: str
    last_start: float = field(default_factory=time.time)

    def crash_and_wait(self, round_index: int) -> float:
        pull_trigger(self.trigger)
        wait_until(lambda: len(lines(self.marks / "start")) > round_index, timeout=30, what=f"restart {self.marks}")
        self.last_start = lines(self.marks / "start")[round_index]
        return (self.last_start - lines(self.marks / "exit")[round_index]) * 1000


def app_container(agent: Any, app: str) -> dict[str, Any]:
    ids = docker(
        "ps", "-q", "--no-trunc", "--filter", f"label=plum.node={agent.node}", "--filter", f"label=plum.app={app}"
    )
    return dict(json.loads(docker("inspect", ids.split()[0]))[0])


def data_dir_of(info: dict[str, Any]) -> Path:
    return Path(next(m["Source"] for m in info["Mounts"] if m["Destination"] == "/app/data"))


def twin(info: dict[str, Any], marks: Path) -> str:
    """`docker run --restart=always` of what the agent gave its app's container, with marks as /app/data."""
    config, host = info["Config"], info["HostConfig"]
    log = host["LogConfig"]
    argv = ["run", "-d", "--name", f"plum-bench-twin-{secrets.token_hex(4)}", "--label", BENCH_LABEL]
    argv += ["--restart=always", "-v", f"{marks}:/app/data"]
    argv += [f"-v={bind}" for bind in host.get("Binds") or [] if bind.split(":")[1] != "/app/data"]
    argv += ["--memory", str(host["Memory"]), "--memory-swap", str(host["MemorySwap"])]
    argv += ["--cpus", str(host["NanoCpus"] / 1e9), "--log-driver", log["Type"]]
    argv += [f"--log-opt={key}={value}" for key, value in log["Config"].items()]
    argv += ["--init"] if host.get("Init") else []
    argv += [f"--add-host={entry}" for entry in host.get("ExtraHosts") or []]
    argv += [config["Image"], *config["Cmd"]]
    return docker(*argv).strip()


def stats(values: list[float]) -> tuple[float, float, float, float]:
    return percentile(values, 50), percentile(values, 95), percentile(values, 99), max(values)


class ModeBench:
    def __init__(self, mode: str, agent: Any, root: Path, sizes: Sizes, results: Results) -> None:
        self.mode, self.agent, self.root, self.sizes, self.results = mode, agent, root, sizes, results
        self.trigger_dir = root / "trigger"
        self.artifact = make_zip(
            root / "app.zip", {"start.sh": ("#!/bin/sh\nexec sleep 1000\n", 0o755), "meta.ini": "name=z\nversion=1\n"}
        )

    def fig(self, what: str, values: Any, **kwargs: Any) -> None:
        self.results.figure(what, values, mode=self.mode, **kwargs)

    # ---- deploy and stop -------------------------------------------------------------------------

    def deploy_and_stop(self) -> None:
        runs: dict[str, list[float]] = {
            k: [] for k in ("image", "zip", "floor", "image stop", "zip stop", "floor stop")
        }
        spec = {"image": IMAGE, "start_cmd": SLEEP, "stop_timeout": 1}
        for run in range(self.sizes.deploy_runs):
            samples: dict[str, list[float]] = {k: [] for k in runs}
            for i in range(self.sizes.deploy_samples):
                img, zipped = f"dimg{run}x{i}", f"dzip{run}x{i}"
                samples["image"].append(timed(self.agent.deploy, img, spec=spec))
                samples["zip"].append(timed(self.agent.deploy, zipped, self.artifact, {"stop_timeout": 1}))
                name = f"plum-bench-floor-{secrets.token_hex(4)}"
                argv = ["run", "-d", "--init", "--label", BENCH_LABEL, "--name", name, IMAGE, "sh", "-c", SLEEP]
                samples["floor"].append(timed(docker, *argv))
                assert self.agent.app(img)["phase"] == "Running" and self.agent.app(zipped)["phase"] == "Running"
                samples["image stop"].append(timed(self.agent.request, "POST", f"/v1/apps/{img}/stop"))
                samples["zip stop"].append(timed(self.agent.request, "POST", f"/v1/apps/{zipped}/stop"))
                samples["floor stop"].append(timed(docker, "stop", "-t", "1", name))
                docker("rm", "-f", name)
                self.agent.request("DELETE", f"/v1/apps/{img}")
                self.agent.request("DELETE", f"/v1/apps/{zipped}")
            for key, values in samples.items():
                runs[key].append(statistics.median(values))
        floor = {"anchor": "docker run floor", "unit": "ms"}
        self.fig("deploy to Running", runs["image"], anchor_values=runs["floor"], note="image app", **floor)
        self.fig("deploy to Running, zip app", runs["zip"], anchor_values=runs["floor"], **floor)
        self.fig("stop", runs["image stop"], anchor_values=runs["floor stop"], note="image app", **floor)
        self.fig("stop, zip app", runs["zip stop"], anchor_values=runs["floor stop"], **floor)

    # ---- crash to restart ----------------------------------------------------------------------

    def crash_to_restart(self) -> None:
        pairs: list[tuple[Crashing, Crashing]] = []
        script = crash_script("/app/data", "/app/data/crash", once=False)
        spec = {"image": IMAGE, "start_cmd": script, "stop_timeout": 1}
        floor_name = f"plum-bench-floor-{secrets.token_hex(4)}"
        docker("run", "-d", "--init", "--label", BENCH_LABEL, "--name", floor_name, IMAGE, "true")
        for i in range(self.sizes.crash_pairs):
            self.agent.deploy(f"crash{i}", spec=spec)
            info = app_container(self.agent, f"crash{i}")
            mine = data_dir_of(info)
            mine_trigger = mkfifo(mine / "crash")
            marks = self.root / f"twin-crash{i}"
            marks.mkdir()
            twin_trigger = mkfifo(marks / "crash")
            pairs.append((Crashing(mine, mine_trigger, info["Id"]), Crashing(marks, twin_trigger, twin(info, marks))))
        ours: list[list[float]] = []
        theirs: list[list[float]] = []
        floors: list[list[float]] = []
        wait_until(lambda: docker("inspect", "-f", "{{.State.Running}}", floor_name).strip() == "false")
        for round_index in range(self.sizes.crash_rounds):
            ours.append([])
            theirs.append([])
            floors.append([])
            for mine, other in pairs:
                for sample, gaps in ((mine, ours[-1]), (other, theirs[-1])):
                    if round_index:
                        time.sleep(max(0.0, sample.last_start + LONG_RUN - time.time()))
                    gaps.append(sample.crash_and_wait(round_index))
                    time.sleep(0.3)  # what follows a restart (log capture) is over before the next one
                floors[-1].append(timed(docker, "start", floor_name))
        for i in range(self.sizes.crash_pairs):
            self.agent.request("DELETE", f"/v1/apps/crash{i}")
        docker("rm", "-f", floor_name, *(other.container for _, other in pairs))
        anchor = {"anchor": "docker --restart=always", "unit": "ms"}
        for label, pct in (("p50", 50), ("p95", 95)):
            self.fig(
                f"crash to restart {label}",
                [percentile(r, pct) for r in ours],
                anchor_values=[percentile(r, pct) for r in theirs],
                target="ratio <= 1",
                **anchor,
            )
        self.fig("crash to restart max", [max(r) for r in ours], anchor_values=[max(r) for r in theirs], **anchor)
        self.results.figure(
            "docker start of an exited container",
            [statistics.median(r) for r in floors],
            unit="ms",
            subject="docker run floor",
            mode=self.mode,
            note="the restart's floor: `docker start` (CLI) of an exited container, same rounds",
        )
        flat = [g for r in ours for g in r]
        self.results.add_series(f"crash-{self.mode}-plum", f"Plum agent ({self.mode})", flat)
        twins = [g for r in theirs for g in r]
        self.results.add_series(f"crash-{self.mode}-docker", f"docker --restart=always ({self.mode} run)", twins)
        starts = [f for r in floors for f in r]
        self.results.add_series(f"crash-{self.mode}-floor", f"docker start ({self.mode} run)", starts)
        self.results.facts[f"{self.mode}: crash samples per side"] = len(flat)

    # ---- idle, memory, burst --------------------------------------------------------------------

    def idle_window(self, seconds: float) -> tuple[float, float, float, float]:
        """(agent RSS MiB, agent CPU %, dockerd RSS MiB, dockerd CPU %) over one window."""
        pid, engine = self.agent.pid(), dockerd_pid()
        _, cpu0 = rss_and_cpu(pid)
        engine0 = rss_and_cpu(engine)[1] if engine else 0.0
        time.sleep(seconds)
        rss, cpu1 = rss_and_cpu(pid)
        engine_rss, engine1 = rss_and_cpu(engine) if engine else (0, 0.0)
        return rss / MiB, 100 * (cpu1 - cpu0) / seconds, engine_rss / MiB, 100 * (engine1 - engine0) / seconds

    def idle_and_burst(self) -> None:
        trigger = mkfifo(self.trigger_dir / "go")
        script = crash_script("/app/data", str(trigger), once=True)
        spec = {"image": IMAGE, "start_cmd": script, "stop_timeout": 1}
        deployed: list[str] = []

        def deploy(name: str) -> None:
            self.agent.deploy(name, spec=spec)

        for count, windows, seconds in zip(self.sizes.idle, self.sizes.idle_windows, self.sizes.window):
            wanted = [f"burst{i}" for i in range(len(deployed), count)]
            with ThreadPoolExecutor(self.sizes.parallel) as pool:
                list(pool.map(deploy, wanted))
            deployed += wanted
            listed = self.agent.request("GET", "/v1/apps")["apps"]  # one status round, as a user would
            assert sum(a["phase"] == "Running" for a in listed) == count, listed
            time.sleep(2)
            measured = [self.idle_window(seconds) for _ in range(windows)]
            apps = f"{count} app{'s' if count > 1 else ''}"
            engine = {"anchor": "docker --restart=always", "note": "anchor: dockerd, same window"}
            self.fig(
                f"agent RSS, {apps}",
                [m[0] for m in measured],
                unit="MiB",
                anchor_values=[m[2] for m in measured],
                **engine,
            )
            self.fig(
                f"agent idle CPU, {apps}",
                [m[1] for m in measured],
                unit="%",
                anchor_values=[m[3] for m in measured],
                **engine,
            )
        self.results.facts[f"{self.mode}: agent threads, {len(deployed)} apps"] = len(
            list(Path(f"/proc/{self.agent.pid()}/task").iterdir())
        )

        infos = [app_container(self.agent, name) for name in deployed]
        ours = [Crashing(data_dir_of(info), trigger, info["Id"]) for info in infos]

        def make_twin(index: int) -> Crashing:
            marks = self.root / f"twin-burst{index}"
            marks.mkdir()
            return Crashing(marks, trigger, twin(infos[index], marks))

        with ThreadPoolExecutor(self.sizes.parallel) as pool:
            theirs = list(pool.map(make_twin, range(len(infos))))
        memory = {
            side: [sum(container_memory(c.container)) / MiB for c in group]
            for side, group in (("plum", ours), ("twin", theirs))
        }
        self.fig(
            "memory per app",
            statistics.mean(memory["plum"]),
            unit="MiB",
            anchor="docker --restart=always",
            anchor_values=statistics.mean(memory["twin"]),
            note=f"container cgroup memory + its containerd-shim RSS, mean of {len(ours)}",
        )
        shim = [container_memory(c.container)[1] / MiB for c in ours[:5]]
        self.results.facts[f"{self.mode}: containerd-shim RSS per container (MiB)"] = round(statistics.mean(shim), 1)
        progress(f"{self.mode}: burst of {len(ours)} apps and {len(theirs)} twins")
        # All crash at once, each for the first time: no back-off on either side (Docker waits its 100 ms).
        at = pull_trigger(trigger)
        everyone = ours + theirs
        wait_until(
            lambda: all(lines(c.marks / "start") for c in everyone),
            timeout=180,
            interval=0.2,
            what="every restart after the burst",
        )
        gaps = {
            side: [(lines(c.marks / "start")[0] - lines(c.marks / "exit")[0]) * 1000 for c in group]
            for side, group in (("plum", ours), ("twin", theirs))
        }
        last = {
            side: (max(lines(c.marks / "start")[0] for c in group) - at) * 1000
            for side, group in (("plum", ours), ("twin", theirs))
        }
        n = len(ours)
        for label, pct in (("p50", 50), ("p99", 99)):
            fig = self.results.figure(
                f"burst of {n}: restart {label}",
                percentile(gaps["plum"], pct),
                unit="ms",
                anchor="docker --restart=always",
                anchor_values=percentile(gaps["twin"], pct),
                target="ratio <= 1",
                mode=self.mode,
            )
            fig.met = fig.ratio is not None and fig.ratio <= 1
        fig = self.results.figure(
            f"burst of {n}: restart max",
            max(gaps["plum"]),
            unit="ms",
            anchor="docker --restart=always",
            anchor_values=max(gaps["twin"]),
            target="ratio <= 1",
            mode=self.mode,
        )
        fig.met = fig.ratio is not None and fig.ratio <= 1
        self.results.facts[f"{self.mode}: burst, last restart after the trigger (ms), plum / docker"] = (
            f"{last['plum']:.0f} / {last['twin']:.0f}"
        )
        self.results.add_series(f"burst-{self.mode}-plum", f"Plum agent ({self.mode}), burst of {n}", gaps["plum"])
        self.results.add_series(
            f"burst-{self.mode}-docker", f"docker --restart=always ({self.mode} run), burst of {n}", gaps["twin"]
        )
        docker("rm", "-f", *(c.container for c in theirs), timeout=300)


PHASES = ("deploy", "crash", "idle")


def run_mode(mode: str, sizes: Sizes, results: Results, image: str, phases: list[str]) -> None:
    root = Path(tempfile.mkdtemp(prefix=f"plum-bench-docker-{mode}-", dir="/var/tmp"))
    root.chmod(0o755)
    (root / "trigger").mkdir()
    extra = {**LIMITS, "PLUM_HOST_LIB_PATHS": str(root / "trigger")}
    agent: Any = ContainerAgent(root, image, extra) if mode == "containerized" else HostAgent(root, extra)
    started = time.monotonic()
    try:
        agent.start()
        bench = ModeBench(mode, agent, root, sizes, results)
        if "deploy" in phases:
            progress(f"{mode}: deploy and stop")
            bench.deploy_and_stop()
        if "crash" in phases:
            progress(f"{mode}: crash to restart")
            bench.crash_to_restart()
        if "idle" in phases:
            progress(f"{mode}: idle with 1, 20, 100 apps, then the burst")
            bench.idle_and_burst()
        progress(f"{mode}: cleaning up")
    finally:
        agent.close()
        with contextlib.suppress(Exception):
            import shutil  # noqa: PLC0415

            shutil.rmtree(root, ignore_errors=True)
        results.facts[f"{mode}: wall time (s)"] = round(time.monotonic() - started, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--mode", choices=MODES, action="append", help="only this mode (repeatable)")
    parser.add_argument("--phase", choices=PHASES, action="append", help="only this phase (repeatable)")
    parser.add_argument("--out", help="write the results JSON here")
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes()
    results = Results("docker", "Container modes: the agent's Docker runtime, hybrid and containerized", method=METHOD)
    started = time.monotonic()
    try:
        image, facts = build_agent_image()
        results.facts.update(facts)
        results.facts["engine"] = docker("version", "-f", "{{.Server.Version}}").strip()
        for mode in args.mode or MODES:
            run_mode(mode, sizes, results, image, args.phase or list(PHASES))
    finally:
        remove_labelled(BENCH_LABEL)
    results.facts["wall time (s)"] = round(time.monotonic() - started, 1)
    results.save(args.out)


METHOD = (
    "Per mode (hybrid: the agent as a host process; containerized: the agent in its container, image built "
    "from this checkout's wheel, run with the role's Compose settings), one agent with 256 MiB / 1 CPU limits. "
    "Deploy: PUT of an image app (headline; a zip app too) until the answer says Running, against "
    "`docker run -d --init` of the same image; stop: POST stop until it answers (stopped and removed), against "
    "`docker stop`; medians of 4 samples per run, 3 runs. Crash to restart: image apps exit 1 when told, each next "
    "to a twin under Docker's --restart=always (same image, command, init, limits, log options, mounts), from the "
    "app's last `date` line before the exit to the restarted app's first, one at a time, 6 pairs x 3 rounds. Idle: "
    "the agent process's RSS and CPU (/proc) over windows with 1, 20 and 100 apps, against dockerd's in the same "
    "window. Memory per app: cgroup memory without page cache plus the containerd-shim's RSS. Burst: 100 apps and "
    "100 twins blocked on one FIFO exit together; per-app exit-to-restart gaps."
)


if __name__ == "__main__":
    main()
