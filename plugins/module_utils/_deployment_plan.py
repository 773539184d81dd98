# -*- coding: utf-8 -*-
# Copyright: Plum Deploy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the plum.deploy collection: it can change at any time, without notice.
"""plum_deployment's pure logic: its options, the entry the controller is sent, and the plan.

Check mode and real runs use the same plan: a real run sends exactly the requests whose actions check mode
reports, and ``changed``/``diff`` come from one comparison of what the user asks for with the deployment the
controller returns. Placement is the controller's: a number of replicas is sent as a number with its
placement, and compared with the number and placement the controller keeps, never with where the replicas
happen to run (failover moves them).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

from ansible_collections.plum.deploy.plugins.module_utils._client import connection_argument_spec
from ansible_collections.plum.deploy.plugins.module_utils._spec import SpecError, env_values

Json = Dict[str, Any]

# The runtime's vocabulary (plum.common.vocab, plum.common.resources), pinned by contract tests.
RESTART_POLICIES = ("always", "on-failure", "never")
NETWORK_MODES = ("host", "bridge", "none")
RUNTIMES = ("process", "docker")
TRANSPORTS = ("tcp", "udp")
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # the whole id (fullmatch)

STATES = ("started", "present", "stopped", "absent")
RUNNING = "Running"
STOPPED = "Stopped"
PORT = re.compile(r"^(?:(\d{1,5}):)?(\d{1,5})(?:/(tcp|udp))?$")
APP_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]")
PENDING = "(to be uploaded)"  # the artifactId of an app the run uploads or registers first
_EMPTY: Tuple[Any, ...] = (None, "", [], {})


class ParamError(ValueError):
    pass


class Setting(NamedTuple):
    """A runtime setting of the entry: the module's option, the controller's entry key, the option's spec."""

    option: str
    key: str
    spec: Json


# Changing one of these on an existing deployment is a rolling update.
SETTINGS = (
    Setting("start_cmd", "startCmd", dict(type="str")),
    Setting("runtime", "runtime", dict(type="str", choices=list(RUNTIMES))),
    Setting("base_image", "image", dict(type="str")),
    Setting("env", "env", dict(type="dict")),
    Setting("memory", "memory", dict(type="str")),
    Setting("cpus", "cpus", dict(type="float")),
    Setting("network_mode", "networkMode", dict(type="str", choices=list(NETWORK_MODES))),
    Setting("restart_policy", "restartPolicy", dict(type="str", choices=list(RESTART_POLICIES))),
    Setting("ports", "ports", dict(type="list", elements="str")),
)
SETTING_KEYS = tuple(s.key for s in SETTINGS)

# How the controller rolls out a new app or new settings (the deployment's ``update`` policy).
UPDATE_POLICY = (
    Setting("max_unavailable", "maxUnavailable", dict(type="int")),
    Setting("min_healthy_seconds", "minHealthySeconds", dict(type="float")),
    Setting("progress_deadline_seconds", "progressDeadlineSeconds", dict(type="float")),
    Setting("auto_rollback", "autoRollback", dict(type="bool")),
)


def argument_spec() -> Json:
    """The module's argument_spec: every option declared once, here."""
    spec: Json = connection_argument_spec(
        name=dict(type="str", required=True),
        state=dict(type="str", default="started", choices=list(STATES)),
        src=dict(type="path"),
        remote_src=dict(type="path"),
        artifact_sha256=dict(type="str"),
        image=dict(type="str"),
        replicas=dict(type="raw"),
        nodes=dict(type="list", elements="str"),
        node_labels=dict(type="dict"),
        labels=dict(type="dict"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=180),
        wait_stable=dict(type="float", default=3.0),
        update=dict(type="dict", options=dict((s.option, dict(s.spec)) for s in UPDATE_POLICY)),
    )
    for setting in SETTINGS:
        spec[setting.option] = dict(setting.spec)
    return spec


MUTUALLY_EXCLUSIVE = [("src", "remote_src", "image"), ("artifact_sha256", "image")]


# -- what the user asks for ------------------------------------------------------------------------


