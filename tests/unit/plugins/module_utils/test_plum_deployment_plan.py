"""plum_deployment's options, entry and plan (plugins/module_utils/_deployment_plan.py)."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("ansible")

from ansible_collections.plum.deploy.plugins.module_utils import _deployment_plan as dp

APP_V1 = {"artifactId": "app1", "name": "hello", "version": "1.0.0", "sha256": "a" * 64, "type": "zip"}
APP_V2 = {"artifactId": "app2", "name": "hello", "version": "2.0.0", "sha256": "b" * 64, "type": "zip"}
APPS = {a["artifactId"]: a for a in (APP_V1, APP_V2)}
DEFAULTS = dp.wanted_settings({})


def entry(replicas=None, desired=None, placement=None, app=APP_V1, **settings):
    out = {
        "position": 0,
        "artifactId": app["artifactId"],
        "appName": app["name"],
        "appVersion": app["version"],
        **DEFAULTS,
        "replicas": {"n1": 1, "n2": 1} if replicas is None else replicas,
    }
    out.update(settings)
    if desired is not None:
        out["desiredReplicas"] = desired
        out["placement"] = placement or {}
    return out


def detail(status="Running", labels=None, rollout=None, **entry_args):
    return {
        "deployment": {
            "DeploymentID": "d" * 32,
            "Name": "web",
            "Labels": labels or {},
            "Status": status,
            "rollout": rollout,
        },
        "assignments": [],
        "entries": [entry(**entry_args)],
    }


def run_plan(
    state="started",
    current=None,
    app=APP_V1,
    app_action=None,
    settings=DEFAULTS,
    replicas=None,
    labels=None,
    update=None,
):
    before = dp.view(current, APPS)
    return dp.plan(
        "web",
        state,
        current,
        before,
        app=app,
        app_action=app_action,
        settings=settings,
        replicas=replicas,
        labels=labels,
        update=update,
    )


def placed(count, nodes=None, node_labels=None):
    return dp.wanted_replicas(count, nodes, node_labels)


def pinned(counts):
    return dp.wanted_replicas(counts, None, None)


# -- the options -------------------------------------------------------------------------------


def test_every_setting_is_declared_once_and_reaches_the_argument_spec():
    spec = dp.argument_spec()
    for setting in dp.SETTINGS:
        assert spec[setting.option] == setting.spec
    assert spec["restart_policy"]["choices"] == list(dp.RESTART_POLICIES)
    assert {"replicas", "nodes", "node_labels", "wait", "wait_timeout", "controller_url"} <= set(spec)
    assert set(dp.wanted_settings({})) == set(dp.SETTING_KEYS)


def test_replicas_forms():
    assert dp.wanted_replicas(None, None, None) is None
    assert pinned({"b": "2", "a": 1}).pinned == {"a": 1, "b": 2}
    every = placed("3")
    assert (every.count, every.placement, every.pinned) == (3, {}, None)
    some = placed(2, ["y", "x"], {"zone": "eu", "tier": 1})
    assert some.placement == {"nodes": ["x", "y"], "labels": {"tier": "1", "zone": "eu"}}


@pytest.mark.parametrize(
    ("replicas", "nodes", "node_labels", "message"),
    [
        ({"a": 1}, ["a"], None, "not both"),
        ({"a": 1}, None, {"zone": "eu"}, "not both"),
        ({"a": -1}, None, None, "whole number >= 0"),
        ({"a": "two"}, None, None, "whole number >= 0"),
        ({"a": 1.5}, None, None, "whole number >= 0"),
        ({"-bad": 1}, None, None, "not a node id"),
        ("many", ["a"], None, "expected a dictionary of node: count, or a number"),
        (True, ["a"], None, "expected a dictionary"),
        (None, ["a"], None, "only used with replicas as a number"),
        (None, None, {"zone": "eu"}, "only used with replicas as a number"),
        (2, ["a", "a"], None, "lists a node twice"),
        (2, [], None, "at least one node"),
        (2, ["a b"], None, "not a node id"),
    ],
)
def test_bad_replicas(replicas, nodes, node_labels, message):
    with pytest.raises(dp.ParamError, match=message):
        dp.wanted_replicas(replicas, nodes, node_labels)


def test_ports_for_the_controller():
    assert dp.port_item("8080:80") == {"host": 8080, "container": 80, "protocol": "tcp"}
    assert dp.port_item("53/udp") == {"container": 53, "protocol": "udp"}
    with pytest.raises(dp.ParamError, match="takes no host IP"):
        dp.port_item("127.0.0.1:8080:80")
    with pytest.raises(dp.ParamError, match="not from 1 to 65535"):
        dp.port_item("0:80")


def test_settings_in_the_controllers_stored_form():
    settings = dp.wanted_settings(
        {"start_cmd": "./run", "env": {"B": 1, "A": "x"}, "memory": " 512M ", "cpus": 0.5, "ports": ["8080:80"]}
    )
    assert settings == {
        "startCmd": "./run",
        "runtime": "",
        "image": "",
        "env": {"A": "x", "B": "1"},
        "memory": "512m",
        "cpus": 0.5,
        "networkMode": "",
        "restartPolicy": "",
        "ports": [{"host": 8080, "container": 80, "protocol": "tcp"}],
    }
    assert dp.settings_changes(settings, dict(settings)) == []
    assert dp.settings_changes(settings, dict(settings, memory="1g")) == ["memory"]
    assert dp.settings_changes(DEFAULTS, {"startCmd": "", "env": {}, "cpus": None, "ports": []}) == []
    with pytest.raises(dp.ParamError, match="quote it"):
        dp.wanted_settings({"env": {"A": True}})
    with pytest.raises(dp.ParamError, match="cannot be overridden"):
        dp.wanted_settings({"env": {"PLUM_APP_HOME": "/"}})


def test_the_task_manages_the_settings_when_it_names_the_app_or_a_setting():
    assert not dp.manages_settings({"state": "stopped", "remote_src": None, "cpus": None})
    assert dp.manages_settings({"artifact_sha256": "a" * 64})
    assert dp.manages_settings({"cpus": 1.0})


def test_split_image():
    assert dp.split_image("web") == ("web", "latest")
    assert dp.split_image("registry:5000/team/web:1.4") == ("registry:5000/team/web", "1.4")
    with pytest.raises(dp.ParamError, match="digests"):
        dp.split_image("web@sha256:" + "0" * 64)


def test_apps_are_found_or_planned():
    assert dp.resolve_app([APP_V1], "web", APP_V1["sha256"], None, None) == (APP_V1, None)
    app, action = dp.resolve_app([APP_V1], "web", "c" * 64, {"name": "hello", "version": "3"}, None)
    assert action == "upload"
    assert app == {"artifactId": dp.PENDING, "sha256": "c" * 64, "type": "zip", "name": "hello", "version": "3"}
    image = {"artifactId": "i1", "type": "image", "imageRepository": "reg/web", "imageTag": "1.4"}
    assert dp.resolve_app([image], "web", None, None, "reg/web:1.4") == (image, None)
    app, action = dp.resolve_app([image], "my web", None, None, "reg/web:1.5")
    assert action == "register-image"
    assert (app["name"], app["version"], app["imageTag"]) == ("my-web", "1.5", "1.5")
    assert dp.resolve_app([], "web", None, None, None) == (None, None)


# -- create ------------------------------------------------------------------------------------


def test_create_with_replicas_placed_by_the_controller():
    plan = run_plan(replicas=placed(3, ["n1", "n2"]), labels={"team": "a"})
    assert plan.actions == ["create", "start"]
    assert plan.reasons == ["the deployment does not exist"]
    assert plan.create == {
        "name": "web",
        "entries": [{"artifactId": "app1", "replicas": 3, "placement": {"nodes": ["n1", "n2"]}}],
        "labels": {"team": "a"},
    }
    assert plan.patch is None
    assert plan.after["replicas"] == 3
    assert plan.after["placement"] == {"nodes": ["n1", "n2"]}
    assert plan.after["state"] == "Running"
    assert not plan.rolls_out


def test_create_pinned_sends_only_the_nodes_that_get_replicas_and_only_the_settings_set():
    settings = dp.wanted_settings({"env": {"A": 1}, "memory": "64m"})
    plan = run_plan(state="present", replicas=pinned({"n1": 2, "n2": 0}), settings=settings)
    assert plan.actions == ["create"]
    assert plan.create["entries"] == [{"artifactId": "app1", "replicas": {"n1": 2}, "env": {"A": "1"}, "memory": "64m"}]
    assert "labels" not in plan.create
    assert plan.after["state"] == "Stopped", "the controller creates a deployment stopped"
    assert (plan.after["replicas"], plan.after["placement"]) == ({"n1": 2}, None)


def test_create_uploads_the_app_first():
    pending = dict(APP_V2, artifactId=dp.PENDING)
    plan = run_plan(app=pending, app_action="upload", replicas=placed(1))
    assert plan.actions == ["upload", "create", "start"]
    assert plan.reasons[0] == "the controller has no app with sha256 bbbbbbbbbbbb"
    assert plan.create["entries"][0]["artifactId"] == dp.PENDING
    assert plan.after["app"] == {"name": "hello", "version": "2.0.0", "sha256": "b" * 64, "type": "zip"}


@pytest.mark.parametrize(
    ("app", "replicas", "message"),
    [(None, placed(1), "give src, remote_src or image"), (APP_V1, None, "give replicas")],
)
def test_create_needs_an_app_and_replicas(app, replicas, message):
    with pytest.raises(dp.ParamError, match=message):
        run_plan(app=app, replicas=replicas)


# -- no change -----------------------------------------------------------------------------------


def test_the_same_task_again_changes_nothing_and_the_after_is_the_before():
    current = detail(labels={"team": "a"}, replicas={"n1": 2, "n2": 1}, desired=3, placement={"nodes": ["n2", "n1"]})
    plan = run_plan(current=current, replicas=placed(3, ["n1", "n2"]), labels={"team": "a"})
    assert (plan.actions, plan.reasons, plan.patch) == ([], [], None)
    assert plan.after == dp.view(current, APPS)


def test_a_failover_that_moved_replicas_is_no_change():
    """The controller keeps the placement: where the replicas run now is not the task's business."""
    current = detail(replicas={"n2": 3}, desired=3, placement={"nodes": ["n1", "n2"]})
    plan = run_plan(current=current, replicas=placed(3, ["n1", "n2"]))
    assert plan.actions == []
    assert plan.after["replicas"] == 3


