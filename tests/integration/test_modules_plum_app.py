"""plum.deploy.plum_app and plum_app_info run for real: `ansible` and `ansible-playbook` against a real agent.

The ladder of community.docker for every state: check mode -> real run -> check mode again (no change)
-> real run again (no change); check mode never changes the agent and predicts exactly what the real run
does (same actions, same diff). Ad hoc runs, --check/--diff from the command line, a crash-looping app.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from plum_ansible import REPO, Ansible, ansible_available, assert_app_ladder, ladder_tasks, play

from plum.common.artifact import zip_directory
from support.agent import pid_alive

pytestmark = pytest.mark.skipif(not ansible_available(), reason="ansible-core is not installed in this venv")

HELLO = REPO / "examples" / "apps" / "hello"
CRASHY = REPO / "examples" / "apps" / "crashy"
STATES = ("started", "present", "stopped", "restarted", "absent")


@pytest.fixture
def ansible(tmp_path: Path) -> Ansible:
    return Ansible(tmp_path / "ansible")


def connection(agent: Any) -> dict[str, str]:
    return {"PLUM_AGENT_URL": agent.url, "PLUM_AGENT_TOKEN": agent.token}


def no_leftovers(ansible: Ansible) -> None:
    remote_tmp = ansible.root / "remote-tmp"
    left = list(remote_tmp.iterdir()) if remote_tmp.exists() else []
    assert left == [], f"temporary files left on the target: {left}"


def app_dir(tmp_path: Path, version: str) -> Path:
    target = tmp_path / f"hello-{version}"
    shutil.copytree(HELLO, target, symlinks=True)
    (target / "meta.ini").write_text(f"name=hello\nversion={version}\nservice=hello:http:8080\n")
    return target


def test_adhoc_check_does_not_upload_then_deploys_once(agent_factory, ansible, tmp_path):
    agent = agent_factory()
    env = connection(agent)

    check = ansible.adhoc("plum.deploy.plum_app", "name=hello src=examples/apps/hello", "--check", env=env)
    assert check.rc == 0, check.output
    assert check.data["changed"] is True and check.data["actions"] == ["deploy"]
    assert agent.request("GET", "/v1/apps")["apps"] == []
    assert list((agent.data_dir / "artifacts").glob("*")) == [], "check mode must not upload"

    first = ansible.adhoc("plum.deploy.plum_app", "name=hello src=examples/apps/hello", "-vvv", env=env)
    assert first.rc == 0, first.output
    assert first.data["changed"] is True
    assert first.data["app"]["phase"] == "Running" and first.data["app"]["version"] == "1.0.0"
    assert first.data["artifact"]["directory"] is True
    assert first.data["artifact"]["sha256"] == first.data["app"]["artifact_sha256"]
    assert "plum-artifact.zip" in first.stdout, "the zip is copied to the target when the agent needs it"
    assert pid_alive(first.data["app"]["pid"])

    again = ansible.adhoc("plum.deploy.plum_app", "name=hello src=examples/apps/hello", "-vvv", env=env)
    assert again.rc == 0, again.output
    assert again.data["changed"] is False and again.data["actions"] == []
    assert again.data["app"]["pid"] == first.data["app"]["pid"]
    assert "plum-artifact.zip" not in again.stdout, "an artifact the agent runs already is never copied again"
    assert "CHANGED" in first.stdout and "SUCCESS" in again.stdout

    upgrade = app_dir(tmp_path, "2.0.0")
    diff = ansible.adhoc(
        "plum.deploy.plum_app", f"name=hello src={upgrade} wait_stable=0.3", "--check", "--diff", env=env
    )
    assert diff.rc == 0, diff.output
    assert '-    "version": "1.0.0"' in diff.stdout and '+    "version": "2.0.0"' in diff.stdout, diff.stdout
    assert agent.app("hello")["version"] == "1.0.0"
    real = ansible.adhoc("plum.deploy.plum_app", f"name=hello src={upgrade} wait_stable=0.3", "--diff", env=env)
    assert real.rc == 0, real.output
    assert real.data["app"]["version"] == "2.0.0" and real.data["changed"] is True
    assert '+    "version": "2.0.0"' in real.stdout
    no_leftovers(ansible)


LADDER_STEPS: dict[str, dict[str, Any]] = {
    "started": {"src": "{{ hello }}"},
    "present": {"src": "{{ hello }}", "env": {"GREETING": "hi"}},
    "stopped": {"src": "{{ hello }}", "env": {"GREETING": "hi"}},
    "restarted": {},
    "absent": {},
}


def test_ladder_for_every_state(agent_factory, ansible):
    agent = agent_factory()
    tasks: list[dict[str, Any]] = []
    names: list[str] = []
    for state, options in LADDER_STEPS.items():
        more, registered = ladder_tasks(
            "plum.deploy.plum_app", state, {"name": "hello", "state": state, **options}, info="hello"
        )
        tasks += more
        names += registered
    defaults = {
        "group/plum.deploy.plum": {"agent_url": "{{ agent_url }}", "agent_token_file": "{{ token_file }}"},
        "plum.deploy.plum_app": {"wait_stable": 0.3},
    }
    extra = [
        "-e",
        f"agent_url={agent.url}",
        "-e",
        f"token_file={agent.data_dir / 'agent.token'}",
        "-e",
        f"hello={HELLO}",
    ]
    run = ansible.playbook(play("The plum_app ladder for every state", tasks, names, defaults), *extra)
    assert run.rc == 0 and run.data is not None, run.output
    r = run.data
    assert_app_ladder(r, {state: state for state in STATES}, before={"exists": False, "apps": []})

    started = r["started_after"]["apps"][0]
    assert (started["phase"], started["version"]) == ("Running", "1.0.0")
    assert r["started_check1"]["diff"]["before"] == {"state": "absent"}
    assert r["started_check1"]["diff"]["after"]["version"] == "1.0.0"
    assert r["started_real2"]["app"]["pid"] == r["started_real1"]["app"]["pid"]

    present = r["present_after"]["apps"][0]
    assert present["spec"]["env"] == {"GREETING": "hi"}
    assert present["phase"] == "Running", "present redeploys a running app and keeps it running"
    assert r["present_check1"]["reasons"] == ["spec changes: env"]
    assert present["pid"] != started["pid"]

    stopped = r["stopped_after"]["apps"][0]
    assert (stopped["phase"], stopped["pid"], stopped["desired"]) == ("Stopped", None, "stopped")
    assert r["stopped_real1"]["actions"] == ["stop"]
    assert not pid_alive(present["pid"])

    pids = [r[f"restarted_{s}"]["app"]["pid"] for s in ("real1", "real2")]
    assert r["restarted_check2"]["app"]["pid"] == pids[0], "check mode does not restart"
    assert pids[0] != pids[1] and all(pids)
    assert r["restarted_after"]["apps"][0]["phase"] == "Running"

    assert r["absent_after"]["exists"] is False and r["absent_after"]["apps"] == []
    assert r["absent_real1"]["app"] == {}
    assert agent.request("GET", "/v1/apps")["apps"] == []
    no_leftovers(ansible)


def test_check_and_diff_from_the_command_line(agent_factory, ansible):
    agent = agent_factory()
    play = """\
    - name: Deploy hello
      hosts: localhost
      gather_facts: false
      tasks:
        - name: Hello with a greeting
          plum.deploy.plum_app:
            name: hello
            src: "{{ hello }}"
            env:
              GREETING: "{{ greeting }}"
            wait_stable: 0.3
    """
    env = connection(agent)
    base = ["-e", f"hello={HELLO}"]
    assert ansible.playbook(play, *base, "-e", "greeting=one", env=env).rc == 0
    before = agent.app("hello")
    check = ansible.playbook(play, *base, "-e", "greeting=two", "--check", "--diff", env=env)
    assert check.rc == 0, check.output
    assert '-            "GREETING": "one"' in check.stdout and '+            "GREETING": "two"' in check.stdout
    assert "changed=1" in check.stdout
    after = agent.app("hello")
    assert (after["pid"], after["spec"]["env"]) == (before["pid"], {"GREETING": "one"})
    same = ansible.playbook(play, *base, "-e", "greeting=one", "--check", "--diff", env=env)
    assert "changed=0" in same.stdout, same.output


def test_crash_looping_app_fails_the_wait_with_phase_reason_and_logs(agent_factory, ansible):
    agent = agent_factory()
    crash = ansible.adhoc("plum.deploy.plum_app", f"name=crashy src={CRASHY}", env=connection(agent))
    assert crash.rc != 0, crash.output
    msg = crash.data["msg"]
    assert msg.startswith("app crashy is crash-looping"), msg
    assert "last exit code 3" in msg
    assert "crashy 1.0.0 (instance" in msg and "exiting with 3" in msg, "the last log lines are shown"
    assert crash.data["changed"] is True, "the app was deployed"
    assert crash.data["app"]["name"] == "crashy"
    assert any("exiting with 3" in line for line in crash.data["logs"])


def test_one_shot_app_counts_as_started_when_completed(agent_factory, ansible):
    agent = agent_factory()
    args = f"name=once src={CRASHY} restart_policy=never start_cmd='echo done; exit 0'"
    first = ansible.adhoc("plum.deploy.plum_app", args, env=connection(agent))
    assert first.rc == 0, first.output
    assert first.data["app"]["phase"] == "Completed"
    again = ansible.adhoc("plum.deploy.plum_app", args, env=connection(agent))
    assert again.rc == 0 and again.data["changed"] is False, again.output


def test_info_lists_apps_with_status_and_logs(agent_factory, ansible):
    agent = agent_factory()
    env = connection(agent)
    assert ansible.adhoc("plum.deploy.plum_app", f"name=hello src={HELLO} wait_stable=0.2", env=env).rc == 0
    listing = ansible.adhoc("plum.deploy.plum_app_info", "", env=env)
    assert listing.rc == 0, listing.output
    assert listing.data["changed"] is False and listing.data["exists"] is True
    assert listing.data["agent"] == {
        "node_id": "test-node",
        "version": listing.data["agent"]["version"],
        "url": agent.url,
    }
    (app,) = listing.data["apps"]
    assert (app["name"], app["phase"], app["restarts"]) == ("hello", "Running", 0)
    assert app["memory_bytes"] > 0
    one = ansible.adhoc("plum.deploy.plum_app_info", "name=hello log_lines=3", env=env)
    assert any("hello from hello 1.0.0" in line for line in one.data["apps"][0]["logs"])
    missing = ansible.adhoc("plum.deploy.plum_app_info", "name=nosuch", env=env)
    assert missing.rc == 0 and missing.data["exists"] is False and missing.data["apps"] == []


def test_remote_src_directory_and_zip(agent_factory, ansible, tmp_path):
    agent = agent_factory()
    env = connection(agent)
    first = ansible.adhoc("plum.deploy.plum_app", f"name=hello src={HELLO} wait_stable=0.2", env=env)
    assert first.rc == 0 and first.data["changed"] is True, first.output
    same = ansible.adhoc("plum.deploy.plum_app", f"name=hello remote_src={HELLO} wait_stable=0.2", env=env)
    assert same.rc == 0, same.output
    assert same.data["changed"] is False, "a directory zipped on the target gives the control node's sha256"
    v2 = tmp_path / "hello-2.zip"
    zip_directory(app_dir(tmp_path, "2.0.0"), v2)
    new = ansible.adhoc("plum.deploy.plum_app", f"name=hello remote_src={v2} wait_stable=0.2 state=present", env=env)
    assert new.rc == 0 and new.data["changed"] is True, new.output
    assert (new.data["app"]["version"], new.data["app"]["phase"]) == ("2.0.0", "Running")
    wrong = ansible.adhoc("plum.deploy.plum_app", f"name=hello remote_src={v2} artifact_sha256={'0' * 64}", env=env)
    assert wrong.rc != 0 and "not the expected artifact_sha256" in wrong.data["msg"], wrong.output


@pytest.mark.parametrize("module", ["plum.deploy.plum_app", "plum.deploy.plum_app_info", "plum.deploy.plum_deployment"])
def test_ansible_doc_renders(ansible, module):
    text = ansible.doc(module)
    assert text.rc == 0, text.output
    for section in ("OPTIONS", "ATTRIBUTES", "EXAMPLES", "RETURN VALUES", "agent_url", "controller_url"):
        assert section in text.stdout, (module, section)
    assert "WARNING" not in text.stderr, text.stderr
