"""Controller storage under faults, with real controller processes and a real agent attached.

Each test asserts what a user would notice: the controller refuses to start on a database that
lost data (one line naming the file and what to do, no traceback), a second controller on the same
database is refused, a backup taken while the controller writes restores to the same state, and an
attached agent never loses a running instance or its data because of the controller's storage.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from support.agent import Agent, free_port, pid_alive, wait_until
from support.controller import ControllerProc, app_zip, clean_env

SEED = 20240610
NODE = "store-n1"
FAST = {"HEARTBEAT_TTL_SEC": "2", "HEARTBEAT_INTERVAL_SEC": "0.5"}


# ---- helpers ---------------------------------------------------------------------------------------


def run_controller(env: dict[str, str], *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """plum-controller run to its exit (a refused start, backup or restore), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "plum.controller.main", *args],
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused start prints; fails unless it is exactly one line and no traceback."""
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    lines = output.splitlines()
    assert len(lines) == 1, output
    return lines[0]


def deploy(ctl: ControllerProc, name: str, replicas: dict[str, int], start: bool = True) -> dict[str, Any]:
    artifact = ctl.upload(app_zip(name, "1.0.0")).json
    created = ctl.ok(
        "POST", "/v1/deployments", {"name": name, "entries": [{"artifactUrl": artifact["url"], "replicas": replicas}]}
    )
    if start:
        ctl.ok("POST", f"/v1/deployments/{created['deploymentId']}?action=start")
    return created


def running(agent: Agent) -> dict[str, int]:
    """instance -> pid of the apps Running on the agent."""
    return {a["name"]: a["pid"] for a in agent.request("GET", "/v1/apps")["apps"] if a["phase"] == "Running"}


def app_files(agent: Agent, instance: str) -> set[str]:
    root = agent.data_dir / "apps" / instance
    return {str(p.relative_to(root)) for p in root.rglob("*") if "logs" not in p.parts}


def served_identity(ctl: ControllerProc) -> str:
    return ctl.call("GET", f"/v1/assignments?nodeId={NODE}").json["controllerId"]


def controller_health(agent: Agent) -> dict[str, Any]:
    return agent.request("GET", "/healthz")["controller"]


def state_of(ctl: ControllerProc) -> dict[str, Any]:
    """What operators see: apps, deployments with their instances, the node's feed."""
    deployments = ctl.ok("GET", "/v1/deployments")
    return {
        "apps": ctl.ok("GET", "/v1/apps"),
        "deployments": sorted(deployments, key=lambda d: d["name"]),
        "details": {d["name"]: ctl.ok("GET", f"/v1/deployments/{d['deploymentId']}") for d in deployments},
        "feed": ctl.feed(NODE),
    }


def without_live_fields(state: dict[str, Any]) -> dict[str, Any]:
    """Drop what changes by itself over time (the node's health, report times)."""
    text = json.dumps(state, sort_keys=True)
    data = json.loads(text)
    for detail in data["details"].values():
        for assignment in detail.get("assignments", []):
            assignment.pop("lastReportAt", None)
    for item in data["feed"]:
        item.pop("lastReportAt", None)
    return data


class Fleet:
    """One controller on a fixed port and one agent following it."""

    def __init__(self, tmp_path: Path, **controller_env: str) -> None:
        self.port = free_port()
        self.data = tmp_path / "controller"
        self.ctl = ControllerProc(self.data, CONTROLLER_ADDR=f"127.0.0.1:{self.port}", **FAST, **controller_env)
        self.agents: list[Agent] = []
        self.tmp_path = tmp_path

    def start_agent(self, node: str = NODE) -> Agent:
        env = {
            "AGENT_NODE_ID": node,
            "CONTROLLER_BASE": f"http://127.0.0.1:{self.port}",
            "CONTROLLER_AGENT_TOKEN": self.ctl.agent,
            "SYNC_INTERVAL_SEC": "0.5",
        }
        agent = Agent(self.tmp_path / node, env=env).start()
        self.agents.append(agent)
        return agent

    @property
    def env(self) -> dict[str, str]:
        return dict(self.ctl.env)

    def kill_controller(self) -> None:
        assert self.ctl.proc is not None
        self.ctl.proc.kill()
        self.ctl.proc.wait(10)
        self.ctl.proc = None

    def close(self) -> None:
        for agent in self.agents:
            agent.kill_all()
        if self.ctl.proc is not None and self.ctl.proc.poll() is None:
            self.ctl.proc.kill()
            self.ctl.proc.wait(10)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(tmp_path)
    yield made
    made.close()
    assert "Traceback" not in made.ctl.log(), made.ctl.log()


