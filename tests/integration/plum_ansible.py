"""Run real `ansible`, `ansible-playbook` and `ansible-doc` against the plum.deploy collection of this repository.

The collection is made importable as ``ansible_collections.plum.deploy`` through a temporary directory
holding a symlink to the repository root, with ANSIBLE_COLLECTIONS_PATH pointing at it. Everything else
Ansible reads (config, inventory, home, temp dirs) lives in that directory too, so the runs never depend on
the machine's Ansible setup. The target is localhost over the local connection, with the system Python when
there is one (it has no ansible and no plum installed: targets need nothing beyond Python).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def ansible_available() -> bool:
    return (BIN / "ansible-playbook").exists()


def target_python() -> str:
    system = Path("/usr/bin/python3")
    return str(system) if system.exists() else sys.executable


class Result:
    def __init__(self, proc: subprocess.CompletedProcess[str], seconds: float, data: Any = None) -> None:
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.seconds = seconds
        self.data = data

    @property
    def output(self) -> str:
        return f"rc={self.rc}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


class Ansible:
    """A sandboxed Ansible for one test: its own collection root, config, inventory and temp dirs."""

    def __init__(self, root: Path, env: Optional[dict[str, str]] = None) -> None:
        self.root = root
        collections = root / "collections"
        (collections / "ansible_collections" / "plum").mkdir(parents=True, exist_ok=True)
        link = collections / "ansible_collections" / "plum" / "deploy"
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        self.inventory = root / "inventory.ini"
        self.inventory.write_text(
            f"[plum_agents]\nlocalhost ansible_connection=local ansible_python_interpreter={target_python()}\n"
        )
        self.config = root / "ansible.cfg"
        self.config.write_text(
            textwrap.dedent(
                f"""\
                [defaults]
                inventory = {self.inventory}
                collections_path = {collections}
                retry_files_enabled = False
                host_key_checking = False
                nocows = True
                local_tmp = {root / "local-tmp"}
                remote_tmp = {root / "remote-tmp"}

                [connection]
                pipelining = True
                """
            )
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PLUM_"))}
        self.env.update(
            ANSIBLE_CONFIG=str(self.config),
            ANSIBLE_COLLECTIONS_PATH=str(collections),
            ANSIBLE_HOME=str(root / "home"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_DEPRECATION_WARNINGS="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        self.env.update(env or {})

    def _run(self, argv: list[str], env: Optional[dict[str, str]], cwd: Path, timeout: float) -> tuple:
        started = time.monotonic()
        proc = subprocess.run(
            argv,
            env={**self.env, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return proc, time.monotonic() - started

    def adhoc(
        self,
        module: str,
        args: str,
        *extra: str,
        env: Optional[dict[str, str]] = None,
        cwd: Path = REPO,
        timeout: float = 120,
    ) -> Result:
        """`ansible localhost -m MODULE -a ARGS`; .data is the host's result (from --tree)."""
        tree = self.root / f"tree-{time.monotonic_ns()}"
        argv = [str(BIN / "ansible"), "localhost", "-m", module, "-a", args, "--tree", str(tree), *extra]
        proc, seconds = self._run(argv, env, cwd, timeout)
        result_file = tree / "localhost"
        data = json.loads(result_file.read_text()) if result_file.exists() else None
        shutil.rmtree(tree, ignore_errors=True)
        return Result(proc, seconds, data)

    def playbook(
        self,
        text: str,
        *extra: str,
        env: Optional[dict[str, str]] = None,
        cwd: Path = REPO,
        timeout: float = 180,
        name: str = "play.yml",
    ) -> Result:
        """Run a playbook; a task can write `{{ ... | to_json }}` to {{ results_file }}, read back as .data."""
        path = self.root / name
        results = self.root / f"{path.stem}-results.json"
        results.unlink(missing_ok=True)
        path.write_text(textwrap.dedent(text))
        argv = [str(BIN / "ansible-playbook"), str(path), "-e", f"results_file={results}", *extra]
        proc, seconds = self._run(argv, env, cwd, timeout)
        data = json.loads(results.read_text()) if results.exists() else None
        return Result(proc, seconds, data)

    def doc(self, *args: str) -> Result:
        proc, seconds = self._run([str(BIN / "ansible-doc"), *args], None, REPO, 60)
        return Result(proc, seconds)


def dump_task(names: list[str]) -> str:
    """A task that writes the registered variables `names` to {{ results_file }} as JSON."""
    mapping = ", ".join(f"'{n}': {n} | default(None)" for n in names)
    return textwrap.dedent(
        f"""\
        - name: Dump the registered results
          ansible.builtin.copy:
            dest: "{{{{ results_file }}}}"
            content: "{{{{ {{{mapping}}} | to_json }}}}"
            mode: "0600"
          check_mode: false
          diff: false
        """
    )