def test_options_not_given_keep_what_the_deployment_has():
    current = detail(labels={"team": "a"}, env={"A": "1"})
    plan = run_plan(state="started", current=current, app=None, settings=None, replicas=None, labels=None)
    assert plan.actions == []
    assert plan.after == dp.view(current, APPS)


# -- scale and placement -------------------------------------------------------------------------


def test_scale_placed_replicas_in_place():
    current = detail(replicas={"n1": 1, "n2": 1}, desired=2)
    plan = run_plan(current=current, replicas=placed(3))
    assert plan.actions == ["update"]
    assert plan.reasons == ["replicas 3 (now 2)"]
    assert plan.patch == {"entries": [{"replicas": 3, "placement": {}}]}
    assert not plan.rolls_out, "scaling is no rollout"
    assert plan.after["replicas"] == 3


def test_new_placement_is_an_update():
    current = detail(desired=2, placement={"nodes": ["n1", "n2"]})
    plan = run_plan(current=current, replicas=placed(2, None, {"zone": "eu"}))
    assert plan.actions == ["update"]
    assert plan.reasons == ["placement {'labels': {'zone': 'eu'}} (now {'nodes': ['n1', 'n2']})"]
    assert plan.patch == {"entries": [{"replicas": 2, "placement": {"labels": {"zone": "eu"}}}]}