def start_with_two_instances(fleet: Fleet) -> tuple[Agent, dict[str, int]]:
    """The controller with 30 deployments (two instances running on the agent), the agent following it."""
    ctl = fleet.ctl.start()
    agent = fleet.start_agent()
    wait_until(lambda: ctl.ok("GET", "/v1/nodes"), 5, what="the agent's heartbeat")
    deploy(ctl, "web", {NODE: 2})
    spare = ctl.upload(app_zip("spare", "1.0.0")).json
    for i in range(29):  # acknowledged, never started: they only live in the database
        entry = {"artifactUrl": spare["url"], "replicas": {NODE: 1}}
        ctl.ok("POST", "/v1/deployments", {"name": f"spare-{i}", "entries": [entry]})
    assert len(ctl.ok("GET", "/v1/deployments")) == 30
    pids = wait_until(lambda: (r := running(agent)) and len(r) == 2 and r, 10, what="two running instances")
    wait_until(lambda: controller_health(agent).get("controllerId"), 5, what="the agent to record the identity")
    return agent, pids


# ---- a database that lost data ---------------------------------------------------------------------


def delete_wal(db: Path) -> None:
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink()


def empty_database(db: Path) -> None:
    db.write_bytes(b"")


def delete_database(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("fault", "named"),
    [(delete_wal, "controller.db-wal is missing"), (empty_database, "is empty"), (delete_database, "is missing")],
    ids=["wal-deleted-after-kill-9", "database-emptied", "database-deleted"],
)
def test_lost_database_is_refused_and_an_attached_agent_keeps_its_instances(fleet: Fleet, fault, named) -> None:
    agent, pids = start_with_two_instances(fleet)
    old_identity = controller_health(agent)["controllerId"]
    files_before = {i: app_files(agent, i) for i in pids}
    fleet.kill_controller()
    fault(fleet.data / "controller.db")

    line = refusal(run_controller(fleet.env))
    assert named in line, line
    assert str(fleet.data / "controller.db") in line, line
    assert "plum-controller restore" in line
    assert "--init-database" in line
    assert running(agent) == pids, "the agent keeps its instances while the controller is down"

    ctl = fleet.ctl
    ctl.env["CONTROLLER_INIT_DATABASE"] = "true"  # the operator chooses to go on with an empty database
    ctl.start()
    assert "new identity" in ctl.log()
    assert ctl.ok("GET", "/v1/deployments") == []
    held = wait_until(lambda: (h := controller_health(agent))["state"] == "held" and h, 10, what="the agent to hold")
    assert held["controllerId"] == old_identity
    assert held["servedControllerId"] == served_identity(ctl) != old_identity
    assert held["instances"] == 2
    assert str(agent.data_dir / "controller-id") in held["message"]
    time.sleep(1.5)  # three sync rounds of an empty feed from the new database
    assert running(agent) == pids, "held instances keep running"
    assert {i: app_files(agent, i) for i in pids} == files_before, "and keep their files"
    agent_log = agent.log_path.read_text()
    assert 1 <= agent_log.count("answers with database") <= 2, "logged loudly, at a low rate"
    assert ctl.ok("GET", "/v1/nodes")[0]["nodeId"] == NODE, "heartbeats go on: the node is visible"

    # The operator accepts the new database: the agent follows it from then on. The new database never
    # removed the instances (it does not know them): they keep running, reported, until removed here.
    (agent.data_dir / "controller-id").unlink()
    wait_until(lambda: controller_health(agent)["state"] == "following", 10, what="the agent to accept")
    health = wait_until(lambda: (h := controller_health(agent)).get("orphans") and h, 5, what="orphans reported")
    assert health["controllerId"] == held["servedControllerId"]
    assert health["orphans"] == sorted(pids) and running(agent) == pids
    for instance in pids:
        agent.request("DELETE", f"/v1/apps/{instance}")
    assert not any(pid_alive(p) for p in pids)
    wait_until(lambda: "orphans" not in controller_health(agent), 5, what="nothing left to report")


