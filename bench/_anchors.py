"""The supervisors bench/process.py compares the agent with, all driven the same way: add apps, each with a
marks folder (MARK) and a trigger FIFO (TRIGGER); the app script (APP_SCRIPT) is the same for every one.

- supervisord: autorestart=true, startsecs=0, programs added live (reloadConfig + addProcessGroup over XML-RPC).
- systemd: PID 1 of a container of plum-test/host:bookworm started with scripts/lab.py's RUN_FLAGS; a plain
  unit per app with Restart=always, RestartSec=0. The marks folder is bind-mounted at the same path, and the kernel's
  clock is the same inside, so its timestamps compare with the host's.
- fork/exec floor: `python bench/_anchors.py floor` (this file): posix_spawn, a pidfd per child in one epoll
  loop, waitpid and an immediate posix_spawn again. Nothing else; the physical floor of a respawn here.

Every app runs as nobody (the agent's default app user when it runs as root): supervisord's user=, systemd's
User=, and the floor supervisor itself runs as nobody (posix_spawn cannot switch users).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]

NOBODY = 65534
HOST_IMAGE = "plum-test/host:bookworm"
# The app: the first instance opens its trigger (a FIFO the bench holds open for writing), says it is ready
# and blocks in `read`; when the bench closes its end, read sees EOF, the app records the time and exits 1.
# The restarted instance records its start time first thing and stays up. Bash builtins only ($EPOCHREALTIME,
# echo, read, redirections): no fork on either side of the gap.
APP_SCRIPT = """#!/bin/bash
t=$EPOCHREALTIME
if [[ -e $MARK/exit ]]; then
  echo "$t $$" > "$MARK/start"
  exec sleep 1000000
fi
exec 3<"$TRIGGER"
: > "$MARK/ready"
read -r -u 3 _
echo "$EPOCHREALTIME" > "$MARK/exit"
exit 1
"""


@dataclass
class App:
    name: str
    mark: Path  # writable by nobody
    trigger: Path  # a FIFO

    def env(self) -> dict[str, str]:
        return {"MARK": str(self.mark), "TRIGGER": str(self.trigger)}

    def ready(self) -> bool:
        return (self.mark / "ready").exists()

    def gap_ms(self) -> Optional[float]:
        """Exit -> restarted instance's first line, or None while the restart has not written it yet."""
        try:
            start = (self.mark / "start").read_text()
            exited = (self.mark / "exit").read_text()
        except OSError:
            return None
        if not start.endswith("\n") or not exited.endswith("\n"):
            return None
        return (float(start.split()[0]) - float(exited)) * 1000


def write_script(path: Path) -> Path:
    path.write_text(APP_SCRIPT)
    path.chmod(0o755)
    return path