class Replicas:
    """Replicas pinned per node by the user (``pinned``), or a number the controller places (``count``)."""

    def __init__(self, pinned: Optional[Dict[str, int]] = None, count: Optional[int] = None,
                 placement: Optional[Json] = None) -> None:
        self.pinned = pinned
        self.count = count
        self.placement = placement or {}

    def view(self) -> Json:
        """The replicas and placement as the diff shows them (see replicas_view)."""
        if self.pinned is not None:
            return {"replicas": dict((n, c) for n, c in sorted(self.pinned.items()) if c), "placement": None}
        return {"replicas": self.count, "placement": self.placement}

    def entry_fields(self, have: Optional[Json]) -> Json:
        """The entry's replica fields for the controller; nodes pinned now but not wanted go to 0."""
        if self.pinned is None:
            return {"replicas": self.count, "placement": self.placement}
        counts = dict((n, 0) for n in ((have or {}).get("replicas") or {}))
        counts.update(self.pinned)
        return {"replicas": counts if have else dict((n, c) for n, c in counts.items() if c)}


def _node(value: Any, field: str) -> str:
    node = str(value)
    if not NODE_ID.fullmatch(node):
        raise ParamError("%s: %r is not a node id (letters, digits, '_', '.', '-', at most 63)" % (field, node))
    return node


def _string_map(value: Mapping[Any, Any]) -> Dict[str, str]:
    return dict(sorted((str(k), str(v)) for k, v in value.items()))


def wanted_replicas(replicas: Any, nodes: Optional[List[str]], node_labels: Optional[Json]) -> Optional[Replicas]:
    """The replicas, nodes and node_labels options as Replicas, or None when replicas is not set."""
    if replicas is None:
        if nodes is not None or node_labels is not None:
            raise ParamError("nodes and node_labels are only used with replicas as a number")
        return None
    if isinstance(replicas, dict):
        if nodes is not None or node_labels is not None:
            raise ParamError("give replicas as a dictionary of node: count, or as a number with nodes or "
                             "node_labels, not both")
        pinned = {}
        for node, count in replicas.items():
            text = str(count).strip()
            if isinstance(count, bool) or not text.isdigit():
                raise ParamError("replicas.%s: expected a whole number >= 0, got %r" % (node, count))
            pinned[_node(node, "replicas")] = int(text)
        return Replicas(pinned=dict(sorted(pinned.items())))
    text = str(replicas).strip()
    if isinstance(replicas, bool) or not text.isdigit():
        raise ParamError("replicas: expected a dictionary of node: count, or a number, got %r" % (replicas,))
    placement: Json = {}
    if nodes is not None:
        if not nodes:
            raise ParamError("nodes: give at least one node, or leave nodes out to use every node")
        names = [_node(n, "nodes") for n in nodes]
        if len(set(names)) != len(names):
            raise ParamError("nodes lists a node twice: %s" % ", ".join(names))
        placement["nodes"] = sorted(names)
    if node_labels:
        placement["labels"] = _string_map(node_labels)
    return Replicas(count=int(text), placement=placement)


def port_item(text: Any) -> Json:
    match = PORT.match(str(text).strip())
    if not match:
        raise ParamError('ports: expected "[HOST_PORT:]CONTAINER_PORT[/tcp|udp]" (the controller takes no host IP), '
                         "got %r" % (text,))
    host, container, protocol = match.groups()
    item: Json = {"container": int(container), "protocol": protocol or "tcp"}
    if host is not None:
        item["host"] = int(host)
    for key in ("container", "host"):
        if key in item and not 1 <= item[key] <= 65535:
            raise ParamError("ports: port %s is not from 1 to 65535 in %r" % (item[key], text))
    return item


def wanted_settings(params: Mapping[str, Any]) -> Json:
    """The entry's runtime settings in the controller's stored form (its defaults for options not set)."""
    try:
        env = env_values(params.get("env") or {})
    except SpecError as exc:
        raise ParamError(str(exc))
    cpus = params.get("cpus")
    return {
        "startCmd": params.get("start_cmd") or "",
        "runtime": params.get("runtime") or "",
        "image": params.get("base_image") or "",
        "env": env,
        "memory": (params.get("memory") or "").strip().lower(),
        "cpus": float(cpus) if cpus is not None else None,
        "networkMode": params.get("network_mode") or "",
        "restartPolicy": params.get("restart_policy") or "",
        "ports": [port_item(p) for p in params.get("ports") or []],
    }


