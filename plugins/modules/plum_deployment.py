#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Plum Deploy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: plum_deployment
short_description: Manage a deployment of an app on a Plum controller
version_added: 0.1.0
description:
  - Keeps a deployment on the Plum controller in the wanted state, through the controller's deployment API. The
    controller places the replicas on the nodes, and the agents there run them.
  - The app is a zip, given as O(src) on the control node or O(remote_src) on the target and uploaded to the
    controller unless an app with the same sha256 is already there, or an O(image), registered as an image app
    unless one with the same repository and tag is already there.
  - "Idempotent: the same app, settings, replicas and labels report no change. Replicas and labels change in place
    (same deployment id); a new app version or new runtime settings replace the deployment: the old one is deleted
    and a new one created under the same name, with a new id."
  - In check mode nothing is uploaded, registered, created or changed; the module reports what a real run would do.
  - The module manages deployments with a single entry (one app); deployments with several entries are refused.
author:
  - Plum Deploy maintainers (!UNKNOWN)
extends_documentation_fragment:
  - plum.deploy._connection
  - plum.deploy._attributes
  - plum.deploy._attributes.ACTIONGROUP_PLUM
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff shows the status, the app (name, version, sha256), the runtime settings, the replicas and the labels.
  idempotent:
    support: full
  action:
    support: full
    details:
      - The action plugin packages O(src) on the control node and copies it to the target only when the controller
        does not already have that app.
  async:
    support: none
options:
  name:
    description:
      - Name of the deployment, unique on the controller.
    type: str
    required: true
  state:
    description:
      - V(started) creates or updates the deployment and starts it; with O(wait), waits until every replica is Running.
      - V(present) creates or updates the deployment without starting or stopping it; a new deployment stays stopped.
      - V(stopped) creates or updates the deployment and stops it; with O(wait), waits until no replica runs.
      - V(absent) deletes the deployment; its replicas are stopped by their agents.
    type: str
    choices: [started, present, stopped, absent]
    default: started
  src:
    description:
      - The app on the control node, a zip or a directory (zipped reproducibly), uploaded to the controller when it
        has no app with the same sha256.
      - Mutually exclusive with O(remote_src) and O(image).
    type: path
  remote_src:
    description:
      - The app on the target, a zip or a directory.
      - Mutually exclusive with O(src) and O(image).
    type: path
  artifact_sha256:
    description:
      - The sha256 of the app zip. The action plugin sets it from O(src); there is usually no need to set it.
      - With O(remote_src), the zip must have this checksum. Alone, it names an app already uploaded to the controller.
    type: str
  image:
    description:
      - Image of an image app (C(repository:tag), tag V(latest) when left out). It is registered on the controller
        as an app named after the deployment, with the tag as its version, unless an image app with the same
        repository and tag exists.
    type: str
  replicas:
    description:
      - "Replicas per node, as a dictionary of node id to count (V({node-a: 2, node-b: 1})), or the total number of
        replicas spread evenly over O(nodes)."
      - Nodes must have sent a heartbeat to the controller. Nodes left out keep none.
      - Required to create a deployment; when not set, an existing deployment keeps its replicas.
    type: raw
  nodes:
    description:
      - The nodes to spread O(replicas) over when it is a number. The first nodes get one more when it does not
        divide evenly.
    type: list
    elements: str
  labels:
    description:
      - Labels of the deployment. When not set, an existing deployment keeps its labels.
    type: dict
  runtime:
    description:
      - How the agents run the app. If not set, each agent's own mode.
    type: str
    choices: [process, docker]
  start_cmd:
    description:
      - Command line that starts the app instead of its C(./start.sh).
    type: str
  env:
    description:
      - Environment variables for the app. Values must be strings or numbers.
    type: dict
  restart_policy:
    description:
      - When the agents restart the app after it exits. If not set, the agents' default.
    type: str
    choices: [always, on-failure, never]
  memory:
    description:
      - Docker runtime only. Memory limit of each replica's container (V(512m), V(1g)).
    type: str
  cpus:
    description:
      - Docker runtime only. CPU limit of each replica's container.
    type: float
  network_mode:
    description:
      - Docker runtime only. Network mode of the containers.
    type: str
    choices: [host, bridge, none]
  ports:
    description:
      - Docker runtime only. Ports to publish, each C([HOST_PORT:]CONTAINER_PORT[/tcp|udp]). With a host port, a node
        can run only one replica.
    type: list
    elements: str
  base_image:
    description:
      - Docker runtime only. Image that a zip app runs in, instead of each agent's E(PLUM_BASE_IMAGE).
    type: str
  wait:
    description:
      - With O(state=started), wait until every replica reports Running and stays so for O(wait_stable) seconds;
        with O(state=stopped), until no replica runs.
      - The module fails as soon as a replica fails or crash-loops, with each node's phase and reason.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait with O(wait).
    type: int
    default: 180
  wait_stable:
    description:
      - Seconds every replica must stay Running, without a restart, before O(wait) counts the deployment as started.
      - The agents report to the controller when a replica's phase changes; the window covers that delay too.
    type: float
    default: 3.0