def test_a_restored_backup_is_followed_without_operator_action(fleet: Fleet, tmp_path: Path) -> None:
    agent, pids = start_with_two_instances(fleet)
    identity = controller_health(agent)["controllerId"]
    backup_dir = tmp_path / "backup"
    result = run_controller(fleet.env, "backup", str(backup_dir))
    assert result.returncode == 0, result.stderr
    before = without_live_fields(state_of(fleet.ctl))
    fleet.kill_controller()
    delete_wal(fleet.data / "controller.db")
    refusal(run_controller(fleet.env))

    result = run_controller(fleet.env, "restore", str(backup_dir))
    assert result.returncode == 0, result.stderr
    assert "restored database " + identity in result.stdout
    assert list(fleet.data.glob("controller.db.before-restore-*")), "the replaced database is kept aside"
    fleet.ctl.start()  # no --init-database needed
    assert without_live_fields(state_of(fleet.ctl)) == before
    time.sleep(1.5)
    assert controller_health(agent)["state"] == "following"
    assert running(agent) == pids


def test_instances_an_older_backup_does_not_know_keep_running_until_the_operator_removes_them(
    fleet: Fleet, tmp_path: Path
) -> None:
    ctl = fleet.ctl.start()
    agent = fleet.start_agent()
    wait_until(lambda: ctl.ok("GET", "/v1/nodes"), 5, what="the agent's heartbeat")
    kept = deploy(ctl, "kept", {NODE: 1})
    wait_until(lambda: len(running(agent)) == 1, 10, what="the first instance")
    assert run_controller(fleet.env, "backup", str(tmp_path / "older")).returncode == 0
    (kept_pid,) = running(agent).values()
    os.kill(kept_pid, signal.SIGKILL)  # a restart the older backup never heard of

    def kept_restarts() -> int:
        return ctl.ok("GET", f"/v1/deployments/{kept['deploymentId']}")["assignments"][0]["restarts"]

    wait_until(lambda: kept_restarts() == 1, 10, what="the restart reported")
    newer = deploy(ctl, "newer", {NODE: 1})
    (orphan,) = [a["instanceId"] for a in ctl.ok("GET", f"/v1/deployments/{newer['deploymentId']}")["assignments"]]
    pids = wait_until(lambda: (r := running(agent)) and len(r) == 2 and r, 10, what="both instances")

    assert fleet.ctl.stop() == 0
    result = run_controller(fleet.env, "restore", str(tmp_path / "older"))
    assert result.returncode == 0, result.stderr
    fleet.ctl.start()  # the same database identity: the agent follows it at once
    wait_until(lambda: controller_health(agent).get("orphans"), 5, what="the agent to report the orphan")
    time.sleep(1.5)  # a few more sync rounds
    assert running(agent) == pids, "the instance the backup does not know keeps running"
    health = controller_health(agent)
    assert health["state"] == "following" and health["orphans"] == [orphan]
    assert "plumctl rm" in health["orphansMessage"]
    assert agent.log_path.read_text().count("no longer lists instance(s)") == 1, "logged once a minute at most"
    wait_until(lambda: kept_restarts() == 1, 5, what="the agent to tell the restored controller what it missed")

    agent.request("DELETE", f"/v1/apps/{orphan}")  # the node's operator decides
    wait_until(lambda: not pid_alive(pids[orphan]), 5, what="the orphan to stop")
    wait_until(lambda: "orphans" not in controller_health(agent), 5, what="the orphan to be forgotten")

    assert ctl.call("DELETE", f"/v1/deployments/{kept['deploymentId']}").status == 204  # a recorded removal
    wait_until(lambda: running(agent) == {}, 10, what="the deleted deployment's instance to go")


def test_a_controller_instance_whose_record_was_lost_still_goes_when_the_controller_removes_it(
    fleet: Fleet,
) -> None:
    ctl = fleet.ctl.start()
    agent = fleet.start_agent()
    wait_until(lambda: ctl.ok("GET", "/v1/nodes"), 5, what="the agent's heartbeat")
    created = deploy(ctl, "lost", {NODE: 1})
    ((instance, pid),) = wait_until(lambda: running(agent), 10, what="the instance").items()
    agent.kill()  # kill -9 of the agent alone: its apps live on
    (agent.data_dir / "apps" / instance / "state.json").write_bytes(b"\x00garbage")
    assert ctl.call("DELETE", f"/v1/deployments/{created['deploymentId']}").status == 204  # while it is down

    agent.start()  # a record it cannot read, for an instance the controller says it removed
    wait_until(lambda: not pid_alive(pid), 10, what="the removed instance to stop")
    wait_until(lambda: not agent.request("GET", "/v1/apps")["apps"], 10, what="the lost record to go")


# ---- one controller per database -------------------------------------------------------------------


