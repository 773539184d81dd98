"""kill -9 of the agent in the middle of a deploy or a restart: the record always names what runs.

- A deploy of version 2 over a running version 1, with the agent killed at a seeded random moment
  (24 runs, from "upload just started" to "deploy answered"): after the agent comes back, exactly one
  instance runs, and its version, artifact sha256 and release are the ones the API and the saved
  record name. Every outcome is classified; redeploying version 1 then converges (version 1 runs).
- A restart (POST /restart) killed midway: the app runs again, once, and the agent's death is not
  counted as a crash of the app.
- What interrupted deploys leave behind (release folders no record names, unused artifacts, staging
  folders, half-written state files) is removed at start; restart counts and the restart policy's
  counters are left as they were, and the running instance is re-adopted, not restarted.

Seeded (SEED), each run bounded (timeouts of a few seconds), the whole file well under a minute.
"""

from __future__ import annotations

import collections
import http.client
import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plum.common.artifact import sha256_file
from support.agent import Agent, APIError, app_instances, app_zip, environ_of, pid_alive, world_dir

SEED = 1010
DEPLOY_RUNS = 24
RESTART_RUNS = 6
# Version 1 outlives SIGTERM by 3 s, and the spec's stop_timeout has the agent kill it after 0.3 s: an
# agent killed during that swap leaves it alive for its successor to find (a second SIGTERM ends it).
SLOW_STOP = "trap 'sleep 3; exit 0' TERM\nwhile true; do sleep 0.05; done\n"
SPEC = {"stop_timeout": 0.3}
FAST = "exec sleep 1000\n"
APP = "svc"


def _deploy_quietly(agent: Agent, artifact: Path, outcome: dict[str, Any]) -> None:
    """A deploy whose agent may be killed under it: the answer (or the broken connection) is kept."""
    try:
        outcome["answer"] = agent.deploy(APP, artifact, SPEC)
    except (OSError, http.client.HTTPException, APIError) as exc:  # the agent died mid-answer
        outcome["error"] = exc


def _observe(agent: Agent, versions: dict[str, str]) -> dict[str, Any]:
    """The app as the API, the saved record and /proc see it, once it runs again."""
    status = agent.wait_app(APP, lambda a: a["phase"] == "Running" and a["pid"], "running again", timeout=10)
    instances = app_instances(agent.data_dir, APP)
    saved = json.loads((agent.data_dir / "apps" / APP / "state.json").read_text())
    environ = environ_of(status["pid"])
    return {
        "status": status,
        "instances": instances,
        "saved": saved,
        "running_version": environ.get("PLUM_APP_VERSION"),
        "running_release": environ.get("PLUM_RELEASE"),
        "record_version": status["version"],
        "sha_version": versions.get(status["artifact_sha256"] or ""),
    }


def _disagreements(seen: dict[str, Any]) -> list[str]:
    status, saved = seen["status"], seen["saved"]
    problems = []
    if seen["instances"] != [status["pid"]]:
        problems.append(f"instances {seen['instances']} but the API names pid {status['pid']}")
    if seen["running_version"] != status["version"] or seen["sha_version"] != status["version"]:
        problems.append(
            f"runs {seen['running_version']}, the record names {status['version']} (sha of {seen['sha_version']})"
        )
    if seen["running_release"] != status["release"] or not (status["artifact_sha256"] or "").startswith(
        status["release"] or "-"
    ):
        problems.append(f"runs release {seen['running_release']}, the record names {status['release']}")
    on_disk = (saved["release"], saved["artifact_sha256"], (saved.get("handle") or {}).get("pid"), saved["intent"])
    if on_disk != (status["release"], status["artifact_sha256"], status["pid"], None):
        problems.append(f"saved record {on_disk} differs from the API's answer")
    if status["restarts"] != 0:
        problems.append(f"the agent's death counted as {status['restarts']} restart(s)")
    return problems


def test_kill_9_during_a_deploy_never_leaves_the_record_and_the_process_apart(agent_factory, tmp_path):
    rng = random.Random(SEED)  # noqa: S311 - seeded kill points
    v1 = app_zip(tmp_path / "v1.zip", name=APP, version="1.0.0", script=SLOW_STOP)
    v2 = app_zip(tmp_path / "v2.zip", name=APP, version="2.0.0", script=FAST)
    versions = {sha256_file(v1): "1.0.0", sha256_file(v2): "2.0.0"}
    agent = agent_factory()
    agent.deploy(APP, v1, SPEC)
    started = time.monotonic()
    agent.deploy(APP, v2, SPEC)  # how long a whole deploy takes here: the kills spread over it
    window = (time.monotonic() - started) * 1.5
    old_pid = agent.deploy(APP, v1, SPEC)["app"]["pid"]
    outcomes: collections.Counter[str] = collections.Counter()
    problems = []
    for run in range(DEPLOY_RUNS):
        # One point per stratum of [0, 1], squared: every part of the deploy is hit, its short start often.
        delay = window * ((run + rng.random()) / DEPLOY_RUNS) ** 2
        outcome: dict[str, Any] = {}
        deploy = threading.Thread(target=_deploy_quietly, args=(agent, v2, outcome))
        deploy.start()
        time.sleep(delay)
        agent.kill(signal.SIGKILL)
        deploy.join(10)
        answered = "answered" if "answer" in outcome else "cut"
        if pid_alive(old_pid):  # the successor must tell it from the new version
            answered += ", 1.0.0 still alive"
        agent.start()
        seen = _observe(agent, versions)
        outcomes[f"{seen['running_version']}-running-record-{seen['record_version']} ({answered})"] += 1
        problems += [f"run {run} (kill at {delay * 1000:.0f} ms): {p}" for p in _disagreements(seen)]
        if "answer" in outcome:  # a deploy the API confirmed is what runs
            assert seen["record_version"] == "2.0.0", f"run {run}: confirmed deploy of 2.0.0 lost"
        converged = agent.deploy(APP, v1, SPEC)["app"]
        assert converged["version"] == "1.0.0" and converged["phase"] == "Running", f"run {run}: {converged}"
        assert app_instances(agent.data_dir, APP) == [converged["pid"]], f"run {run}: not one instance of 1.0.0"
        assert environ_of(converged["pid"]).get("PLUM_APP_VERSION") == "1.0.0"
        old_pid = converged["pid"]
    print(
        f"\nkill -9 during a deploy, {DEPLOY_RUNS} runs over {window * 1000:.0f} ms: {dict(sorted(outcomes.items()))}"
    )
    assert not problems, "\n".join(problems)
    assert sum(outcomes.values()) == DEPLOY_RUNS