def test_pinned_replicas_move_in_place_and_nodes_left_out_go_to_zero():
    current = detail(replicas={"n1": 1, "n2": 1})
    plan = run_plan(current=current, replicas=pinned({"n1": 2}))
    assert plan.actions == ["update"]
    assert plan.reasons == ["replica changes on n1, n2"]
    assert plan.patch == {"entries": [{"replicas": {"n1": 2, "n2": 0}}]}
    assert plan.after["replicas"] == {"n1": 2}


def test_pinned_to_placed_and_back():
    to_placed = run_plan(current=detail(replicas={"n1": 2}), replicas=placed(2))
    assert to_placed.reasons == ["2 replicas placed by the controller (pinned per node now)"]
    assert to_placed.patch == {"entries": [{"replicas": 2, "placement": {}}]}
    to_pinned = run_plan(current=detail(replicas={"n1": 1, "n2": 1}, desired=2), replicas=pinned({"n1": 2}))
    assert to_pinned.reasons == ["replicas pinned per node (the controller places 2)"]
    assert to_pinned.patch == {"entries": [{"replicas": {"n1": 2, "n2": 0}}]}
    assert to_pinned.after["placement"] is None


def test_labels_change_in_place():
    plan = run_plan(current=detail(labels={"team": "a"}), replicas=None, labels={"team": "b"})
    assert plan.actions == ["update"]
    assert plan.reasons == ["label changes"]
    assert plan.patch == {"labels": {"team": "b"}}
    assert plan.after["labels"] == {"team": "b"}


# -- rolling updates -------------------------------------------------------------------------------


def test_a_new_version_is_a_patch_rolled_out_never_a_replacement():
    plan = run_plan(current=detail(), app=APP_V2)
    assert plan.actions == ["update"]
    assert plan.reasons == ["new app hello 2.0.0 (running hello 1.0.0)"]
    assert plan.patch == {"entries": [{"artifactId": "app2"}]}
    assert plan.rolls_out
    assert plan.after["app"]["version"] == "2.0.0"
    assert "delete" not in plan.actions and plan.create is None


def test_new_settings_are_a_patch_of_the_changed_ones_only():
    settings = dp.wanted_settings({"env": {"GREETING": "hi"}, "memory": "64m"})
    plan = run_plan(current=detail(memory="64m"), settings=settings)
    assert plan.actions == ["update"]
    assert plan.reasons == ["setting changes: env"]
    assert plan.patch == {"entries": [{"env": {"GREETING": "hi"}}]}
    assert plan.rolls_out
    assert plan.after["env"] == {"GREETING": "hi"}


