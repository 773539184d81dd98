"""The deployment routes' bodies and answers: what api_deployments.py checks requests with
(``CREATE.check(body)``, ``PATCH.check(body)``) and what the OpenAPI document says they take and answer.

Shapes only: that a node is known, an artifact exists, host ports fit and a placement has candidates
needs the database, so the handlers check those on the checked body.
"""

from __future__ import annotations

from typing import Any

from plum.common import resources
from plum.common.vocab import NODE_ID_PATTERN, RESTART_POLICIES
from plum.controller import validation as v
from plum.controller.api_schemas import DEPLOYMENT_INSTANCE, ERROR, LABELS, NODE_ID, PORT_MAPPING, PUBLISHED_PORT, TEXT
from plum.controller.deployments import DESIRED, RUNTIMES
from plum.controller.openapi import Doc, Param, Reply
from plum.controller.rollout import STATES as ROLLOUT_STATES
from plum.controller.rollout import UpdatePolicy
from plum.controller.schema import Array, Bool, Custom, Int, Map, Num, Obj, OneOf, Str

MAX_REPLICAS_PER_NODE = 1000
MAX_INSTANCES_PER_REQUEST = 10_000
MAX_ENTRIES = 64
MAX_PLACEMENT_NODES = 1000
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9 _.:@-]{0,127}"


def _cpus(value: Any, field: str) -> float:
    return v.parse_with(value, field, resources.parse_cpus)


def _replica_counts(value: Any, field: str) -> dict[str, int]:
    for node, count in value.items():
        v.node_id(node, f"{field}.{node}")
        v.whole(count, f"{field}.{node}", minimum=0, maximum=MAX_REPLICAS_PER_NODE)
    return dict(sorted(value.items()))


def _replicas(value: Any, field: str) -> dict[str, int] | int:
    """The shape of ``replicas``; that each node is known is the handler's check (it needs the nodes)."""
    if isinstance(value, dict):
        return _replica_counts(value, field)
    if isinstance(value, int) and not isinstance(value, bool):
        return v.whole(value, field, minimum=0, maximum=MAX_INSTANCES_PER_REQUEST)
    raise v.bad(field, f"expected an object of nodeId -> number of instances or a number, got {v.show(value)}")