class Side:
    """One supervisor under test."""

    name = ""

    def add(self, apps: list[App]) -> None:
        raise NotImplementedError

    def pid(self) -> int:
        """The supervisor's own process (its RSS and CPU are measured)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SupervisordSide(Side):
    name = "supervisord"

    def __init__(self, root: Path, script: Path) -> None:
        self.root = root
        self.script = script
        self.conf = root / "supervisord.conf"
        self.sock = root / "supervisor.sock"
        self.programs = root / "programs.conf"
        self.programs.write_text("")
        self.conf.write_text(
            "\n".join(
                [
                    "[supervisord]",
                    f"logfile={root}/supervisord.log",
                    f"pidfile={root}/supervisord.pid",
                    f"childlogdir={root}",
                    "nodaemon=true",
                    "loglevel=warn",
                    "[unix_http_server]",
                    f"file={self.sock}",
                    "[rpcinterface:supervisor]",
                    "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
                    "[include]",
                    f"files={self.programs}",
                ]
            )
            + "\n"
        )
        exe = shutil.which("supervisord") or str(Path(sys.executable).parent / "supervisord")
        with (root / "supervisord.out").open("ab") as out:
            self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=out, stderr=out, start_new_session=True)
        deadline = time.monotonic() + 15
        while not self.sock.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"supervisord did not start: {(root / 'supervisord.out').read_text()[-2000:]}")
            time.sleep(0.02)
        from supervisor.xmlrpc import SupervisorTransport  # noqa: PLC0415 - only the bench's venv has it

        self.rpc: Any = xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{self.sock}")
        ).supervisor

    def section(self, name: str, env: dict[str, str], command: Optional[str] = None, cwd: str = "") -> str:
        environment = ",".join(f'{k}="{v}"' for k, v in env.items())
        lines = [
            f"[program:{name}]",
            f"command={command or self.script}",
            "autostart=true",
            "autorestart=true",
            "startsecs=0",
            "startretries=1000",
            "user=nobody",
            f"environment={environment}",
            "stdout_logfile=NONE",
            "stderr_logfile=NONE",
            "stopasgroup=true",
            "killasgroup=true",
        ]
        if cwd:
            lines.append(f"directory={cwd}")
        return "\n".join(lines) + "\n"

    def add_sections(self, sections: dict[str, str]) -> None:
        """`supervisorctl update` for new programs: reread the config, add their groups (they autostart)."""
        with self.programs.open("a") as fh:
            fh.writelines(sections.values())
        self.rpc.reloadConfig()
        for name in sections:
            self.rpc.addProcessGroup(name)

    def add(self, apps: list[App]) -> None:
        self.add_sections({a.name: self.section(a.name, a.env()) for a in apps})

    def state(self, name: str) -> str:
        return str(self.rpc.getProcessInfo(name)["statename"])

    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class SystemdSide(Side):
    """systemd as PID 1 of a test host container; `root` is bind-mounted at the same path inside."""

    name = "systemd"

    def __init__(self, root: Path, script: Path, container: str) -> None:
        sys.path.insert(0, str(REPO / "scripts"))
        import lab  # noqa: PLC0415 - scripts/lab.py: how the test hosts are started (the floor runs without it)

        self.lab = lab
        self.root = root
        self.script = script
        self.container = container
        lab.docker("rm", "-f", container, check=False)
        lab.docker(
            "run",
            "-d",
            "--name",
            container,
            "--label",
            "org.plum-deploy.bench=process",
            *lab.RUN_FLAGS,
            "-v",
            f"{root}:{root}",
            HOST_IMAGE,
            "/lib/systemd/systemd",
            # Kernel-command-line options reach a container's systemd as arguments: the host's own engine
            # and sshd are not needed here.
            *(f"systemd.mask={u}" for u in ("docker.service", "docker.socket", "containerd.service", "ssh.service")),
        )
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            state = self.exec("systemctl", "is-system-running", check=False).strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.3)
        else:
            raise RuntimeError(f"{container}: systemd not booted (state {state!r})")
        # As `lab.py up` does: the host's systemd may have created cgroup v1 hierarchies this machine does not
        # mount, which leaves containerd unable to load containers' cgroups.
        subprocess.run([str(REPO / "scripts" / "cgroup-v1-mounts.sh")], check=False)
        self.pid1 = int(lab.docker("inspect", "--format", "{{.State.Pid}}", container).strip())
        self.units: list[str] = []
        self.version = self.exec("systemctl", "--version", check=False).split("\n")[0]

    def exec(self, *args: str, check: bool = True) -> str:
        return str(self.lab.docker("exec", self.container, *args, check=check))

    def add(self, apps: list[App]) -> None:
        # One unit file per app (a drop-in-free plain unit: what a user would write).
        units = []
        for app in apps:
            unit = f"pb-{app.name}.service"
            env = " ".join(f'"{k}={v}"' for k, v in app.env().items())
            text = (
                "[Unit]\nStartLimitIntervalSec=0\n[Service]\n"
                f"ExecStart={self.script}\nUser=nobody\nEnvironment={env}\n"
                "Restart=always\nRestartSec=0\nStandardOutput=null\nStandardError=null\n"
            )
            (self.root / "units").mkdir(exist_ok=True)
            (self.root / "units" / unit).write_text(text)
            units.append(unit)
        self.exec("sh", "-c", f"cp {self.root}/units/*.service /etc/systemd/system/ && systemctl daemon-reload")
        self.exec("systemctl", "start", "--no-block", *units)
        self.units += units

    def stop_all(self) -> None:
        if self.units:
            self.exec("systemctl", "stop", *self.units, check=False)
            self.exec("sh", "-c", "rm -f /etc/systemd/system/pb-*.service && systemctl daemon-reload", check=False)
            self.exec("systemctl", "reset-failed", check=False)
        self.units = []
        shutil.rmtree(self.root / "units", ignore_errors=True)

    def pid(self) -> int:
        return self.pid1

    def close(self) -> None:
        try:
            self.lab.docker("rm", "-f", self.container, check=False, timeout=300)
        except subprocess.TimeoutExpired:
            print(f"warning: `docker rm -f {self.container}` timed out: remove it by hand", file=sys.stderr)


class FloorSide(Side):
    name = "fork/exec floor"

    def __init__(self, root: Path, script: Path) -> None:
        self.script = script
        # The venv's python may sit where nobody cannot read it; the floor needs the standard library only.
        python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
        self.proc = subprocess.Popen(
            [python, "-S", __file__, "floor"],
            stdin=subprocess.PIPE,
            cwd=root,
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            start_new_session=True,
        )

    def add(self, apps: list[App]) -> None:
        assert self.proc.stdin is not None
        for app in apps:
            self.proc.stdin.write(json.dumps({"argv": [str(self.script)], "env": app.env()}).encode() + b"\n")
        self.proc.stdin.flush()

    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def floor() -> None:
    """The minimal supervisor: programs arrive as JSON lines on stdin; each exit is respawned at once."""
    sel = selectors.DefaultSelector()
    children: dict[int, tuple[int, list[str], dict[str, str]]] = {}  # pidfd -> (pid, argv, env)
    base_env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    devnull = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)]
    devnull += [(os.POSIX_SPAWN_OPEN, fd, "/dev/null", os.O_WRONLY, 0) for fd in (1, 2)]

    def spawn(argv: list[str], env: dict[str, str]) -> None:
        pid = os.posix_spawn(argv[0], argv, {**base_env, **env}, setsid=True, file_actions=devnull)
        pidfd = os.pidfd_open(pid)
        children[pidfd] = (pid, argv, env)
        sel.register(pidfd, selectors.EVENT_READ)

    def stop(*_: Any) -> None:
        for pid, _argv, _env in children.values():
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    stdin = sys.stdin.buffer
    os.set_blocking(stdin.fileno(), False)
    sel.register(stdin.fileno(), selectors.EVENT_READ)
    pending = b""
    while True:
        for key, _ in sel.select():
            fd = int(key.fd)
            if fd == stdin.fileno():
                chunk = os.read(fd, 65536)
                if not chunk:
                    sel.unregister(fd)
                    continue
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    program = json.loads(line)
                    spawn(program["argv"], program["env"])
                continue
            pid, argv, env = children.pop(fd)
            sel.unregister(fd)
            os.close(fd)
            os.waitpid(pid, 0)
            spawn(argv, env)


if __name__ == "__main__" and sys.argv[1:] == ["floor"]:
    floor()
