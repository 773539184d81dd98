"""site.yml on the local lab (controller, agent1, agent2: the systemd test hosts of scripts/run-lab.sh), per mode:
- the first run on fresh hosts and the idempotent second run (which must report changed=0 on every host);
- a rolling update of one app through the controller: replicas on both agents at version 1 Running, then a
  PATCH to version 2, timed from the request to every replica Running version 2 (as the agents record it);
- the slowest tasks of the first run (task banner to the next banner, as profile_tasks measures them).

The lab build (images, hosts booting, the base image archive) is not timed. Each mode gets a fresh lab named
hlab-converge (its own containers, volumes and directory .run/hlab-converge), removed at the end and on failure.

    python bench/converge.py                      # bare, hybrid, containerized
    python bench/converge.py --modes bare,hybrid  # some of them
    python bench/converge.py --quick --out converge.json   # bare only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from _common import REPO, workdir
from _results import Results

sys.path.insert(0, str(REPO / "agent" / "src"))

from plum.cli.http import JsonClient

MODES = ("bare", "hybrid", "containerized")
LAB = "hlab-converge"
LAB_DIR = REPO / ".run" / "hlab-converge"
INVENTORY = LAB_DIR / "hosts.yml"
TOKEN = LAB_DIR / "operator.token"
AGENTS = ("agent1", "agent2")
APP = "bench-roll"
V1, V2 = "1.0.0", "2.0.0"
# The rollout policy of the timed update: one replica at a time, 2 s Running before the next one switches
# (docs/deployments.md: 10 s by default; shortened so the figure is mostly the mechanism, not the wait).
POLICY = {"maxUnavailable": 1, "minHealthySeconds": 2, "progressDeadlineSeconds": 120, "autoRollback": False}
SLOWEST = 5
FIRST_TARGET, SECOND_TARGET = 60.0, 15.0
BANNER = re.compile(r"^(TASK|RUNNING HANDLER) \[(?P<name>.*)\] \**$")
PLAY = re.compile(r"^PLAY (\[(?P<play>.*)\]|RECAP) \**$")
RECAP = re.compile(r"^(?P<host>\S+)\s+: (?P<counts>(\w+=\d+\s*)+)$")

BIN = Path(sys.executable).parent


class BenchError(Exception):
    pass


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PLUM_LAB_NAME": LAB,
        "PLUM_LAB_DIR": str(LAB_DIR),
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "default",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def run_logged(argv: list[str], log: Path, timeout: float) -> None:
    with log.open("ab") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env(), timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise BenchError(f"{' '.join(argv[:3])} failed ({proc.returncode}); {log}:\n{tail}")


def lab_down() -> None:
    subprocess.run(
        [str(BIN / "python"), str(REPO / "scripts" / "lab.py"), "down", "--name", LAB],
        env=env(),
        capture_output=True,
        check=False,
        timeout=300,
    )


def lab_up(mode: str, log: Path) -> float:
    """A fresh lab for MODE, as `make run` builds it up to site.yml; its duration (not part of the figures)."""
    started = time.monotonic()
    lab_down()
    run_logged([str(REPO / "scripts" / "run-lab.sh"), "hosts", mode], log, timeout=900)
    return time.monotonic() - started


def playbook(log: Path, timeout: float = 600) -> dict[str, Any]:
    """site.yml against the lab: its duration, each task's duration and the recap."""
    argv = [str(BIN / "ansible-playbook"), "-i", str(INVENTORY), str(REPO / "site.yml")]
    tasks: list[tuple[str, float]] = []
    recap: dict[str, dict[str, int]] = {}
    current: tuple[str, float] | None = None
    play = ""
    in_recap = False
    killer: threading.Timer | None = None
    with log.open("w") as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env(), text=True)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        assert proc.stdout is not None
        for raw in proc.stdout:
            now = time.monotonic()
            out.write(f"{now - started:8.2f} {raw}")
            line = raw.rstrip("\n")
            banner, new_play = BANNER.match(line), PLAY.match(line)
            if banner or new_play:
                if current is not None:
                    tasks.append((current[0], now - current[1]))
                current = (f"{banner.group('name')} ({play})", now) if banner else None
                if new_play:
                    play = new_play.group("play") or ""
                    in_recap = play == ""
            elif in_recap and (m := RECAP.match(line.strip())):
                recap[m.group("host")] = {k: int(v) for k, v in (c.split("=") for c in m.group("counts").split())}
        rc = proc.wait()
        elapsed = time.monotonic() - started
        killer.cancel()
    if current is not None:
        tasks.append((current[0], elapsed - (current[1] - started)))
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise BenchError(f"site.yml failed (rc {rc}, {elapsed:.0f} s); {log}:\n{tail}")
    return {"seconds": elapsed, "tasks": tasks, "recap": recap}