def wanted_update(value: Optional[Mapping[str, Any]]) -> Optional[Json]:
    """The update option as the controller's ``update`` policy (only the fields set; the controller checks them)."""
    given = value or {}
    policy = dict((s.key, given[s.option]) for s in UPDATE_POLICY if given.get(s.option) is not None)
    return policy or None


def manages_settings(params: Mapping[str, Any]) -> bool:
    """Whether the task sets the runtime settings: it names the app or any setting (the others go to defaults)."""
    app_given = any(params.get(k) for k in ("remote_src", "artifact_sha256", "image"))
    return app_given or any(params.get(s.option) is not None for s in SETTINGS)


def split_image(image: str) -> Tuple[str, str]:
    image = image.strip()
    name, at, digest = image.partition("@")
    if at and digest:
        raise ParamError("image: digests are not supported by the controller's image apps, give repository:tag")
    repo, tag = name, "latest"
    if ":" in name.rsplit("/", 1)[-1]:
        repo, tag = name.rsplit(":", 1)
    return repo, tag


def resolve_app(apps: List[Json], name: str, sha: Optional[str], meta: Optional[Json],
                image: Optional[str]) -> Tuple[Optional[Json], Optional[str]]:
    """(the app to run, or a placeholder for one the run must upload or register; the action that does it)."""
    if sha is not None:
        for app in apps:
            if app.get("type") == "zip" and app.get("sha256") == sha:
                return app, None
        return {"artifactId": PENDING, "sha256": sha, "type": "zip",
                "name": (meta or {}).get("name"), "version": (meta or {}).get("version")}, "upload"
    if image:
        repo, tag = split_image(image)
        for app in apps:
            if app.get("type") == "image" and app.get("imageRepository") == repo and app.get("imageTag") == tag:
                return app, None
        app_name = APP_NAME_BAD.sub("-", name).lstrip("-_.") or "app"
        return {"artifactId": PENDING, "type": "image", "name": app_name, "version": tag,
                "imageRepository": repo, "imageTag": tag}, "register-image"
    return None, None


# -- what the controller has -----------------------------------------------------------------------


def entry_of(detail: Optional[Json]) -> Optional[Json]:
    entries = (detail or {}).get("entries") or []
    return entries[0] if entries else None


def status_of(detail: Optional[Json]) -> Optional[str]:
    return ((detail or {}).get("deployment") or {}).get("Status")


def id_of(detail: Optional[Json]) -> str:
    return ((detail or {}).get("deployment") or {}).get("DeploymentID") or ""


def rollout_of(detail: Optional[Json]) -> Json:
    return ((detail or {}).get("deployment") or {}).get("rollout") or {}


def _placement(value: Any) -> Json:
    """A placement in one form: only the keys that restrict the candidates, nodes sorted."""
    value = value or {}
    out: Json = {}
    if value.get("nodes"):
        out["nodes"] = sorted(str(n) for n in value["nodes"])
    if value.get("labels"):
        out["labels"] = _string_map(value["labels"])
    return out


def replicas_view(entry: Json) -> Json:
    """What the user owns of the replicas: the count per node when pinned; the number and the placement when the
    controller places them (where they run is the controller's business, and failover changes it)."""
    if entry.get("desiredReplicas") is not None:
        return {"replicas": entry["desiredReplicas"], "placement": _placement(entry.get("placement"))}
    return {"replicas": dict((n, c) for n, c in sorted((entry.get("replicas") or {}).items()) if c),
            "placement": None}


