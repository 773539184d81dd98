"""Per-node credentials: a real controller and real agents, each holding the token its join returned.

A node's token acts for its own node only; the join token (CONTROLLER_AGENT_TOKEN) alone buys the
join and nothing else; a live node cannot be joined again (a stolen join token takes over nothing);
a revoked credential and a reinstalled agent (data dir wiped) recover on their own.
"""

from __future__ import annotations

import json
import secrets
import stat
from pathlib import Path
from typing import Any

import pytest

from support.agent import Agent, free_port, wait_until
from support.controller import ControllerProc, app_zip

TTL = 2.0
CREDENTIAL = "controller-node.token"


def agent_env(ctl: ControllerProc, node: str) -> dict[str, str]:
    return {
        "AGENT_NODE_ID": node,
        "CONTROLLER_BASE": f"http://127.0.0.1:{ctl.port}",
        "CONTROLLER_AGENT_TOKEN": ctl.agent,
        "SYNC_INTERVAL_SEC": "0.5",
    }


def node_token(agent: Agent) -> str:
    return (agent.data_dir / CREDENTIAL).read_text().strip()


def healthy(ctl: ControllerProc, node: str) -> bool:
    reply = ctl.call("GET", f"/v1/nodes/{node}")
    return reply.status == 200 and reply.json["health"] == "Healthy"


@pytest.fixture
def fleet(tmp_path: Path):
    ctl = ControllerProc(
        tmp_path / "controller",
        CONTROLLER_ADDR=f"127.0.0.1:{free_port()}",
        HEARTBEAT_TTL_SEC=str(TTL),
        HEARTBEAT_INTERVAL_SEC="0.5",
        CONTROLLER_LEGACY_AGENTS="false",
    ).start()
    agents = {node: Agent(tmp_path / node, env=agent_env(ctl, node)).start() for node in ("a", "b")}
    for node, agent in agents.items():
        wait_until(lambda a=agent: (a.data_dir / CREDENTIAL).exists(), 10, what=f"node {node} to join")
        wait_until(lambda n=node: healthy(ctl, n), 10, what=f"node {node} to heartbeat")
    yield ctl, agents
    for agent in agents.values():
        agent.kill_all()
    ctl.stop()


def deploy_with_secret(ctl: ControllerProc, node: str, secret: str) -> tuple[str, dict[str, Any]]:
    artifact = ctl.upload(app_zip(f"app-{node}", "1.0.0")).json
    entry = {"artifactUrl": artifact["url"], "replicas": {node: 1}, "env": {"DB_PASSWORD": secret}}
    created = ctl.ok("POST", "/v1/deployments", {"name": f"dep-{node}", "entries": [entry]})
    ctl.ok("POST", f"/v1/deployments/{created['deploymentId']}?action=start")
    return created["instances"][0], artifact


def test_each_agent_joins_and_keeps_a_private_credential(fleet) -> None:
    ctl, agents = fleet
    tokens = {node_token(agent) for agent in agents.values()}
    assert len(tokens) == 2 and ctl.agent not in tokens and ctl.operator not in tokens
    for agent in agents.values():
        assert stat.S_IMODE((agent.data_dir / CREDENTIAL).stat().st_mode) == 0o600
        assert agent.request("GET", "/healthz")["controller"]["nodeCredential"] == "joined"
    stored = (ctl.data_dir / "controller.db").read_bytes() + (ctl.data_dir / "controller.db-wal").read_bytes()
    assert not any(token.encode() in stored for token in tokens), "the controller stores only token hashes"


