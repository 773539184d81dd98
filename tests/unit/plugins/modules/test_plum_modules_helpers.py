"""Pure helpers of the modules: replicas, ports and settings for the controller, times and messages."""

from __future__ import annotations

import pytest

pytest.importorskip("ansible")

from ansible_collections.plum.deploy.plugins.module_utils import _spec
from ansible_collections.plum.deploy.plugins.modules import plum_app, plum_deployment

from plum.common.resources import RESERVED_ENV

# -- plum_deployment ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "nodes", "expected"),
    [
        (4, ["a", "b", "c"], {"a": 2, "b": 1, "c": 1}),
        (3, ["a", "b", "c"], {"a": 1, "b": 1, "c": 1}),
        (1, ["a", "b"], {"a": 1, "b": 0}),
        (0, ["a"], {"a": 0}),
    ],
)
def test_spread(total, nodes, expected):
    assert plum_deployment.spread(total, nodes) == expected


def test_replicas_forms():
    assert plum_deployment.wanted_replicas(None, None) is None
    assert plum_deployment.wanted_replicas({"b": "2", "a": 1}, None) == {"a": 1, "b": 2}
    assert plum_deployment.wanted_replicas("3", ["x", "y"]) == {"x": 2, "y": 1}
    assert plum_deployment.wanted_replicas(2, ["x"]) == {"x": 2}


@pytest.mark.parametrize(
    ("replicas", "nodes", "message"),
    [
        (3, None, "give the nodes to spread it over"),
        ({"a": 1}, ["a"], "not both"),
        ({"a": -1}, None, "whole number >= 0"),
        ({"a": "two"}, None, "expected a whole number"),
        ({"a": 1.5}, None, "whole number >= 0"),
        ("many", ["a"], "expected a dictionary of node: count, or a number"),
        (True, ["a"], "expected a dictionary"),
        (None, ["a"], "nodes is only used"),
        (2, ["a", "a"], "lists a node twice"),
    ],
)
def test_bad_replicas(replicas, nodes, message):
    with pytest.raises(plum_deployment.ParamError, match=message):
        plum_deployment.wanted_replicas(replicas, nodes)


def test_ports_for_the_controller():
    assert plum_deployment.port_item("8080:80") == {
        "host": 8080,
        "container": 80,
        "protocol": "tcp",
    }
    assert plum_deployment.port_item("53/udp") == {"container": 53, "protocol": "udp"}
    with pytest.raises(plum_deployment.ParamError, match="takes no host IP"):
        plum_deployment.port_item("127.0.0.1:8080:80")
    with pytest.raises(plum_deployment.ParamError, match="not from 1 to 65535"):
        plum_deployment.port_item("0:80")


def params(**values):
    out = dict.fromkeys(plum_deployment.SETTING_OPTIONS)
    out.update(values)
    return out


def test_settings_in_the_controllers_stored_form():
    settings = plum_deployment.wanted_settings(
        params(
            start_cmd="./run",
            env={"B": 1, "A": "x"},
            memory=" 512M ",
            cpus=0.5,
            ports=["8080:80"],
        )
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
    stored = dict(settings, cpus=0.5, env={"A": "x", "B": "1"})
    assert plum_deployment.settings_changes(settings, stored) == []
    assert plum_deployment.settings_changes(settings, dict(stored, memory="1g")) == [
        "memory"
    ]
    defaults = plum_deployment.wanted_settings(params())
    assert (
        plum_deployment.settings_changes(
            defaults, {"startCmd": "", "env": {}, "cpus": None, "ports": []}
        )
        == []
    )
    with pytest.raises(plum_deployment.ParamError, match="quote it"):
        plum_deployment.wanted_settings(params(env={"A": True}))


def test_replica_changes():
    assert plum_deployment.replicas_changes({"a": 1}, {"a": 1}) == []
    assert plum_deployment.replicas_changes({"a": 2, "b": 0}, {"a": 1, "c": 1}) == [
        "a",
        "c",
    ]
    assert plum_deployment.replicas_changes({"a": 0}, {}) == []


def test_split_image():
    assert plum_deployment.split_image("web") == ("web", "latest")
    assert plum_deployment.split_image("registry:5000/team/web:1.4") == (
        "registry:5000/team/web",
        "1.4",
    )
    with pytest.raises(plum_deployment.ParamError, match="digests"):
        plum_deployment.split_image("web@sha256:" + "0" * 64)


# -- plum_app ------------------------------------------------------------------------------------


def test_parse_time():
    assert plum_app.parse_time("1970-01-01T00:00:10.500Z") == 10.5
    assert plum_app.parse_time("1970-01-01T00:01:00Z") == 60
    assert plum_app.parse_time(None) is None
    assert plum_app.parse_time("yesterday") is None


def test_the_modules_reserve_the_same_variables_as_the_agent():
    """The modules cannot import the runtime (they run on the nodes alone): their copies are pinned here."""
    assert _spec.RESERVED_ENV == RESERVED_ENV
    assert plum_deployment.RESERVED_ENV == RESERVED_ENV