def view(detail: Optional[Json], apps_by_id: Mapping[str, Json]) -> Json:
    """The part of a deployment that plum_deployment manages, for ``diff``."""
    entry = entry_of(detail)
    if not detail or entry is None:
        return {"state": "absent"}
    app = apps_by_id.get(entry.get("artifactId") or "") or {}
    out: Json = {
        "state": status_of(detail),
        "labels": dict(sorted(((detail.get("deployment") or {}).get("Labels") or {}).items())),
        "app": {"name": entry.get("appName"), "version": entry.get("appVersion"),
                "sha256": app.get("sha256"), "type": app.get("type")},
    }
    out.update(replicas_view(entry))
    for key in SETTING_KEYS:
        out[key] = entry.get(key)
    return out


def _same(want: Any, have: Any) -> bool:
    if want in _EMPTY and have in _EMPTY:
        return True
    if isinstance(want, float) or isinstance(have, float):
        try:
            return float(want) == float(have)
        except (TypeError, ValueError):
            return False
    return bool(want == have)


def settings_changes(want: Json, entry: Optional[Json]) -> List[str]:
    return [key for key in SETTING_KEYS if not _same(want.get(key), (entry or {}).get(key))]


def replicas_changes(want: Replicas, entry: Json) -> List[str]:
    """Why the entry's replicas or placement change; empty when they do not."""
    have = replicas_view(entry)
    if want.pinned is not None:
        if have["placement"] is not None:
            return ["replicas pinned per node (the controller places %s)" % have["replicas"]]
        moved = [n for n in sorted(set(want.pinned) | set(have["replicas"]))
                 if want.pinned.get(n, 0) != have["replicas"].get(n, 0)]
        return ["replica changes on %s" % ", ".join(moved)] if moved else []
    if have["placement"] is None:
        return ["%s replicas placed by the controller (pinned per node now)" % want.count]
    reasons = []
    if want.count != have["replicas"]:
        reasons.append("replicas %s (now %s)" % (want.count, have["replicas"]))
    if want.placement != have["placement"]:
        reasons.append("placement %s (now %s)" % (want.placement, have["placement"]))
    return reasons


# -- the plan ----------------------------------------------------------------------------------------


class Plan:
    """What a run does: ``actions`` in order, the request bodies they send, and the view after."""

    def __init__(self, actions: List[str], reasons: List[str], after: Json, create: Optional[Json] = None,
                 patch: Optional[Json] = None, rolls_out: bool = False, register: Optional[Json] = None) -> None:
        self.actions = actions  # upload, register-image, create, update, start, stop, delete
        self.reasons = reasons
        self.after = after
        self.create = create  # the POST /v1/deployments body
        self.patch = patch  # the PATCH /v1/deployments/{id} body
        self.rolls_out = rolls_out  # the PATCH changes the app or the settings: the controller rolls it out
        self.register = register  # the POST /v1/apps/create-image body

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def _app_view(app: Json) -> Json:
    return {"name": app.get("name"), "version": app.get("version"), "sha256": app.get("sha256"),
            "type": app.get("type")}


def _create_body(name: str, app: Json, settings: Optional[Json], replicas: Replicas,
                 labels: Optional[Dict[str, str]], update: Optional[Json]) -> Json:
    entry: Json = {"artifactId": app["artifactId"]}
    entry.update(replicas.entry_fields(None))
    for key, value in (settings or {}).items():
        if value not in _EMPTY:
            entry[key] = value
    body: Json = {"name": name, "entries": [entry]}
    if labels:
        body["labels"] = labels
    if update:
        body["update"] = update
    return body


def _patch(entry: Json, before: Json, app: Optional[Json], settings: Optional[Json], replicas: Optional[Replicas],
           labels: Optional[Dict[str, str]], update: Optional[Json]) -> Tuple[Optional[Json], List[str], bool]:
    """(the PATCH body or None, why, whether it changes the app or the settings: a new revision)."""
    fields: Json = {}
    reasons: List[str] = []
    if app is not None and app.get("artifactId") != entry.get("artifactId"):
        fields["artifactId"] = app["artifactId"]
        reasons.append("new app %s %s (running %s %s)" % (app.get("name"), app.get("version"),
                                                          entry.get("appName"), entry.get("appVersion")))
    changes = settings_changes(settings, entry) if settings is not None else []
    if settings is not None and changes:
        fields.update((key, settings[key]) for key in changes)
        reasons.append("setting changes: %s" % ", ".join(changes))
    new_revision = bool(fields)
    moved = replicas_changes(replicas, entry) if replicas is not None else []
    if replicas is not None and moved:
        fields.update(replicas.entry_fields(entry))
        reasons.extend(moved)
    new_labels = labels is not None and labels != before.get("labels")
    if new_labels:
        reasons.append("label changes")
    if not fields and not new_labels:
        return None, reasons, False
    patch: Json = {"entries": [fields]} if fields else {}
    if new_labels:
        patch["labels"] = labels
    if new_revision and update:
        patch["update"] = update
    return patch, reasons, new_revision