REPLICA_COUNTS = Map(
    values=Int(minimum=0, maximum=MAX_REPLICAS_PER_NODE),
    key_pattern=NODE_ID_PATTERN,
    description="pinned: nodeId -> number of instances on that node (each node must have sent a heartbeat)",
    example={"n1": 2, "n2": 1},
)
REPLICAS = Custom(
    like=OneOf(
        options=(
            REPLICA_COUNTS,
            Int(minimum=0, maximum=MAX_INSTANCES_PER_REQUEST, description="placed: the controller picks the nodes"),
        )
    ),
    parse=_replicas,
)
PLACEMENT = Obj(
    name="Placement",
    props={
        "nodes": Array(items=NODE_ID, max_items=MAX_PLACEMENT_NODES, what="node ids", description="absent: any node"),
        "labels": Custom(like=LABELS.like, parse=v.label_map, description="every key=value held by the node"),
    },
    description="where a placed entry may run: the listed nodes whose heartbeat labels hold every key=value",
)
_POLICY = UpdatePolicy()
UPDATE = Obj(
    name="UpdatePolicy",
    props={
        "maxUnavailable": Int(minimum=1, default=_POLICY.max_unavailable, description="instances updating at once"),
        "minHealthySeconds": Num(
            minimum=0,
            maximum=86400,
            default=_POLICY.min_healthy_seconds,
            description="Running on the new revision this long: healthy",
        ),
        "progressDeadlineSeconds": Num(
            minimum=0,
            maximum=86400,
            default=_POLICY.progress_deadline_seconds,
            description="an updated instance not healthy by then stops the rollout",
        ),
        "autoRollback": Bool(default=_POLICY.auto_rollback, description="a stopped rollout goes back"),
    },
    description="how a change of an entry's app or settings is rolled out (kept with the deployment)",
)
PORTS = Custom(
    like=Array(items=OneOf(options=(PUBLISHED_PORT, PORT_MAPPING, Str(description="'[[IP:]HOST:]CONTAINER[/udp]'")))),
    parse=v.port_list,
    description="as the agent's spec.ports: objects, Plum's port mappings, or '[[IP:]HOST:]CONTAINER[/udp]'",
)
_ENTRY = {
    "artifactUrl": Str(max_length=1024, description="an app's url (/artifacts/<file>) or image://<artifactId>"),
    "artifactId": Str(max_length=128, description="alternative to artifactUrl"),
    "replicas": REPLICAS,
    "placement": PLACEMENT,
    "startCmd": Custom(like=Str(), parse=v.shell_command, empty_is_absent=True, description="a shell command line"),
    "runtime": Str(enum=RUNTIMES, description="empty: the agent's default"),
    "image": Custom(
        like=Str(),
        parse=v.image_ref,
        empty_is_absent=True,
        description="docker runtime: base image for a zip app, or an override",
    ),
    "env": Custom(
        like=Map(values=OneOf(options=(Str(), Num())), key_pattern=resources.ENV_NAME_RE.pattern),
        parse=v.env_map,
        description="NAME: value (a string or a number); PLUM_* names are reserved",
    ),
    "memory": Custom(
        like=Str(), parse=v.memory_limit, empty_is_absent=True, description="docker memory limit such as 512m or 1g"
    ),
    "cpus": Custom(like=Num(minimum=0.01), parse=_cpus, empty_is_absent=True),
    "networkMode": Str(enum=resources.NETWORK_MODES),
    "restartPolicy": Str(enum=RESTART_POLICIES),
    "ports": PORTS,
}
ENTRY = Obj(name="Entry", props=_ENTRY, required=("replicas",))
DEPLOYMENT_NAME = Str(
    pattern=NAME_PATTERN, what="1-128 letters, digits, spaces or '_', '.', ':', '@', '-'", nonempty=True
)
ENTRIES_FORM = Obj(
    props={
        "name": DEPLOYMENT_NAME,
        "labels": LABELS,
        "entries": Array(items=ENTRY, min_items=1, max_items=MAX_ENTRIES, what="entries"),
        "update": UPDATE,
    },
    required=("name", "entries"),
)
LEGACY_FORM = Obj(
    props={"name": DEPLOYMENT_NAME, "labels": LABELS, "update": UPDATE, **_ENTRY}, required=("name", "replicas")
)


def _placed_only(entry: dict[str, Any], prefix: str) -> None:
    if "placement" in entry and not isinstance(entry["replicas"], int):
        raise v.bad(v.join(prefix, "placement"), "only with a number of replicas (the controller places them)")


def _create(value: Any, field: str) -> dict[str, Any]:
    """The form is told by its keys, so that a mistake is explained in the form the client meant."""
    data = v.obj(value, field)
    if "entries" not in data:
        body = LEGACY_FORM.check(data, field)
        _placed_only(body, field)
        return body
    body = ENTRIES_FORM.check(data, field)
    for i, entry in enumerate(body["entries"]):
        _placed_only(entry, v.join(field, f"entries[{i}]"))
    return body


