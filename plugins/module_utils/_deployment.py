# -*- coding: utf-8 -*-
# Copyright: Plum Deploy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the plum.deploy collection: it can change at any time, without notice.
"""plum_deployment's manager: reads the deployment, runs the plan (module_utils/_deployment_plan.py), waits."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple

from ansible.module_utils.common.text.converters import to_native
from ansible_collections.plum.deploy.plugins.module_utils._artifact import ArtifactError, module_artifact
from ansible_collections.plum.deploy.plugins.module_utils._client import (
    CONTROLLER,
    MultipartBody,
    PlumClient,
    PlumError,
    PlumNotFound,
)
from ansible_collections.plum.deploy.plugins.module_utils._deployment_plan import (
    PENDING,
    RUNNING,
    ParamError,
    Plan,
    id_of,
    manages_settings,
    plan,
    resolve_app,
    rollout_of,
    view,
    wanted_replicas,
    wanted_settings,
    wanted_update,
)
from ansible_collections.plum.deploy.plugins.module_utils._manager import Manager
from ansible_collections.plum.deploy.plugins.module_utils._status import (
    ACTIVE_PHASES,
    COMPLETED,
    DOWNLOADING,
    FAILING_PHASES,
    describe,
)

Json = Dict[str, Any]
POLL_INTERVAL = 0.25
ROLLOUT_RUNNING = "Running"
ROLLOUT_SUCCEEDED = "Succeeded"


class PlumDeploymentManager(Manager):
    def __init__(self, module: Any, client: PlumClient, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(module, dict(changed=False, actions=[], reasons=[], deployment={}, deployment_id="",
                                      rollout={}))
        self.client = client
        self.params = module.params
        self.name: str = self.params["name"]
        self.clock = clock
        self.sleep = sleep

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return self.client.request(method, path, **kwargs)
        except PlumError as exc:
            self.fail(exc.message, status_code=exc.status, field=exc.field)

    def get(self, dep_id: str) -> Json:
        detail: Json = self.call("GET", PlumClient.path("v1", "deployments", dep_id))
        return detail

    def find(self) -> Optional[Json]:
        for item in self.call("GET", "/v1/deployments") or []:
            if item.get("name") == self.name:
                try:
                    found: Json = self.client.request("GET", PlumClient.path("v1", "deployments", item["deploymentId"]))
                    return found
                except PlumNotFound:
                    return None  # deleted meanwhile
                except PlumError as exc:
                    self.fail(exc.message, status_code=exc.status)
        return None

    def apps_by_id(self, apps: Optional[List[Json]] = None) -> Dict[str, Json]:
        apps = (self.call("GET", "/v1/apps") or []) if apps is None else apps
        return dict((str(a.get("artifactId")), a) for a in apps)

    # -- the plan ---------------------------------------------------------------------------------

    def make_plan(self, detail: Optional[Json], before: Json, apps: List[Json]) -> Tuple[Plan, Optional[str]]:
        """(the plan, the zip to upload when the plan uploads one and the module has it)."""
        params = self.params
        try:
            sha, zip_path, meta = module_artifact(params["remote_src"], params["artifact_sha256"], self.module.tmpdir)
        except ArtifactError as exc:
            self.fail(to_native(exc))
        labels = params["labels"]
        try:
            app, app_action = resolve_app(apps, self.name, sha, meta, params["image"])
            the_plan = plan(
                self.name, params["state"], detail, before,
                app=app, app_action=app_action,
                settings=wanted_settings(params) if manages_settings(params) else None,
                replicas=wanted_replicas(params["replicas"], params["nodes"], params["node_labels"]),
                labels=None if labels is None else dict(sorted((str(k), str(v)) for k, v in labels.items())),
                update=wanted_update(params["update"]),
            )
        except ParamError as exc:
            self.fail(to_native(exc))
        return the_plan, zip_path

    # -- the run ----------------------------------------------------------------------------------

    def run(self) -> Json:
        params = self.params
        if params["src"]:
            self.fail("src is a path on the control node and is handled by the plum.deploy.plum_deployment action "
                      "plugin; use remote_src for a path on the target")
        detail = self.find()
        if detail and len(detail.get("entries") or []) > 1:
            self.fail("deployment %s has %d entries; plum_deployment manages single-entry deployments only"
                      % (self.name, len(detail["entries"])))
        apps = self.call("GET", "/v1/apps") or []
        before = view(detail, self.apps_by_id(apps))
        dep_id = id_of(detail)
        self.results.update(deployment=detail or {}, deployment_id=dep_id, rollout=rollout_of(detail))
        the_plan, zip_path = self.make_plan(detail, before, apps)
        self.results.update(actions=the_plan.actions, reasons=the_plan.reasons, changed=the_plan.changed)
        if self.module._diff:
            self.results["diff"] = dict(before=before, after=the_plan.after)
        if self.check_mode:
            return self.results
        dep_id = self.execute(the_plan, dep_id, zip_path)
        if params["state"] == "absent":
            self.results.update(deployment={}, deployment_id="", rollout={})
            return self.results
        final = self.get(dep_id)
        self.results.update(deployment=final, deployment_id=dep_id, rollout=rollout_of(final))
        if self.module._diff:
            self.results["diff"]["after"] = view(final, self.apps_by_id())
        if params["wait"]:
            self.wait(the_plan, dep_id, final, rollout_of(detail).get("revision"))
        return self.results

    @property
    def check_mode(self) -> bool:
        return bool(self.module.check_mode)

    def execute(self, the_plan: Plan, dep_id: str, zip_path: Optional[str]) -> str:
        """Send the plan's requests in order; the deployment's id (a new one after a create)."""
        artifact_id = None
        for action in the_plan.actions:
            if action == "upload":
                artifact_id = self.upload(zip_path)
            elif action == "register-image":
                artifact_id = self.call("POST", "/v1/apps/create-image", json_body=the_plan.register)["artifactId"]
            elif action == "create":
                answer = self.call("POST", "/v1/deployments", json_body=with_artifact(the_plan.create, artifact_id))
                dep_id = answer["deploymentId"]
            elif action == "update":
                self.call("PATCH", PlumClient.path("v1", "deployments", dep_id),
                          json_body=with_artifact(the_plan.patch, artifact_id))
            elif action in ("start", "stop"):
                self.call("POST", PlumClient.path("v1", "deployments", dep_id), query={"action": action})
            elif action == "delete":
                self.delete(dep_id)
            self.did_change = True
            self.results["deployment_id"] = dep_id
        self.results["changed"] = self.did_change
        return dep_id

    def upload(self, zip_path: Optional[str]) -> str:
        """The app's id on the controller after uploading the zip; the module may have its sha256 only."""
        if zip_path is None:  # upload is the plan's first action: nothing was changed yet
            self.fail("the controller has no app with sha256 %s; give src or remote_src to upload it"
                      % self.params["artifact_sha256"], artifact_missing=True)
        body = MultipartBody([("file", "app.zip", "application/zip", zip_path)])
        answer: Json = self.call("POST", "/v1/apps/upload", body=body, timeout=self.client.timeout * 5)
        return str(answer["artifactId"])

    def delete(self, dep_id: str) -> None:
        try:
            self.client.request("DELETE", PlumClient.path("v1", "deployments", dep_id))
        except PlumNotFound:
            return
        except PlumError as exc:
            self.fail(exc.message, status_code=exc.status, field=exc.field)

    # -- waiting ----------------------------------------------------------------------------------

    def wait(self, the_plan: Plan, dep_id: str, detail: Json, previous_revision: Optional[int]) -> None:
        deadline = self.clock() + self.params["wait_timeout"]
        state = self.params["state"]
        if the_plan.rolls_out:
            detail = self.wait_rollout(dep_id, detail, previous_revision, deadline)
        if state == "started":
            detail = self.wait_running(dep_id, detail, deadline)
        elif state == "stopped":
            detail = self.wait_stopped(dep_id, detail, deadline)
        self.results.update(deployment=detail, rollout=rollout_of(detail))

    def wait_rollout(self, dep_id: str, detail: Json, previous_revision: Optional[int], deadline: float) -> Json:
        """Until the controller's rollout of the update ends; fail when it was rolled back or failed."""
        while True:
            rollout = rollout_of(detail)
            started = rollout and rollout.get("revision") != previous_revision
            if started and rollout.get("state") != ROLLOUT_RUNNING:
                if rollout.get("state") == ROLLOUT_SUCCEEDED:
                    return detail
                self.results.update(deployment=detail, rollout=rollout)
                self.fail("deployment %s: the rollout of revision %s ended %s: %s"
                          % (self.name, rollout.get("revision"), rollout.get("state"), rollout.get("message")))
            if self.clock() >= deadline:
                self.results.update(deployment=detail, rollout=rollout)
                self.fail("deployment %s: the rollout did not finish within %s seconds (wait_timeout): %s"
                          % (self.name, self.params["wait_timeout"],
                             rollout.get("message") if started else "the controller reports no rollout yet"))
            self.sleep(POLL_INTERVAL)
            detail = self.get(dep_id)

    def fail_replicas(self, what: str, detail: Json, items: List[Json]) -> NoReturn:
        lines = "\n".join("  node %s instance %s: %s" % (a.get("nodeId"), a.get("instanceId"), describe(a))
                          for a in items)
        self.results.update(deployment=detail, rollout=rollout_of(detail))
        self.fail("deployment %s %s:\n%s" % (self.name, what, lines),
                  replicas=[dict(node=a.get("nodeId"), instance=a.get("instanceId"), phase=a.get("phase"),
                                 message=a.get("message"), exit_code=a.get("exitCode")) for a in items])

    def wait_running(self, dep_id: str, detail: Json, deadline: float) -> Json:
        """Until every replica is Running (or Completed) for wait_stable seconds; fail fast when one fails."""
        stable = self.params["wait_stable"]
        baseline: Dict[str, int] = {}
        stable_since = None
        while True:
            items = [a for a in detail.get("assignments") or [] if a.get("desired") == RUNNING]
            for a in items:
                baseline.setdefault(a.get("instanceId") or "", a.get("restarts") or 0)
            bad = [a for a in items if a.get("phase") in FAILING_PHASES
                   or (a.get("restarts") or 0) > baseline[a.get("instanceId") or ""]]
            if bad:
                self.fail_replicas("has replicas that fail or restart", detail, bad)
            pending = [a for a in items if a.get("phase") not in (RUNNING, COMPLETED)]
            now = self.clock()
            if pending:
                stable_since = None
            elif stable_since is None:
                stable_since = now
            if stable_since is not None and now - stable_since >= stable:
                return detail
            if now >= deadline:
                self.fail_replicas("did not have every replica Running within %s seconds (wait_timeout)"
                                   % self.params["wait_timeout"], detail, pending or items)
            self.sleep(POLL_INTERVAL)
            detail = self.get(dep_id)

    def wait_stopped(self, dep_id: str, detail: Json, deadline: float) -> Json:
        while True:
            running = [a for a in detail.get("assignments") or []
                       if a.get("phase") in ACTIVE_PHASES or a.get("phase") == DOWNLOADING]
            if not running:
                return detail
            if self.clock() >= deadline:
                self.fail_replicas("still has running replicas after %s seconds (wait_timeout)"
                                   % self.params["wait_timeout"], detail, running)
            self.sleep(POLL_INTERVAL)
            detail = self.get(dep_id)


def with_artifact(body: Optional[Json], artifact_id: Optional[str]) -> Json:
    """The body with the app the run uploaded or registered in place of the plan's placeholder."""
    out: Json = dict(body or {})
    entries = [dict(e) for e in out.get("entries") or []]
    for entry in entries:
        if entry.get("artifactId") == PENDING:
            entry["artifactId"] = artifact_id
    if entries:
        out["entries"] = entries
    return out


def run_module(module: Any) -> None:
    """plum_deployment's main: the manager's result, or the failure, through ``module``."""
    try:
        client = PlumClient.from_params(CONTROLLER, module.params)
    except PlumError as exc:
        module.fail_json(msg=exc.message)
        return
    if client.token:
        module.no_log_values.add(client.token)
    module.exit_json(**PlumDeploymentManager(module, client).run())
