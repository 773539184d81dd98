"""plum_app's spec mapping, normalization, comparison and plan (plugins/module_utils/_spec.py)."""

from __future__ import annotations

import copy
import json

import pytest

pytest.importorskip("ansible")

from ansible_collections.plum.deploy.plugins.module_utils import _spec

from plum.agent.spec import AppSpec
from plum.common.resources import PortError, parse_port

SHA_A = "a" * 64
SHA_B = "b" * 64

# What the agent stores for an app deployed with no spec, as JSON: derived from the agent's own AppSpec, so that a
# new field or a new default there shows up here.
AGENT_DEFAULT_SPEC = json.loads(json.dumps(AppSpec().to_dict()))


def params(**values):
    out = dict.fromkeys(_spec.SPEC_OPTIONS)
    out.update(values)
    return out


def status(sha=SHA_A, desired="running", phase="Running", pid=42, spec=None, **more):
    data = {
        "name": "hello",
        "package": "hello",
        "version": "1.0.0",
        "desired": desired,
        "phase": phase,
        "pid": pid,
        "restarts": 0,
        "artifact_sha256": sha,
        "spec": copy.deepcopy(spec if spec is not None else AGENT_DEFAULT_SPEC),
    }
    data.update(more)
    return data


# -- build_spec --------------------------------------------------------------------------------


def test_only_options_that_are_set_are_sent():
    assert _spec.build_spec(params()) == {}
    spec = _spec.build_spec(params(env={"B": 2, "A": "x"}, stop_timeout=5, restart_policy="never"))
    assert spec == {
        "env": {"A": "x", "B": "2"},
        "stop_timeout": 5.0,
        "restart_policy": "never",
    }
    assert list(spec["env"]) == ["A", "B"]


def test_docker_options_pass_straight_into_the_spec():
    spec = _spec.build_spec(
        params(
            image="web:1.4",
            base_image="debian:12",
            pull_policy="never",
            memory="512m",
            cpus=1.5,
            network_mode="bridge",
            ports=["127.0.0.1:8081:8080", "53:53/udp"],
            host_lib_paths=["/usr/lib/x"],
            seccomp_unconfined=True,
            runtime="docker",
        )
    )
    assert spec == {
        "image": "web:1.4",
        "base_image": "debian:12",
        "pull_policy": "never",
        "memory": "512m",
        "cpus": 1.5,
        "network_mode": "bridge",
        "ports": ["127.0.0.1:8081:8080", "53:53/udp"],
        "host_lib_paths": ["/usr/lib/x"],
        "seccomp_unconfined": True,
        "runtime": "docker",
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GOOD": True}, "must be a string or a number"),
        ({"1BAD": "x"}, "invalid variable name"),
        ({"PLUM_APP_NAME": "x"}, "set by the agent"),
        ({"A": ["x"]}, "must be a string or a number"),
    ],
)
def test_bad_env_is_refused_before_anything_is_sent(env, message):
    with pytest.raises(_spec.SpecError, match=message):
        _spec.build_spec(params(env=env))


# -- normalization as the agent does it -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("512m", 512 * 1024 * 1024),
        ("1g", 1024**3),
        ("1.5g", int(1.5 * 1024**3)),
        ("512MiB", 512 * 1024 * 1024),
        ("536870912", 536870912),
        (536870912, 536870912),
        ("64mb", 64 * 1024 * 1024),
    ],
)
def test_memory_like_the_agent(value, expected):
    assert _spec.memory_bytes(value) == expected


@pytest.mark.parametrize("value", ["1x", "5m", "", "MiB", True])
def test_bad_memory(value):
    with pytest.raises(_spec.SpecError, match="memory"):
        _spec.memory_bytes(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8080:80", "8080:80/tcp"),
        ("127.0.0.1:53:53/udp", "127.0.0.1:53:53/udp"),
        ("[::1]:8080:80", "[::1]:8080:80/tcp"),
        ("08080:080/tcp", "8080:80/tcp"),
    ],
)
def test_ports_like_the_agent(value, expected):
    assert _spec.port_mapping(value) == expected


@pytest.mark.parametrize("value", ["a:80:80", "70000:80", "1.2.3:80:80", "80:80/UDP"])
def test_bad_ports(value):
    with pytest.raises(_spec.SpecError, match="ports"):
        _spec.port_mapping(value)


def test_images_get_latest_like_the_agent():
    assert _spec.image_reference("web") == "web:latest"
    assert _spec.image_reference("registry:5000/team/web") == "registry:5000/team/web:latest"
    assert _spec.image_reference("web:1.4") == "web:1.4"
    assert _spec.image_reference("web@sha256:" + "0" * 64) == "web@sha256:" + "0" * 64