def test_a_second_controller_on_the_same_database_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    ctl = fleet.ctl.start()
    assert ctl.proc is not None
    holder = ctl.proc.pid
    same_dir = {**fleet.env, "CONTROLLER_ADDR": "127.0.0.1:0"}
    line = refusal(run_controller(same_dir))
    assert f"in use by another controller (controller pid {holder} on host " in line, line
    assert str(fleet.data / "controller.db") in line
    other_dir_same_db = {
        **same_dir,
        "CONTROLLER_DATA_DIR": str(tmp_path / "other"),
        "CONTROLLER_DB": str(ctl.data_dir / "controller.db"),
    }
    assert f"controller pid {holder} " in refusal(run_controller(other_dir_same_db))
    restore = run_controller(fleet.env, "restore", str(tmp_path))
    assert restore.returncode == 1
    assert "backup.json: missing" in restore.stderr  # checked before the lock: nothing touched

    ctl.heartbeat(NODE)
    deploy(ctl, "kept", {NODE: 1})
    fleet.kill_controller()  # the kernel drops the lock of a killed process
    ctl.start()
    assert [d["name"] for d in ctl.ok("GET", "/v1/deployments")] == ["kept"]
    assert f"controller pid {ctl.proc.pid} " in (fleet.data / "controller.db.lock").read_text()


# ---- damaged files ---------------------------------------------------------------------------------


def stopped_controller_with_data(fleet: Fleet) -> Path:
    ctl = fleet.ctl.start()
    ctl.heartbeat(NODE)
    for i in range(40):
        deploy(ctl, f"d{i}", {NODE: 1}, start=False)
    assert ctl.stop() == 0
    db = fleet.data / "controller.db"
    assert not db.with_name("controller.db-wal").exists(), "a clean stop leaves everything in the file"
    return db


def random_bytes(db: Path) -> None:
    db.write_bytes(random.Random(SEED).randbytes(db.stat().st_size))  # noqa: S311 - seeded test data


def truncated(db: Path) -> None:
    with db.open("r+b") as fh:
        fh.truncate(db.stat().st_size // 2)


def zeroed_page(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[4096 * 3 : 4096 * 4] = bytes(4096)
    db.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage", [random_bytes, truncated, zeroed_page], ids=["random-bytes", "truncated", "zeroed-page"]
)
def test_a_damaged_database_gets_one_line_naming_it(fleet: Fleet, damage) -> None:
    db = stopped_controller_with_data(fleet)
    damage(db)
    line = refusal(run_controller(fleet.env))
    assert f"{db}: not a usable SQLite database" in line, line
    assert "restore" in line


def read_only_mount_works() -> bool:
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare and root")
def test_a_read_only_data_directory_gets_one_line_naming_it(fleet: Fleet) -> None:
    if not read_only_mount_works():
        pytest.skip("mount namespaces are not allowed here")
    stopped_controller_with_data(fleet)
    data = str(fleet.data)
    script = f'mount --bind {data} {data} && mount -o remount,bind,ro {data} && exec "$@"'
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", sys.executable, "-m", "plum.controller.main"],
        env=clean_env(fleet.env),
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    line = refusal(result)
    assert "Read-only file system" in line, line
    assert data in line, line


# ---- backup while writing, restore -----------------------------------------------------------------


class Writer(threading.Thread):
    """Creates deployments one after the other and records when each was acknowledged."""

    def __init__(self, ctl: ControllerProc, url: str) -> None:
        super().__init__(daemon=True)
        self.ctl = ctl
        self.url = url
        self.acked: list[tuple[str, float]] = []
        self.halt = threading.Event()
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            i = 0
            while not self.halt.is_set():
                name = f"w-{i:04d}"
                entry = {"artifactUrl": self.url, "replicas": {NODE: 1}, "env": {"N": str(i)}}
                self.ctl.ok("POST", "/v1/deployments", {"name": name, "entries": [entry]})
                self.acked.append((name, time.monotonic()))
                i += 1
        except BaseException as exc:
            self.error = exc


def test_backup_while_writing_restores_the_same_state(fleet: Fleet, tmp_path: Path) -> None:
    ctl = fleet.ctl.start()
    ctl.heartbeat(NODE)
    data = app_zip("bk", "1.0.0")
    app = ctl.upload(data).json
    for i in range(5):
        deploy(ctl, f"base-{i}", {NODE: 1}, start=i % 2 == 0)
    writer = Writer(ctl, app["url"])
    writer.start()
    wait_until(lambda: len(writer.acked) >= 20, 10, what="writes under way")
    began = time.monotonic()
    result = run_controller(fleet.env, "backup", str(tmp_path / "bk"))
    ended = time.monotonic()
    wait_until(lambda: writer.acked and writer.acked[-1][1] > ended + 0.2, 5, what="writes after the backup")
    writer.halt.set()
    writer.join(10)
    assert writer.error is None, writer.error
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "bk" / "backup.json").read_text())
    everything = state_of(ctl)
    tokens = (ctl.operator, ctl.agent)
    assert ctl.stop() == 0

    # A new host: an empty data directory, the backup restored into it.
    restored = ControllerProc(tmp_path / "restored", **FAST)
    result = run_controller({**restored.env}, "restore", str(tmp_path / "bk"))
    assert result.returncode == 0, result.stderr
    restored.start()
    try:
        assert (restored.operator, restored.agent) == tokens
        assert served_identity(restored) == manifest["databaseId"]
        state = state_of(restored)
        names = [d["name"] for d in state["deployments"] if d["name"].startswith("w-")]
        before_backup = [n for n, t in writer.acked if t < began]
        after_backup = [n for n, t in writer.acked if t > ended]
        assert names == sorted(names) and names == [n for n, _ in writer.acked[: len(names)]], "a prefix: no holes"
        assert set(before_backup) <= set(names), "everything acknowledged before the backup began is in it"
        assert not set(after_backup) & set(names), "nothing acknowledged after it ended"
        assert manifest["counts"]["deployments"] == 5 + len(names)
        kept = {d["name"] for d in state["deployments"]}
        expected = {
            "apps": everything["apps"],
            "deployments": [d for d in everything["deployments"] if d["name"] in kept],
            "details": {n: d for n, d in everything["details"].items() if n in kept},
            "feed": [
                i for i in everything["feed"] if i["deploymentId"] in {d["deploymentId"] for d in state["deployments"]}
            ],
        }
        assert without_live_fields(state) == without_live_fields(expected)
        assert restored.call("GET", app["url"]).body == data
    finally:
        assert restored.stop() == 0
    assert "Traceback" not in restored.log()


