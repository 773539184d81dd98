"""plumctl fleet without daemons: where the URL and the token come from, the arguments, the deployment
file's app references, rollout following and its exit codes, and errors that name URL and token source."""

from __future__ import annotations

import argparse
import io
import json
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from plum.cli import fleet_deployments as deployments
from plum.cli import http, plumctl, target
from plum.cli.http import EXIT_ROLLOUT, EXIT_UNREACHABLE, EXIT_USAGE, CLIError, JsonClient


def fleet_args(**given: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"controller": None, "token_file": None, **given})


def test_the_url_comes_from_the_flag_then_the_environment_then_the_default() -> None:
    assert target.controller_url("http://a:1", {"PLUM_CONTROLLER_URL": "http://b:2"}) == "http://a:1"
    assert target.controller_url(None, {"PLUM_CONTROLLER_URL": "http://b:2"}) == "http://b:2"
    assert target.controller_url(None, {}) == "http://127.0.0.1:8080"


def test_the_token_source_order_and_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag, env_file = tmp_path / "flag.token", tmp_path / "env.token"
    flag.write_text("from-flag\n")
    env_file.write_text("  from-env-file\n")
    env = {"PLUM_CONTROLLER_TOKEN_FILE": str(env_file), "PLUM_CONTROLLER_TOKEN": "from-value"}
    assert target.operator_token(str(flag), env) == ("from-flag", f"--token-file {flag}")
    assert target.operator_token(None, env) == ("from-env-file", f"PLUM_CONTROLLER_TOKEN_FILE={env_file}")
    assert target.operator_token(None, {"PLUM_CONTROLLER_TOKEN": "from-value"}) == (
        "from-value",
        "PLUM_CONTROLLER_TOKEN",
    )
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".config" / "plum").mkdir(parents=True)
    (tmp_path / ".config" / "plum" / "operator.token").write_text("from-role\n")
    token, source = target.operator_token(None, {})
    assert token == "from-role" and source.endswith(".config/plum/operator.token")


def test_an_unreadable_or_empty_token_file_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(CLIError, match=r"absent\.token: No such file") as missing:
        target.operator_token(str(tmp_path / "absent.token"), {})
    assert missing.value.code == EXIT_USAGE
    (tmp_path / "empty.token").write_text("\n")
    with pytest.raises(CLIError, match="is empty"):
        target.operator_token(None, {"PLUM_CONTROLLER_TOKEN_FILE": str(tmp_path / "empty.token")})


def refusing(status: int, body: bytes) -> Any:
    def urlopen(request: Any, timeout: float) -> Any:
        raise urllib.error.HTTPError(request.full_url, status, "Bad", {}, io.BytesIO(body))  # type: ignore[arg-type]

    return urlopen


def test_a_refusal_names_the_url_the_api_message_and_for_401_the_token_source(monkeypatch: pytest.MonkeyPatch) -> None:
    client = JsonClient("http://ctl:8080/", "t", "PLUM_CONTROLLER_TOKEN_FILE=/x", "controller")
    monkeypatch.setattr(http.urllib.request, "urlopen", refusing(401, b'{"error": "invalid bearer token"}'))
    with pytest.raises(CLIError) as refused:
        client.call("GET", "/v1/nodes")
    assert str(refused.value) == (
        "GET http://ctl:8080/v1/nodes: 401 invalid bearer token (token read from PLUM_CONTROLLER_TOKEN_FILE=/x)"
    )
    assert refused.value.code == 1
    monkeypatch.setattr(http.urllib.request, "urlopen", refusing(409, b"not json"))
    with pytest.raises(CLIError, match=r"^DELETE http://ctl:8080/v1/apps/a: 409 Bad$"):
        client.call("DELETE", "/v1/apps/a")


def test_no_answer_is_exit_3_with_the_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    def urlopen(request: Any, timeout: float) -> Any:
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(http.urllib.request, "urlopen", urlopen)
    client = JsonClient("http://ctl:8080", "t", "x", "controller", "Check with: curl http://ctl:8080/healthz")
    with pytest.raises(CLIError, match=r"cannot reach the controller at http://ctl:8080: .*Check with") as down:
        client.call("GET", "/v1/nodes")
    assert down.value.code == EXIT_UNREACHABLE


def test_replicas_are_a_number_or_node_counts() -> None:
    assert deployments.replicas_arg(["3"]) == 3
    assert deployments.replicas_arg(["n1=2", "n2=0"]) == {"n1": 2, "n2": 0}
    for bad in (["n1"], ["3", "n1=1"], ["=1"], ["n1=x"]):
        with pytest.raises(CLIError, match="expected a number, or NODE=COUNT pairs"):
            deployments.replicas_arg(bad)


APPS = [
    {"artifactId": "a1", "name": "web", "version": "1.0", "createdAt": 1},
    {"artifactId": "a2", "name": "web", "version": "2.0", "createdAt": 2},
]


