"""The Docker runtime's pure parts: container plans, env, CONTROLLER_BASE rewrite, exits, the stray
cleaner's verdicts, the engine probe."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
from pathlib import Path
from typing import Optional

import pytest

from plum.agent.config import AgentConfig, DockerSettings
from plum.agent.runtimes import docker as rt
from plum.agent.runtimes.base import Expected, Launch, StartError, start_command
from plum.agent.runtimes.docker.cleaner import CREATION_GRACE, GARBAGE_AFTER, Kept, StrayCleaner
from plum.agent.runtimes.docker.engine import EngineFacts, engine_answers
from plum.agent.runtimes.docker.handle import Cause, DockerHandle, exit_info
from plum.agent.runtimes.docker.plan import Plan, plan_container, rewrite_controller_base
from plum.agent.runtimes.docker.ports import port_in_use, ports_overlap
from plum.agent.spec import SpecError, parse_spec
from plum.common.artifact import AppMeta, Service
from plum.common.config import ConfigError

MIB = 1024 * 1024


def make_config(tmp_path: Path, **docker: object) -> AgentConfig:
    return AgentConfig(
        node_id="n1",
        data_dir=tmp_path / "data",
        run_mode="process",
        api_host="127.0.0.1",
        api_port=0,
        api_token=None,
        log_level="info",
        metrics_public=False,
        log_max_bytes=1_000_000,
        log_backups=2,
        max_artifact_bytes=1024,
        controller_base=None,
        docker=DockerSettings(**docker),  # type: ignore[arg-type]
    )


def make_launch(tmp_path: Path, spec: dict, zip_app: bool = True, meta: Optional[AppMeta] = None) -> Launch:
    app_dir = None
    if zip_app:
        app_dir = tmp_path / "release"
        app_dir.mkdir(exist_ok=True)
        script = app_dir / "start.sh"
        script.write_text("#!/bin/sh\nexec sleep 1\n")
        script.chmod(0o755)
    return Launch(
        app_name="web",
        instance_id="web-1234",
        version="1.0" if zip_app else "",
        app_dir=app_dir,
        data_dir=tmp_path / "appdata",
        log_path=tmp_path / "logs" / "app.log",
        spec=parse_spec(spec, runtimes=("process", "docker")),
        meta=meta,
        env={
            "PATH": "/host/bin",
            "HOME": "/root",
            "LC_ALL": "C",
            "CONTROLLER_BASE": "http://127.0.0.1:8080",
            "PLUM_INSTANCE_ID": "web-1234",
            "PLUM_APP_NAME": "web",
            "PLUM_APP_VERSION": "1.0",
            "WORKER_NODE_ID": "n1",
            **parse_spec(spec, runtimes=("process", "docker")).env,
        },
    )


@pytest.mark.parametrize(
    ("base", "host", "gateway", "expected"),
    [
        (
            "http://127.0.0.1:8080",
            None,
            "host.docker.internal",
            "http://host.docker.internal:8080",
        ),
        ("http://localhost", None, "172.17.0.1", "http://172.17.0.1"),
        ("https://localhost/api/", "ctl.lan", "172.17.0.1", "https://ctl.lan/api/"),
        ("http://[::1]:9000", None, "fd00::1", "http://[fd00::1]:9000"),
        ("http://controller:8080", "ctl.lan", "172.17.0.1", "http://controller:8080"),
    ],
)
def test_controller_base_rewrite_never_leaves_a_trailing_colon(base, host, gateway, expected):
    assert rewrite_controller_base(base, host, gateway) == expected


def test_start_command_of_both_runtimes(tmp_path):
    with pytest.raises(StartError, match=r"start\.sh"):
        start_command(tmp_path, None)
    (tmp_path / "start.sh").write_text("#!/bin/bash\n")
    assert start_command(tmp_path, None) == ["/bin/sh", "./start.sh"], "not executable: through sh"
    (tmp_path / "start.sh").chmod(0o755)
    assert start_command(tmp_path, None) == ["./start.sh"]
    (tmp_path / "start.sh").write_text("echo no shebang\n")
    assert start_command(tmp_path, None) == ["/bin/sh", "./start.sh"]
    assert start_command(tmp_path, "exec ./run 'a b'") == [
        "/bin/sh",
        "-c",
        "exec ./run 'a b'",
    ]


def test_exit_info():
    assert exit_info({"ExitCode": 3}, None, False).reason == "Exited"
    oom = exit_info({"ExitCode": 137, "OOMKilled": True}, None, False)
    assert (oom.exit_code, oom.signal, oom.reason) == (137, 9, "OOMKilled")
    assert exit_info({"ExitCode": 0}, Cause.OOM_KILLED, False).reason == "OOMKilled"
    term = exit_info({"ExitCode": 143}, None, False)
    assert (term.exit_code, term.signal, term.reason) == (143, 15, "Signaled")
    sick = exit_info({"ExitCode": 0}, Cause.UNHEALTHY, False)
    assert (sick.exit_code, sick.reason) == (None, "Unhealthy"), "an agent kill is never a success"
    assert exit_info({"ExitCode": 0}, None, True).exit_code is None
    assert exit_info(None, None, False).reason == "Unknown"


def test_ports_overlap():
    assert ports_overlap(("127.0.0.1", 80, "tcp"), ("0.0.0.0", 80, "tcp"))
    assert not ports_overlap(("127.0.0.1", 80, "tcp"), ("127.0.0.1", 80, "udp"))
    assert not ports_overlap(("127.0.0.1", 80, "tcp"), ("127.0.0.2", 80, "tcp"))


def test_port_in_use():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert port_in_use("127.0.0.1", port, "tcp") is not None
        assert port_in_use("127.0.0.1", port, "udp") is None
    assert port_in_use("127.0.0.1", port, "tcp") is None


def test_plan_of_a_zip_app(tmp_path):
    config = make_config(
        tmp_path,
        memory=96 * MIB,
        cpus=0.25,
        env={"A": "1,2", "PATH": "/img/bin"},
        base_image="base:1",
    )
    launch = make_launch(tmp_path, {"env": {"B": "x"}})
    (launch.app_dir / "lib").mkdir()
    plan = plan_container(launch, config, EngineFacts(host_gateway=True))
    assert plan.image == "base:1" and plan.working_dir == "/app" and plan.command == ["./start.sh"]
    assert plan.host_config["binds"] == {str(launch.app_dir): {"bind": "/app", "mode": "rw"}}
    assert plan.host_config["restart_policy"] == {"Name": "no"}
    assert (plan.host_config["mem_limit"], plan.host_config["nano_cpus"]) == (
        96 * MIB,
        250_000_000,
    )
    assert plan.host_config["log_config"]["config"] == {
        "max-size": "1000000",
        "max-file": "3",
    }
    assert "security_opt" not in plan.host_config
    assert plan.host_config["extra_hosts"] == {"host.docker.internal": "host-gateway"}
    assert plan.env["CONTROLLER_BASE"] == "http://host.docker.internal:8080"
    assert plan.env["LD_LIBRARY_PATH"] == "/app/lib"
    assert plan.env["A"] == "1,2" and plan.env["B"] == "x" and plan.env["PATH"] == "/img/bin"
    assert "HOME" not in plan.env and "LC_ALL" not in plan.env, "the host's own variables stay out"
    assert plan.labels == {
        "plum.managed": "true",
        "plum.node": "n1",
        "plum.app": "web",
        "plum.instance": "web-1234",
        "plum.version": "1.0",
        "plum.spec-hash": launch.spec.digest(),
        "plum.plan-hash": plan.fingerprint(),
    }
    assert plan.name.startswith("plum-n1-web-")


def test_plan_of_an_image_app(tmp_path):
    config = make_config(tmp_path, network_mode="host", memory=96 * MIB)
    spec = {"image": "app:2.0", "memory": "1g", "cpus": 1.5, "seccomp_unconfined": True}
    launch = make_launch(tmp_path, spec, zip_app=False)
    plan = plan_container(launch, config, EngineFacts(host_gateway=True))
    assert (plan.image, plan.command, plan.working_dir) == ("app:2.0", None, None)
    assert plan.host_config["binds"] == {str(tmp_path / "appdata"): {"bind": "/app/data", "mode": "rw"}}
    assert plan.data_dir == tmp_path / "appdata"
    assert (plan.host_config["mem_limit"], plan.host_config["nano_cpus"]) == (
        1024 * MIB,
        1_500_000_000,
    )
    assert plan.host_config["security_opt"] == ["seccomp=unconfined"]
    assert plan.host_config["network_mode"] == "host" and "extra_hosts" not in plan.host_config
    assert plan.env["CONTROLLER_BASE"] == "http://127.0.0.1:8080", "host mode: no rewrite"
    assert plan.labels["plum.version"] == "2.0"
    with_cmd = plan_container(
        make_launch(tmp_path, {**spec, "start_cmd": "run --x 'a b'"}, zip_app=False),
        config,
        EngineFacts(),
    )
    assert with_cmd.command == ["/bin/sh", "-c", "run --x 'a b'"]


def test_plan_of_ports_and_host_libs(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    config = make_config(tmp_path, host_lib_paths=(str(lib),), publish_host="127.0.0.2")

    def plan_of(launch: Launch) -> Plan:
        return plan_container(launch, config, EngineFacts())

    meta = AppMeta("web", "1.0", (Service("web", "http", 18080), Service("dns", "udp", 18053)))
    plan = plan_of(make_launch(tmp_path, {}, meta=meta))
    assert plan.host_config["port_bindings"] == {
        "18080/tcp": [("127.0.0.2", 18080)],
        "18053/udp": [("127.0.0.2", 18053)],
    }
    assert plan.exposed == [(18080, "tcp"), (18053, "udp")]
    assert plan.host_config["binds"][str(lib)] == {"bind": str(lib), "mode": "ro"}
    spec_ports = plan_of(make_launch(tmp_path, {"ports": ["18081:80", "0.0.0.0:18082:80"]}, meta=meta))
    assert spec_ports.host_config["port_bindings"] == {"80/tcp": [("127.0.0.2", 18081), ("0.0.0.0", 18082)]}
    # without a host port, Docker picks one on PLUM_PUBLISH_HOST (or the given address)
    picked = plan_of(make_launch(tmp_path, {"ports": ["8080", {"container": 53, "protocol": "udp"}]}))
    assert picked.host_config["port_bindings"] == {
        "8080/tcp": [("127.0.0.2", None)],
        "53/udp": [("127.0.0.2", None)],
    }
    assert picked.exposed == [(8080, "tcp"), (53, "udp")]
    assert picked.host_ports == set(), "nothing to check or hold: Docker picks a free port"
    mixed = plan_of(make_launch(tmp_path, {"ports": ["18083:80", "0.0.0.0::80"]}))
    assert mixed.host_config["port_bindings"] == {"80/tcp": [("127.0.0.2", 18083), ("0.0.0.0", None)]}
    assert mixed.host_ports == {("127.0.0.2", 18083, "tcp")}
    no_net = plan_of(make_launch(tmp_path, {"network_mode": "none"}, meta=meta))
    assert "port_bindings" not in no_net.host_config, "meta.ini services are only published in bridge mode"

    missing = make_launch(tmp_path, {"host_lib_paths": [str(tmp_path / "gone")]})
    with pytest.raises(StartError, match="does not exist"):
        plan_of(missing)


def test_preflight_refuses_ports_held_by_others_but_not_by_the_app_itself(tmp_path):
    runtime = rt.DockerRuntime(make_config(tmp_path))
    runtime.held.hold("other", object(), {("0.0.0.0", 18090, "tcp")})
    spec = parse_spec({"ports": ["18090:80"]}, runtimes=("docker",))
    with pytest.raises(SpecError, match="already published by app 'other'") as err:
        runtime.preflight("web", spec, None)
    assert err.value.field == "ports"
    with socket.socket() as holder:  # the app's own running container holds it: a redeploy may reuse it
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        runtime.held.hold("web", object(), {("127.0.0.1", port, "tcp")})
        runtime.preflight("web", parse_spec({"ports": [f"{port}:80"]}, runtimes=("docker",)), None)
        with pytest.raises(SpecError, match="already published by app 'web'"):
            runtime.preflight("new", parse_spec({"ports": [f"{port}:80"]}, runtimes=("docker",)), None)
        runtime.held.release("web")  # nothing of ours: someone else holds it
        with pytest.raises(SpecError, match="not free"):
            runtime.preflight("new", parse_spec({"ports": [f"{port}:80"]}, runtimes=("docker",)), None)
    with pytest.raises(SpecError) as err:
        runtime.preflight(
            "web",
            parse_spec({"host_lib_paths": ["/nope/nothing"]}, runtimes=("docker",)),
            None,
        )
    assert err.value.field == "host_lib_paths"
    runtime.held.hold("other", object(), {("127.0.0.1", 18091, "tcp")})  # container-only ports never conflict
    runtime.preflight(
        "web",
        parse_spec({"ports": ["18091", "127.0.0.1::18091"]}, runtimes=("docker",)),
        None,
    )
    runtime.engine.facts.ncpu = 2
    with pytest.raises(SpecError) as err:
        runtime.preflight("web", parse_spec({"cpus": 4}, runtimes=("docker",)), None)
    assert err.value.field == "cpus"


def serve_once(sock: socket.socket, answer: bytes) -> threading.Thread:
    def run() -> None:
        conn, _ = sock.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_engine_probe_without_the_sdk(tmp_path):
    path = tmp_path / "docker.sock"
    assert engine_answers(f"unix://{path}") is False
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        serve_once(server, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
        assert engine_answers(f"unix://{path}") is True
        serve_once(server, b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
        assert engine_answers(f"unix://{path}") is False


def test_handle_state_round_trip(tmp_path):
    async def make() -> dict:
        handle = DockerHandle(
            "abc",
            "plum-n1-web-1",
            make_launch(tmp_path, {}),
            started_at=1.5,
            pid=42,
            on_exit=lambda h, i: None,
        )
        return handle.to_state()

    assert asyncio.run(make()) == {
        "container_id": "abc",
        "name": "plum-n1-web-1",
        "started_at": 1.5,
        "pid": 42,
    }
    assert dataclasses.is_dataclass(Plan)


def test_the_docker_runtime_is_added_only_where_it_can_work(tmp_path, monkeypatch):
    config = make_config(tmp_path, docker_host=f"unix://{tmp_path}/none.sock")
    assert rt.docker_runtime(config, required=False) is None, "no engine, nothing asks for docker"
    assert isinstance(rt.docker_runtime(config, required=True), rt.DockerRuntime), (
        "required: added even while the engine is away (it connects once it answers)"
    )
    monkeypatch.setattr(rt, "engine_answers", lambda host: True)
    assert isinstance(rt.docker_runtime(config, required=False), rt.DockerRuntime)
    monkeypatch.setattr(rt.importlib.util, "find_spec", lambda name: None)
    assert rt.docker_runtime(config, required=False) is None, "an engine but no SDK: refused, the agent still starts"
    with pytest.raises(ConfigError, match="the Docker runtime is required here: the Docker SDK"):
        rt.docker_runtime(config, required=True)


def test_a_plan_fingerprint_changes_with_what_the_container_is_but_not_its_name(tmp_path):
    config = make_config(tmp_path)
    launch = make_launch(tmp_path, {})
    one, two = (plan_container(launch, config, EngineFacts()) for _ in range(2))
    assert one.name != two.name and one.fingerprint() == two.fingerprint()
    assert one.labels["plum.plan-hash"] == one.fingerprint()
    changes = [
        dataclasses.replace(launch, env={**launch.env, "NEW": "1"}),
        make_launch(tmp_path, {"memory": "64m"}),
        make_launch(tmp_path, {"ports": ["18099:80"]}),
    ]
    for changed in changes:
        assert plan_container(changed, config, EngineFacts()).fingerprint() != one.fingerprint()


def summary(cid: str, app: str, instance: str, *, running: bool = True, age: float = 3600.0) -> dict:
    labels = {"plum.app": app, "plum.instance": instance}
    state = "running" if running else "exited"
    return {"Id": cid, "Labels": labels, "State": state, "Created": 1000.0 - age}


def test_the_cleaner_removes_only_what_nobody_answers_for():
    cleaner = StrayCleaner("docker")
    tracked = [
        Expected("web", "web-1", "docker", {"container_id": "web-c"}),
        Expected("lost", "lost-1", "docker", None),  # no saved container: any of its instance is spared
        Expected("proc", "proc-1", "process", {"pid": 4}),
    ]
    containers = [
        summary("web-c", "web", "web-1"),
        summary("web-second", "web", "web-1"),  # never two instances of an app
        summary("web-old", "web", "web-0"),
        summary("lost-c", "lost", "lost-1"),
        summary("proc-c", "proc", "proc-1"),  # tracked, but by another runtime
        summary("ghost-young", "ghost", "ghost-1", age=1.0),  # maybe a start whose record is not written yet
        summary("lost-ended", "lost", "lost-1", running=False, age=GARBAGE_AFTER - 1),  # never re-adopted
        summary("busy-c", "busy", "busy-1"),
        summary("kept-c", "kept", "kept-1", running=False),
    ]
    kept = Kept(containers={"kept-c"}, busy_apps={"busy"})
    verdict = cleaner.judge(containers, tracked, kept, now=1000.0)
    assert sorted(s["Id"] for s in verdict.strays) == ["proc-c", "web-old", "web-second"]
    assert verdict.recheck_in == pytest.approx(CREATION_GRACE - 1.0), "the young one is judged later"
    later = cleaner.judge(containers, tracked, kept, now=1000.0 + CREATION_GRACE)
    assert "ghost-young" in [s["Id"] for s in later.strays]
    assert "lost-ended" in [s["Id"] for s in cleaner.judge(containers, tracked, kept, now=1001.0).strays]
    settled = Kept(settled_apps={"lost"})  # this agent ran it since: its one container is the watched one
    assert "lost-c" in [s["Id"] for s in cleaner.judge(containers, tracked, settled, now=1000.0).strays]
    failed = Kept(leftovers={"web-c"})  # the runtime's own removal that failed: at once
    assert "web-c" in [s["Id"] for s in cleaner.judge(containers, tracked, failed, now=1000.0).strays]