# ---- a partitioned agent ---------------------------------------------------------------------------


def test_a_partitioned_agent_keeps_its_instances_and_resumes(tmp_path: Path) -> None:
    """The controller stops answering for longer than the heartbeat TTL (SIGSTOP), and agent b, cut off
    too, comes back half a second after it: nothing moves, nothing stops, both follow it again."""
    fleet = Fleet(tmp_path, AUTO_MIGRATION_ENABLED="true", FAILOVER_INTERVAL_SEC="0.2")
    try:
        ctl = fleet.ctl.start()
        agents = [fleet.start_agent("part-a"), fleet.start_agent("part-b")]
        wait_until(lambda: len(ctl.ok("GET", "/v1/nodes")) == 2, 5, what="two nodes")
        dep = deploy(ctl, "part", {"part-a": 1, "part-b": 1})
        pids = [wait_until(lambda a=a: running(a), 10, what="an instance per node") for a in agents]
        assert ctl.proc is not None and agents[1].proc is not None
        agents[1].proc.send_signal(signal.SIGSTOP)  # b is cut off first: its last heartbeat is answered
        time.sleep(0.6)
        ctl.proc.send_signal(signal.SIGSTOP)  # then the controller: connections hang, nothing answers
        time.sleep(3)  # longer than the 2 s heartbeat TTL
        assert running(agents[0]) == pids[0], "instances keep running while the controller is away"
        ctl.proc.send_signal(signal.SIGCONT)
        time.sleep(0.5)
        agents[1].proc.send_signal(signal.SIGCONT)
        wait_until(lambda: all(n["health"] == "Healthy" for n in ctl.ok("GET", "/v1/nodes")), 10, what="heartbeats")
        assert [running(a) for a in agents] == pids
        ctl.ok("PATCH", f"/v1/deployments/{dep['deploymentId']}", {"replicas": {"part-a": 2, "part-b": 2}})
        for agent, before in zip(agents, pids):
            wait_until(lambda a=agent: len(running(a)) == 2, 10, what="the agents to follow the controller again")
            assert set(before.items()) <= set(running(agent).items()), "the first instance never restarted"
        assert "replaced by" not in ctl.log(), "a paused controller moved nothing"
        placed = ctl.ok("GET", f"/v1/deployments/{dep['deploymentId']}")["assignments"]
        assert set(dep["instances"]) <= {a["instanceId"] for a in placed}
    finally:
        fleet.close()
    assert "Traceback" not in fleet.ctl.log()