def test_a_node_token_cannot_act_for_another_node(fleet) -> None:
    ctl, agents = fleet
    secret = "s3cr3t-" + secrets.token_hex(8)
    instance, artifact = deploy_with_secret(ctl, "b", secret)
    wait_until(lambda: ctl.ok("GET", f"/v1/instances/{instance}/statuses")["items"], 10, what="b's instance to run")
    token_a = node_token(agents["a"])
    refused = {
        "assignments": ctl.call("GET", "/v1/assignments?nodeId=b", token=token_a),
        "status": ctl.call("POST", "/v1/instances/status", {"instanceId": instance, "phase": "Failed"}, token=token_a),
        "heartbeat": ctl.call("POST", "/v1/nodes/heartbeat", {"nodeId": "b", "ip": "10.9.9.9"}, token=token_a),
        "stream": ctl.call("GET", "/v1/stream?nodeId=b", token=token_a),
        "stream of every node": ctl.call("GET", "/v1/stream", token=token_a),
        "artifact": ctl.call("GET", artifact["url"], token=token_a),
        "register": ctl.call(
            "POST",
            "/v1/services/register",
            {"instanceId": instance, "nodeId": "b", "ip": "10.9.9.9", "endpoints": []},
            token=token_a,
        ),
        "join": ctl.call("POST", "/v1/nodes/b/join", token=token_a),
        "operator route": ctl.call("GET", "/v1/nodes", token=token_a),
    }
    for what, reply in refused.items():
        assert reply.status == 403, (what, reply)
        assert secret.encode() not in reply.body
    assert "node a" in refused["assignments"].json["error"] and "node b" in refused["assignments"].json["error"]
    history = ctl.ok("GET", f"/v1/instances/{instance}/statuses")["items"]
    assert all(item["phase"] != "Failed" for item in history), "a's forged status was not recorded"
    assert healthy(ctl, "b") and ctl.ok("GET", "/v1/nodes/b")["ip"] == "127.0.0.1"
    # a's own feed works and holds nothing of b; b's token reads b's secret (the agent runs with it)
    assert ctl.ok("GET", "/v1/assignments?nodeId=a", token=token_a)["items"] == []
    feed_b = ctl.ok("GET", "/v1/assignments?nodeId=b", token=node_token(agents["b"]))["items"]
    assert feed_b[0]["env"]["DB_PASSWORD"] == secret
    leaked = [p for p in agents["a"].data_dir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == [] and secret not in agents["a"].log_path.read_text()


def test_the_join_token_alone_buys_only_the_join(fleet) -> None:
    ctl, _ = fleet
    for method, path, body in (
        ("GET", "/v1/assignments?nodeId=b", None),
        ("GET", "/v1/assignments?nodeId=newcomer", None),
        ("POST", "/v1/nodes/heartbeat", {"nodeId": "newcomer"}),
        ("GET", "/v1/discovery?service=x", None),
    ):
        reply = ctl.call(method, path, body, token=ctl.agent)
        assert reply.status == 403, (path, reply)
        assert "join" in reply.json["error"]
    joined = ctl.ok("POST", "/v1/nodes/newcomer/join", token=ctl.agent)
    assert joined["nodeId"] == "newcomer" and joined["controllerId"]
    assert ctl.ok("GET", "/v1/assignments?nodeId=newcomer", token=joined["nodeToken"])["items"] == []
    assert ctl.call("GET", "/v1/assignments?nodeId=b", token=joined["nodeToken"]).status == 403


def test_a_live_node_cannot_be_joined_again_until_revoked(fleet) -> None:
    ctl, agents = fleet
    instance, _ = deploy_with_secret(ctl, "b", "x" * 12)
    wait_until(lambda: agents["b"].request("GET", "/v1/apps")["apps"], 10, what="b's instance")
    pid = wait_until(lambda: agents["b"].request("GET", "/v1/apps")["apps"][0].get("pid"), 10, what="a pid")
    old = node_token(agents["b"])
    taken = ctl.call("POST", "/v1/nodes/b/join", token=ctl.agent)
    assert taken.status == 409, taken
    assert "live" in taken.json["error"] and 1 <= taken.json["retryAfterSec"] <= TTL + 1
    assert ctl.call("GET", "/v1/assignments?nodeId=b", token=old).status == 200, "the refused join changed nothing"

    assert ctl.call("DELETE", "/v1/nodes/b/credential").status == 204
    assert ctl.call("DELETE", "/v1/nodes/b/credential").status == 404
    assert ctl.call("GET", "/v1/assignments?nodeId=b", token=old).status == 401
    new = wait_until(lambda: (t := node_token(agents["b"])) != old and t, 10, what="b to join again")
    assert ctl.call("GET", "/v1/assignments?nodeId=b", token=new).status == 200
    wait_until(lambda: healthy(ctl, "b"), 5, what="b to heartbeat with its new credential")
    apps = agents["b"].request("GET", "/v1/apps")["apps"]
    assert [(a["name"], a["pid"], a["phase"]) for a in apps] == [(instance, pid, "Running")]


def test_a_reinstalled_agent_joins_again_once_the_old_one_is_not_live(fleet, tmp_path: Path) -> None:
    ctl, agents = fleet
    old = node_token(agents["a"])
    agents["a"].kill_all()
    reinstalled = Agent(tmp_path / "a-reinstalled", env=agent_env(ctl, "a")).start()  # an empty data dir
    try:
        new = wait_until(
            lambda: (reinstalled.data_dir / CREDENTIAL).exists() and node_token(reinstalled), 4 * TTL + 5, what="join"
        )
        wait_until(lambda: healthy(ctl, "a"), 5, what="the reinstalled agent to heartbeat")
        assert new != old and ctl.call("GET", "/v1/assignments?nodeId=a", token=old).status == 401
        refusals = [line for line in reinstalled.log_path.read_text().splitlines() if "cannot join" in line]
        assert refusals and len(refusals) <= 2, refusals  # one clear line, not one per retry
        assert "already has a credential and is live" in refusals[0]
    finally:
        reinstalled.kill_all()


def test_shared_token_of_older_agents_only_for_nodes_that_never_joined(tmp_path: Path) -> None:
    """The upgrade path (CONTROLLER_LEGACY_AGENTS, on by default): an older agent's shared token works
    for its node until that node joins; then only the node token does."""
    ctl = ControllerProc(tmp_path / "controller").start()
    try:
        assert ctl.heartbeat("old").status == 200
        assert ctl.call("GET", "/v1/assignments?nodeId=old", token="agent").status == 200
        token = ctl.ok("POST", "/v1/nodes/old/join", token="agent")["nodeToken"]
        reply = ctl.call("GET", "/v1/assignments?nodeId=old", token="agent")
        assert reply.status == 403 and "own node credential" in reply.json["error"], reply
        assert ctl.call("GET", "/v1/assignments?nodeId=old", token=token).status == 200
        every_node = ctl.call("GET", "/v1/stream", token="agent")  # every host holds this token
        assert every_node.status == 403 and "only the operator token" in every_node.json["error"], every_node
        warnings = [line for line in ctl.log().splitlines() if "uses the shared CONTROLLER_AGENT_TOKEN" in line]
        assert len(warnings) == 1 and "node old" in warnings[0]
    finally:
        ctl.stop()


def test_openapi_documents_the_credential_routes(fleet) -> None:
    ctl, agents = fleet
    doc = ctl.ok("GET", "/v1/openapi.json", token=node_token(agents["a"]))
    assert doc["paths"]["/v1/nodes/{id}/join"]["post"]["x-plum-access"] == "join"
    assert doc["paths"]["/v1/nodes/{id}/credential"]["delete"]["x-plum-access"] == "operator"
    assert json.dumps(doc).count("nodeToken") >= 1