def slowest(tasks: list[tuple[str, float]], n: int = SLOWEST) -> list[str]:
    return [f"{secs:.1f} s {name}" for name, secs in sorted(tasks, key=lambda t: -t[1])[:n]]


def by_role(tasks: list[tuple[str, float]]) -> dict[str, str]:
    """Seconds per role (without the collection prefix); the playbook's own tasks and facts as "site.yml and facts"."""
    sums: dict[str, float] = {}
    for name, secs in tasks:
        role = name.split(" : ", 1)[0].removeprefix("plum.deploy.") if " : " in name else "site.yml and facts"
        sums[role] = sums.get(role, 0.0) + secs
    return {role: f"{secs:.1f} s" for role, secs in sorted(sums.items(), key=lambda kv: -kv[1])}


def recap_text(recap: dict[str, dict[str, int]]) -> dict[str, str]:
    keys = ("ok", "changed", "failed", "unreachable", "skipped")
    return {host: " ".join(f"{k}={c.get(k, 0)}" for k in keys) for host, c in recap.items()}


# The rolling update.


def controller() -> JsonClient:
    inventory = yaml.safe_load(INVENTORY.read_text())
    port = inventory["all"]["hosts"]["controller"]["lab_published_ports"][8080]
    return JsonClient(f"http://127.0.0.1:{port}", TOKEN.read_text().strip(), str(TOKEN), "controller")