def test_a_file_names_apps_by_name_and_version_and_the_rest_goes_to_the_api_as_is() -> None:
    doc = {"name": "w", "update": {"maxUnavailable": 2}, "entries": [{"app": "web", "version": 1.0, "replicas": 2}]}
    body = deployments.request_body(doc, APPS, "w.yml")
    assert body == {"name": "w", "update": {"maxUnavailable": 2}, "entries": [{"artifactId": "a1", "replicas": 2}]}
    newest = deployments.request_body({"entries": [{"app": "web"}]}, APPS, "w.yml")
    assert newest["entries"] == [{"artifactId": "a2"}]
    with pytest.raises(
        CLIError, match=r"w.yml: entries\[0\]: no app web 3.0 on the controller \(uploaded: web 1.0, web 2.0\)"
    ):
        deployments.request_body({"entries": [{"app": "web", "version": "3.0"}]}, APPS, "w.yml")


def test_a_file_without_entries_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "d.yml"
    path.write_text("name: w\n")
    with pytest.raises(CLIError, match="non-empty list 'entries'") as bad:
        deployments.load_file(path)
    assert bad.value.code == EXIT_USAGE


class FakeController:
    """Answers GET /v1/deployments/{id} with the next rollout of a script."""

    url = "http://ctl"

    def __init__(self, rollouts: list[dict[str, Any]]) -> None:
        self.rollouts = rollouts

    def call(self, method: str, path: str) -> Any:
        return {"deployment": {"rollout": self.rollouts.pop(0)}}


def rollout(state: str, updated: int, healthy: int, message: str = "") -> dict[str, Any]:
    return {"revision": 2, "state": state, "updated": updated, "healthy": healthy, "total": 2, "message": message}


def test_following_a_rollout_prints_each_change_and_exits_by_its_outcome(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(deployments, "POLL_SECONDS", 0)
    script = [rollout("Running", 1, 0), rollout("Running", 1, 1), rollout("Succeeded", 2, 2)]
    assert deployments.follow(FakeController(script), "d", rollout("Running", 1, 0), False) == 0  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "r2 Running: 1/2 updated, 0 healthy",
        "r2 Running: 1/2 updated, 1 healthy",
        "r2 Succeeded: 2/2 updated, 2 healthy",
    ]
    back = [rollout("RolledBack", 1, 0, "instance x Failed")]
    assert deployments.follow(FakeController(back), "d", rollout("Running", 1, 0), True) == EXIT_ROLLOUT  # type: ignore[arg-type]
    out = capsys.readouterr()
    assert json.loads(out.out)["state"] == "RolledBack"
    assert "rollout r2 RolledBack: instance x Failed" in out.err


def test_the_agent_commands_parse_as_before_and_fleet_is_a_group() -> None:
    args = plumctl.parser().parse_args(["--json", "deploy", "hello", "examples/apps/hello", "--env", "A=b"])
    assert (args.command, args.name, args.artifact, args.env, args.json) == (
        "deploy",
        "hello",
        "examples/apps/hello",
        ["A=b"],
        True,
    )
    args = plumctl.parser().parse_args(["fleet", "--json", "deployments", "scale", "web", "3", "--label", "zone=a"])
    assert (args.command, args.group, args.replicas, args.label, args.fleet_json) == (
        "fleet",
        "deployments",
        ["3"],
        ["zone=a"],
        True,
    )


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as usage:
        plumctl.main(["fleet", "deployments", "scale"])
    assert usage.value.code == EXIT_USAGE
    assert "required" in capsys.readouterr().err


class DetailController:
    url = "http://ctl"

    def call(self, method: str, path: str) -> Any:
        if path == "/v1/deployments":
            return [{"deploymentId": "d1", "name": "web"}]
        assignment = {"deploymentId": "d1", "desired": "Running", "appVersion": "1.0", "lastReportAt": None}
        return {
            "deployment": {"deploymentId": "d1", "name": "web", "status": "Running", "labels": {}, "rollout": None},
            "entries": [{"position": 0, "appName": "web", "appVersion": "1.0", "replicas": {"n1": 1, "n2": 1}}],
            "assignments": [
                {
                    **assignment,
                    "instanceId": "d1-2",
                    "nodeId": "n2",
                    "phase": "BackOff",
                    "message": "back-off 4s",
                    "exitCode": 3,
                    "restarts": 2,
                },
                {
                    **assignment,
                    "instanceId": "d1-1",
                    "nodeId": "n1",
                    "phase": None,
                    "message": "",
                    "exitCode": None,
                    "restarts": 0,
                },
            ],
        }


def test_status_shows_every_instance_with_its_node_phase_and_reason(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(deployment="web", lost=False, json=False)
    assert deployments.status(DetailController(), args) == 0  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["deployment", "web", "d1", "status"]
    table = lines[lines.index(next(line for line in lines if line.startswith("INSTANCE"))) :]
    assert table[1].split() == ["d1-1", "n1", "Running", "Pending", "1.0", "0", "-"]
    assert table[2].split() == ["d1-2", "n2", "Running", "BackOff", "1.0", "2", "-", "exit", "3:", "back-off", "4s"]
    assert "pinned" in next(line for line in lines if line.startswith("0 "))
