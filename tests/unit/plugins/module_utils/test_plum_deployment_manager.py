"""plum_deployment's manager against an in-memory controller that follows the pinned placement and rollout API.

Check mode sends no write and reports what the real run then does; updates are PATCHes (never DELETE then POST);
the module waits for the controller's rollout and fails with its message when it was rolled back.
"""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("ansible")

from ansible_collections.plum.deploy.plugins.module_utils import _deployment_plan as dp
from ansible_collections.plum.deploy.plugins.module_utils._client import PlumError
from ansible_collections.plum.deploy.plugins.module_utils._deployment import PlumDeploymentManager

DEP_ID = "d" * 32
APP_V1 = {"artifactId": "app1", "name": "hello", "version": "1.0.0", "sha256": "a" * 64, "type": "zip"}
APP_V2 = {"artifactId": "app2", "name": "hello", "version": "2.0.0", "sha256": "b" * 64, "type": "zip"}


class Failed(Exception):
    def __init__(self, result):
        super().__init__(result["msg"])
        self.result = result


class FakeModule:
    def __init__(self, check_mode=False, **params):
        self.params = {key: spec.get("default") for key, spec in dp.argument_spec().items()}
        self.params.update(name="web", **params)
        self.check_mode = check_mode
        self._diff = True
        self.tmpdir = "/nonexistent"

    def fail_json(self, **result):
        raise Failed(result)


class FakeController:
    """The controller's deployment API, in memory: placement spreads over the candidates, an app or settings
    change starts a rollout that ends ``rollout_ends`` after ``rollout_polls`` GETs."""

    def __init__(self, nodes=("n1", "n2")):
        self.nodes = list(nodes)
        self.apps = [APP_V1, APP_V2]
        self.deployment = None
        self.requests = []
        self.timeout = 60
        self.rollout_polls = 2
        self.rollout_ends = ("Succeeded", "")

    def writes(self):
        return [(method, path) for method, path, _ in self.requests if method != "GET"]

    def place(self, entry):
        if entry.get("desiredReplicas") is None:
            return
        candidates = (entry.get("placement") or {}).get("nodes") or self.nodes
        counts = dict.fromkeys(candidates, 0)
        for i in range(entry["desiredReplicas"]):
            counts[candidates[i % len(candidates)]] += 1
        entry["replicas"] = {n: c for n, c in counts.items() if c}

    def set_replicas(self, entry, fields):
        if "replicas" not in fields:
            return
        if isinstance(fields["replicas"], int):
            entry["desiredReplicas"] = fields["replicas"]
            entry["placement"] = fields.get("placement") or {}
            self.place(entry)
        else:
            entry.pop("desiredReplicas", None)
            entry.pop("placement", None)
            entry["replicas"] = {n: c for n, c in fields["replicas"].items() if c}

    def detail(self):
        dep = copy.deepcopy(self.deployment)
        rollout = dep["deployment"].get("rollout")
        if rollout and rollout["state"] == "Running":
            self.polls += 1
            if self.polls >= self.rollout_polls:
                state, message = self.rollout_ends
                self.deployment["deployment"]["rollout"].update(state=state, message=message, finishedAt=2)
        dep["assignments"] = [
            {
                "instanceId": f"{node}-{i}",
                "nodeId": node,
                "desired": dep["deployment"]["Status"],
                "phase": dep["deployment"]["Status"],
                "restarts": 0,
            }
            for node, count in dep["entries"][0]["replicas"].items()
            for i in range(count)
        ]
        return dep

    def request(self, method, path, query=None, json_body=None, body=None, timeout=None):
        self.requests.append((method, path, copy.deepcopy(json_body)))
        if (method, path) == ("GET", "/v1/apps"):
            return copy.deepcopy(self.apps)
        if (method, path) == ("GET", "/v1/deployments"):
            return [{"deploymentId": DEP_ID, "name": "web"}] if self.deployment else []
        if (method, path) == ("POST", "/v1/deployments"):
            fields = json_body["entries"][0]
            entry = {"artifactId": fields["artifactId"], **dp.wanted_settings({})}
            entry.update({k: v for k, v in fields.items() if k in dp.SETTING_KEYS})
            self.deployment = {
                "deployment": {
                    "DeploymentID": DEP_ID,
                    "Name": "web",
                    "Labels": json_body.get("labels") or {},
                    "Status": "Stopped",
                    "rollout": None,
                },
                "entries": [entry],
            }
            self.set_replicas(entry, fields)
            self.name_app(entry)
            return {"deploymentId": DEP_ID}
        assert path == f"/v1/deployments/{DEP_ID}" and self.deployment, (method, path)
        if method == "GET":
            return self.detail()
        if method == "POST":
            self.deployment["deployment"]["Status"] = {"start": "Running", "stop": "Stopped"}[query["action"]]
            return None
        if method == "DELETE":
            self.deployment = None
            return None
        if method == "PATCH":
            return self.patch(json_body)
        raise AssertionError(method)

    def patch(self, body):
        dep = self.deployment
        rollout = dep["deployment"]["rollout"]
        fields = (body.get("entries") or [{}])[0]
        new_revision = any(k == "artifactId" or k in dp.SETTING_KEYS for k in fields)
        if new_revision and rollout and rollout["state"] == "Running":
            raise PlumError(f"a rollout runs (revision {rollout['revision']})", status=409)
        entry = dep["entries"][0]
        entry.update({k: v for k, v in fields.items() if k == "artifactId" or k in dp.SETTING_KEYS})
        self.name_app(entry)
        self.set_replicas(entry, fields)
        if body.get("labels") is not None:
            dep["deployment"]["Labels"] = body["labels"]
        if new_revision:
            revision = (rollout or {}).get("revision", 1)
            dep["deployment"]["rollout"] = {
                "revision": revision + 1,
                "previousRevision": revision,
                "state": "Running",
                "message": "",
                "finishedAt": None,
            }
            self.polls = 0
        return self.detail()

    def name_app(self, entry):
        app = next(a for a in self.apps if a["artifactId"] == entry["artifactId"])
        entry.update(appName=app["name"], appVersion=app["version"])

    def failover(self, dead, to):
        """The controller moved every replica off ``dead``: the actual map changes, the request does not."""
        replicas = self.deployment["entries"][0]["replicas"]
        replicas[to] = replicas.get(to, 0) + replicas.pop(dead, 0)


