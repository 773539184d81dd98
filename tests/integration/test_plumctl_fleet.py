"""plumctl fleet against a real controller and two real agents following it.

Nodes, an app uploaded from a directory, a deployment created from a YAML file, its status with every
instance's node and phase, scaling, an instance's logs read from its agent, a rolling update shown as it
progresses, a rolled-back update exiting with code 4, --json, and the errors a script sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.agent import Agent, free_port, wait_until
from support.controller import ControllerProc
from support.fleet import controller_with_agents

SRC = Path(__file__).resolve().parents[2] / "agent" / "src"
NODES = ("cli-a", "cli-b")
GREETER = '#!/bin/sh\necho "hello from $PLUM_INSTANCE_ID"\nexec sleep 1000\n'
CRASHER = "#!/bin/sh\necho 'cannot start' >&2\nexit 3\n"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[ControllerProc, dict[str, Agent]]]:
    with controller_with_agents(tmp_path, NODES) as both:
        yield both


def plumctl(ctl: ControllerProc, *args: str, token_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    """plumctl fleet ARGS as an operator runs it: the URL and the token file from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLUM_", "AGENT_", "CONTROLLER_"))}
    env.update(
        PYTHONPATH=str(SRC),
        PLUM_CONTROLLER_URL=f"http://127.0.0.1:{ctl.port}",
        PLUM_CONTROLLER_TOKEN_FILE=str(token_file or ctl.data_dir / "operator.token"),
    )
    return subprocess.run(
        [sys.executable, "-m", "plum.cli.plumctl", "fleet", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(ctl: ControllerProc, *args: str) -> str:
    result = plumctl(ctl, *args)
    assert result.returncode == 0, result
    return result.stdout


def release(tmp_path: Path, version: str, script: str) -> Path:
    app = tmp_path / f"greeter-{version}"
    app.mkdir()
    (app / "start.sh").write_text(script)
    (app / "start.sh").chmod(0o755)
    (app / "meta.ini").write_text(f"name=greeter\nversion={version}\nservice=greet:udp:9999\n")
    return app


def deployment_file(tmp_path: Path, replicas: str) -> Path:
    path = tmp_path / "greeter.yml"
    path.write_text(
        "# the greeter, placed by the controller\n"
        "name: greeter\n"
        "labels: {team: cli}\n"
        "update:\n"
        "  minHealthySeconds: 1\n"
        "  progressDeadlineSeconds: 30\n"
        "entries:\n"
        "  - app: greeter\n"
        "    version: 1.0.0\n"
        f"    replicas: {replicas}\n"
        "    env:\n"
        "      GREETING: hi\n"
    )
    return path


def instances(ctl: ControllerProc) -> list[dict[str, Any]]:
    data = json.loads(ok(ctl, "--json", "deployments", "status", "greeter"))
    return list(data["assignments"])


def running(ctl: ControllerProc, count: int, version: str) -> bool:
    found = instances(ctl)
    return len(found) == count and all(a["phase"] == "Running" and a["appVersion"] == version for a in found)


def test_nodes_apps_deployments_scale_and_logs(fleet, tmp_path: Path) -> None:
    ctl, agents = fleet
    table = ok(ctl, "nodes").splitlines()
    assert table[0].split()[:3] == ["NODE", "IP", "HEALTH"]
    assert [line.split()[0] for line in table[1:]] == list(NODES) and all("Healthy" in line for line in table[1:])

    uploaded = json.loads(ok(ctl, "--json", "apps", "upload", str(release(tmp_path, "1.0.0", GREETER))))
    assert (uploaded["name"], uploaded["version"]) == ("greeter", "1.0.0")
    assert uploaded["artifactId"] in ok(ctl, "apps", "list")

    created = ok(ctl, "deployments", "create", str(deployment_file(tmp_path, "2")), "--start")
    assert "2 instance(s), started" in created
    wait_until(lambda: running(ctl, 2, "1.0.0"), 20, what="both instances running")
    status = ok(ctl, "deployments", "status", "greeter")
    assert "status Running" in status
    for a in instances(ctl):
        row = next(line for line in status.splitlines() if line.startswith(a["instanceId"]))
        assert row.split()[1:4] == [a["nodeId"], "Running", "Running"]
    assert sorted(a["nodeId"] for a in instances(ctl)) == list(NODES), "spread over both nodes"
    wait_until(lambda: ok(ctl, "services", "list").split() == ["greet"], 10, what="the service registered")
    endpoints = json.loads(ok(ctl, "--json", "services", "discover", "greet"))
    assert sorted(e["nodeId"] for e in endpoints) == list(NODES)
    assert ok(ctl, "services", "discover", "greet").splitlines()[1].split()[:3] == ["greet", "127.0.0.1:9999", "udp"]
    listed = ok(ctl, "deployments", "list").splitlines()[1].split()
    assert listed[0] == "greeter" and listed[2:4] == ["Running", "2"]

    assert "cli-a=2, cli-b=1" in ok(ctl, "deployments", "scale", "greeter", "3")
    wait_until(lambda: running(ctl, 3, "1.0.0"), 20, what="three instances running")
    nodes = {n["nodeId"]: n["instances"] for n in json.loads(ok(ctl, "--json", "nodes"))}
    assert nodes == {"cli-a": 2, "cli-b": 1}
    assert "cli-a=1, cli-b=1" in ok(ctl, "deployments", "scale", "greeter", "cli-a=1", "cli-b=1")

    one = next(a for a in instances(ctl) if a["nodeId"] == "cli-b")
    agent = agents["cli-b"]
    token = agent.data_dir / "agent.token"
    logs_args = ("logs", one["instanceId"], "--agent-url", agent.url, "--agent-token-file", str(token))
    wait_until(lambda: f"hello from {one['instanceId']}" in ok(ctl, *logs_args), 10, what="the greeting in the logs")
    wrong = plumctl(
        ctl, "logs", one["instanceId"], "--agent-url", agents["cli-a"].url, "--agent-token-file", str(token)
    )
    assert wrong.returncode == 1 and "is node cli-a, but instance" in wrong.stderr

    assert "deleted" in ok(ctl, "deployments", "delete", "greeter")
    assert ok(ctl, "--json", "deployments", "list").strip() == "[]"


def test_errors_name_the_url_and_the_token_and_exit_with_their_code(fleet, tmp_path: Path) -> None:
    ctl, _ = fleet
    bad_token = tmp_path / "wrong.token"
    bad_token.write_text("not-the-operator-token\n")
    refused = plumctl(ctl, "nodes", token_file=bad_token)
    assert refused.returncode == 1
    assert f"GET http://127.0.0.1:{ctl.port}/v1/nodes: 401" in refused.stderr
    assert f"token read from PLUM_CONTROLLER_TOKEN_FILE={bad_token}" in refused.stderr

    missing = plumctl(ctl, "nodes", token_file=tmp_path / "absent.token")
    assert missing.returncode == 2 and "cannot read the operator token" in missing.stderr

    down = plumctl(ctl, "--controller", f"http://127.0.0.1:{free_port()}", "nodes")
    assert down.returncode == 3 and "cannot reach the controller" in down.stderr

    unknown = plumctl(ctl, "deployments", "status", "nope")
    assert unknown.returncode == 1 and "no deployment with id or name 'nope'" in unknown.stderr

    bad_yaml = tmp_path / "bad.yml"
    bad_yaml.write_text("name: x\nentries:\n  - app: &anchor greeter\n")
    parsed = plumctl(ctl, "deployments", "create", str(bad_yaml))
    assert parsed.returncode == 2 and "line 3: anchors are not supported" in parsed.stderr

    no_app = plumctl(ctl, "deployments", "create", str(deployment_file(tmp_path, "1")))
    assert no_app.returncode == 1 and "no app greeter 1.0.0 on the controller" in no_app.stderr

    ok(ctl, "apps", "upload", str(release(tmp_path, "1.0.0", GREETER)))
    api_says = tmp_path / "pinned.yml"
    api_says.write_text("name: pinned\nentries:\n  - app: greeter\n    replicas: {ghost: 1}\n")
    answer = plumctl(ctl, "deployments", "create", str(api_says))
    assert answer.returncode == 1 and "POST" in answer.stderr and ": 400 " in answer.stderr and "ghost" in answer.stderr


def test_a_rolling_update_shows_progress_and_a_rolled_back_one_exits_4(fleet, tmp_path: Path) -> None:
    ctl, _ = fleet
    for version, script in (("1.0.0", GREETER), ("2.0.0", GREETER), ("3.0.0", CRASHER)):
        ok(ctl, "apps", "upload", str(release(tmp_path, version, script)))
    ok(ctl, "deployments", "create", str(deployment_file(tmp_path, "2")), "--start")
    wait_until(lambda: running(ctl, 2, "1.0.0"), 20, what="v1 running")
    before = {a["instanceId"] for a in instances(ctl)}

    good = plumctl(ctl, "deployments", "update", "greeter", "2.0.0")
    assert good.returncode == 0, good
    progress = good.stdout.splitlines()
    assert len(progress) >= 2, "the rollout is shown as it progresses"
    assert "Running" in progress[0] and "Succeeded: 2/2 updated, 2 healthy" in progress[-1]
    assert {a["instanceId"] for a in instances(ctl)} == before, "updated in place"
    assert all(a["appVersion"] == "2.0.0" for a in instances(ctl))

    same = plumctl(ctl, "deployments", "update", "greeter", "2.0.0")
    assert same.returncode == 0 and "nothing to roll out" in same.stdout

    bad = plumctl(ctl, "--json", "deployments", "update", "greeter", "3.0.0")
    assert bad.returncode == 4, bad
    assert json.loads(bad.stdout)["state"] == "RolledBack"
    assert "rollout r3 RolledBack" in bad.stderr
    wait_until(lambda: running(ctl, 2, "2.0.0"), 20, what="2.0.0 back everywhere")