def _app_reason(app: Json) -> str:
    if app.get("sha256"):
        return "the controller has no app with sha256 %s" % app["sha256"][:12]
    return "the controller has no app for image %s:%s" % (app.get("imageRepository"), app.get("imageTag"))


def plan(name: str, state: str, detail: Optional[Json], before: Json, app: Optional[Json] = None,
         app_action: Optional[str] = None, settings: Optional[Json] = None, replicas: Optional[Replicas] = None,
         labels: Optional[Dict[str, str]] = None, update: Optional[Json] = None) -> Plan:
    """The actions that bring deployment ``name`` to ``state``.

    detail: the deployment from the controller (GET /v1/deployments/{id}), None when it does not exist.
    before: its view (see view()). app: the app to run (or a PENDING placeholder, with the app_action that
    uploads or registers it), None to keep the current one. settings: see wanted_settings(), None to keep the
    current ones. replicas, labels: None to keep the current ones. update: the rollout policy sent with a create
    and with an update that rolls out (the controller does not report it back, so it is no change by itself).
    """
    if state == "absent":
        if detail is None:
            return Plan([], [], {"state": "absent"})
        return Plan(["delete"], ["the deployment exists"], {"state": "absent"})
    if state not in STATES:
        raise ParamError("state: unknown state %r" % state)

    actions: List[str] = [app_action] if app_action else []
    reasons: List[str] = [_app_reason(app or {})] if app_action else []
    create = patch = None
    new_revision = False
    entry = entry_of(detail)
    if entry is None:
        if app is None:
            raise ParamError("deployment %s does not exist; give src, remote_src or image to create it" % name)
        if replicas is None:
            raise ParamError("deployment %s does not exist; give replicas to create it" % name)
        create = _create_body(name, app, settings, replicas, labels, update)
        actions.append("create")
        reasons.append("the deployment does not exist")
        status_now = STOPPED  # the controller creates a deployment stopped
    else:
        status_now = status_of(detail) or STOPPED
        patch, why, new_revision = _patch(entry, before, app, settings, replicas, labels, update)
        reasons.extend(why)
        if patch is not None:
            actions.append("update")

    status_after = {"started": RUNNING, "stopped": STOPPED}.get(state, status_now)
    if status_after != status_now:
        if entry is not None:
            reasons.append("the deployment is %s" % status_now)
        if status_after == STOPPED:  # stop first: the update then rolls nothing out on running replicas
            actions.insert(actions.index("update") if "update" in actions else len(actions), "stop")
        else:
            actions.append("start")
    register = None
    if app is not None and app_action == "register-image":
        register = dict((k, app[k]) for k in ("name", "version", "imageRepository", "imageTag"))
    return Plan(actions, reasons, _after(before if entry is not None else None, app, settings, replicas, labels,
                                         status_after),
                create=create, patch=patch, register=register,
                # Only running replicas are rolled out; a stopped deployment starts on the new revision.
                rolls_out=new_revision and status_now == status_after == RUNNING)


def _after(before: Optional[Json], app: Optional[Json], settings: Optional[Json], replicas: Optional[Replicas],
           labels: Optional[Dict[str, str]], status: str) -> Json:
    """The view after the run: the current one (if any) with what the task sets."""
    after = dict(before) if before is not None else {"labels": {}}
    if app is not None:
        after["app"] = _app_view(app)
    if settings is not None:
        after.update(settings)
    if replicas is not None:
        after.update(replicas.view())
    if labels is not None:
        after["labels"] = labels
    after["state"] = status
    return after
