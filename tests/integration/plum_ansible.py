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


def _results_mapping(names: list[str]) -> str:
    return ", ".join(f"'{n}': {n} | default(None)" for n in names)


def dump_task(names: list[str]) -> str:
    """A task that writes the registered variables `names` to {{ results_file }} as JSON."""
    mapping = _results_mapping(names)
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


def dump_task_data(names: list[str]) -> dict[str, Any]:
    """dump_task as data, for plays built as Python lists and written as JSON (JSON is YAML)."""
    mapping = _results_mapping(names)
    return {
        "name": "Dump the registered results",
        "ansible.builtin.copy": {
            "dest": "{{ results_file }}",
            "content": f"{{{{ {{{mapping}}} | to_json }}}}",
            "mode": "0600",
        },
        "check_mode": False,
        "diff": False,
    }


# -- the ladder: check mode -> real run -> check mode again (no change) -> real run again (no change) ----------

LADDER = (("check1", True), ("real1", False), ("check2", True), ("real2", False))


def ladder_tasks(module: str, label: str, args: dict[str, Any], info: Optional[str] = None) -> tuple[list, list]:
    """(tasks, registered names) of one rung of the ladder: MODULE with ARGS, registered as LABEL_check1 ... _real2.

    With ``info`` (an app name), plum_app_info also registers the app's status right after the first check-mode
    run (LABEL_after_check: check mode must not have changed it) and after the rung (LABEL_after).
    """
    tasks: list[dict[str, Any]] = []
    names: list[str] = []
    for run, check in LADDER:
        names.append(f"{label}_{run}")
        tasks.append(
            {"name": f"{label} - {run}", module: args, "check_mode": check, "diff": True, "register": names[-1]}
        )
        if info and run == "check1":
            names.append(f"{label}_after_check")
            tasks.append(
                {
                    "name": f"{label} - status after check mode",
                    "plum.deploy.plum_app_info": {"name": info},
                    "register": names[-1],
                }
            )
    if info:
        names.append(f"{label}_after")
        tasks.append(
            {
                "name": f"{label} - status after",
                "plum.deploy.plum_app_info": {"name": info, "log_lines": 5},
                "register": names[-1],
            }
        )
    return tasks, names


def containers_task(label: str, node: str, app: Optional[str] = None) -> tuple[dict[str, Any], str]:
    """(task, registered name): the states (running, exited, ...) of the node's containers (of one app), by label."""
    argv = ["docker", "ps", "-a", "--filter", f"label=plum.node={node}"]
    if app is not None:
        argv += ["--filter", f"label=plum.app={app}"]
    argv += ["--format", "{% raw %}{{.State}}{% endraw %}"]
    name = f"{label}_containers"
    task = {
        "name": f"{label} - containers",
        "ansible.builtin.command": {"argv": argv},
        "changed_when": False,
        "check_mode": False,
        "register": name,
    }
    return task, name


def play(name: str, tasks: list[dict[str, Any]], names: list[str], module_defaults: dict[str, Any]) -> str:
    """A play on localhost running TASKS then dumping the registered NAMES, as playbook text (JSON)."""
    body = {
        "name": name,
        "hosts": "localhost",
        "gather_facts": False,
        "module_defaults": module_defaults,
        "tasks": [*tasks, dump_task_data(names)],
    }
    return json.dumps([body], indent=1)


def app_identity(info: dict[str, Any]) -> Any:
    """What check mode must never change on an app (plum_app_info's result for it)."""
    if not info["exists"]:
        return None
    app = info["apps"][0]
    return tuple(app[k] for k in ("pid", "instance_id", "desired", "artifact_sha256", "spec_hash", "restarts"))


def managed(diff_side: dict[str, Any]) -> dict[str, Any]:
    return {k: diff_side.get(k) for k in ("state", "version", "package", "artifact_sha256", "spec")}


def assert_app_ladder(r: dict[str, Any], labels: dict[str, str], before: dict[str, Any]) -> None:
    """The plum_app ladder's rules for each rung LABEL (of STATE) in ``labels``, in the order they ran.

    check mode changes nothing (the app's identity after it is what the previous rung left, or ``before``),
    predicts the real run (same actions, same diff), and the second check and real runs change nothing,
    except for state=restarted, which restarts on every run.
    """
    previous = before
    for label, state in labels.items():
        check1, real1, check2, real2 = (r[f"{label}_{run}"] for run, _ in LADDER)
        again = state == "restarted"
        changed = (check1["changed"], real1["changed"], check2["changed"], real2["changed"])
        assert changed == (True, True, again, again), (label, changed)
        assert app_identity(r[f"{label}_after_check"]) == app_identity(previous), f"{label}: check mode changed"
        assert check1["actions"] == real1["actions"], label
        assert managed(check1["diff"]["after"]) == managed(real1["diff"]["after"]), label
        assert managed(check1["diff"]["before"]) == managed(real1["diff"]["before"]), label
        if not again:
            assert check2["actions"] == real2["actions"] == [], label
            assert check2["diff"]["before"] == check2["diff"]["after"], label
        for result in (check1, real1, check2, real2):
            assert not result.get("warnings"), (label, result.get("warnings"))
        previous = r[f"{label}_after"]
