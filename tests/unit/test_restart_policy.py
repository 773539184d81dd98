from __future__ import annotations

import pytest

from plum.agent.restart import RestartPolicy, RestartTracker
from plum.agent.spec import parse_spec


def delays(policy: RestartPolicy, runs: list[float], start: float = 1000.0) -> list:
    tracker, now, out = RestartTracker(), start, []
    for run in runs:
        now += run
        out.append(tracker.next_delay(policy, run, now))
    return out


def test_crash_after_a_stable_run_restarts_at_once():
    assert delays(RestartPolicy(), [60, 60, 60]) == [0.0, 0.0, 0.0]


def test_repeated_crashes_back_off_exponentially_from_100ms_to_the_cap():
    got = delays(RestartPolicy(max_delay=1.0), [0.1] * 8)
    assert got == [0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


def test_a_stable_run_resets_the_backoff():
    got = delays(RestartPolicy(), [0.1, 0.1, 0.1, 30, 0.1])
    assert got == [0.0, 0.1, 0.2, 0.0, 0.1]


def test_limit_gives_up_after_n_restarts_in_the_window():
    got = delays(RestartPolicy(max_restarts=3, window=60), [0.1] * 5)
    assert got[:3] == [0.0, 0.1, 0.2] and got[3] is None


def test_restarts_outside_the_window_do_not_count():
    got = delays(RestartPolicy(max_restarts=2, window=5, stable_after=100), [3, 3, 3, 3])
    assert None not in got


@pytest.mark.parametrize(
    ("policy", "code", "expected"),
    [
        ("always", 0, True),
        ("always", 1, True),
        ("on-failure", 0, False),
        ("on-failure", 2, True),
        ("on-failure", None, True),
        ("never", 1, False),
    ],
)
def test_which_exits_restart(policy, code, expected):
    assert RestartPolicy(policy).wants_restart(code) is expected


def test_tracker_state_round_trip():
    tracker = RestartTracker(3, [1.0, 2.0])
    assert RestartTracker.from_state(tracker.to_state()) == tracker
    assert RestartTracker.from_state(None) == RestartTracker()


def test_the_wire_s_zero_max_restarts_is_no_limit():
    assert parse_spec({"max_restarts": 0}).restart.max_restarts is None
    assert parse_spec({"max_restarts": 4}).restart.max_restarts == 4
    assert None not in delays(parse_spec({}).restart, [0.1] * 50)