def test_same_values_in_the_users_form_are_no_change():
    current = dict(
        AGENT_DEFAULT_SPEC,
        runtime="docker",
        memory=536870912,
        cpus=1.5,
        ports=["8080:80/tcp"],
        image="web:latest",
        host_lib_paths=["/usr/lib"],
        env={"A": "1"},
    )
    spec = _spec.build_spec(
        params(
            runtime="docker",
            memory="512m",
            cpus=1.5,
            ports=["8080:80"],
            image="web",
            host_lib_paths=["/usr/lib/"],
            env={"A": 1},
        )
    )
    assert _spec.spec_changes(spec, current) == []


def test_changes_are_named_by_field():
    current = dict(AGENT_DEFAULT_SPEC, env={"A": "1"}, stop_timeout=5.0)
    spec = _spec.build_spec(params(env={"A": "2"}, restart_policy="never"))
    assert _spec.spec_changes(spec, current) == [
        "env",
        "restart_policy",
        "stop_timeout",
    ]


def test_options_left_out_go_back_to_the_agents_defaults():
    current = dict(AGENT_DEFAULT_SPEC, env={"A": "1"}, pull_policy="always")
    assert _spec.spec_changes({}, current) == ["env", "pull_policy"]
    assert _spec.spec_changes({}, AGENT_DEFAULT_SPEC) == []


def test_an_older_agent_without_docker_fields_is_no_change():
    old = {k: AGENT_DEFAULT_SPEC[k] for k in _spec.SPEC_DEFAULTS}
    assert _spec.spec_changes({}, old) == []


def test_the_modules_defaults_are_the_agents():
    assert _spec.normalized({}) == AGENT_DEFAULT_SPEC
    assert set(_spec.ALL_DEFAULTS) == set(AGENT_DEFAULT_SPEC)


def test_an_older_agent_without_the_user_field_is_no_change():
    old = {k: v for k, v in AGENT_DEFAULT_SPEC.items() if k != "user"}
    assert _spec.spec_changes({}, old) == []
    assert _spec.spec_changes(_spec.build_spec(params(user="app")), old) == ["user"]


def test_unknown_fields_of_a_newer_agent():
    newer = dict(AGENT_DEFAULT_SPEC, future_knob=None)
    assert _spec.spec_changes({}, newer) == []
    assert _spec.spec_changes({}, dict(newer, future_knob="set")) == ["future_knob"]


# -- plan -------------------------------------------------------------------------------------


def test_new_app_started():
    plan = _spec.plan("hello", "started", None, SHA_A, {}, version="1.0.0", package="hello")
    assert (plan.actions, plan.upload, plan.changed) == (["deploy"], True, True)
    assert plan.after["state"] == "running"
    assert plan.after["version"] == "1.0.0"
    assert plan.after["artifact_sha256"] == SHA_A
    assert plan.after["spec"] == AGENT_DEFAULT_SPEC


def test_new_app_needs_an_artifact_or_an_image():
    with pytest.raises(_spec.SpecError, match="does not exist"):
        _spec.plan("hello", "started", None, None, None)
    plan = _spec.plan("web", "started", None, None, {"image": "web:1"})
    assert (plan.actions, plan.upload) == (["deploy"], False)


def test_image_app_is_named_after_the_app_and_the_images_tag_like_the_agent():
    plan = _spec.plan("web", "started", None, None, {"image": "registry:5000/team/web:1.4"})
    assert (
        plan.after["package"],
        plan.after["version"],
        plan.after["artifact_sha256"],
    ) == ("web", "1.4", None)
    assert _spec.plan("web", "present", None, None, {"image": "web"}).after["version"] == "latest"
    upgrade = _spec.plan("web", "started", status(), None, {"image": "web:2"})
    assert (
        upgrade.after["package"],
        upgrade.after["version"],
        upgrade.after["artifact_sha256"],
    ) == ("web", "2", None)


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        ("web", "latest"),
        ("web:1.4", "1.4"),
        ("registry:5000/team/web", "latest"),
        ("web@sha256:" + "0" * 64, "latest"),
    ],
)
def test_image_tag_like_the_agent(image, tag):
    assert _spec.image_tag(image) == tag


@pytest.mark.parametrize("state", ["started", "present", "stopped", "restarted", "absent"])
def test_ladder_second_run_changes_nothing_but_restarted(state):
    desired = {
        "started": "running",
        "present": "running",
        "stopped": "stopped",
        "restarted": "running",
    }
    current = None if state == "absent" else status(desired=desired[state], pid=None if state == "stopped" else 7)
    plan = _spec.plan("hello", state, current, None if state == "absent" else SHA_A, {})
    assert plan.actions == (["restart"] if state == "restarted" else [])
    assert plan.upload is False