def test_settings_left_out_go_back_to_the_controllers_defaults():
    plan = run_plan(current=detail(env={"A": "1"}, cpus=0.5), settings=DEFAULTS)
    assert plan.patch == {"entries": [{"env": {}, "cpus": None}]}


def test_a_new_version_and_a_scale_go_in_one_patch():
    plan = run_plan(current=detail(desired=2), app=APP_V2, replicas=placed(4), labels={"x": "1"})
    assert plan.actions == ["update"]
    assert plan.patch == {"entries": [{"artifactId": "app2", "replicas": 4, "placement": {}}], "labels": {"x": "1"}}


def test_a_new_version_of_a_stopped_deployment_is_no_rollout():
    present = run_plan(state="present", current=detail(status="Stopped"), app=APP_V2)
    assert (present.actions, present.rolls_out) == (["update"], False)
    started = run_plan(state="started", current=detail(status="Stopped"), app=APP_V2)
    assert started.actions == ["update", "start"], "it starts on the new version"
    assert not started.rolls_out


def test_stopped_stops_before_the_update():
    plan = run_plan(state="stopped", current=detail(), app=APP_V2)
    assert plan.actions == ["stop", "update"]
    assert plan.reasons == ["new app hello 2.0.0 (running hello 1.0.0)", "the deployment is Running"]
    assert not plan.rolls_out
    assert plan.after["state"] == "Stopped"


def test_present_keeps_the_run_state_of_an_updated_deployment():
    plan = run_plan(state="present", current=detail(), app=APP_V2)
    assert plan.actions == ["update"]
    assert plan.after["state"] == "Running"
    assert plan.rolls_out


def test_the_update_policy_goes_with_the_create_and_with_a_rollout_only():
    policy = dp.wanted_update({"max_unavailable": 2, "min_healthy_seconds": None, "auto_rollback": False})
    assert policy == {"maxUnavailable": 2, "autoRollback": False}
    assert dp.wanted_update({"max_unavailable": None}) is None
    assert dp.wanted_update(None) is None
    assert run_plan(replicas=placed(1), update=policy).create["update"] == policy
    assert run_plan(current=detail(), app=APP_V2, update=policy).patch == {
        "entries": [{"artifactId": "app2"}],
        "update": policy,
    }
    assert run_plan(current=detail(desired=2), replicas=placed(3), update=policy).patch == {
        "entries": [{"replicas": 3, "placement": {}}]
    }, "a scale rolls nothing out"
    assert run_plan(current=detail(), update=policy).actions == [], "the policy alone is no change"


def test_update_suboptions_are_declared_once():
    options = dp.argument_spec()["update"]["options"]
    assert options == {s.option: s.spec for s in dp.UPDATE_POLICY}


# -- start, stop, absent ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "status", "actions"),
    [
        ("started", "Stopped", ["start"]),
        ("started", "Running", []),
        ("stopped", "Running", ["stop"]),
        ("stopped", "Stopped", []),
        ("present", "Running", []),
        ("present", "Stopped", []),
    ],
)
def test_run_state(state, status, actions):
    plan = run_plan(state=state, current=detail(status=status), app=None, settings=None)
    assert plan.actions == actions
    assert plan.after["state"] == {"started": "Running", "stopped": "Stopped"}.get(state, status)


def test_absent():
    assert run_plan(state="absent", current=detail()).actions == ["delete"]
    gone = run_plan(state="absent", current=None)
    assert (gone.actions, gone.after) == ([], {"state": "absent"})


def test_unknown_state():
    with pytest.raises(dp.ParamError, match="unknown state"):
        run_plan(state="restarted", current=detail())


# -- the view -------------------------------------------------------------------------------------


def test_view_of_placed_and_pinned_entries():
    placed_view = dp.view(detail(replicas={"n1": 2}, desired=2, placement={"labels": {"z": "eu"}, "nodes": []}), APPS)
    assert (placed_view["replicas"], placed_view["placement"]) == (2, {"labels": {"z": "eu"}})
    pinned_view = dp.view(detail(replicas={"n1": 2, "n2": 0}), APPS)
    assert (pinned_view["replicas"], pinned_view["placement"]) == ({"n1": 2}, None)
    assert pinned_view["app"] == {"name": "hello", "version": "1.0.0", "sha256": "a" * 64, "type": "zip"}
    assert dp.view(None, APPS) == {"state": "absent"}


def test_the_plan_does_not_touch_its_inputs():
    current = detail()
    saved = copy.deepcopy(current)
    run_plan(current=current, app=APP_V2, replicas=placed(3), labels={"a": "b"})
    assert current == saved