notes:
  - The controller's deployment API has no per-deployment stop timeout or host library mounts; those are set on
    the agents (see the plum_agent role).
seealso:
  - module: plum.deploy.plum_app
"""

EXAMPLES = r"""
- name: Run two replicas of hello on node-a and one on node-b
  plum.deploy.plum_deployment:
    name: hello
    src: apps/hello/
    replicas:
      node-a: 2
      node-b: 1
    env:
      GREETING: hi
  delegate_to: "{{ groups['plum_controller'][0] }}"
  run_once: true

- name: Spread four replicas over three nodes, in Docker with limits
  plum.deploy.plum_deployment:
    name: web
    image: registry.example.com/web:1.4
    replicas: 4
    nodes: [node-a, node-b, node-c]
    runtime: docker
    memory: 256m
    cpus: 0.5
    labels:
      team: edge

- name: Stop a deployment
  plum.deploy.plum_deployment:
    name: web
    state: stopped

- name: Delete a deployment
  plum.deploy.plum_deployment:
    name: web
    state: absent
"""

RETURN = r"""
changed:
  description: Whether the deployment was (or, in check mode, would be) changed.
  returned: always
  type: bool
actions:
  description:
    - What the module did, or would do in check mode, in order.
    - C(upload), C(register-image), C(create), C(replace), C(update), C(start), C(stop), C(delete).
  returned: always
  type: list
  elements: str
  sample: [upload, create, start]
reasons:
  description: Why each change is needed.
  returned: always
  type: list
  elements: str
artifact_missing:
  description:
    - Set when a real run must upload the app but only O(artifact_sha256) was given. The action plugin then copies
      O(src) to the target and runs the module again.
  returned: on failure, in that case only
  type: bool
status_code:
  description: HTTP status of the API request that failed, when the API refused it (C(null) when it could not be reached).
  returned: on failure
  type: int
  sample: 400
field:
  description: The field the API named in its error, if any.
  returned: on failure
  type: str
  sample: restart_policy
deployment_id:
  description: The id of the deployment (a new one after a replacement). Empty when it does not exist.
  returned: always
  type: str
  sample: 3f2a9c0d4b5e6f708192a3b4c5d6e7f8
deployment:
  description:
    - The deployment as the controller reports it (C(GET /v1/deployments/{id})), after the change. In check mode,
      before it. Empty when it does not exist.
  returned: always
  type: dict
  contains:
    deployment:
      description: C(DeploymentID), C(Name), C(Labels) and C(Status) (C(Running) or C(Stopped)).
      type: dict
      returned: when the deployment exists
    assignments:
      description:
        - One item per replica, with C(instanceId), C(nodeId), C(desired), C(phase), C(message), C(exitCode),
          C(restarts), C(appName), C(appVersion) and C(lastReportAt).
      type: list
      elements: dict
      returned: when the deployment exists
    entries:
      description: The deployment's entry, with its app, runtime settings and C(replicas) per node.
      type: list
      elements: dict
      returned: when the deployment exists