def manager(controller, check_mode=False, **params):
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    return PlumDeploymentManager(FakeModule(check_mode, **params), controller, clock=lambda: now[0], sleep=sleep)


def run(controller, check_mode=False, **params):
    return manager(controller, check_mode, **params).run()


def ladder(controller, **params):
    """check, real, check, real, as the integration ladder runs the module."""
    check1 = run(copy.deepcopy(controller), check_mode=True, **params)
    writes_before = len(controller.writes())
    real1 = run(controller, **params)
    check2 = run(copy.deepcopy(controller), check_mode=True, **params)
    real2 = run(controller, **params)
    assert check1["actions"] == real1["actions"]
    assert check1["diff"]["after"] == real1["diff"]["after"], "the plan predicts the controller's answer"
    assert check2["diff"]["before"] == real1["diff"]["after"]
    assert (check2["changed"], real2["changed"], real2["actions"]) == (False, False, [])
    assert len(controller.writes()) - writes_before == len([a for a in real1["actions"]])
    return real1


V1 = {"artifact_sha256": APP_V1["sha256"], "wait_stable": 0}
V2 = {"artifact_sha256": APP_V2["sha256"], "wait_stable": 0}


def created(**params):
    ctl = FakeController()
    run(ctl, replicas=2, **{**V1, **params})
    ctl.requests.clear()
    return ctl


def test_check_mode_sends_no_write():
    ctl = created()
    result = run(ctl, check_mode=True, replicas=3, labels={"a": "b"}, **V2)
    assert result["changed"] and result["actions"] == ["update"]
    assert ctl.writes() == []


def test_create_ladder_sends_the_number_and_the_placement():
    ctl = FakeController()
    real = ladder(ctl, replicas=3, nodes=["n2", "n1"], labels={"team": "a"}, **V1)
    assert real["actions"] == ["create", "start"]
    post = next(body for method, _path, body in ctl.requests if method == "POST" and body)
    assert post["entries"][0]["replicas"] == 3
    assert post["entries"][0]["placement"] == {"nodes": ["n1", "n2"]}
    assert real["deployment"]["entries"][0]["replicas"] == {"n1": 2, "n2": 1}
    assert real["diff"]["after"]["replicas"] == 3


def test_the_same_task_after_a_failover_changes_nothing():
    ctl = created(nodes=["n1", "n2"])
    ctl.failover(dead="n1", to="n2")
    result = run(ctl, replicas=2, nodes=["n1", "n2"], **V1)
    assert (result["changed"], result["actions"]) == (False, [])
    assert ctl.writes() == [], "no replica goes back to the dead node"


def test_scale_ladder_is_an_update_in_place():
    ctl = created()
    real = ladder(ctl, replicas=4, **V1)
    assert real["actions"] == ["update"]
    assert ctl.writes() == [("PATCH", f"/v1/deployments/{DEP_ID}")]
    assert real["deployment_id"] == DEP_ID
    assert real["rollout"] == {}, "scaling rolls nothing out"