@pytest.mark.parametrize(
    ("running_as", "wanted", "changes"),
    [
        (None, "app", ["user"]),  # the agent's default user -> a user of its own
        ("app", "other:staff", ["user"]),
        ("app", None, ["user"]),  # option removed: back to the agent's default
        ("app", "app", []),
        ("1000:1000", "1000:1000", []),
    ],
)
def test_a_changed_user_redeploys_the_app(running_as, wanted, changes):
    current = status(spec=dict(AGENT_DEFAULT_SPEC, user=running_as))
    spec = _spec.build_spec(params(user=wanted))
    assert ("user" in spec) is (wanted is not None)
    plan = _spec.plan("hello", "started", current, SHA_A, spec)
    assert plan.actions == (["deploy"] if changes else [])
    assert plan.upload is False  # the same artifact: only the spec is sent
    if changes:
        assert plan.reasons == ["spec changes: user"]
        assert plan.after["spec"]["user"] == wanted


def test_an_app_left_in_the_old_runtime_by_a_mode_change_is_redeployed():
    moved = status(runtime="process", runtime_on_deploy="docker")
    plan = _spec.plan("hello", "started", moved, SHA_A, {})
    assert (plan.actions, plan.upload) == (["deploy"], False)
    assert plan.reasons == ["the agent now runs it as docker (it runs as process)"]
    settled = status(runtime="docker", runtime_on_deploy="docker")
    assert _spec.plan("hello", "started", settled, SHA_A, {}).actions == []
    # Without the spec in hand (only start/stop managed), the module cannot redeploy it as it is.
    assert _spec.plan("hello", "started", moved, None, None).actions == []


def test_same_artifact_new_spec_is_deployed_without_upload():
    plan = _spec.plan("hello", "started", status(), SHA_A, {"env": {"A": "1"}})
    assert (plan.actions, plan.upload) == (["deploy"], False)
    assert plan.reasons == ["spec changes: env"]
    assert plan.after["spec"]["env"] == {"A": "1"}


def test_new_artifact_is_uploaded():
    plan = _spec.plan("hello", "started", status(), SHA_B, {}, version="2.0.0", package="hello")
    assert (plan.actions, plan.upload) == (["deploy"], True)
    assert plan.after["version"] == "2.0.0"
    assert plan.reasons[0].startswith("new artifact bbbbbbbbbbbb")


def test_run_state_only_without_artifact_or_spec():
    current = status(env={"A": "1"})
    assert _spec.plan("hello", "started", current).actions == []
    assert _spec.plan("hello", "stopped", current).actions == ["stop"]
    assert _spec.plan("hello", "restarted", current).actions == ["restart"]
    stopped = status(desired="stopped", phase="Stopped", pid=None)
    assert _spec.plan("hello", "started", stopped).actions == ["start"]
    assert _spec.plan("hello", "present", stopped).actions == []


def test_stopped_stops_first_then_deploys_stopped():
    plan = _spec.plan("hello", "stopped", status(), SHA_B, {})
    assert plan.actions == ["stop", "deploy-stopped"]
    assert plan.after["state"] == "stopped"


def test_present_deploys_without_changing_the_run_state():
    assert _spec.plan("hello", "present", None, SHA_A, {}).after["state"] == "stopped"
    running = _spec.plan("hello", "present", status(), SHA_B, {})
    assert running.actions == ["deploy-stopped"]
    assert running.after["state"] == "running"


def test_failed_app_is_started_again_but_a_finished_one_shot_is_left_alone():
    failed = status(phase="Failed", pid=None)
    assert _spec.plan("hello", "started", failed).actions == ["start"]
    done = status(
        phase="Completed",
        pid=None,
        spec=dict(AGENT_DEFAULT_SPEC, restart_policy="on-failure"),
    )
    assert _spec.plan("hello", "started", done).actions == []
    crashing = status(phase="BackOff", pid=None)
    assert _spec.plan("hello", "started", crashing).actions == [], "the agent is restarting it; wait reports it"


def test_absent():
    assert _spec.plan("hello", "absent", None).actions == []
    plan = _spec.plan("hello", "absent", status())
    assert plan.actions == ["delete"]
    assert plan.after == {"state": "absent"}


def test_view_for_diff():
    assert _spec.view(None) == {"state": "absent"}
    view = _spec.view(status())
    assert view["state"] == "running"
    assert view["version"] == "1.0.0"
    assert list(view["spec"]) == sorted(AGENT_DEFAULT_SPEC)


@pytest.mark.parametrize(
    "value",
    [
        "80",
        "80/udp",
        "127.0.0.1::80",
        "8080:80",
        "127.0.0.1:8080:80/udp",
        "[::1]:8443:443",
    ],
)
def test_port_mapping_matches_the_agents_canonical_form(value):
    assert _spec.port_mapping(value) == parse_port(value).canonical()


@pytest.mark.parametrize("value", [":80", "0", "70000", "a:80", "1.2.3.4:80"])
def test_port_mapping_refuses_what_the_agent_refuses(value):
    with pytest.raises(_spec.SpecError):
        _spec.port_mapping(value)
    with pytest.raises(PortError):
        parse_port(value)