def plumctl_fleet(client: JsonClient, *args: str) -> str:
    argv = [str(BIN / "plumctl"), "fleet", "--controller", client.url, "--token-file", str(TOKEN), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise BenchError(f"plumctl fleet {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def agent_apps(agent: str) -> list[dict[str, Any]]:
    """The agent's own view (GET /v1/apps on its host's loopback, as plumctl list): version, phase, transitions.

    curl on the host rather than plumctl, for every mode: in containerized mode `docker exec plum-agent` fails
    on the Debian 13 test host (its runc cannot join the container's cgroup), and the agent's API is on the
    host's loopback in every mode."""
    script = 'curl -fsS -H "Authorization: Bearer $(cat /var/lib/plum/agent/agent.token)" http://127.0.0.1:7070/v1/apps'
    argv = ["docker", "exec", f"{LAB}-{agent}", "sh", "-c", script]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip())[-500:]
        raise BenchError(f"{agent}: GET /v1/apps failed (rc {proc.returncode}): {said}")
    return [a for a in json.loads(proc.stdout)["apps"] if a.get("package") == APP]


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def running_since(app: dict[str, Any], version: str, after: float) -> float | None:
    """When the agent saw this app's release VERSION reach Running (the first time after AFTER), if it runs."""
    if app.get("version") != version or app.get("phase") != "Running":
        return None
    times = [epoch(t["at"]) for t in app.get("transitions", []) if t.get("to") == "Running"]
    later = [t for t in times if t >= after]
    return min(later) if later else None


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.25) -> Any:
    """Poll CHECK until it returns something true; a BenchError (an agent not answering yet) is retried."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            value = check()
        except BenchError as exc:
            value, last = None, f" (last error: {exc})"
        if value:
            return value
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:g} s waiting for {what}{last}")


def all_running(client: JsonClient, dep_id: str, version: str) -> bool:
    assignments = client.call("GET", f"/v1/deployments/{dep_id}")["assignments"]
    return len(assignments) == len(AGENTS) and all(
        a.get("phase") == "Running" and a.get("appVersion") == version for a in assignments
    )


def rolling_update(root: Path) -> dict[str, Any]:
    client = controller()
    for version in (V1, V2):
        app = root / f"{APP}-{version}"
        app.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "examples" / "apps" / "hello" / "start.sh", app / "start.sh")
        (app / "meta.ini").write_text(f"name={APP}\nversion={version}\n")
        plumctl_fleet(client, "apps", "upload", str(app))
    spec = root / f"{APP}.yml"
    spec.write_text(
        f"name: {APP}\nupdate: {json.dumps(POLICY)}\n"
        f"entries:\n  - app: {APP}\n    version: {V1}\n    replicas: {json.dumps(dict.fromkeys(AGENTS, 1))}\n"
    )
    created = json.loads(plumctl_fleet(client, "--json", "deployments", "create", str(spec), "--start"))
    dep_id = created["deploymentId"]
    wait_for(f"{APP} {V1} Running on both agents", lambda: all_running(client, dep_id, V1), 120)
    wait_for(
        f"the agents running {APP} {V1}",
        lambda: all(any(running_since(a, V1, 0) for a in agent_apps(n)) for n in AGENTS),
        60,
        0.5,
    )
    v2 = next(a["artifactId"] for a in client.call("GET", "/v1/apps") if a["name"] == APP and a["version"] == V2)

    requested = time.time()
    client.send_json("PATCH", f"/v1/deployments/{dep_id}", {"entries": [{"artifactId": v2}]})
    wait_for(f"{APP} {V2} Running at the controller", lambda: all_running(client, dep_id, V2), 180)
    controller_view = time.time() - requested

    def agents_on_v2() -> dict[str, float] | None:
        seen = {}
        for node in AGENTS:
            times = [t for a in agent_apps(node) if (t := running_since(a, V2, requested)) is not None]
            if not times:
                return None
            seen[node] = max(times)
        return seen

    on_v2 = wait_for(f"the agents running {APP} {V2}", agents_on_v2, 60, 0.5)
    rollout = wait_for(
        "the rollout to finish",
        lambda: (
            (r := client.call("GET", f"/v1/deployments/{dep_id}")["deployment"].get("rollout"))
            and r["state"] != "Running"
            and r
        ),
        120,
    )
    finished = (rollout.get("finishedAt") or time.time()) - requested
    plumctl_fleet(client, "deployments", "rm", dep_id)
    if rollout["state"] != "Succeeded":
        raise BenchError(f"rollout {rollout['state']}: {rollout.get('message')}")
    return {
        "seconds": max(on_v2.values()) - requested,
        "per_replica": {n: round(t - requested, 2) for n, t in on_v2.items()},
        "controller_view": round(controller_view, 2),
        "rollout_succeeded": round(finished, 2),
    }


def bench_mode(mode: str, results: Results, root: Path) -> None:
    logs = root / mode
    logs.mkdir(parents=True, exist_ok=True)
    print(f"\n== {mode}: building the lab (not timed)", flush=True)
    built = lab_up(mode, logs / "lab.log")
    results.facts[f"{mode}: lab build (not timed)"] = f"{built:.0f} s"
    print(f"{mode}: lab up in {built:.0f} s; site.yml, first run", flush=True)

    first = playbook(logs / "site-1.log")
    fig = results.figure("site.yml first run", first["seconds"], unit="s", mode=mode, target_max=FIRST_TARGET)
    results.facts[f"{mode}: first run recap"] = recap_text(first["recap"])
    results.facts[f"{mode}: slowest tasks of the first run"] = slowest(first["tasks"])
    results.facts[f"{mode}: first run per role"] = by_role(first["tasks"])
    results.facts[f"{mode}: first run tasks"] = len(first["tasks"])
    failed = [h for h, c in first["recap"].items() if c.get("failed") or c.get("unreachable")]
    if failed:
        fig.met, fig.note = False, f"failed on {', '.join(failed)}"
    print(f"{mode}: first run {first['seconds']:.1f} s; second run", flush=True)

    second = playbook(logs / "site-2.log")
    fig = results.figure(
        "site.yml second run (idempotent)", second["seconds"], unit="s", mode=mode, target_max=SECOND_TARGET
    )
    results.facts[f"{mode}: second run recap"] = recap_text(second["recap"])
    results.facts[f"{mode}: slowest tasks of the second run"] = slowest(second["tasks"], 3)
    results.facts[f"{mode}: second run tasks"] = (
        f"{len(second['tasks'])}, {second['seconds'] / max(len(second['tasks']), 1):.2f} s each on average"
    )
    changed = [h for h, c in second["recap"].items() if c.get("changed") or c.get("failed") or c.get("unreachable")]
    if changed or not second["recap"]:
        fig.met = False
        fig.note = f"NOT idempotent: changed/failed on {', '.join(changed) or 'no recap'}"
        results.facts[f"{mode}: second run idempotent"] = f"NO ({', '.join(changed) or 'no recap'})"
    else:
        results.facts[f"{mode}: second run idempotent"] = f"yes (changed=0 on {len(second['recap'])} hosts)"
    print(f"{mode}: second run {second['seconds']:.1f} s; rolling update", flush=True)

    update = rolling_update(logs)
    results.figure("rolling update of one app", round(update["seconds"], 2), unit="s", mode=mode)
    results.facts[f"{mode}: rolling update"] = (
        f"replicas Running {V2} at {update['per_replica']} s after the request; the controller saw all Running "
        f"{V2} at {update['controller_view']} s, the rollout Succeeded at {update['rollout_succeeded']} s"
    )
    print(f"{mode}: rolling update {update['seconds']:.1f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, of bare, hybrid, containerized")
    parser.add_argument("--quick", action="store_true", help="bare only")
    parser.add_argument("--out", help="write the results JSON here")
    args = parser.parse_args()
    modes = ["bare"] if args.quick else [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)} (expected {', '.join(MODES)})")
    modes = [m for m in MODES if m in modes]  # always bare, hybrid, containerized in that order

    results = Results(
        "converge",
        "site.yml on the 3-host lab",
        method=(
            "For each mode, a fresh lab of three systemd test hosts (controller, agent1 on Debian 12, agent2 on "
            "Debian 13) built as `make run` builds it; building it (images, hosts booting, the base image archive) "
            "is not timed. Timed: ansible-playbook site.yml from its start to its exit, on the fresh hosts (first "
            "run) and again (second run, which must report changed=0 on every host), one run each; a task's time "
            "is from its banner to the next one. Then a deployment of a small process app with one replica on "
            f"each agent at version 1 Running is PATCHed to version 2 (rollout policy {json.dumps(POLICY)}): "
            "timed from the request to the last replica's Running on version 2, as its agent recorded it."
        ),
    )
    results.facts["modes"] = ", ".join(modes)
    results.facts["wheelhouse cache on the control node"] = (
        "warm" if (Path.home() / ".cache" / "plum-deploy" / "wheelhouse").is_dir() else "cold (first run builds it)"
    )
    version = subprocess.run([str(BIN / "ansible"), "--version"], capture_output=True, text=True, check=False)
    results.facts["ansible"] = version.stdout.splitlines()[0] if version.stdout else "?"
    root = workdir("converge")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    errors = []
    try:
        for mode in modes:
            try:
                bench_mode(mode, results, root)
            except (BenchError, subprocess.TimeoutExpired) as exc:
                errors.append(f"{mode}: {exc}")
                results.facts[f"{mode}: error"] = str(exc).splitlines()[0]
                print(f"converge: {mode}: {exc}", file=sys.stderr)
            finally:
                lab_down()
    finally:
        subprocess.run(
            [str(REPO / "scripts" / "run-lab.sh"), "down"], env=env(), capture_output=True, timeout=300, check=False
        )
    results.facts["wall time"] = f"{time.monotonic() - started:.0f} s (logs: {root})"
    results.save(args.out)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
