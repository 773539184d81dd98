"""site.yml's preflight refuses bad inventories and variables with a message naming them, before it changes
anything. Run against this machine over the local connection, limited to the preflight phase (the tags),
so nothing is installed here whatever happens."""

from __future__ import annotations

from pathlib import Path

import pytest
from plum_ansible import BIN, REPO, Ansible, ansible_available, target_python

pytestmark = pytest.mark.skipif(not ansible_available(), reason="ansible-core is not installed")

PREFLIGHT = "--tags=plum_controller_preflight,plum_agent_preflight"
HOST = f"ansible_connection: local, ansible_python_interpreter: {target_python()}"


def inventory(tmp_path: Path, controllers: list[str], agents: list[str]) -> Path:
    lines = ["all:", "  children:"]
    for group, hosts in (("plum_controller", controllers), ("plum_agents", agents)):
        lines += [f"    {group}:", "      hosts:" if hosts else "      hosts: {}"]
        lines += [f"        {host}: {{{HOST}}}" for host in hosts]
    path = tmp_path / "hosts.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def site(tmp_path: Path, hosts: Path, *extra: str):
    ansible = Ansible(tmp_path / "ansible")
    argv = [str(BIN / "ansible-playbook"), "-i", str(hosts), str(REPO / "site.yml"), PREFLIGHT, *extra]
    proc, _ = ansible._run(argv, None, REPO, 300)
    return proc.returncode, proc.stdout + proc.stderr


def test_an_unknown_mode_is_refused(tmp_path):
    rc, out = site(tmp_path, inventory(tmp_path, ["localhost"], ["localhost"]), "-e", "plum_mode=fancy")
    assert rc != 0, out
    assert "plum_mode=fancy on localhost: unknown mode, expected one of bare, hybrid, containerized" in out


def test_two_controllers_are_refused(tmp_path):
    rc, out = site(tmp_path, inventory(tmp_path, ["localhost", "second"], ["localhost"]))
    assert rc != 0, out
    assert "the inventory group plum_controller must hold exactly one host, it holds 2: localhost, second" in out
    assert "plum_controller_port" not in out  # stopped before any host was looked at


def test_no_controller_is_refused(tmp_path):
    rc, out = site(tmp_path, inventory(tmp_path, [], ["localhost"]))
    assert rc != 0, out
    assert "the inventory group plum_controller must hold exactly one host, it holds 0" in out


def test_an_inventory_without_agents_is_refused(tmp_path):
    rc, out = site(tmp_path, inventory(tmp_path, ["localhost"], []))
    assert rc != 0, out
    assert "the inventory group plum_agents holds no host" in out


def test_a_bad_state_is_refused(tmp_path):
    rc, out = site(tmp_path, inventory(tmp_path, ["localhost"], ["localhost"]), "-e", "plum_state=gone")
    assert rc != 0, out
    assert "plum_state=gone: expected present or absent" in out


@pytest.mark.skipif(Path("/proc/1/comm").read_text().strip() == "systemd", reason="this machine runs systemd")
def test_a_host_without_systemd_is_pointed_at_the_containerized_mode(tmp_path):
    rc, out = site(tmp_path, inventory(tmp_path, ["localhost"], ["localhost"]))
    assert rc != 0, out
    assert "localhost has no systemd" in out
    assert "use plum_mode=containerized" in out
    assert not Path("/opt/plum/controller").exists()
