"""The modules' error messages, from real runs: unreachable agent, wrong or missing token, API refusals."""

from __future__ import annotations

import socket
import textwrap
import zipfile

import pytest
from plum_ansible import REPO, Ansible, ansible_available, dump_task

from support.controller import ControllerProc

pytestmark = pytest.mark.skipif(not ansible_available(), reason="ansible-core is not installed in this venv")

HELLO = REPO / "examples" / "apps" / "hello"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CASES = {
    "unreachable": {"agent_url": "{{ dead_url }}"},
    "wrong_token_option": {"agent_token": "not-the-token-at-all"},
    "wrong_token_env": {"_environment": {"PLUM_AGENT_TOKEN": "not-the-token-from-env"}},
    "no_token": {"agent_token_file": "{{ missing_token_file }}"},
    "bad_restart_window": {"src": "{{ hello }}", "restart_window": 0},
    "bad_start_cmd": {"src": "{{ hello }}", "start_cmd": "echo 'unterminated"},
    "bad_memory": {"src": "{{ hello }}", "memory": "lots"},
    "bad_zip": {"src": "{{ bad_zip_path }}"},
    "missing_src": {"src": "{{ hello }}/no-such-dir"},
    "no_artifact_for_new_app": {"name": "newapp"},
    "src_and_remote_src": {"src": "{{ hello }}", "remote_src": "/tmp/x.zip"},
    "info_unreachable": {"_module": "plum.deploy.plum_app_info", "agent_url": "{{ dead_url }}"},
    "deployment_unreachable": {
        "_module": "plum.deploy.plum_deployment",
        "controller_url": "{{ dead_url }}",
        "controller_token": "x",
    },
}


def error_playbook() -> str:
    tasks = []
    for case, options in CASES.items():
        opts = dict(options)
        module = opts.pop("_module", "plum.deploy.plum_app")
        environment = opts.pop("_environment", None)
        args = {} if module != "plum.deploy.plum_app" else {"name": "hello", "wait_stable": 0.2}
        if module == "plum.deploy.plum_deployment":
            args = {"name": "hello", "replicas": {"n1": 1}, "image": "web:1"}
        args.update(opts)
        lines = [f"- name: Case {case}", f"  {module}:"]
        lines += [f"    {k}: {v!r}" for k, v in args.items()] or ["    {}"]
        if environment:
            lines.append("  environment:")
            lines += [f"    {k}: {v}" for k, v in environment.items()]
        lines += ["  ignore_errors: true", f"  register: {case}"]
        tasks.append("\n".join(lines))
    body = "\n".join(tasks) + "\n" + dump_task(list(CASES))
    indented = "\n".join("    " + line if line else line for line in body.splitlines())
    return f"""\
- name: Every error the modules explain
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/plum.deploy.plum:
      agent_url: "{{{{ agent_url }}}}"
      agent_token_file: "{{{{ token_file }}}}"
  tasks:
{indented}
"""