def test_kill_9_during_a_restart_runs_the_app_once_and_counts_no_crash(agent_factory, tmp_path):
    rng = random.Random(SEED + 1)  # noqa: S311 - seeded kill points
    v1 = app_zip(tmp_path / "v1.zip", name=APP, version="1.0.0", script=SLOW_STOP)
    agent = agent_factory()
    first = agent.deploy(APP, v1, SPEC)["app"]
    for run in range(RESTART_RUNS):
        before = agent.app(APP)
        outcome: dict[str, Any] = {}

        def restart(outcome: dict[str, Any] = outcome) -> None:
            try:
                outcome["answer"] = agent.request("POST", f"/v1/apps/{APP}/restart")
            except (OSError, APIError) as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=restart)
        thread.start()
        time.sleep(rng.uniform(0, 0.25))
        agent.kill(signal.SIGKILL)
        thread.join(10)
        agent.start()
        after = agent.wait_app(APP, lambda a: a["phase"] == "Running" and a["pid"], "running again")
        assert app_instances(agent.data_dir, APP) == [after["pid"]], f"run {run}: not exactly one instance"
        assert after["restarts"] == 0, f"run {run}: the agent's death counted as a crash: {after}"
        assert after["version"] == "1.0.0" and after["artifact_sha256"] == first["artifact_sha256"]
        assert json.loads((agent.data_dir / "apps" / APP / "state.json").read_text())["intent"] is None
        assert before["instance_id"] == after["instance_id"]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder apps can write to whatever user they run as (the agent may run them unprivileged)."""
    with world_dir("plum-faults-", 0o1777) as path:
        yield path


def test_start_collects_what_interrupted_deploys_left_and_keeps_the_restart_counters(
    agent_factory, tmp_path, shared_dir
):
    agent = agent_factory(env={"AGENT_ARTIFACT_CACHE_BYTES": "0"})
    mark = shared_dir / "crashed-once"
    crash_once = f'if [ -e "{mark}" ]; then exec sleep 1000; fi\ntouch "{mark}"\nexit 1\n'
    agent.deploy(APP, app_zip(tmp_path / "v1.zip", name=APP, version="1.0.0", script=crash_once))
    # v1 settled (crashed once, then running) before the mark goes: a late v1 restart would recreate it
    agent.wait_app(APP, lambda a: a["restarts"] == 1 and a["phase"] == "Running", "v1: one crash, then running")
    mark.unlink(missing_ok=True)
    current = agent.deploy(APP, app_zip(tmp_path / "v2.zip", name=APP, version="2.0.0", script=crash_once))["app"]
    running = agent.wait_app(APP, lambda a: a["restarts"] == 1 and a["phase"] == "Running", "one crash, then running")
    app_dir = agent.data_dir / "apps" / APP
    saved_before = json.loads((app_dir / "state.json").read_text())
    kept_releases = sorted(p.name for p in (app_dir / "releases").iterdir())
    assert len(kept_releases) == 2
    agent.kill(signal.SIGKILL)

    # What deploys cut short by a kill -9 leave: a release no record names, an artifact nobody uses,
    # a staging folder, an upload, and a state file write that never got renamed.
    stray_release = app_dir / "releases" / "0123456789abcdef"
    (stray_release / "lib").mkdir(parents=True)
    (stray_release / "lib" / "big.bin").write_bytes(b"x" * 100_000)
    stray_artifact = agent.data_dir / "artifacts" / f"{'ab' * 32}.zip"
    stray_artifact.write_bytes(b"PK" + b"x" * 100_000)
    (agent.data_dir / "tmp" / "stage-svc-0badc0de" / "deep").mkdir(parents=True)
    (agent.data_dir / "tmp" / "incoming-123.zip").write_bytes(b"partial")
    (app_dir / ".state.json.abc123.tmp").write_text('{"half": ')

    agent.start()
    after = agent.app(APP)
    assert not stray_release.exists() and not stray_artifact.exists()
    assert list((agent.data_dir / "tmp").iterdir()) == []
    assert not list(app_dir.glob(".state.json.*"))
    assert sorted(p.name for p in (app_dir / "releases").iterdir()) == kept_releases, "current + previous stay"
    assert (agent.data_dir / "artifacts" / f"{current['artifact_sha256']}.zip").exists()
    assert (after["pid"], after["restarts"], after["phase"]) == (running["pid"], 1, "Running"), "re-adopted as is"
    saved_after = json.loads((app_dir / "state.json").read_text())
    assert saved_after["tracker"] == saved_before["tracker"], "the agent's restart grew the backoff"
