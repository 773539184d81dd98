"""The Docker runtime against a real engine: a real agent process, real containers, inspected with the CLI.

Needs a Docker engine and the image of scripts/build-test-image.sh (`make test` provides both). Without an
engine the tests are skipped, except under CI (the CI variable set), where they must run and fail instead.
Every agent gets its own node id, and teardown removes every container labelled with it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any, Optional

import pytest

from support.agent import Agent, APIError, app_zip, free_port, make_zip, wait_until
from support.docker import (
    BASE_IMAGE,
    EngineProxy,
    container_ids,
    docker,
    ensure_engine_and_images,
    inspect,
    remove_node_containers,
)

pytestmark = pytest.mark.docker

HEALTH_IMAGE = "plum-test/healthcheck:1"
MIB = 1024 * 1024


@pytest.fixture(scope="session")
def docker_engine() -> None:
    ensure_engine_and_images()


class DockerAgents:
    """Starts agents in Docker mode, each with a node id of its own; cleans their containers up."""

    def __init__(self, agent_factory: Any) -> None:
        self.agent_factory = agent_factory
        self.nodes: list[str] = []
        self.agents: list[Any] = []

    def __call__(self, name: str = "agent", node: Optional[str] = None, **env: str) -> Any:
        node = node or f"t{secrets.token_hex(4)}"
        if node not in self.nodes:
            self.nodes.append(node)
        settings = {"AGENT_NODE_ID": node, "AGENT_RUN_MODE": "docker", "PLUM_BASE_IMAGE": BASE_IMAGE}
        settings.update(env)
        agent = self.agent_factory(name, env=settings)
        agent.node = node
        self.agents.append(agent)
        return agent

    def cleanup(self) -> None:
        for agent in self.agents:  # first, or they would restart what is removed below
            agent.kill()
        for node in self.nodes:
            remove_node_containers(node)


@pytest.fixture
def docker_agent(docker_engine: None, agent_factory: Any) -> Any:
    agents = DockerAgents(agent_factory)
    yield agents
    agents.cleanup()


def current_container(agent: Any, app: str) -> str:
    ids = container_ids(agent.node, app, running_only=True)
    assert len(ids) == 1, f"expected one running container for {app}, found {ids}"
    return ids[0]


def logs_contain(agent: Any, app: str, text: str, timeout: float = 10) -> list[str]:
    def probe() -> Optional[list[str]]:
        lines = agent.request("GET", f"/v1/apps/{app}/logs?tail=50")["lines"]
        return lines if any(text in line for line in lines) else None

    return wait_until(probe, timeout=timeout, what=f"{text!r} in the logs of {app}")


def app_when(agent: Any, name: str, predicate: Any, timeout: float = 10, what: str = "") -> dict[str, Any]:
    def probe() -> Optional[dict[str, Any]]:
        app = agent.app(name)
        return app if predicate(app) else None

    return wait_until(probe, timeout=timeout, what=what or f"a change of {name}")


def env_of(info: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in info["Config"]["Env"])


# ---- apps in containers ------------------------------------------------------------------------


def test_zip_app_runs_in_the_base_image_with_env_labels_and_logs(docker_agent, tmp_path):
    agent = docker_agent(
        CONTROLLER_BASE="http://127.0.0.1:8080",
        PLUM_CONTAINER_ENV='{"GREETING": "hello, world", "LD_LIBRARY_PATH": "/opt/x"}',
    )
    script = 'echo "hi from $PLUM_APP_NAME in $(pwd): $GREETING"\nexec sleep 1000\n'
    artifact = make_zip(
        tmp_path / "z.zip",
        {
            "start.sh": ("#!/bin/sh\n" + script, 0o755),
            "meta.ini": "name=zippy\nversion=2.1.0\n",
            "lib/libdemo.so": "not really a library",
        },
    )
    app = agent.deploy("zippy", artifact, {"env": {"MODE": "a,b;c"}})["app"]
    assert (app["phase"], app["runtime"], app["version"]) == ("Running", "docker", "2.1.0")
    info = inspect(current_container(agent, "zippy"))
    assert info["Config"]["Image"] == BASE_IMAGE
    assert info["Config"]["WorkingDir"] == "/app"
    assert info["Config"]["Cmd"] == ["./start.sh"]
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/app"]["Source"] == str(agent.data_dir / "apps/zippy/releases" / app["artifact_sha256"][:16])
    labels = info["Config"]["Labels"]
    assert labels["plum.managed"] == "true" and labels["plum.node"] == agent.node
    assert (labels["plum.app"], labels["plum.instance"], labels["plum.version"]) == (
        "zippy",
        app["instance_id"],
        "2.1.0",
    )
    assert labels["plum.spec-hash"] == app["spec_hash"]
    env = env_of(info)
    assert env["PLUM_INSTANCE_ID"] == app["instance_id"] and env["PLUM_APP_NAME"] == "zippy"
    assert env["PLUM_APP_VERSION"] == "2.1.0" and env["WORKER_NODE_ID"] == agent.node
    assert env["GREETING"] == "hello, world" and env["MODE"] == "a,b;c"
    assert env["LD_LIBRARY_PATH"] == "/opt/x:/app/lib"
    # bridge mode: the controller on the host's loopback is reached through the host gateway
    assert env["CONTROLLER_BASE"] == "http://host.docker.internal:8080"
    assert "host.docker.internal:host-gateway" in info["HostConfig"]["ExtraHosts"]
    assert not any(key.startswith("AGENT_") for key in env), "agent settings leak into the container"
    host = info["HostConfig"]
    assert host["RestartPolicy"]["Name"] in ("no", "")
    assert not host["SecurityOpt"], "no seccomp=unconfined unless the spec asks for it"
    assert host["LogConfig"]["Type"] == "json-file" and host["LogConfig"]["Config"]["max-size"]
    assert host["NetworkMode"] == "bridge"
    logs_contain(agent, "zippy", "hi from zippy in /app: hello, world")


def test_start_cmd_runs_through_sh_and_seccomp_opt_in(docker_agent, tmp_path):
    agent = docker_agent()
    spec = {"start_cmd": "printf '%s|\\n' \"two  spaces\" && exec sleep 1000", "seccomp_unconfined": True}
    agent.deploy("quoted", app_zip(tmp_path / "q.zip"), spec)
    info = inspect(current_container(agent, "quoted"))
    assert info["Config"]["Cmd"][:2] == ["/bin/sh", "-c"]
    assert info["HostConfig"]["SecurityOpt"] == ["seccomp=unconfined"]
    logs_contain(agent, "quoted", "two  spaces|")


def test_image_app_runs_its_own_command_with_a_data_dir(docker_agent):
    agent = docker_agent()
    spec = {"image": BASE_IMAGE, "start_cmd": "echo kept > /app/data/note && echo wrote && exec sleep 1000"}
    app = agent.deploy("imgapp", spec=spec)["app"]
    assert (app["phase"], app["runtime"], app["version"], app["artifact_sha256"]) == (
        "Running",
        "docker",
        "bookworm",
        None,
    )
    logs_contain(agent, "imgapp", "wrote")
    assert (agent.data_dir / "apps/imgapp/data/note").read_text() == "kept\n"
    # no start_cmd: the image's own CMD (here with a HEALTHCHECK that stays healthy for 2 s)
    agent.deploy("imgcmd", spec={"image": HEALTH_IMAGE, "restart_policy": "never"})
    info = inspect(current_container(agent, "imgcmd"))
    assert info["Config"]["Cmd"] == json.loads(docker("image", "inspect", "-f", "{{json .Config.Cmd}}", HEALTH_IMAGE))
    assert info["Config"]["Labels"]["plum.version"] == "1"
    # the same image and spec again changes nothing
    again = agent.deploy("imgapp", spec=spec)
    assert again["changed"] is False and again["app"]["pid"] == app["pid"]


def test_stop_removes_the_container_keeps_data_and_last_logs(docker_agent):
    agent = docker_agent()
    spec = {"image": BASE_IMAGE, "start_cmd": "date > /app/data/started; echo last words; exec sleep 1000"}
    agent.deploy("stopper", spec=spec)
    logs_contain(agent, "stopper", "last words")
    cid = current_container(agent, "stopper")
    started = time.monotonic()
    stopped = agent.request("POST", "/v1/apps/stopper/stop")["app"]
    assert time.monotonic() - started < 5, "init forwards SIGTERM: no wait for the stop timeout"
    assert stopped["phase"] == "Stopped" and stopped["pid"] is None
    assert container_ids(agent.node, "stopper") == [], "the container is removed"
    assert (agent.data_dir / "apps/stopper/data/started").exists(), "the data dir stays"
    assert "last words" in agent.request("GET", "/v1/apps/stopper/logs?tail=5")["lines"]
    restarted = agent.request("POST", "/v1/apps/stopper/start")["app"]
    assert restarted["phase"] == "Running" and current_container(agent, "stopper") != cid
    agent.request("DELETE", "/v1/apps/stopper")
    assert container_ids(agent.node, "stopper") == []


def test_crash_is_restarted_with_its_exit_code(docker_agent, tmp_path):
    agent = docker_agent()
    agent.deploy("crashy", app_zip(tmp_path / "c.zip", script="echo crashing; sleep 0.3; exit 3\n"))
    app = app_when(agent, "crashy", lambda a: a["restarts"] >= 2, what="restarts")
    assert (app["exit_code"], app["exit_reason"]) == (3, "Exited")
    assert "crashing" in agent.request("GET", "/v1/apps/crashy/logs?tail=5")["lines"]
    wait_until(lambda: len(container_ids(agent.node, "crashy")) == 1, what="dead containers removed")


def test_a_crash_starts_the_same_container_again_unless_the_spec_changed(docker_agent):
    agent = docker_agent()
    spec = {"image": BASE_IMAGE, "start_cmd": "echo run; exec sleep 1000", "stop_timeout": 1}
    agent.deploy("again", spec=spec)
    cid = current_container(agent, "again")
    docker("kill", cid)
    app = app_when(agent, "again", lambda a: (a["restarts"], a["phase"]) == (1, "Running"), what="the restart")
    assert app["exit_reason"] == "Signaled"
    assert container_ids(agent.node, "again") == [cid], "started again, as docker --restart=always does"
    assert agent.request("GET", "/v1/apps/again/logs?tail=5")["lines"].count("run") == 2, "both runs' lines"
    agent.deploy("again", spec={**spec, "env": {"V": "2"}})
    assert current_container(agent, "again") != cid and len(container_ids(agent.node, "again")) == 1


# ---- resources -----------------------------------------------------------------------------------


def test_memory_and_cpu_limits_are_set_and_an_oom_kill_is_reported(docker_agent, tmp_path):
    agent = docker_agent(PLUM_CONTAINER_MEMORY="96m", PLUM_CONTAINER_CPUS="0.25")
    agent.deploy("limited", app_zip(tmp_path / "l.zip"), {"memory": "1.5g", "cpus": 0.5})
    host = inspect(current_container(agent, "limited"))["HostConfig"]
    assert (host["Memory"], host["NanoCpus"]) == (1536 * MIB, 500_000_000)
    agent.deploy("defaults", app_zip(tmp_path / "d.zip"))
    host = inspect(current_container(agent, "defaults"))["HostConfig"]
    assert (host["Memory"], host["NanoCpus"]) == (96 * MIB, 250_000_000), "agent-wide defaults"

    hog = "python3 -c 'import time; b = bytearray(200 * 1024 * 1024); time.sleep(60)'"
    spec = {"image": BASE_IMAGE, "memory": "32m", "start_cmd": hog, "restart_policy": "never"}
    agent.deploy("hog", spec=spec)
    failed = agent.wait_phase("hog", "Failed", timeout=30)
    assert failed["exit_reason"] == "OOMKilled", failed
    assert "out of memory" in failed["message"]


def test_host_lib_paths_are_mounted_read_only_and_a_missing_one_is_refused(docker_agent, tmp_path):
    agent_lib = tmp_path / "agentlib"
    app_lib = tmp_path / "applib"
    for directory in (agent_lib, app_lib):
        directory.mkdir()
        (directory / "libx.so").write_text(directory.name)
    agent = docker_agent(PLUM_HOST_LIB_PATHS=f"{agent_lib}/")
    script = f"cat {agent_lib}/libx.so {app_lib}/libx.so; touch {app_lib}/new || echo read-only\nexec sleep 1000\n"
    agent.deploy("libs", app_zip(tmp_path / "l.zip", script=script), {"host_lib_paths": [str(app_lib)]})
    mounts = {m["Destination"]: m for m in inspect(current_container(agent, "libs"))["Mounts"]}
    for directory in (agent_lib, app_lib):
        assert mounts[str(directory)]["Source"] == str(directory) and mounts[str(directory)]["RW"] is False
    lines = logs_contain(agent, "libs", "read-only")
    assert any("agentlibapplib" in line for line in lines), "both files are readable"

    with pytest.raises(APIError) as err:
        agent.deploy("libs2", app_zip(tmp_path / "m.zip"), {"host_lib_paths": [str(tmp_path / "missing")]})
    assert err.value.status == 400 and err.value.body["field"] == "host_lib_paths"
    assert "does not exist" in err.value.body["error"]

    env = dict(os.environ, AGENT_DATA_DIR=str(tmp_path / "x"), PLUM_HOST_LIB_PATHS=str(tmp_path / "nope"))
    argv = [sys.executable, "-m", "plum.agent.main", "--check-config"]
    check = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert check.returncode == 2 and "PLUM_HOST_LIB_PATHS" in check.stderr and "does not exist" in check.stderr


def test_network_modes(docker_agent, tmp_path):
    agent = docker_agent(CONTROLLER_BASE="http://localhost:9999", PLUM_CONTAINER_NETWORK_MODE="none")
    script = 'echo "ifaces: $(ls /sys/class/net | tr "\\n" " ")"; echo "cb=$CONTROLLER_BASE"\nexec sleep 1000\n'
    apps = {"net-host": "host", "net-bridge": "bridge", "net-default": None}
    for name, mode in apps.items():
        agent.deploy(name, app_zip(tmp_path / f"{name}.zip", script=script), {"network_mode": mode} if mode else {})
    modes = {name: inspect(current_container(agent, name))["HostConfig"]["NetworkMode"] for name in apps}
    assert modes == {"net-host": "host", "net-bridge": "bridge", "net-default": "none"}

    def seen(name: str) -> tuple[set[str], str]:
        lines = logs_contain(agent, name, "cb=")
        ifaces = next(line for line in lines if line.startswith("ifaces:")).split()[1:]
        return set(ifaces), next(line for line in lines if line.startswith("cb="))

    ifaces, controller = seen("net-default")
    assert "lo" in ifaces and "eth0" not in ifaces, "none: loopback only"
    assert controller == "cb=http://localhost:9999", "none: no rewrite"
    ifaces, controller = seen("net-bridge")
    assert "eth0" in ifaces and "docker0" not in ifaces
    assert controller == "cb=http://host.docker.internal:9999"
    ifaces, controller = seen("net-host")
    assert "docker0" in ifaces and "docker0" in os.listdir("/sys/class/net"), "host mode: the host's interfaces"
    assert controller == "cb=http://localhost:9999", "host mode shares the host's loopback: no rewrite"


# ---- ports -----------------------------------------------------------------------------------------


def http_get(url: str) -> Optional[int]:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status
    except OSError:
        return None


def test_port_published_and_conflicts_refused_before_anything_starts(docker_agent, tmp_path):
    agent = docker_agent()
    port = free_port()
    spec = {
        "image": BASE_IMAGE,
        "start_cmd": "exec python3 -m http.server 8000 --bind 0.0.0.0",
        "ports": [f"{port}:8000"],
    }
    agent.deploy("web", spec=spec)
    binding = inspect(current_container(agent, "web"))["HostConfig"]["PortBindings"]
    assert binding == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    wait_until(lambda: http_get(f"http://127.0.0.1:{port}/") == 200, timeout=15, what="the published port")

    # a redeploy of the same app may reuse its own port
    redeployed = agent.deploy("web", spec={**spec, "env": {"V": "2"}})["app"]
    assert redeployed["phase"] == "Running"

    # another app of this agent on the same host port
    with pytest.raises(APIError) as err:
        agent.deploy("web2", spec={**spec, "ports": [f"0.0.0.0:{port}:9000"]})
    assert err.value.status == 400 and err.value.body["field"] == "ports"
    assert "already published by app 'web'" in err.value.body["error"]

    # a port some other program holds: refused before any container exists
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(APIError) as err:
            agent.deploy("web3", spec={**spec, "ports": [f"127.0.0.1:{taken}:8000"]})
        assert err.value.status == 400 and err.value.body["field"] == "ports"
        assert "not free" in err.value.body["error"]
        assert container_ids(agent.node, "web3") == []
        with pytest.raises(APIError):
            agent.app("web3")

    # zip apps publish their meta.ini services on the same port
    service_port = free_port()
    artifact = make_zip(
        tmp_path / "svc.zip",
        {
            "start.sh": ("#!/bin/sh\nexec sleep 1000\n", 0o755),
            "meta.ini": f"name=svc\nversion=1\nservice=svc:http:{service_port}\nservice=dns:udp:{service_port}\n",
        },
    )
    agent.deploy("svc", artifact)
    bindings = inspect(current_container(agent, "svc"))["HostConfig"]["PortBindings"]
    assert bindings == {
        f"{service_port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(service_port)}],
        f"{service_port}/udp": [{"HostIp": "127.0.0.1", "HostPort": str(service_port)}],
    }


def test_ports_without_a_host_port_are_published_where_docker_picks(docker_agent):
    agent = docker_agent()
    spec = {
        "image": BASE_IMAGE,
        "start_cmd": "exec python3 -m http.server 8000 --bind 0.0.0.0",
        "ports": [{"container": 8000}, "9000/udp"],
    }
    app = agent.deploy("picked", spec=spec)["app"]
    assert app["phase"] == "Running" and app["spec"]["ports"] == ["8000/tcp", "9000/udp"]
    info = inspect(current_container(agent, "picked"))
    assert info["HostConfig"]["PortBindings"] == {
        "8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
        "9000/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
    }
    picked = info["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"]
    assert picked and info["NetworkSettings"]["Ports"]["9000/udp"][0]["HostPort"]
    wait_until(lambda: http_get(f"http://127.0.0.1:{picked}/") == 200, timeout=15, what="the Docker-picked port")
    handle = json.loads((agent.data_dir / "apps/picked/state.json").read_text())["handle"]
    assert f"127.0.0.1:{picked}->8000/tcp" in handle["ports"], "the agent keeps where Docker published it"
    # the same container-only port for another app: no conflict, another host port
    agent.deploy("picked2", spec=spec)
    other = inspect(current_container(agent, "picked2"))["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"]
    assert other and other != picked
    # Plum's port mappings ({host, container, protocol, serviceName}): the service name is ignored
    port = free_port()
    plum = {**spec, "ports": [{"host": port, "container": 8000, "protocol": "http", "serviceName": "web"}]}
    assert agent.deploy("plumish", spec=plum)["app"]["spec"]["ports"] == [f"{port}:8000/tcp"]
    bindings = inspect(current_container(agent, "plumish"))["HostConfig"]["PortBindings"]
    assert bindings == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}


# ---- bad input, missing images, no engine ---------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"memory": "5m"}, "memory"),
        ({"memory": "abc"}, "memory"),
        ({"cpus": 0}, "cpus"),
        ({"cpus": "lots"}, "cpus"),
        ({"network_mode": "weird"}, "network_mode"),
        ({"ports": [":80"]}, "ports"),
        ({"ports": [{"host": 8080}]}, "ports"),
        ({"ports": ["a:b"]}, "ports"),
        ({"ports": ["127.0.0.1:70000:80"]}, "ports"),
        ({"ports": "8080:80"}, "ports"),
        ({"ports": ["8080:80/sctp"]}, "ports"),
        ({"network_mode": "none", "ports": ["8080:80"]}, "ports"),
        ({"pull_policy": "sometimes"}, "pull_policy"),
        ({"image": "Not A Valid Image"}, "image"),
        ({"host_lib_paths": ["relative/lib"]}, "host_lib_paths"),
        ({"seccomp_unconfined": "yes"}, "seccomp_unconfined"),
        ({"runtime": "process"}, "runtime"),
    ],
)
def test_bad_values_are_refused_naming_the_field_and_the_app_keeps_running(docker_running, changes, field):
    agent, spec, cid = docker_running
    with pytest.raises(APIError) as err:
        agent.deploy("steady", spec={**spec, **changes})
    assert err.value.status == 400, err.value.body
    assert err.value.body["field"] == field
    assert err.value.body["error"].startswith(f"spec.{field}")
    app = agent.app("steady")
    assert app["phase"] == "Running" and current_container(agent, "steady") == cid


@pytest.fixture(scope="module")
def docker_running(docker_engine, tmp_path_factory):
    """One agent and one running image app shared by the bad-value cases (a module-scoped agent)."""
    node = f"t{secrets.token_hex(4)}"
    env = {"AGENT_NODE_ID": node, "AGENT_RUN_MODE": "docker", "PLUM_BASE_IMAGE": BASE_IMAGE}
    agent = Agent(tmp_path_factory.mktemp("bad") / "agent", env=env).start()
    agent.node = node
    spec = {"image": BASE_IMAGE, "start_cmd": "exec sleep 1000"}
    agent.deploy("steady", spec=spec)
    try:
        yield agent, spec, current_container(agent, "steady")
    finally:
        agent.kill()
        remove_node_containers(node)


def test_a_missing_image_fails_the_app_with_a_clear_message(docker_agent):
    agent = docker_agent()
    missing = "plum-test/does-not-exist:1"
    never = agent.deploy("never", spec={"image": missing, "pull_policy": "never"})["app"]
    assert never["phase"] == "Failed"
    assert missing in never["message"] and "'never'" in never["message"]
    pulled = agent.deploy("pulled", spec={"image": missing})["app"]
    assert pulled["phase"] == "Failed"
    assert f"cannot pull image {missing}" in pulled["message"]
    assert container_ids(agent.node) == []


def test_docker_apps_are_refused_by_an_agent_without_docker(agent_factory, tmp_path):
    agent = agent_factory(env={"AGENT_RUN_MODE": "process", "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    for spec in ({"image": BASE_IMAGE}, {"runtime": "docker"}):
        with pytest.raises(APIError) as err:
            agent.deploy("dockerish", app_zip(tmp_path / "a.zip") if "runtime" in spec else None, spec)
        assert err.value.status == 400 and err.value.body["field"] == "runtime", err.value.body
    with pytest.raises(APIError) as err:
        agent.deploy("limits", app_zip(tmp_path / "b.zip"), {"memory": "64m"})
    assert err.value.status == 400 and err.value.body["field"] == "memory"
    app = agent.deploy("plain", app_zip(tmp_path / "c.zip"))["app"]
    assert (app["phase"], app["runtime"]) == ("Running", "process")


# ---- health, supervision across agent restarts, two agents ------------------------------------------


def test_an_unhealthy_container_is_restarted_by_the_agent(docker_agent):
    agent = docker_agent()
    agent.deploy("sick", spec={"image": HEALTH_IMAGE, "stop_timeout": 1})
    first = current_container(agent, "sick")
    app = app_when(agent, "sick", lambda a: a["restarts"] >= 1 and a["phase"] == "Running", timeout=20)
    assert app["exit_reason"] == "Unhealthy", app
    assert current_container(agent, "sick") == first, "started again: nothing changed"


def test_agent_kill9_then_readoption_by_label_and_a_later_crash_is_restarted(docker_agent, tmp_path):
    agent = docker_agent("agent")
    agent.deploy("keeper", app_zip(tmp_path / "k.zip"))
    cid = current_container(agent, "keeper")
    agent.kill(signal.SIGKILL)
    assert current_container(agent, "keeper") == cid, "containers outlive the agent"
    # a container of this node whose app the agent does not know: removed at start
    orphan = docker(
        "run", "-d", "--label", "plum.managed=true", "--label", f"plum.node={agent.node}",
        "--label", "plum.app=ghost", "--label", "plum.instance=ghost-1", BASE_IMAGE, "sleep", "1000",
    ).strip()  # fmt: skip
    again = docker_agent("agent", node=agent.node)
    app = again.app("keeper")
    assert app["phase"] == "Running" and app["restarts"] == 0
    assert current_container(again, "keeper") == cid, "re-adopted, not restarted"
    wait_until(lambda: orphan not in container_ids(agent.node), what="the orphan to be removed")
    docker("kill", cid)
    app_when(again, "keeper", lambda a: (a["restarts"], a["phase"]) == (1, "Running"), what="the restart")
    assert current_container(again, "keeper") == cid, "the re-adopted container, started again"
    assert container_ids(agent.node, "keeper") == [cid]


@pytest.fixture
def engine_proxy() -> Any:
    proxy = EngineProxy().up()
    yield proxy
    proxy.down()


def test_an_agent_started_while_the_engine_is_away_starts_at_once_and_re_adopts_its_apps_later(
    docker_agent, engine_proxy
):
    agent = docker_agent("agent", DOCKER_HOST=engine_proxy.url)
    names = ["one", "two", "three", "four"]
    for name in names:
        agent.deploy(name, spec={"image": BASE_IMAGE, "start_cmd": "exec sleep 1000", "stop_timeout": 1})
    containers = {name: current_container(agent, name) for name in names}
    agent.kill(signal.SIGKILL)
    engine_proxy.down()
    started = time.monotonic()
    again = docker_agent("agent", node=agent.node, DOCKER_HOST=engine_proxy.url)
    assert time.monotonic() - started < 4, "no wait per app for an engine that does not answer"
    for name in names:
        app = again.app(name)
        assert (app["phase"], app["restarts"]) == ("Running", 0), app
    engine_proxy.up()
    for name in names:  # re-adopted once the engine answers: the same containers, their pids known again
        app_when(again, name, lambda a: a["pid"] is not None, timeout=20, what=f"{name} re-adopted")
        assert again.app(name)["restarts"] == 0 and current_container(again, name) == containers[name]
    docker("kill", containers["two"])  # supervised again: a crash is restarted
    app_when(again, "two", lambda a: (a["restarts"], a["phase"]) == (1, "Running"), what="the restart")
    assert current_container(again, "two") == containers["two"], "started again: nothing changed"


def test_a_container_a_stop_could_not_reach_is_removed_once_the_engine_answers(docker_agent, engine_proxy):
    agent = docker_agent(DOCKER_HOST=engine_proxy.url)
    agent.deploy("left", spec={"image": BASE_IMAGE, "start_cmd": "exec sleep 1000", "stop_timeout": 1})
    cid = current_container(agent, "left")
    engine_proxy.down()
    stopped = agent.request("POST", "/v1/apps/left/stop")["app"]
    assert stopped["phase"] == "Stopped"
    assert current_container(agent, "left") == cid, "the engine never got the stop"
    engine_proxy.up()
    wait_until(lambda: container_ids(agent.node) == [], timeout=20, what="the unsupervised container removed")
    assert agent.app("left")["phase"] == "Stopped"


def test_two_agents_on_one_engine_never_touch_each_others_containers(docker_agent, tmp_path):
    first = docker_agent("first")
    second = docker_agent("second")
    for agent in (first, second):
        agent.deploy("shared-name", app_zip(tmp_path / "s.zip"))
    a_id, b_id = current_container(first, "shared-name"), current_container(second, "shared-name")
    # the second agent restarts: its start-up cleanup must leave the first agent's containers alone
    second.kill(signal.SIGKILL)
    second = docker_agent("second", node=second.node)
    assert current_container(second, "shared-name") == b_id
    # a crash of one agent's container is that agent's business only
    docker("kill", a_id)
    app_when(first, "shared-name", lambda a: (a["restarts"], a["phase"]) == (1, "Running"), what="the restart")
    assert second.app("shared-name")["restarts"] == 0
    assert current_container(second, "shared-name") == b_id
    # removing the app on one agent leaves the other's
    first.request("DELETE", "/v1/apps/shared-name")
    assert container_ids(first.node) == []
    assert current_container(second, "shared-name") == b_id


def test_a_new_run_mode_moves_a_redeployed_app_into_the_new_runtime(docker_agent, tmp_path):
    """A host that changes mode (bare -> hybrid) keeps its data dir; deploying the app again moves it."""
    zip_path = app_zip(tmp_path / "m.zip")
    bare = docker_agent("agent", AGENT_RUN_MODE="process")
    bare.deploy("mover", zip_path)
    process_pid = bare.wait_app("mover", lambda a: a["pid"] is not None, what="the process app")["pid"]
    bare.kill(signal.SIGTERM)  # the process app outlives its agent, as under systemd's KillMode=process
    hybrid = docker_agent("agent", node=bare.node)
    moved = hybrid.app("mover")
    assert (moved["runtime"], moved["runtime_on_deploy"]) == ("process", "docker"), "re-adopted as it was deployed"
    assert hybrid.deploy("mover", zip_path)["changed"] is True
    app = hybrid.wait_app("mover", lambda a: a["phase"] == "Running", what="the app in its new runtime")
    assert app["runtime"] == "docker"
    current_container(hybrid, "mover")
    wait_until(lambda: not os.path.exists(f"/proc/{process_pid}"), what="the old process to stop")
    assert hybrid.deploy("mover", zip_path)["changed"] is False, "converged: the same input changes nothing"
