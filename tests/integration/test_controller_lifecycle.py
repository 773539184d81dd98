"""The controller process: --check-config, clean shutdown on SIGTERM, restart keeps everything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from plum.controller.migrations import MIGRATIONS
from support.controller import ControllerProc, app_zip, clean_env, read_until


def check_config(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plum.controller.main", "--check-config", *args],
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HEARTBEAT_TTL_SEC": "10", "HEARTBEAT_INTERVAL_SEC": "5"}, ("HEARTBEAT_TTL_SEC", "HEARTBEAT_INTERVAL_SEC")),
        ({"HEARTBEAT_TTL_SEC": "3"}, ("HEARTBEAT_TTL_SEC", "HEARTBEAT_INTERVAL_SEC")),
        ({"CONTROLLER_ADDR": "localhost"}, ("CONTROLLER_ADDR",)),
        ({"AUTO_MIGRATION_ENABLED": "perhaps"}, ("AUTO_MIGRATION_ENABLED",)),
        ({"CONTROLLER_MAX_ARTIFACT_BYTES": "512MiB"}, ("CONTROLLER_MAX_ARTIFACT_BYTES",)),
        ({"CONTROLLER_STATUS_HISTORY": "0"}, ("CONTROLLER_STATUS_HISTORY",)),
        ({"CONTROLLER_OPERATOR_TOKEN": "short"}, ("CONTROLLER_OPERATOR_TOKEN",)),
    ],
)
def test_check_config_names_the_bad_variable(env: dict[str, str], named: tuple[str, ...]) -> None:
    result = check_config(env)
    assert result.returncode == 2, result
    for name in named:
        assert name in result.stderr, result.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    env_file = tmp_path / "controller.env"
    env_file.write_text(
        "# controller\nCONTROLLER_ADDR=127.0.0.1:18080\nCONTROLLER_DB=file:plum.db?_pragma=busy_timeout(5000)\n"
        f"CONTROLLER_DATA_DIR={tmp_path}\nHEARTBEAT_TTL_SEC=15\nAUTO_MIGRATION_ENABLED=yes\n"
    )
    result = check_config({}, "--config", str(env_file))
    assert result.returncode == 0, result.stderr
    assert str(tmp_path / "plum.db") in result.stdout
    env_file.write_text("CONTROLLER_ADRR=127.0.0.1:18080\n")
    bad = check_config({}, "--config", str(env_file))
    assert bad.returncode == 2
    assert "CONTROLLER_ADRR" in bad.stderr


def test_restart_keeps_everything(tmp_path: Path) -> None:
    ctl = ControllerProc(tmp_path / "data", HEARTBEAT_TTL_SEC="2", HEARTBEAT_INTERVAL_SEC="0.5").start()
    try:
        assert ctl.heartbeat("keep-a", labels={"rack": "r1"}).status == 200
        data = app_zip("keep", "3.0")
        app = ctl.upload(data).json
        dep = ctl.ok(
            "POST",
            "/v1/deployments",
            {
                "name": "keep",
                "labels": {"x": "y"},
                "entries": [{"artifactUrl": app["url"], "replicas": {"keep-a": 2}, "env": {"K": "v"}}],
            },
        )
        ctl.ok("POST", f"/v1/deployments/{dep['deploymentId']}?action=start")
        iid = dep["instances"][0]
        ctl.call("POST", "/v1/instances/status", {"instanceId": iid, "phase": "Running"}, token="agent")
        before = {
            "nodes": [{k: v for k, v in n.items() if k != "health"} for n in ctl.ok("GET", "/v1/nodes")],
            "apps": ctl.ok("GET", "/v1/apps"),
            "deployments": ctl.ok("GET", "/v1/deployments"),
            "detail": ctl.ok("GET", f"/v1/deployments/{dep['deploymentId']}"),
            "feed": ctl.feed("keep-a"),
            "history": ctl.ok("GET", f"/v1/instances/{iid}/statuses"),
        }
        tokens = (ctl.operator, ctl.agent)
        assert ctl.proc is not None
        with socket.create_connection(("127.0.0.1", ctl.port), timeout=5) as stream:  # an open SSE stream
            stream.sendall(
                b"GET /v1/stream?nodeId=keep-a HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {ctl.agent}\r\n\r\n".encode()
            )
            read_until(stream, b"event: ping", 5)
            ctl.proc.send_signal(signal.SIGTERM)
            assert ctl.proc.wait(10) == 0
        ctl.proc = None
        assert "shutting down" in ctl.log()

        ctl.start()
        assert (ctl.operator, ctl.agent) == tokens  # generated tokens are reused
        after = {
            "nodes": [{k: v for k, v in n.items() if k != "health"} for n in ctl.ok("GET", "/v1/nodes")],
            "apps": ctl.ok("GET", "/v1/apps"),
            "deployments": ctl.ok("GET", "/v1/deployments"),
            "detail": ctl.ok("GET", f"/v1/deployments/{dep['deploymentId']}"),
            "feed": ctl.feed("keep-a"),
            "history": ctl.ok("GET", f"/v1/instances/{iid}/statuses"),
        }
        assert after == before
        assert ctl.call("GET", app["url"], token="agent").body == data
        assert ctl.log().count("applied migration") == len(MIGRATIONS)  # each migration runs once
    finally:
        assert ctl.stop() == 0
    assert "Traceback" not in ctl.log(), ctl.log()


def test_the_controllers_files_are_private_whatever_its_umask(tmp_path: Path) -> None:
    """A container starts it with umask 0022 (systemd's unit has UMask=0077): its files stay private."""
    ctl = ControllerProc(tmp_path / "data", HEARTBEAT_TTL_SEC="2", HEARTBEAT_INTERVAL_SEC="0.5")
    previous = os.umask(0o022)
    try:
        ctl.start()
        ctl.upload(app_zip("private", "1.0"))
        files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
        assert files, "the controller wrote nothing"
        for path in files:
            assert path.stat().st_mode & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"
    finally:
        os.umask(previous)
        ctl.stop()
