from __future__ import annotations

import pytest

from plum.agent.spec import AppSpec, SpecError, parse_spec


def test_defaults_and_digest_stability():
    spec = parse_spec(None)
    assert spec == AppSpec()
    assert parse_spec({"env": {"B": "2", "A": 1}}).digest() == parse_spec({"env": {"A": "1", "B": "2"}}).digest()
    assert parse_spec({"stop_timeout": 5}).digest() != spec.digest()


def test_full_spec():
    spec = parse_spec(
        {
            "start_cmd": "exec ./server --port 8080",
            "env": {"MODE": "prod"},
            "restart_policy": "on-failure",
            "max_restarts": 5,
            "restart_window": 30,
            "stop_timeout": 2.5,
            "runtime": "process",
        }
    )
    assert spec.restart.policy == "on-failure" and spec.restart.max_restarts == 5 and spec.stop_timeout == 2.5


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], ""),
        ({"nope": 1}, "nope"),
        ({"runtime": "docker"}, "runtime"),
        ({"start_cmd": ""}, "start_cmd"),
        ({"env": ["A=1"]}, "env"),
        ({"env": {"A": None}}, "env"),
        ({"restart_policy": "sometimes"}, "restart_policy"),
        ({"max_restarts": -1}, "max_restarts"),
        ({"max_restarts": True}, "max_restarts"),
        ({"restart_window": 0}, "restart_window"),
        ({"stop_timeout": "10"}, "stop_timeout"),
    ],
)
def test_invalid_fields_are_named(data, field):
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert err.value.field == field
    assert err.value.message.startswith(f"spec.{field}")