"""

import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.plum.deploy.plugins.module_utils._artifact import ArtifactError, module_artifact
from ansible_collections.plum.deploy.plugins.module_utils._client import (
    CONTROLLER,
    MultipartBody,
    PlumClient,
    PlumError,
    PlumNotFound,
    connection_argument_spec,
)
from ansible_collections.plum.deploy.plugins.module_utils._status import describe

PORT = re.compile(r"^(?:(\d{1,5}):)?(\d{1,5})(?:/(tcp|udp))?$")
APP_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_ENV = ("PLUM_INSTANCE_ID", "PLUM_APP_NAME", "PLUM_APP_VERSION", "PLUM_RELEASE", "PLUM_APP_HOME", "WORKER_NODE_ID")
SETTINGS = ("startCmd", "runtime", "image", "env", "memory", "cpus", "networkMode", "restartPolicy", "ports")
SETTING_OPTIONS = ("start_cmd", "runtime", "base_image", "env", "memory", "cpus", "network_mode", "restart_policy",
                   "ports")
POLL_INTERVAL = 0.25
PENDING = "(to be uploaded)"


class ParamError(ValueError):
    pass


def spread(total, nodes):
    """Replicas per node: ``total`` spread evenly over ``nodes``, the first ones getting the remainder."""
    if not nodes:
        raise ParamError("replicas is a number (%s): give the nodes to spread it over with nodes" % total)
    if len(set(nodes)) != len(nodes):
        raise ParamError("nodes lists a node twice: %s" % ", ".join(nodes))
    base, extra = divmod(total, len(nodes))
    return dict((node, base + (1 if i < extra else 0)) for i, node in enumerate(nodes))


def wanted_replicas(replicas, nodes):
    """The replicas option as {node: count}, or None when not set."""
    if replicas is None:
        if nodes:
            raise ParamError("nodes is only used with replicas as a number")
        return None
    if isinstance(replicas, dict):
        if nodes:
            raise ParamError("give replicas as a dictionary of node: count, or as a number with nodes, not both")
        out = {}
        for node, count in replicas.items():
            try:
                value = int(count)
            except (TypeError, ValueError):
                raise ParamError("replicas.%s: expected a whole number, got %r" % (node, count))
            if isinstance(count, bool) or value < 0 or ("%s" % count).strip() != str(value):
                raise ParamError("replicas.%s: expected a whole number >= 0, got %r" % (node, count))
            out[str(node)] = value
        return dict(sorted(out.items()))
    text = str(replicas).strip()
    if isinstance(replicas, bool) or not text.isdigit():
        raise ParamError("replicas: expected a dictionary of node: count, or a number, got %r" % (replicas,))
    return dict(sorted(spread(int(text), list(nodes or [])).items()))


def port_item(text):
    match = PORT.match(str(text).strip())
    if not match:
        raise ParamError('ports: expected "[HOST_PORT:]CONTAINER_PORT[/tcp|udp]" (the controller takes no host IP), '
                         "got %r" % (text,))
    host, container, protocol = match.groups()
    item = {"container": int(container), "protocol": protocol or "tcp"}
    if host is not None:
        item["host"] = int(host)
    for key in ("container", "host"):
        if key in item and not 1 <= item[key] <= 65535:
            raise ParamError("ports: port %s is not from 1 to 65535 in %r" % (item[key], text))
    return item


def wanted_settings(params):
    """The entry's runtime settings in the controller's stored form (its defaults for options not set)."""
    env = {}
    for key, value in (params.get("env") or {}).items():
        key = str(key)
        if not ENV_NAME.match(key) or key in RESERVED_ENV:
            raise ParamError("env: %r cannot be set (invalid name, or set by the agent)" % key)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ParamError("env: value of %s must be a string or a number, got %r (quote it in YAML)" % (key, value))
        env[key] = str(value)
    cpus = params.get("cpus")
    return {
        "startCmd": params.get("start_cmd") or "",
        "runtime": params.get("runtime") or "",
        "image": params.get("base_image") or "",
        "env": dict(sorted(env.items())),
        "memory": (params.get("memory") or "").strip().lower(),
        "cpus": float(cpus) if cpus is not None else None,
        "networkMode": params.get("network_mode") or "",
        "restartPolicy": params.get("restart_policy") or "",
        "ports": [port_item(p) for p in params.get("ports") or []],
    }


def _same(want, have):
    if want in (None, "", [], {}) and have in (None, "", [], {}):
        return True
    if isinstance(want, float) or isinstance(have, float):
        try:
            return float(want) == float(have)
        except (TypeError, ValueError):
            return False
    return want == have


def settings_changes(want, entry):
    return [key for key in SETTINGS if not _same(want.get(key), (entry or {}).get(key))]


def replicas_changes(want, have):
    """Nodes whose replica count changes; nodes not in ``want`` go to 0."""
    have = have or {}
    nodes = sorted(set(want) | set(have))
    return [n for n in nodes if want.get(n, 0) != have.get(n, 0)]


def split_image(image):
    image = image.strip()
    name, at, digest = image.partition("@")
    if at and digest:
        raise ParamError("image: digests are not supported by the controller's image apps, give repository:tag")
    repo, tag = name, "latest"
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = name.rsplit(":", 1)
    return repo, tag


class PlumDeploymentManager:
    def __init__(self, module, client):
        self.module = module
        self.client = client
        self.params = module.params
        self.name = self.params["name"]
        self.check_mode = module.check_mode
        self.results = dict(changed=False, actions=[], reasons=[], deployment={}, deployment_id="")
        self.did_change = False

    def fail(self, msg, **extra):
        result = dict(self.results)
        result["changed"] = self.did_change
        result.update(extra)
        self.module.fail_json(msg=msg, **result)

    def call(self, method, path, **kwargs):
        try:
            return self.client.request(method, path, **kwargs)
        except PlumError as exc:
            self.fail(exc.message, status_code=exc.status, field=exc.field)

    # -- reading ----------------------------------------------------------------------------

    def find(self):
        for item in self.call("GET", "/v1/deployments") or []:
            if item.get("name") == self.name:
                try:
                    return self.client.request("GET", PlumClient.path("v1", "deployments", item["deploymentId"]))
                except PlumNotFound:
                    return None  # deleted meanwhile
                except PlumError as exc:
                    self.fail(exc.message, status_code=exc.status)
        return None

    @staticmethod
    def status_of(detail):
        return ((detail or {}).get("deployment") or {}).get("Status")

    @staticmethod
    def id_of(detail):
        return ((detail or {}).get("deployment") or {}).get("DeploymentID") or ""

    def view(self, detail, apps_by_id):
        if not detail:
            return {"state": "absent"}
        entry = (detail.get("entries") or [{}])[0]
        app = apps_by_id.get(entry.get("artifactId")) or {}
        out = {
            "state": self.status_of(detail),
            "labels": dict(sorted((detail.get("deployment", {}).get("Labels") or {}).items())),
            "app": {"name": entry.get("appName"), "version": entry.get("appVersion"),
                    "sha256": app.get("sha256"), "type": app.get("type")},
            "replicas": dict(sorted((entry.get("replicas") or {}).items())),
        }
        for key in SETTINGS:
            out[key] = entry.get(key)
        return out

    # -- the app ------------------------------------------------------------------------------

    def artifact(self):
        """(sha256, zip path or None, meta or None) of the app zip, or (None, None, None)."""
        try:
            return module_artifact(self.params["remote_src"], self.params["artifact_sha256"], self.module.tmpdir)
        except ArtifactError as exc:
            self.fail(to_native(exc))

    def resolve_app(self, apps, sha, meta):
        """(app row or a placeholder, action needed or None)."""
        params = self.params
        if sha is not None:
            for app in apps:
                if app.get("type") == "zip" and app.get("sha256") == sha:
                    return app, None
            placeholder = {"artifactId": PENDING, "sha256": sha, "type": "zip",
                           "name": (meta or {}).get("name"), "version": (meta or {}).get("version")}
            return placeholder, "upload"
        if params["image"]:
            repo, tag = split_image(params["image"])
            for app in apps:
                if app.get("type") == "image" and app.get("imageRepository") == repo and app.get("imageTag") == tag:
                    return app, None
            name = APP_NAME_BAD.sub("-", self.name).lstrip("-_.") or "app"
            return {"artifactId": PENDING, "type": "image", "name": name, "version": tag,
                    "imageRepository": repo, "imageTag": tag}, "register-image"
        return None, None

    # -- the run ------------------------------------------------------------------------------

    def run(self):
        params = self.params
        state = params["state"]
        if params["src"]:
            self.fail("src is a path on the control node and is handled by the plum.deploy.plum_deployment action "
                      "plugin; use remote_src for a path on the target")
        detail = self.find()
        if detail and len(detail.get("entries") or []) > 1:
            self.fail("deployment %s has %d entries; plum_deployment manages single-entry deployments only"
                      % (self.name, len(detail["entries"])))
        apps = self.call("GET", "/v1/apps") or []
        apps_by_id = dict((a.get("artifactId"), a) for a in apps)
        before = self.view(detail, apps_by_id)
        current_id = self.id_of(detail)
        self.results.update(deployment=detail or {}, deployment_id=current_id)

        if state == "absent":
            actions = ["delete"] if detail else []
            self.results.update(actions=actions, changed=bool(actions),
                                reasons=["the deployment exists"] if detail else [])
            if self.module._diff:
                self.results["diff"] = dict(before=before, after={"state": "absent"})
            if actions and not self.check_mode:
                self.delete(current_id)
                self.results.update(deployment={}, deployment_id="")
            return self.results

        sha, zip_path, meta = self.artifact()
        try:
            app, app_action = self.resolve_app(apps, sha, meta)
            manage = app is not None or any(params.get(k) is not None for k in SETTING_OPTIONS)
            settings = wanted_settings(params) if manage else None
            replicas = wanted_replicas(params["replicas"], params["nodes"])
        except ParamError as exc:
            self.fail(to_native(exc))
        labels = params["labels"]
        if labels is not None:
            labels = dict(sorted((str(k), str(v)) for k, v in labels.items()))

        entry = (detail or {}).get("entries", [None])[0] if detail else None
        actions, reasons = [], []
        if app_action:
            actions.append(app_action)
            what = ("with sha256 %s" % sha[:12]) if sha else ("for image %s" % params["image"])
            reasons.append("the controller has no app %s" % what)
        replace = False
        if detail is None:
            if app is None:
                self.fail("deployment %s does not exist; give src, remote_src or image to create it" % self.name)
            if replicas is None:
                self.fail("deployment %s does not exist; give replicas to create it" % self.name)
            actions.append("create")
            reasons.append("the deployment does not exist")
        else:
            if app is not None and app.get("artifactId") != entry.get("artifactId"):
                replace = True
                reasons.append("new app %s %s (running %s %s)" % (app.get("name"), app.get("version"),
                                                                  entry.get("appName"), entry.get("appVersion")))
            changes = settings_changes(settings, entry) if settings is not None else []
            if changes:
                replace = True
                reasons.append("setting changes: %s" % ", ".join(changes))
            if replace:
                actions.append("replace")
            else:
                moved = replicas_changes(replicas, entry.get("replicas")) if replicas is not None else []
                old_labels = (detail.get("deployment") or {}).get("Labels") or {}
                if moved:
                    reasons.append("replica changes on %s" % ", ".join(moved))
                if labels is not None and labels != dict(old_labels):
                    reasons.append("label changes")
                if moved or (labels is not None and labels != dict(old_labels)):
                    actions.append("update")
        status_now = self.status_of(detail) if detail is not None and not replace else "Stopped"
        if (detail is not None and replace and state == "present" and self.status_of(detail) == "Running") or state == "started":
            status_after = "Running"
        elif state == "stopped":
            status_after = "Stopped"
        else:
            status_after = status_now
        if status_after != status_now:
            actions.append("start" if status_after == "Running" else "stop")
            if detail is not None and not replace:
                reasons.append("the deployment is %s" % status_now)

        after = self.expected_view(before, detail, app, settings, replicas, labels, status_after)
        self.results.update(actions=actions, reasons=reasons, changed=bool(actions))
        if self.module._diff:
            self.results["diff"] = dict(before=before, after=after)
        if self.check_mode:
            return self.results
        if app_action == "upload" and zip_path is None:
            self.fail("the controller has no app with sha256 %s; give src or remote_src to upload it" % sha,
                      artifact_missing=True)

        dep_id = current_id
        for action in actions:
            if action == "upload":
                app = self.upload(zip_path)
            elif action == "register-image":
                app = self.register_image(app)
            elif action == "create":
                dep_id = self.create(app, settings, replicas, labels)
            elif action == "replace":
                keep_replicas = replicas if replicas is not None else entry.get("replicas") or {}
                keep_labels = labels if labels is not None else (detail.get("deployment") or {}).get("Labels") or {}
                keep_settings = settings if settings is not None else dict((k, entry.get(k)) for k in SETTINGS)
                self.delete(dep_id)
                dep_id = self.create(app or {"artifactId": entry.get("artifactId")}, keep_settings, keep_replicas,
                                     keep_labels)
            elif action == "update":
                body = {}
                if labels is not None:
                    body["labels"] = labels
                if replicas is not None:
                    body["replicas"] = dict((n, replicas.get(n, 0)) for n in set(replicas) | set(entry.get("replicas") or {}))
                self.call("PATCH", PlumClient.path("v1", "deployments", dep_id), json_body=body)
            elif action in ("start", "stop"):
                self.call("POST", PlumClient.path("v1", "deployments", dep_id), query={"action": action})
            self.did_change = True
            self.results["deployment_id"] = dep_id
        self.results["changed"] = self.did_change
        final = self.call("GET", PlumClient.path("v1", "deployments", dep_id)) if dep_id else {}
        self.results.update(deployment=final or {}, deployment_id=dep_id)
        if self.module._diff:
            apps_by_id = dict((a.get("artifactId"), a) for a in (self.call("GET", "/v1/apps") or []))
            self.results["diff"]["after"] = self.view(final, apps_by_id)
        if params["wait"] and final:
            if state == "started":
                self.results["deployment"] = self.wait_running(dep_id, final)
            elif state == "stopped":
                self.results["deployment"] = self.wait_stopped(dep_id, final)
        return self.results

    def expected_view(self, before, detail, app, settings, replicas, labels, status_after):
        after = dict(before) if detail else {"labels": {}, "replicas": {}}
        after.pop("state", None)
        if app is not None:
            after["app"] = {"name": app.get("name"), "version": app.get("version"), "sha256": app.get("sha256"),
                            "type": app.get("type")}
        if settings is not None:
            after.update(settings)
        if replicas is not None:
            after["replicas"] = dict((n, c) for n, c in sorted(replicas.items()) if c)
        if labels is not None:
            after["labels"] = labels
        after["state"] = status_after
        return after

    # -- writes -------------------------------------------------------------------------------

    def upload(self, zip_path):
        body = MultipartBody([("file", "app.zip", "application/zip", zip_path)])
        return self.call("POST", "/v1/apps/upload", body=body, timeout=self.client.timeout * 5)

    def register_image(self, app):
        return self.call("POST", "/v1/apps/create-image", json_body={
            "name": app["name"], "version": app["version"],
            "imageRepository": app["imageRepository"], "imageTag": app["imageTag"],
        })

    def create(self, app, settings, replicas, labels):
        entry = {"artifactId": app["artifactId"], "replicas": dict((n, c) for n, c in replicas.items() if c)}
        for key, value in (settings or {}).items():
            if value not in (None, "", [], {}):
                entry[key] = value
        body = {"name": self.name, "entries": [entry]}
        if labels:
            body["labels"] = labels
        answer = self.call("POST", "/v1/deployments", json_body=body)
        return answer["deploymentId"]

    def delete(self, dep_id):
        try:
            self.client.request("DELETE", PlumClient.path("v1", "deployments", dep_id))
        except PlumNotFound:
            return
        except PlumError as exc:
            self.fail(exc.message, status_code=exc.status, field=exc.field)
        self.did_change = True

    # -- waiting ------------------------------------------------------------------------------

    def fail_replicas(self, what, detail, items):
        lines = "\n".join("  node %s instance %s: %s" % (a.get("nodeId"), a.get("instanceId"), describe(a))
                          for a in items)
        self.results["deployment"] = detail
        self.fail("deployment %s %s:\n%s" % (self.name, what, lines),
                  replicas=[dict(node=a.get("nodeId"), instance=a.get("instanceId"), phase=a.get("phase"),
                                 message=a.get("message"), exit_code=a.get("exitCode")) for a in items])

    def wait_running(self, dep_id, detail):
        params = self.params
        deadline = time.time() + params["wait_timeout"]
        baseline = {}
        stable_since = None
        while True:
            items = [a for a in detail.get("assignments") or [] if a.get("desired") == "Running"]
            for a in items:
                baseline.setdefault(a.get("instanceId"), a.get("restarts") or 0)
            bad = [a for a in items if a.get("phase") in ("Failed", "BackOff")
                   or (a.get("restarts") or 0) > baseline[a.get("instanceId")]]
            if bad:
                self.fail_replicas("has replicas that fail or restart", detail, bad)
            pending = [a for a in items if a.get("phase") not in ("Running", "Completed")]
            now = time.time()
            if pending:
                stable_since = None
            elif stable_since is None:
                stable_since = now
            if not pending and now - stable_since >= params["wait_stable"]:
                return detail
            if now >= deadline:
                self.fail_replicas("did not have every replica Running within %s seconds (wait_timeout)"
                                   % params["wait_timeout"], detail, pending or items)
            time.sleep(POLL_INTERVAL)
            detail = self.call("GET", PlumClient.path("v1", "deployments", dep_id))

    def wait_stopped(self, dep_id, detail):
        params = self.params
        deadline = time.time() + params["wait_timeout"]
        while True:
            running = [a for a in detail.get("assignments") or []
                       if a.get("phase") in ("Starting", "Running", "BackOff", "Downloading")]
            if not running:
                return detail
            if time.time() >= deadline:
                self.fail_replicas("still has running replicas after %s seconds (wait_timeout)"
                                   % params["wait_timeout"], detail, running)
            time.sleep(POLL_INTERVAL)
            detail = self.call("GET", PlumClient.path("v1", "deployments", dep_id))


def main():
    argument_spec = connection_argument_spec(
        name=dict(type="str", required=True),
        state=dict(type="str", default="started", choices=["started", "present", "stopped", "absent"]),
        src=dict(type="path"),
        remote_src=dict(type="path"),
        artifact_sha256=dict(type="str"),
        image=dict(type="str"),
        replicas=dict(type="raw"),
        nodes=dict(type="list", elements="str"),
        labels=dict(type="dict"),
        runtime=dict(type="str", choices=["process", "docker"]),
        start_cmd=dict(type="str"),
        env=dict(type="dict"),
        restart_policy=dict(type="str", choices=["always", "on-failure", "never"]),
        memory=dict(type="str"),
        cpus=dict(type="float"),
        network_mode=dict(type="str", choices=["host", "bridge", "none"]),
        ports=dict(type="list", elements="str"),
        base_image=dict(type="str"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=180),
        wait_stable=dict(type="float", default=3.0),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[("src", "remote_src", "image"), ("artifact_sha256", "image")],
    )
    try:
        client = PlumClient.from_params(CONTROLLER, module.params)
    except PlumError as exc:
        module.fail_json(msg=exc.message)
    if client.token:
        module.no_log_values.add(client.token)
    module.exit_json(**PlumDeploymentManager(module, client).run())


if __name__ == "__main__":
    main()