CREATE = Custom(
    like=OneOf(options=(ENTRIES_FORM, LEGACY_FORM)),
    parse=_create,
    description="entries form, or Plum's legacy form with one entry's fields at the top level",
)
ROLLOUT = Obj(
    name="Rollout",
    props={
        "revision": Int(description="the revision being rolled out"),
        "previousRevision": Int(description="the revision a rollback goes back to"),
        "state": Str(enum=ROLLOUT_STATES),
        "updated": Int(description="instances switched to the new revision"),
        "healthy": Int(description="updated instances healthy on it"),
        "total": Int(),
        "message": TEXT,
        "startedAt": Num(description="unix seconds"),
        "finishedAt": Num(nullable=True, description="unix seconds; null while running"),
    },
    required=(
        "revision",
        "previousRevision",
        "state",
        "updated",
        "healthy",
        "total",
        "message",
        "startedAt",
        "finishedAt",
    ),
    nullable=True,
    description="the last rollout of a change to the app or settings; null when there never was one",
)
CREATED = Obj(name="DeploymentCreated", props={"deploymentId": TEXT, "instances": Array(items=TEXT)})
_SUMMARY = {
    "deploymentId": TEXT,
    "name": TEXT,
    "labels": Map(values=TEXT),
    "status": Str(enum=DESIRED),
    "instances": Int(),
    "rollout": ROLLOUT,
}
SUMMARY = Obj(name="DeploymentSummary", props=_SUMMARY, required=tuple(_SUMMARY))
_HEADER = {
    "DeploymentID": TEXT,
    "Name": TEXT,
    "Labels": Map(values=TEXT),
    "Status": TEXT,
    "deploymentId": TEXT,
    "name": TEXT,
    "labels": Map(values=TEXT),
    "status": TEXT,
    "rollout": ROLLOUT,
}
_ENTRY_DETAIL = {
    "position": Int(),
    "artifactId": TEXT,
    "artifactUrl": TEXT,
    "appName": TEXT,
    "appVersion": TEXT,
    "startCmd": TEXT,
    "runtime": TEXT,
    "image": TEXT,
    "env": Map(values=TEXT),
    "memory": TEXT,
    "cpus": Num(nullable=True),
    "networkMode": TEXT,
    "restartPolicy": TEXT,
    "ports": Array(items=PUBLISHED_PORT),
    "replicas": Map(values=Int(), description="the instances per node now"),
}
_PLACED_DETAIL = {
    "desiredReplicas": Int(description="placed entries: the number asked for"),
    "placement": PLACEMENT,
}
DETAIL = Obj(
    name="DeploymentDetail",
    props={
        "deployment": Obj(props=_HEADER, required=tuple(_HEADER), description="PascalCase keys as Plum, and ours"),
        "assignments": Array(items=DEPLOYMENT_INSTANCE),
        "entries": Array(
            items=Obj(name="EntryDetail", props={**_ENTRY_DETAIL, **_PLACED_DETAIL}, required=tuple(_ENTRY_DETAIL))
        ),
    },
    required=("deployment", "assignments", "entries"),
)
ENTRY_PATCH = Obj(
    name="EntryPatch",
    props=_ENTRY,
    description="the keys given replace the entry's; a changed app or setting is rolled out in place",
)
PATCH = Obj(
    name="DeploymentPatch",
    props={
        "name": Str(description="must equal the current name"),
        "labels": LABELS,
        "replicas": REPLICAS,
        "entries": Array(items=ENTRY_PATCH, max_items=MAX_ENTRIES, what="entries, one per entry in order"),
        "update": UPDATE,
    },
)
ACTION_REPLY = Obj(
    name="ActionReply",
    props={"deploymentId": TEXT, "status": Str(enum=DESIRED), "message": TEXT},
    required=("deploymentId", "status", "message"),
)

_NOT_FOUND = Reply("no such deployment", ERROR)
_NO_CANDIDATE = Reply("no healthy node for a placement (the error names it: placement)", ERROR)
CREATE_DOC = Doc(
    "Create a deployment (status Stopped)",
    {200: Reply("created", CREATED), 409: Reply("name taken", ERROR), 503: _NO_CANDIDATE},
    body=CREATE,
)
LIST_DOC = Doc("List deployments with instance counts and rollouts", {200: Reply("deployments", Array(items=SUMMARY))})
DETAIL_DOC = Doc(
    "A deployment, its instances, entries and rollout",
    {200: Reply("deployment", DETAIL), 404: _NOT_FOUND},
    query=(Param("lost", description="true: include instances replaced by failover"),),
)
ACTION_DOC = Doc(
    "Start or stop every instance",
    {200: Reply("done", ACTION_REPLY), 404: _NOT_FOUND},
    query=(Param("action", True, "start or stop", Str(enum=("start", "stop"))),),
)
PATCH_DOC = Doc(
    "Update labels, replicas and placement, or roll out a new app or settings, in place (same id)",
    {
        200: Reply("updated", DETAIL),
        404: _NOT_FOUND,
        409: Reply("a rollout is running (the error names it)", ERROR),
        503: _NO_CANDIDATE,
    },
    body=PATCH,
)
DELETE_DOC = Doc("Delete a deployment and its instances", {204: Reply("deleted"), 404: _NOT_FOUND})