def test_error_messages(agent_factory, tmp_path):
    agent = agent_factory()
    bad_zip = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad_zip, "w") as zf:
        zf.writestr("start.sh", "#!/bin/sh\n")
    dead_url = f"http://127.0.0.1:{free_port()}"
    missing_token_file = tmp_path / "nowhere" / "agent.token"
    ansible = Ansible(tmp_path / "ansible")
    extra = {
        "agent_url": agent.url,
        "token_file": agent.data_dir / "agent.token",
        "hello": HELLO,
        "bad_zip_path": bad_zip,
        "dead_url": dead_url,
        "missing_token_file": missing_token_file,
    }
    argv = [arg for key, value in extra.items() for arg in ("-e", f"{key}={value}")]
    run = ansible.playbook(error_playbook(), *argv)
    assert run.data is not None, run.output
    r = run.data
    for case in CASES:
        assert r[case]["failed"] is True, (case, r[case])
        assert r[case]["changed"] is False, (case, r[case])

    def msg(case: str) -> str:
        return r[case]["msg"]

    for case in ("unreachable", "info_unreachable"):
        assert msg(case).startswith(f"Cannot reach the Plum agent at {dead_url} ("), msg(case)
        assert f"`curl {dead_url}/healthz` on the target" in msg(case)
        assert "agent_url or the PLUM_AGENT_URL environment variable" in msg(case)
    assert msg("deployment_unreachable").startswith(f"Cannot reach the Plum controller at {dead_url}")
    assert "controller_url or the PLUM_CONTROLLER_URL" in msg("deployment_unreachable")

    assert f"The Plum agent at {agent.url} refused the request GET /v1/apps/hello (HTTP 401" in msg(
        "wrong_token_option"
    )
    assert "The token came from the agent_token option" in msg("wrong_token_option")
    assert "The token came from the PLUM_AGENT_TOKEN environment variable on the target" in msg("wrong_token_env")
    assert (
        f"No token was sent: agent_token and PLUM_AGENT_TOKEN are not set, "
        f"and the token file {missing_token_file} does not exist"
    ) in msg("no_token")
    for case in ("wrong_token_option", "wrong_token_env", "no_token"):
        assert "AGENT_API_TOKEN" in msg(case) and "agent.token" in msg(case)
        assert "not-the-token" not in msg(case), "the token itself is never shown"

    assert msg("bad_restart_window").startswith("spec.restart_window: must be between 0.1 and 86400"), msg(
        "bad_restart_window"
    )
    assert "[HTTP 400 from PUT /v1/apps/hello" in msg("bad_restart_window")
    assert r["bad_restart_window"]["field"] == "restart_window"
    assert msg("bad_start_cmd").startswith("spec.start_cmd: cannot be parsed as a shell command"), msg("bad_start_cmd")
    assert msg("bad_memory").startswith("memory: expected a size such as 512m"), msg("bad_memory")

    assert "meta.ini is missing from the zip root" in msg("bad_zip")
    assert "Could not find or access" in msg("missing_src") and "no-such-dir" in msg("missing_src")
    assert msg("no_artifact_for_new_app") == (
        "src: app 'newapp' does not exist on the agent; give src, remote_src or image to deploy it"
    )
    assert msg("src_and_remote_src") == "parameters are mutually exclusive: src|remote_src"
    assert agent.request("GET", "/v1/apps")["apps"] == [], "no error left anything behind"


def test_controller_error_messages(tmp_path):
    ctl = ControllerProc(tmp_path / "controller").start()
    try:
        ctl.heartbeat("n1")
        ansible = Ansible(tmp_path / "ansible")
        playbook = f"""\
- name: Errors the controller answers
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/plum.deploy.plum:
      controller_url: "http://127.0.0.1:{ctl.port}"
  tasks:
    - name: Case wrong_token
      plum.deploy.plum_deployment:
        name: web
        image: "web:1"
        replicas: {{n1: 1}}
        controller_token: not-the-operator-token
      ignore_errors: true
      register: wrong_token
    - name: Case unknown_node
      plum.deploy.plum_deployment:
        name: web
        image: "web:1"
        replicas: {{ghost-node: 1}}
        controller_token: "{ctl.operator}"
      ignore_errors: true
      register: unknown_node
{textwrap.indent(dump_task(["wrong_token", "unknown_node"]), "    ")}"""
        run = ansible.playbook(playbook)
        assert run.data is not None, run.output
        wrong, unknown = run.data["wrong_token"], run.data["unknown_node"]
        assert wrong["failed"] is True and unknown["failed"] is True
        assert "(HTTP 401" in wrong["msg"] and "controller_token option" in wrong["msg"], wrong["msg"]
        assert "not-the-operator-token" not in wrong["msg"], "the token itself is never shown"
        assert "ghost-node" in unknown["msg"] and "HTTP 400" in unknown["msg"], unknown["msg"]
        assert ctl.ok("GET", "/v1/deployments") == [], "no error left anything behind"
    finally:
        ctl.stop()