def test_labels_ladder():
    ctl = created()
    real = ladder(ctl, labels={"team": "b"})
    assert real["actions"] == ["update"] and real["reasons"] == ["label changes"]


@pytest.mark.parametrize(
    "change",
    [dict(V2, replicas=2), dict(V1, replicas=2, env={"GREETING": "hi"})],
    ids=["version", "settings"],
)
def test_a_rolling_update_is_a_patch_waited_for(change):
    ctl = created()
    real = ladder(ctl, **change)
    assert real["actions"] == ["update"]
    assert ("DELETE", f"/v1/deployments/{DEP_ID}") not in ctl.writes()
    assert ("POST", "/v1/deployments") not in ctl.writes()
    assert real["deployment_id"] == DEP_ID, "the deployment keeps its id"
    assert real["rollout"]["state"] == "Succeeded" and real["rollout"]["revision"] == 2
    gets_after_patch = [
        m
        for m, _p, _b in ctl.requests[ctl.requests.index(next(r for r in ctl.requests if r[0] == "PATCH")) :]
        if m == "GET"
    ]
    assert len(gets_after_patch) >= ctl.rollout_polls, "it waited for the rollout"


def test_a_rolled_back_update_fails_with_the_controllers_message():
    ctl = created()
    ctl.rollout_ends = ("RolledBack", "instance n1-0 reported Failed: exit 3; rolled back to revision 1")
    with pytest.raises(Failed) as failed:
        run(ctl, replicas=2, **V2)
    result = failed.value.result
    assert result["msg"] == (
        "deployment web: the rollout of revision 2 ended RolledBack: "
        "instance n1-0 reported Failed: exit 3; rolled back to revision 1"
    )
    assert result["rollout"]["state"] == "RolledBack"
    assert result["changed"] is True


def test_without_wait_the_rollout_is_reported_running():
    ctl = created()
    result = run(ctl, replicas=2, wait=False, **V2)
    assert result["rollout"]["state"] == "Running"


def test_a_rollout_that_does_not_end_fails_at_the_timeout():
    ctl = created()
    ctl.rollout_polls = 10**6
    with pytest.raises(Failed, match=r"the rollout did not finish within 180 seconds \(wait_timeout\)"):
        run(ctl, replicas=2, **V2)


def test_an_update_while_a_rollout_runs_fails_with_the_conflict():
    ctl = created()
    ctl.rollout_polls = 10**6
    run(ctl, replicas=2, wait=False, **V2)
    with pytest.raises(Failed, match="a rollout runs") as failed:
        run(ctl, replicas=2, env={"A": "1"}, **V2)
    assert failed.value.result["status_code"] == 409


def test_stopped_ladder_stops_then_updates_without_a_rollout():
    ctl = created()
    real = ladder(ctl, state="stopped", **V2)
    assert real["actions"] == ["stop", "update"]
    assert ctl.writes()[:2] == [("POST", f"/v1/deployments/{DEP_ID}"), ("PATCH", f"/v1/deployments/{DEP_ID}")]


def test_absent_ladder():
    ctl = created()
    real = ladder(ctl, state="absent")
    assert real["actions"] == ["delete"]
    assert (real["deployment"], real["deployment_id"]) == ({}, "")


def test_a_new_zip_the_module_does_not_have_asks_the_action_plugin_for_it():
    ctl = created()
    with pytest.raises(Failed) as failed:
        run(ctl, artifact_sha256="c" * 64)
    assert failed.value.result["artifact_missing"] is True
    assert ctl.writes() == []


def test_an_image_app_is_registered_then_created():
    ctl = FakeController()
    registered = {
        "artifactId": "img1",
        "name": "web",
        "version": "1.4",
        "type": "image",
        "imageRepository": "reg/web",
        "imageTag": "1.4",
    }
    original = ctl.request

    def request(method, path, **kwargs):
        if (method, path) == ("POST", "/v1/apps/create-image"):
            ctl.requests.append((method, path, kwargs.get("json_body")))
            ctl.apps.append(registered)
            return registered
        return original(method, path, **kwargs)

    ctl.request = request
    result = run(ctl, image="reg/web:1.4", replicas=1, wait_stable=0)
    assert result["actions"] == ["register-image", "create", "start"]
    assert ctl.requests[2] == (
        "POST",
        "/v1/apps/create-image",
        {"name": "web", "version": "1.4", "imageRepository": "reg/web", "imageTag": "1.4"},
    )
    assert ctl.deployment["entries"][0]["artifactId"] == "img1"
