"""A saved record broken in every way while its app runs: the agent starts, says so, and can still stop it.

For each shape of state.json (empty, cut in the middle, random bytes, a JSON list, fields of the
wrong type, a name that climbs out of the apps folder), with the app's process running and a second,
healthy app beside it:
- the agent starts and answers healthz; the healthy app is re-adopted as it was;
- the broken file is moved aside (state.json.bad-<time>, content kept) and the app is listed with
  phase Unknown, a message naming the file and the reason, and the pid of its process, found by the
  folder marker it was started with; after another agent restart it is still listed and still found;
- start and restart are refused (409: deploy it again or delete it);
- then stop, delete or a new deploy really ends that process: a deploy runs exactly one instance,
  a delete leaves no folder and no listing, a stop leaves the app listed with nothing running.

Deterministic (seeded random bytes), every wait bounded.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

import pytest

from support.agent import Agent, APIError, app_instances, app_zip, pid_alive, wait_until

SEED = 1011
APP = "svc"
ACTIONS = ("redeploy", "delete", "stop")


def _empty(good: bytes) -> bytes:
    return b""


def _truncated(good: bytes) -> bytes:
    return good[: len(good) // 2]


def _random_bytes(good: bytes) -> bytes:
    return random.Random(SEED).randbytes(300)  # noqa: S311 - seeded test data


def _json_list(good: bytes) -> bytes:
    return b'[{"name": "svc"}]'


def _wrong_types(good: bytes) -> bytes:
    data = json.loads(good)
    data.update(restarts="many", handle=5, desired=True)
    return json.dumps(data).encode()


def _traversal_name(good: bytes) -> bytes:
    data = json.loads(good)
    data["name"] = "../../../etc"
    return json.dumps(data).encode()


SHAPES: list[Callable[[bytes], bytes]] = [_empty, _truncated, _random_bytes, _json_list, _wrong_types, _traversal_name]
CASES = [(shape, ACTIONS[i % len(ACTIONS)]) for i, shape in enumerate(SHAPES)]


def _lost(agent: Agent) -> dict[str, Any]:
    listed = {a["name"]: a for a in agent.request("GET", "/v1/apps")["apps"]}
    return listed[APP]


@pytest.mark.parametrize(("shape", "action"), CASES, ids=[f"{s.__name__[1:]}-{a}" for s, a in CASES])
def test_a_broken_state_file_never_loses_its_running_app(agent_factory, tmp_path: Path, shape, action):
    agent = agent_factory()
    app = agent.deploy(APP, app_zip(tmp_path / "svc.zip", name=APP))["app"]
    other = agent.deploy("other", app_zip(tmp_path / "other.zip", name="other"))["app"]
    agent.kill()
    state = agent.data_dir / "apps" / APP / "state.json"
    broken = shape(state.read_bytes())
    state.write_bytes(broken)

    agent.start()
    assert agent.request("GET", "/healthz")["status"] == "ok"
    again = agent.app("other")
    assert (again["pid"], again["phase"]) == (other["pid"], "Running"), "the healthy app is re-adopted"
    lost = _lost(agent)
    assert lost["phase"] == "Unknown" and lost["pid"] == app["pid"], lost
    assert "state.json" in lost["message"] and "deploy it again or delete it" in lost["message"]
    kept = list(state.parent.glob("state.json.bad-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == broken and not state.exists()
    assert kept[0].name in lost["message"]
    assert pid_alive(app["pid"]), "the app keeps running while its record is unusable"

    agent.kill()
    agent.start()  # a second restart: still listed, still found
    lost = _lost(agent)
    assert (lost["phase"], lost["pid"]) == ("Unknown", app["pid"])
    for refused in ("start", "restart"):
        with pytest.raises(APIError) as err:
            agent.request("POST", f"/v1/apps/{APP}/{refused}")
        assert err.value.status == 409 and "deploy it again or delete it" in err.value.body["error"]

    if action == "redeploy":
        result = agent.deploy(APP, app_zip(tmp_path / "svc2.zip", name=APP, version="2.0.0"))["app"]
        assert (result["phase"], result["version"]) == ("Running", "2.0.0")
        wait_until(lambda: not pid_alive(app["pid"]), timeout=5, what="the unrecorded instance to stop")
        assert app_instances(agent.data_dir, APP) == [result["pid"]], "exactly one instance"
        agent.kill()
        agent.start()
        assert agent.app(APP)["pid"] == result["pid"], "the new record is good: re-adopted"
    elif action == "delete":
        assert agent.request("DELETE", f"/v1/apps/{APP}") == {"changed": True}
        assert not pid_alive(app["pid"]) and not state.parent.exists()
        agent.kill()
        agent.start()
        assert [a["name"] for a in agent.request("GET", "/v1/apps")["apps"]] == ["other"]
    else:
        stopped = agent.request("POST", f"/v1/apps/{APP}/stop")
        assert stopped["changed"] is True and stopped["app"]["pid"] is None
        assert not pid_alive(app["pid"]) and app_instances(agent.data_dir, APP) == []
        agent.kill()
        agent.start()
        assert (_lost(agent)["phase"], _lost(agent)["pid"]) == ("Unknown", None)
    assert agent.app("other")["pid"] == other["pid"]


def test_a_state_file_naming_another_app_never_takes_that_app_over(agent_factory, tmp_path: Path):
    """A record copied into the wrong folder: each folder keeps its own app, nothing runs twice."""
    agent = agent_factory()
    first = agent.deploy("first", app_zip(tmp_path / "a.zip", name="first"))["app"]
    second = agent.deploy("second", app_zip(tmp_path / "b.zip", name="second"))["app"]
    agent.kill()
    apps = agent.data_dir / "apps"
    (apps / "second" / "state.json").write_bytes((apps / "first" / "state.json").read_bytes())
    agent.start()
    assert agent.app("first")["pid"] == first["pid"]
    lost = agent.app("second")
    assert (lost["phase"], lost["pid"]) == ("Unknown", second["pid"])
    assert "is not the name of the app's folder" in lost["message"]
    assert app_instances(agent.data_dir, "first") == [first["pid"]]
