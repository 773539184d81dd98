"""Deployment runtime settings: the controller accepts exactly the values the agent runs.

Both sides parse with plum.common.resources; each case is given to the controller's validation and to
the agent's spec parser, and what the controller stores must mean the same thing to the agent.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from plum.agent.spec import SpecError, parse_spec
from plum.common.httpserver import HTTPError
from plum.common.resources import parse_cpus
from plum.controller import validation as v

DOCKER = ("process", "docker")


def accepted(check: Callable[[], Any]) -> bool:
    try:
        check()
    except (HTTPError, SpecError):
        return False
    return True


@pytest.mark.parametrize(
    "value",
    [
        *[
            "512m",
            "1.5g",
            "512MiB",
            "512mb",
            " 64M ",
            "6291456",
            6291456,
            6291456.0,
            "1t",
            "6144k",
        ],
        *["5m", "lots", "1e9", "2048t", "12iB", "1.5", "-1g", True, [], 2048],
    ],
)
def test_memory(value: Any) -> None:
    controller = accepted(lambda: v.memory({"memory": value}))
    assert controller == accepted(lambda: parse_spec({"memory": value}, runtimes=DOCKER)), value
    if controller:  # what the controller keeps (text), the agent reads as the same size
        stored = v.memory({"memory": value})
        assert parse_spec({"memory": stored}).memory == parse_spec({"memory": value}).memory


@pytest.mark.parametrize(
    "value",
    [0.5, "1.5", 2, "0.01", 1024, 0, "0", -1, "lots", "nan", "inf", 0.001, True, 5000],
)
def test_cpus(value: Any) -> None:
    controller = accepted(lambda: v.parsed({"cpus": value}, "cpus", "", parse_cpus))  # as api_deployments
    assert controller == accepted(lambda: parse_spec({"cpus": value}, runtimes=DOCKER)), value
    if controller:
        assert v.parsed({"cpus": value}, "cpus", "", parse_cpus) == parse_spec({"cpus": value}).cpus


@pytest.mark.parametrize(
    "value",
    [
        *["nginx", "debian:12", "localhost:5000/team/app", "app@sha256:" + "a" * 64],
        *["Upper/Case", "has space", "app:", ":tag", "a" * 300, 5],
    ],
)
def test_images(value: Any) -> None:
    controller = accepted(lambda: v.image({"image": value}))
    assert controller == accepted(lambda: parse_spec({"image": value}, runtimes=DOCKER)), value
    assert controller == accepted(lambda: parse_spec({"base_image": value}, runtimes=DOCKER)), value


@pytest.mark.parametrize(
    "ports",
    [
        ["8080:80"],
        ["80"],
        ["53/udp"],
        ["127.0.0.1::80"],
        [{"container": 8080}],
        [{"host": 8080, "container": 80, "protocol": "udp", "hostIp": "::1"}],
        [{"host": 8081, "container": 80, "serviceName": "web", "protocol": "http"}],
        [{"container": 80}, {"container": 80}],
        [":80"],
        [{"host": 80}],
        [{"container": 0}],
        [{"container": 80, "protocol": "sctp"}],
        ["8080:80", {"host": 8080, "container": 81}],
        ["localhost:80:80"],
        [8080],
        "8080:80",
    ],
)
def test_ports(ports: Any) -> None:
    controller = accepted(lambda: v.ports({"ports": ports}))
    assert controller == accepted(lambda: parse_spec({"ports": ports}, runtimes=DOCKER)), ports
    if controller:  # the controller keeps objects; the agent reads them as the same ports
        stored = v.ports({"ports": ports})
        assert parse_spec({"ports": stored}).ports == parse_spec({"ports": ports}).ports


def test_a_bad_port_names_the_key_at_fault() -> None:
    with pytest.raises(HTTPError) as err:
        v.ports({"ports": ["8080:80", {"host": 80}]}, prefix="entries[0]")
    assert err.value.details["field"] == "entries[0].ports[1].container"
    with pytest.raises(HTTPError) as err:
        v.ports({"ports": ["80:"]})
    assert err.value.details["field"] == "ports[0]"


@pytest.mark.parametrize(
    "env",
    [
        {"A": "x", "B_2": 4, "_c": 1.5},
        {"A" * 200: "long names are fine"},
        {"1A": "x"},
        {"a-b": "x"},
        {"PLUM_INSTANCE_ID": "x"},
        {"WORKER_NODE_ID": "x"},
        {"A": True},
        {"A": None},
        {"A": {"b": 1}},
    ],
)
def test_env(env: dict[str, Any]) -> None:
    controller = accepted(lambda: v.env({"env": env}))
    assert controller == accepted(lambda: parse_spec({"env": env}, runtimes=DOCKER)), env
    if controller:
        assert v.env({"env": env}) == parse_spec({"env": env}).env
