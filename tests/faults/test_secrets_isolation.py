"""Secrets and isolation: apps of a root agent cannot reach any daemon's secrets.

A real agent runs as root, attached to a real controller. Its apps run as an unprivileged user (the
agent's AGENT_APP_USER, `nobody`, or their spec's `user`), so an app that goes looking for tokens finds
none: not in /proc/<pid>/environ of either daemon (no daemon holds a token in its environment: a token
there is refused at start), not in their token files, not in their config files. A `user` that does not
exist is a 400 that leaves the running app as it was.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import h11
import pytest

from support.agent import REPO, Agent, APIError, app_zip, free_port, make_zip, wait_until, world_dir
from support.controller import ControllerProc, clean_env

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching an app's user needs a root agent")

NOBODY = pwd.getpwnam("nobody")
DAEMON = pwd.getpwnam("daemon")  # in every Debian base system, like nobody
OPERATOR_TOKEN = "operator-token-from-the-config-file"
API_TOKEN = "api-token-from-the-config-file-0123"

# Tries every target (label=path) and says which it could read; then stays up.
SNOOP = """\
id -u; id -g
ls "$ROOT" >/dev/null 2>&1 && echo "LISTED root" || echo "UNLISTED root"
for item in $TARGETS; do
    label=${item%%=*}; path=${item#*=}
    if cat "$path" >/dev/null 2>&1; then echo "READ $label"; else echo "DENIED $label"; fi
done
echo DONE
exec sleep 1000
"""


@pytest.fixture
def root() -> Iterator[Path]:
    """A directory every user may traverse, so a refusal comes from the secret's own file, not from /tmp/pytest-*."""
    with world_dir("plum-secrets-", 0o755) as path:
        yield path


@pytest.fixture
def controller(root: Path) -> Iterator[ControllerProc]:
    # The operator token from a --config file, the agent token generated into the data directory.
    ctl = ControllerProc(root / "controller", CONTROLLER_OPERATOR_TOKEN=OPERATOR_TOKEN).start()
    yield ctl
    ctl.stop()


@pytest.fixture
def agent(root: Path, controller: ControllerProc) -> Iterator[Agent]:
    # Its controller token from a --config file, its API token generated into its data directory.
    node = Agent(
        root / "agent",
        env={"CONTROLLER_BASE": f"http://127.0.0.1:{controller.port}", "CONTROLLER_AGENT_TOKEN": controller.agent},
    ).start()
    yield node
    node.kill_all()


def environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def ids(pid: int) -> dict[str, list[int]]:
    """Uid, Gid and Groups lines of /proc/<pid>/status."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {
        k: [int(v) for v in rest.split()]
        for k, _, rest in (line.partition(":\t") for line in lines)
        if k in ("Uid", "Gid", "Groups")
    }


def log_lines(agent: Agent, name: str) -> list[str]:
    return (agent.data_dir / "apps" / name / "logs" / "app.log").read_text().splitlines()


def test_an_app_can_read_no_daemon_secret(tmp_path: Path, root: Path, controller: ControllerProc, agent: Agent) -> None:
    assert agent.proc is not None and controller.proc is not None
    wait_until(lambda: any(n["nodeId"] == "test-node" for n in controller.ok("GET", "/v1/nodes")), what="the node")
    targets = {
        "agent-environ": f"/proc/{agent.proc.pid}/environ",
        "controller-environ": f"/proc/{controller.proc.pid}/environ",
        "agent-token": agent.data_dir / "agent.token",
        "agent-config": agent.config_path,
        "controller-config": controller.config_path,
        "controller-agent-token": controller.data_dir / "agent.token",
        "controller-db": controller.data_dir / "controller.db",
        "own-release": "./start.sh",  # the control: what the app must read, it reads
    }
    for label, path in targets.items():
        assert label.startswith(("own", "agent-environ", "controller-environ")) or Path(path).is_file(), label
    spec = {"env": {"ROOT": str(root), "TARGETS": " ".join(f"{k}={v}" for k, v in targets.items())}}
    app = agent.deploy("snoop", app_zip(tmp_path / "snoop.zip", name="snoop", script=SNOOP), spec)["app"]
    wait_until(lambda: "DONE" in log_lines(agent, "snoop"), what="the snooping app to finish")

    lines = log_lines(agent, "snoop")
    assert lines[:2] == [str(NOBODY.pw_uid), str(NOBODY.pw_gid)]  # AGENT_APP_USER's default
    assert "LISTED root" in lines  # it reached the directories: the files themselves refused it
    assert "READ own-release" in lines
    read = [line for line in lines if line.startswith("READ ") and line != "READ own-release"]
    assert read == [], f"an app read daemon secrets: {read}"
    assert sum(line.startswith("DENIED ") for line in lines) == len(targets) - 1

    secrets = [agent.token.encode(), controller.agent.encode(), OPERATOR_TOKEN.encode()]
    assert agent.token != API_TOKEN and len(set(secrets)) == 3
    for name, pid in (("agent", agent.proc.pid), ("controller", controller.proc.pid), ("app", app["pid"])):
        env = environ(pid)
        assert not [s for s in secrets if s in env], f"a token is in the environment of the {name}"
        assert b"_TOKEN=" not in env, f"a token setting is in the environment of the {name}"


@pytest.mark.parametrize(
    ("daemon", "setting"),
    [
        ("agent", "AGENT_API_TOKEN"),
        ("agent", "CONTROLLER_AGENT_TOKEN"),
        ("controller", "CONTROLLER_AGENT_TOKEN"),
        ("controller", "CONTROLLER_OPERATOR_TOKEN"),
    ],
)
def test_a_token_in_a_daemons_environment_is_refused_at_start(tmp_path: Path, daemon: str, setting: str) -> None:
    value = "a-secret-value-that-must-stay-hidden"
    data_dir = tmp_path / "data"
    if daemon == "agent":
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "CONTROLLER_"))}
        env.update(AGENT_DATA_DIR=str(data_dir), AGENT_API_ADDR=f"127.0.0.1:{free_port()}", **{setting: value})
    else:
        env = clean_env({"CONTROLLER_DATA_DIR": str(data_dir), "CONTROLLER_ADDR": "127.0.0.1:0", setting: value})
    result = subprocess.run(
        [sys.executable, "-m", f"plum.{daemon}.main"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        f"plum-{daemon}: configuration error: {setting} is set in the process environment, which other processes "
        f"can read in /proc/<pid>/environ: put it in the --config file, or in a file named by {setting}_FILE "
        "(value hidden)"
    ]
    assert value not in result.stderr + result.stdout
    assert not data_dir.exists(), "a refused daemon must not have started"


def test_the_same_token_from_a_file_setting_starts(root: Path, controller: ControllerProc) -> None:
    """CONTROLLER_AGENT_TOKEN_FILE naming the controller's own token file: what `make cluster` does."""
    token_file = controller.data_dir / "agent.token"
    node = Agent(
        root / "filed",
        env={
            "AGENT_NODE_ID": "filed-node",
            "CONTROLLER_BASE": f"http://127.0.0.1:{controller.port}",
            "CONTROLLER_AGENT_TOKEN_FILE": str(token_file),
        },
    ).start()
    try:
        wait_until(lambda: any(n["nodeId"] == "filed-node" for n in controller.ok("GET", "/v1/nodes")), what="node")
        assert node.proc is not None and controller.agent.encode() not in environ(node.proc.pid)
    finally:
        node.kill_all()


@pytest.mark.parametrize(
    ("user", "uid", "gid", "groups"),
    [
        (None, NOBODY.pw_uid, NOBODY.pw_gid, set(os.getgrouplist("nobody", NOBODY.pw_gid))),
        ("daemon", DAEMON.pw_uid, DAEMON.pw_gid, set(os.getgrouplist("daemon", DAEMON.pw_gid))),
        (str(DAEMON.pw_uid), DAEMON.pw_uid, DAEMON.pw_gid, set(os.getgrouplist("daemon", DAEMON.pw_gid))),
        ("4242:4343", 4242, 4343, {4343}),  # no passwd entry: exactly the ids given
        ("root", 0, 0, set(os.getgrouplist("root", 0))),  # asked for explicitly
    ],
)
def test_the_app_runs_as_its_user(tmp_path: Path, agent_factory, user, uid, gid, groups) -> None:
    agent = agent_factory()
    script = "cat data/motd.txt\nexec sleep 1000\n"
    files = {
        "start.sh": ("#!/bin/sh\n" + script, 0o755),
        "meta.ini": "name=who\nversion=1\n",
        "data/motd.txt": ("readable release file\n", 0o600),  # strict zip modes: the group still reads it
    }
    spec = {} if user is None else {"user": user}
    app = agent.deploy("who", make_zip(tmp_path / "who.zip", files), spec)["app"]
    assert app["phase"] == "Running" and app["spec"]["user"] == user
    status = ids(app["pid"])
    assert status["Uid"] == [uid] * 4 and status["Gid"] == [gid] * 4
    assert set(status["Groups"]) == groups
    wait_until(lambda: "readable release file" in log_lines(agent, "who"), what="the release file in the log")
    release = Path(os.readlink(f"/proc/{app['pid']}/cwd"))
    for path in (release, *release.rglob("*")):
        info = path.lstat()
        assert info.st_uid == os.geteuid(), f"{path}: the agent keeps owning the release"
        assert not path.is_symlink() and not info.st_mode & 0o020, f"{path}: the app's group may not write it"


def test_the_app_reaches_its_release_by_absolute_paths_and_no_one_else_does(root: Path) -> None:
    """Interpreters make the script's path absolute: the folders above the release must let the app through."""
    agent = Agent(root / "agent").start()
    try:
        files = {
            "start.sh": ("#!/bin/sh\nexec /usr/bin/python3 main.py\n", 0o755),
            "meta.ini": "name=py\nversion=1\n",
            "main.py": (
                "import os, helper, time\n"
                "print('imported', helper.X, os.listdir(os.path.dirname(os.path.abspath(__file__))), flush=True)\n"
                "time.sleep(1000)\n"
            ),
            "helper.py": "X = 42\n",
        }
        app = agent.deploy("py", make_zip(root / "py.zip", files))["app"]
        wait_until(lambda: any(line.startswith("imported 42") for line in log_lines(agent, "py")), what="the import")
        assert agent.app("py")["pid"] == app["pid"] and ids(app["pid"])["Uid"][0] == NOBODY.pw_uid
        release = Path(os.readlink(f"/proc/{app['pid']}/cwd"))
        for folder in (agent.data_dir, release.parent.parent, release.parent):
            assert folder.stat().st_mode & 0o007 == 0, f"{folder}: open to every user"
        # Another user gets nowhere: not into the data directory, not into the release.
        for path in (agent.data_dir, release):
            probe = subprocess.run(
                ["ls", str(path)],
                capture_output=True,
                check=False,
                user=DAEMON.pw_uid,
                group=DAEMON.pw_gid,
                extra_groups=[DAEMON.pw_gid],
            )
            assert probe.returncode != 0, f"user daemon listed {path}"
    finally:
        agent.kill_all()


@pytest.mark.parametrize(
    ("user", "words"),
    [
        ("no-such-user-x", "spec.user: 'no-such-user-x': no such user on this host"),
        ("nobody:no-such-group", "spec.user: 'nobody:no-such-group': no such group 'no-such-group' on this host"),
        ("4242", "spec.user: '4242': uid 4242 is not in the user database"),
        ("bad user", "spec.user: expected a user name or uid, optionally followed by :group or :gid, got 'bad user'"),
    ],
)
def test_a_bad_user_is_a_400_and_the_running_app_is_untouched(tmp_path: Path, agent_factory, user, words) -> None:
    agent = agent_factory()
    before = agent.deploy("keep", app_zip(tmp_path / "v1.zip", name="keep", version="1"))["app"]
    releases = sorted(p.name for p in (agent.data_dir / "apps" / "keep" / "releases").iterdir())
    for artifact in (app_zip(tmp_path / "v2.zip", name="keep", version="2"), None):  # new version; spec only
        with pytest.raises(APIError) as err:
            agent.deploy("keep", artifact, {"user": user})
        assert err.value.status == 400 and err.value.body["field"] == "user"
        assert words in err.value.body["error"]
    after = agent.app("keep")
    same = ("pid", "version", "artifact_sha256", "spec", "spec_hash", "phase", "restarts", "started_at")
    assert {k: after[k] for k in same} == {k: before[k] for k in same}
    assert ids(after["pid"])["Uid"][0] == NOBODY.pw_uid
    assert sorted(p.name for p in (agent.data_dir / "apps" / "keep" / "releases").iterdir()) == releases


AS_NOBODY = {"user": NOBODY.pw_uid, "group": NOBODY.pw_gid, "extra_groups": [NOBODY.pw_gid]}


def python_for_nobody() -> tuple[str, dict[str, str]]:
    """An interpreter nobody may run (a venv under /root is not one), with the agent's code on its path."""
    h11_dir = str(Path(h11.__file__).resolve().parents[1])
    path = os.pathsep.join([str(REPO / "agent" / "src"), h11_dir])
    for python in (sys.executable, "/usr/bin/python3"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            probe = [python, "-c", "import plum.agent.main"]
            subprocess.run(probe, env={"PYTHONPATH": path}, check=True, capture_output=True, timeout=30, **AS_NOBODY)
            return python, {"PYTHONPATH": path}
    pytest.skip("no Python interpreter that nobody may run")


def test_an_agent_that_is_not_root_runs_apps_as_itself_and_refuses_other_users(tmp_path: Path, root: Path) -> None:
    python, extra_env = python_for_nobody()
    data_dir = root / "unprivileged"
    data_dir.mkdir()
    os.chown(data_dir, NOBODY.pw_uid, NOBODY.pw_gid)
    agent = Agent(data_dir)
    log = agent.log_path.open("ab")
    command = [python, *agent.command[1:]]
    agent.proc = subprocess.Popen(
        command, env={**agent.env, **extra_env}, stdout=log, stderr=log, start_new_session=True, **AS_NOBODY
    )
    log.close()
    try:
        wait_until(agent._healthy, timeout=15, what="the agent running as nobody")
        zip_path = app_zip(root / "plain.zip", name="plain")
        zip_path.chmod(0o644)
        app = agent.deploy("plain", zip_path)["app"]
        assert ids(app["pid"])["Uid"][0] == NOBODY.pw_uid
        assert agent.deploy("plain", None, {"user": "nobody"})["app"]["spec"]["user"] == "nobody"
        with pytest.raises(APIError) as err:
            agent.deploy("plain", None, {"user": "daemon"})
        assert err.value.status == 400 and err.value.body["field"] == "user"
        assert "the agent runs as nobody" in err.value.body["error"] and "not as root" in err.value.body["error"]
    finally:
        agent.kill(signal.SIGKILL)
        for pid in agent.app_pids():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
