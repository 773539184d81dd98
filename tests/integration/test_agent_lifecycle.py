"""A real agent process over HTTP: deploy, restart policy, stop, upgrades, re-adoption."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from plum.common.artifact import zip_directory
from support.agent import EXAMPLES, APIError, app_zip, group_members, pid_alive, wait_until


@pytest.fixture
def hello_zip(tmp_path: Path) -> Path:
    target = tmp_path / "hello.zip"
    zip_directory(EXAMPLES / "hello", target)
    return target


def test_deploy_runs_the_app_with_plum_environment_and_logs(agent_factory, hello_zip):
    agent = agent_factory(env={"AGENT_API_TOKEN": "secret-token-of-the-agent"})
    result = agent.deploy("hello", hello_zip)
    assert result["changed"] is True
    app = result["app"]
    assert (app["phase"], app["version"], app["runtime"]) == ("Running", "1.0.0", "process")
    assert pid_alive(app["pid"])
    environ = Path(f"/proc/{app['pid']}/environ").read_bytes().split(b"\0")
    assert f"PLUM_INSTANCE_ID={app['instance_id']}".encode() in environ
    assert b"PLUM_APP_NAME=hello" in environ and b"PLUM_APP_VERSION=1.0.0" in environ
    assert b"WORKER_NODE_ID=test-node" in environ
    assert not any(item.startswith(b"AGENT_API_TOKEN") for item in environ), "agent secrets leak into apps"
    lines = wait_until(lambda: agent.request("GET", "/v1/apps/hello/logs?tail=5")["lines"], what="log output")
    assert any("hello from hello 1.0.0" in line for line in lines)
    listed = agent.request("GET", "/v1/apps")["apps"]
    assert [a["name"] for a in listed] == ["hello"]
    assert listed[0]["memory_bytes"] > 0


def test_same_artifact_and_spec_again_changes_nothing(agent, hello_zip):
    first = agent.deploy("hello", hello_zip, {"env": {"GREETING": "hi"}})["app"]
    again = agent.deploy("hello", hello_zip, {"env": {"GREETING": "hi"}})
    assert again["changed"] is False
    assert again["app"]["pid"] == first["pid"]
    changed_spec = agent.deploy("hello", hello_zip, {"env": {"GREETING": "hello"}})
    assert changed_spec["changed"] is True and changed_spec["app"]["pid"] != first["pid"]


def test_new_version_is_swapped_in(agent, tmp_path):
    v1 = agent.deploy("svc", app_zip(tmp_path / "v1.zip", version="1.0.0"))["app"]
    v2 = agent.deploy("svc", app_zip(tmp_path / "v2.zip", version="2.0.0", script="exec sleep 999\n"))["app"]
    assert v2["version"] == "2.0.0" and v2["phase"] == "Running"
    assert v2["pid"] != v1["pid"]
    wait_until(lambda: not pid_alive(v1["pid"]), what="old version to stop")
    assert pid_alive(v2["pid"])
    releases = sorted(p.name for p in (agent.data_dir / "apps/svc/releases").iterdir())
    assert len(releases) == 2, "the current and the previous release are kept"


def test_crash_is_restarted_with_real_exit_code(agent, tmp_path):
    script = 'echo "run $$"\nsleep 0.3\nexit 3\n'
    agent.deploy("crashy", app_zip(tmp_path / "c.zip", script=script))
    app = agent.wait_app("crashy", lambda a: a["restarts"] >= 2, "two restarts")
    assert app["exit_code"] == 3
    assert app["exit_reason"] == "Exited"


def test_crash_loop_backs_off_then_gives_up(agent, tmp_path):
    spec = {"max_restarts": 3, "restart_window": 60}
    agent.deploy("loop", app_zip(tmp_path / "l.zip", script="exit 7\n"), spec)
    seen_backoff = agent.wait_app("loop", lambda a: a["phase"] in ("BackOff", "Failed"), "BackOff")
    if seen_backoff["phase"] == "BackOff":
        assert seen_backoff["next_restart_at"] is not None
        assert "restarting in" in seen_backoff["message"]
    failed = agent.wait_phase("loop", "Failed", timeout=10)
    assert failed["restarts"] == 3
    assert "gave up after 3 restarts" in failed["message"]
    assert "exited with code 7" in failed["message"]
    assert failed["pid"] is None


@pytest.mark.parametrize(
    ("policy", "code", "phase"),
    [("on-failure", 0, "Completed"), ("never", 5, "Failed"), ("never", 0, "Completed")],
)
def test_restart_policies_that_stop(agent, tmp_path, policy, code, phase):
    agent.deploy("once", app_zip(tmp_path / "o.zip", script=f"echo done\nexit {code}\n"), {"restart_policy": policy})
    app = agent.wait_phase("once", phase)
    assert app["restarts"] == 0 and app["exit_code"] == code
    assert "done" in app["last_logs"]


def test_stop_kills_the_whole_group_after_the_timeout(agent, tmp_path):
    script = "trap '' TERM\nsleep 1000 &\nsleep 1000 &\nwhile true; do sleep 1; done\n"
    app = agent.deploy("stubborn", app_zip(tmp_path / "s.zip", script=script), {"stop_timeout": 0.5})["app"]
    wait_until(lambda: len(group_members(app["pid"])) >= 3, what="children to start")
    started = time.monotonic()
    stopped = agent.request("POST", "/v1/apps/stubborn/stop")
    assert stopped["changed"] is True and stopped["app"]["phase"] == "Stopped"
    assert time.monotonic() - started >= 0.5
    assert group_members(app["pid"]) == []
    assert agent.request("POST", "/v1/apps/stubborn/stop")["changed"] is False


def test_start_restart_and_remove(agent, tmp_path):
    first = agent.deploy("svc", app_zip(tmp_path / "a.zip"), start=False)["app"]
    assert first["phase"] == "Stopped" and first["pid"] is None
    started = agent.request("POST", "/v1/apps/svc/start")["app"]
    assert started["phase"] == "Running"
    restarted = agent.request("POST", "/v1/apps/svc/restart")["app"]
    assert restarted["pid"] != started["pid"] and not pid_alive(started["pid"])
    assert agent.request("DELETE", "/v1/apps/svc") == {"changed": True}
    assert not pid_alive(restarted["pid"])
    assert not (agent.data_dir / "apps/svc").exists()
    with pytest.raises(APIError) as err:
        agent.app("svc")
    assert err.value.status == 404


def test_agent_killed_leaves_apps_running_and_a_new_agent_readopts_them(agent_factory, tmp_path):
    agent = agent_factory()
    app = agent.deploy("svc", app_zip(tmp_path / "a.zip", script="sleep 0.2\nexec sleep 1000\n"))["app"]
    time.sleep(0.5)
    agent.kill(signal.SIGKILL)
    assert pid_alive(app["pid"]), "the app died with the agent"
    agent.start()
    adopted = agent.app("svc")
    assert adopted["pid"] == app["pid"] and adopted["phase"] == "Running"
    assert len([p for p in group_members(app["pid"])]) == 1, "never two instances"
    os.kill(app["pid"], signal.SIGKILL)
    restarted = agent.wait_app("svc", lambda a: a["pid"] not in (None, app["pid"]), "a new pid")
    assert restarted["phase"] == "Running" and restarted["restarts"] == 1
    assert restarted["exit_code"] is None, "a re-adopted process's exit code cannot be known"


def test_app_that_died_while_the_agent_was_down_is_started_again(agent_factory, tmp_path):
    agent = agent_factory()
    app = agent.deploy("svc", app_zip(tmp_path / "a.zip"))["app"]
    agent.kill(signal.SIGTERM)
    assert pid_alive(app["pid"]), "a clean agent shutdown must not stop apps"
    os.kill(app["pid"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(app["pid"]), what="app to die")
    agent.start()
    again = agent.wait_phase("svc", "Running")
    assert again["pid"] != app["pid"]


def test_stopped_app_stays_stopped_across_agent_restart(agent_factory, tmp_path):
    agent = agent_factory()
    agent.deploy("svc", app_zip(tmp_path / "a.zip"))
    agent.request("POST", "/v1/apps/svc/stop")
    agent.kill()
    agent.start()
    assert agent.app("svc")["phase"] == "Stopped"


def test_second_agent_on_the_same_data_dir_is_refused(agent, tmp_path):
    env = dict(agent.env, AGENT_API_ADDR="127.0.0.1:0")
    result = subprocess.run(
        [sys.executable, "-m", "plum.agent.main"], env=env, capture_output=True, text=True, timeout=10, check=False
    )
    assert result.returncode == 2
    assert "already used by another running agent" in result.stderr


def test_token_file_is_created_private(agent):
    mode = stat.S_IMODE((agent.data_dir / "agent.token").stat().st_mode)
    assert mode == 0o600


def test_metrics_in_prometheus_format(agent, tmp_path):
    agent.deploy("svc", app_zip(tmp_path / "a.zip"))
    text = agent.request("GET", "/metrics")
    assert 'plum_app_up{app="svc"} 1' in text
    assert 'plum_agent_apps{phase="Running"} 1' in text
    assert "# TYPE plum_app_restarts_total counter" in text
    with pytest.raises(APIError) as err:
        agent.request("GET", "/metrics", token=None)
    assert err.value.status == 401


def test_a_deploy_never_removes_the_release_another_deploy_is_installing(agent, tmp_path):
    stubborn = "trap '' TERM\nwhile true; do sleep 0.1; done\n"
    agent.deploy("slow", app_zip(tmp_path / "s1.zip", version="1", script=stubborn), {"stop_timeout": 1.5})
    result = {}
    upgrade = threading.Thread(
        target=lambda: result.update(agent.deploy("slow", app_zip(tmp_path / "s2.zip", version="2"))),
    )
    upgrade.start()  # stops v1 for 1.5 s before it can start v2
    time.sleep(0.3)
    agent.deploy("other", app_zip(tmp_path / "o.zip", version="7"))  # finishes meanwhile
    upgrade.join(15)
    assert result["app"]["phase"] == "Running" and result["app"]["version"] == "2"


def test_concurrent_deploys_of_a_new_name_make_one_app_with_one_instance(agent, tmp_path):
    zips = [app_zip(tmp_path / f"c{i}.zip", version=str(i)) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda z: agent.deploy("race", z), zips))
    final = agent.app("race")
    assert final["phase"] == "Running"
    assert final["version"] in {r["app"]["version"] for r in results}
    live = [r["app"]["pid"] for r in results if pid_alive(r["app"]["pid"])]
    assert live == [final["pid"]], "exactly one instance survives"


def test_removed_apps_leave_their_artifact_in_the_cache(agent, tmp_path):
    result = agent.deploy("cached", app_zip(tmp_path / "a.zip"))
    agent.request("DELETE", "/v1/apps/cached")
    assert (agent.data_dir / "artifacts" / f"{result['app']['artifact_sha256']}.zip").exists()


def test_an_action_waiting_on_a_removal_finds_the_app_gone(agent_factory, tmp_path):
    agent = agent_factory()
    stubborn = "trap '' TERM\nwhile true; do sleep 0.1; done\n"
    agent.deploy("going", app_zip(tmp_path / "g.zip", script=stubborn), {"stop_timeout": 1})
    removal = threading.Thread(target=lambda: agent.request("DELETE", "/v1/apps/going"))
    removal.start()  # holds the app's lock for about a second
    time.sleep(0.2)
    with pytest.raises(APIError) as err:
        agent.request("POST", "/v1/apps/going/start")
    removal.join(10)
    assert err.value.status == 404
    agent.kill()
    agent.start()
    assert agent.request("GET", "/v1/apps")["apps"] == [], "no ghost app after a restart"
