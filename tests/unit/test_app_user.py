"""Who an app runs as: the spec's `user`, AGENT_APP_USER for a root agent, the agent itself otherwise."""

from __future__ import annotations

import errno
import os
import pwd
import stat

import pytest

from plum.agent import appuser
from plum.agent.appuser import UserError
from plum.agent.config import AgentConfig
from plum.agent.runtimes.base import Launch
from plum.agent.runtimes.process import ProcessRuntime, env_as, switch_to
from plum.agent.spec import AppSpec, SpecError, parse_spec
from plum.common.config import ConfigError

NOBODY = pwd.getpwnam("nobody")


@pytest.mark.parametrize("value", ["nobody", "www-data", "1000", "1000:1000", "app:staff", "svc_1:0", 33])
def test_user_syntax_accepted(value):
    assert parse_spec({"user": value}).user == str(value)


@pytest.mark.parametrize(
    "value",
    ["", "a b", "-x", "x:", ":x", "1:2:3", "../x", "4294967295", True, 1.5, ["x"]],
)
def test_user_syntax_refused_with_the_field_and_value(value):
    with pytest.raises(SpecError) as err:
        parse_spec({"user": value})
    assert err.value.field == "user" and repr(value) in err.value.message


def test_user_unset_keeps_the_digest_of_specs_saved_before_it_existed():
    assert parse_spec({}).digest() == parse_spec({"user": None}).digest()
    assert parse_spec({"user": "nobody"}).digest() != parse_spec({}).digest()
    assert "user" not in AppSpec().digest()  # the field is left out at its default


def test_resolve_a_name_a_uid_and_uid_gid():
    by_name = appuser.resolve("nobody")
    assert (by_name.uid, by_name.gid, by_name.name) == (
        NOBODY.pw_uid,
        NOBODY.pw_gid,
        "nobody",
    )
    assert NOBODY.pw_gid in by_name.groups
    assert appuser.resolve(str(NOBODY.pw_uid)) == by_name
    without_entry = appuser.resolve("4242:4343")
    assert (
        without_entry.uid,
        without_entry.gid,
        without_entry.groups,
        without_entry.name,
    ) == (
        4242,
        4343,
        (4343,),
        None,
    )
    assert appuser.resolve("nobody:0").gid == 0


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("no-such-user-here", "'no-such-user-here': no such user on this host"),
        ("nobody:no-such-group", "no such group 'no-such-group'"),
        ("4242", "uid 4242 is not in the user database"),
    ],
)
def test_resolve_names_what_does_not_exist(value, words):
    with pytest.raises(UserError, match=words):
        appuser.resolve(value)


def test_a_root_agent_runs_apps_as_the_default_user_unless_the_spec_names_one(
    monkeypatch,
):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert appuser.run_as(None, "nobody").uid == NOBODY.pw_uid  # type: ignore[union-attr]
    assert appuser.run_as("daemon", "nobody").name == "daemon"  # type: ignore[union-attr]


def test_an_agent_that_is_not_root_refuses_other_users(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: NOBODY.pw_uid)
    monkeypatch.setattr(os, "getegid", lambda: NOBODY.pw_gid)
    assert appuser.run_as(None, "nobody") is None  # runs as the agent itself, no switch
    assert appuser.run_as("nobody", "root") is None
    with pytest.raises(UserError, match=r"the agent runs as nobody .* not as root") as err:
        appuser.run_as("daemon", "nobody")
    assert "'daemon'" in str(err.value)
    with pytest.raises(UserError):
        appuser.run_as("nobody:0", "nobody")  # its own user, another group


def test_preflight_is_a_spec_error_naming_the_field(tmp_path):
    runtime = ProcessRuntime("nobody")
    with pytest.raises(SpecError) as err:
        runtime.preflight("app", parse_spec({"user": "no-such-user-here"}), None)
    assert err.value.field == "user" and "no-such-user-here" in err.value.message


