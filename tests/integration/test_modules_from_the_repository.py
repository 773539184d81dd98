"""The README's ad-hoc command, exactly as documented, run from the repository root of a checkout.

Nothing of the tests' sandbox is used: the repository's ansible.cfg gives the inventory
(inventories/local/hosts.yml: localhost in plum_agents) and the collections path (collections/, where
ansible_collections/plum/deploy is a symlink to the repository root). Only the agent is the test's: its URL
and token come from PLUM_AGENT_URL and PLUM_AGENT_TOKEN, as a user of `make agent` would export them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from plum_ansible import BIN, REPO, ansible_available

pytestmark = pytest.mark.skipif(not ansible_available(), reason="ansible-core is not installed in this venv")

COMMAND = 'ansible plum_agents -m plum.deploy.plum_app -a "name=hello src=examples/apps/hello"'


def run_from_the_root(command: str, agent: Any, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PLUM_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # `ansible` as after `. .venv/bin/activate`
        PLUM_AGENT_URL=agent.url,
        PLUM_AGENT_TOKEN=agent.token,
        # Ansible's own files (temporary dirs) go to the test's directory rather than ~/.ansible;
        # neither changes where the inventory and the collection are found.
        ANSIBLE_HOME=str(home),
        ANSIBLE_REMOTE_TEMP=str(home / "remote-tmp"),
        ANSIBLE_NOCOLOR="1",
    )
    return subprocess.run(
        ["/bin/sh", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_documented_command_is_the_one_run():
    assert COMMAND in (REPO / "docs" / "modules.md").read_text()
    assert COMMAND in (REPO / "README.md").read_text()


def test_the_documented_adhoc_command_works_from_the_repository_root(agent_factory, tmp_path):
    agent = agent_factory()
    link = REPO / "collections" / "ansible_collections" / "plum" / "deploy"
    assert link.is_symlink() and link.resolve() == REPO

    first = run_from_the_root(COMMAND, agent, tmp_path / "ansible-home")
    output = f"rc={first.returncode}\n{first.stdout}\n{first.stderr}"
    assert first.returncode == 0, output
    assert first.stdout.startswith("localhost | CHANGED"), output
    assert "[WARNING]" not in first.stderr, output
    app = agent.app("hello")
    assert (app["phase"], app["version"], app["runtime"]) == ("Running", "1.0.0", "process")

    again = run_from_the_root(COMMAND, agent, tmp_path / "ansible-home")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith("localhost | SUCCESS"), again.stdout
    assert agent.app("hello")["pid"] == app["pid"]


def test_after_make_run_the_documented_command_changes_nothing(agent_factory, tmp_path):
    """`make agent` deploys examples/apps/hello with plumctl: the same zip and spec, so the command is a no-op."""
    agent = agent_factory()
    plumctl_env = {**os.environ, "AGENT_DATA_DIR": str(agent.data_dir), "AGENT_API_ADDR": f"127.0.0.1:{agent.port}"}
    deploy = subprocess.run(
        [str(BIN / "plumctl"), "deploy", "hello", "examples/apps/hello"],
        cwd=REPO,
        env=plumctl_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    app = agent.wait_phase("hello", "Running")

    run = run_from_the_root(COMMAND, agent, tmp_path / "ansible-home")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("localhost | SUCCESS"), run.stdout
    assert agent.app("hello")["pid"] == app["pid"]
