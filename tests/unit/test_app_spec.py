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


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (
            {"env": {"TOKEN": "abc\x00def"}},
            "env",
            "value of TOKEN contains a NUL byte (at character 3)",
        ),
        (
            {"env": {"TOKEN": "\ud800"}},
            "env",
            "value of TOKEN contains '\\ud800' (at character 0), not valid text",
        ),
        ({"env": {"BAD\x00NAME": "x"}}, "env", "invalid variable name 'BAD\\x00NAME'"),
        (
            {"start_cmd": "exec ./server\x00 --port 1"},
            "start_cmd",
            "the command contains a NUL byte",
        ),
        ({"start_cmd": "echo \udc80"}, "start_cmd", "not valid text"),
    ],
)
def test_text_that_exec_cannot_take_is_refused(data, field, words):
    """A value execve could never be given would make the app crash-loop: it is a 400 instead."""
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert err.value.field == field
    assert words in err.value.message


def test_text_exec_can_take_is_kept():
    spec = parse_spec(
        {
            "env": {"PEM": "-----BEGIN-----\nabc\n-----END-----\n", "N": 3},
            "start_cmd": "a\tb ü",
        }
    )
    assert spec.env == {
        "N": "3",
        "PEM": "-----BEGIN-----\nabc\n-----END-----\n",
    }  # newlines are fine for execve
    assert spec.start_cmd == "a\tb ü"