def test_the_app_environment_names_its_user(tmp_path):
    launch = Launch(
        "a",
        "a-1",
        "1",
        tmp_path,
        tmp_path,
        tmp_path / "log",
        AppSpec(),
        None,
        {"HOME": "/root", "X": "1"},
    )
    env = env_as(launch, appuser.resolve("nobody"))
    assert (env["USER"], env["LOGNAME"], env["HOME"], env["X"]) == (
        "nobody",
        "nobody",
        NOBODY.pw_dir,
        "1",
    )
    assert "HOME" not in env_as(launch, appuser.resolve("4242:4242"))
    own = Launch(
        "a",
        "a-1",
        "1",
        tmp_path,
        tmp_path,
        tmp_path / "l",
        AppSpec(env={"HOME": "/srv"}),
        None,
        {"HOME": "/srv"},
    )
    assert env_as(own, appuser.resolve("nobody"))["HOME"] == "/srv"  # the spec's own value wins
    assert env_as(launch, None) == launch.env
    assert switch_to(None) == {}
    assert switch_to(appuser.resolve("4242:4343")) == {
        "user": 4242,
        "group": 4343,
        "extra_groups": [4343],
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's group needs root")
def test_share_release_gives_read_never_write_to_the_group(tmp_path):
    release = tmp_path / "release"
    (release / "bin").mkdir(parents=True)
    (release / "start.sh").write_text("#!/bin/sh\n")
    os.chmod(release / "start.sh", 0o750)  # noqa: S103 - the modes under test
    (release / "bin" / "data.txt").write_text("x")
    os.chmod(release / "bin" / "data.txt", 0o660)
    (release / "link").symlink_to("start.sh")
    appuser.share_release(release, 4343)
    modes = {p.name: (p.lstat().st_gid, stat.S_IMODE(p.lstat().st_mode)) for p in [release, *release.rglob("*")]}
    assert modes["start.sh"] == (4343, 0o750)
    assert modes["data.txt"] == (4343, 0o640)  # group write taken away
    assert modes["bin"][0] == 4343 and modes["bin"][1] & 0o070 == 0o050
    assert modes["link"][0] == 4343
    assert all(os.stat(p).st_uid == os.geteuid() for p in release.rglob("*"))  # the agent still owns it


def test_agent_app_user_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("AGENT_DATA_DIR", str(tmp_path))
    assert AgentConfig.load().app_user == "nobody"
    monkeypatch.setenv("AGENT_APP_USER", "bad user")
    with pytest.raises(ConfigError, match="AGENT_APP_USER: expected a user name or uid"):
        AgentConfig.load()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("AGENT_APP_USER", "no-such-user-here")
    with pytest.raises(ConfigError, match="AGENT_APP_USER: 'no-such-user-here': no such user"):
        AgentConfig.load()


class RecordingEngine:
    """Just enough of docker.APIClient to see what a container is created with."""

    def __init__(self) -> None:
        self.created: dict = {}

    def create_host_config(self, **config):
        return config

    def create_container(self, image, **kwargs):
        self.created = dict(kwargs, image=image)
        return {"Id": "c1"}

    def start(self, cid):
        pass

    def inspect_container(self, cid):
        return {"State": {"Pid": 7, "Running": True}, "NetworkSettings": {"Ports": {}}}


@pytest.mark.parametrize(("user", "owner"), [(None, None), ("web", None), ("4242:4343", (4242, 4343))])
def test_docker_containers_get_the_spec_user(tmp_path, monkeypatch, user, owner):
    from test_docker_helpers import make_config, make_launch  # noqa: PLC0415 - the Docker runtime's test helpers

    from plum.agent.runtimes.docker import calls  # noqa: PLC0415
    from plum.agent.runtimes.docker.engine import EngineFacts  # noqa: PLC0415
    from plum.agent.runtimes.docker.plan import plan_container  # noqa: PLC0415

    engine = RecordingEngine()
    monkeypatch.setattr(calls, "ensure_image", lambda api, image, policy: None)
    spec = {"image": "app:1"} if user is None else {"image": "app:1", "user": user}
    plan = plan_container(make_launch(tmp_path, spec, zip_app=False), make_config(tmp_path), EngineFacts())
    assert plan.user == user
    calls.create_and_start(engine, plan)
    assert engine.created["user"] == user and engine.created["image"] == "app:1"
    if owner is not None and os.geteuid() == 0:  # a numeric user owns the data dir mounted at /app/data
        info = (tmp_path / "appdata").stat()
        assert (info.st_uid, info.st_gid) == owner


def named_users(folder) -> dict[int, int]:
    return {ident: perm for (tag, ident), perm in appuser._read_acl(folder).items() if tag == appuser._USER}


def test_grant_search_adds_one_acl_entry_per_user_and_keeps_the_mode(tmp_path):
    folder = tmp_path / "private"
    folder.mkdir(mode=0o750)
    folder.chmod(0o750)
    appuser.grant_search(folder, 4242)
    appuser.grant_search(folder, 4343)
    blob = os.getxattr(folder, appuser.ACL_XATTR)
    appuser.grant_search(folder, 4242)  # already there: nothing written
    assert os.getxattr(folder, appuser.ACL_XATTR) == blob
    assert named_users(folder) == {4242: 0o1, 4343: 0o1}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750  # nothing opened to other users


def test_open_path_to_stops_at_the_data_directory(tmp_path):
    data = tmp_path / "data"
    release = data / "apps" / "a" / "releases" / "r1"
    release.mkdir(parents=True)
    appuser.open_path_to(release, data, 4242)
    touched = [
        p
        for p in (
            tmp_path,
            data,
            data / "apps",
            data / "apps" / "a",
            release.parent,
            release,
        )
        if named_users(p)
    ]
    assert touched == [data, data / "apps", data / "apps" / "a", release.parent]
    appuser.open_path_to(tmp_path / "elsewhere" / "r", data, 4343)  # not under the data directory: nothing
    assert 4343 not in named_users(data)


def test_without_acls_the_folder_becomes_searchable_only(tmp_path, monkeypatch):
    folder = tmp_path / "private"
    folder.mkdir()
    folder.chmod(0o750)

    def no_acls(*args, **kwargs):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", no_acls)
    appuser.grant_search(folder, 4242)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o751


def test_a_release_mounted_into_an_image_of_unknown_user_is_readable_and_runnable_never_writable(
    tmp_path,
):
    release = tmp_path / "r1"
    (release / "lib").mkdir(parents=True)
    (release / "start.sh").write_text("#!/bin/sh\n")
    (release / "lib" / "data.txt").write_text("x")
    for path, extracted_mode in (
        (release / "start.sh", 0o750),
        (release / "lib", 0o750),
        (release, 0o750),
    ):
        os.chmod(path, extracted_mode)  # the modes extraction gives
    os.chmod(release / "lib" / "data.txt", 0o640)

    appuser.open_release_to_any_user(release)

    def mode(path):
        return stat.S_IMODE(path.lstat().st_mode)

    assert mode(release) == 0o755
    assert mode(release / "lib") == 0o755
    assert mode(release / "start.sh") == 0o755
    assert mode(release / "lib" / "data.txt") == 0o644
