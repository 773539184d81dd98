"""The deployment routes' bodies and their documentation, as api_deployments.py accepts and answers them.

api_deployments.py still checks its bodies by hand; these schemas describe the same shapes for the
OpenAPI document, with the same parsers, so its handlers can move to ``CREATE.check(body)`` (and their
RouteSpecs to ``doc=DOCS[...]``) without changing what is accepted.
"""

from __future__ import annotations

from typing import Any

from plum.common import resources
from plum.common.vocab import NODE_ID_PATTERN, RESTART_POLICIES
from plum.controller import validation as v
from plum.controller.api_schemas import DEPLOYMENT_INSTANCE, ERROR, LABELS, PORT_MAPPING, PUBLISHED_PORT, TEXT
from plum.controller.deployments import RUNTIMES
from plum.controller.openapi import Doc, Param, Reply
from plum.controller.schema import Array, Custom, Int, Map, Num, Obj, OneOf, Str

MAX_REPLICAS_PER_NODE = 1000
MAX_ENTRIES = 64
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9 _.:@-]{0,127}"


def _cpus(value: Any, field: str) -> float:
    return v.parse_with(value, field, resources.parse_cpus)


def _replica_counts(value: Any, field: str) -> dict[str, int]:
    """The shape of ``replicas``; that each node is known is the handler's check (it needs the nodes)."""
    if not isinstance(value, dict):
        raise v.bad(field, f"expected an object of nodeId -> number of instances, got {v.show(value)}")
    counts = {}
    for node, count in value.items():
        v.node_id(node, f"{field}.{node}")
        counts[node] = v.whole(count, f"{field}.{node}", minimum=0, maximum=MAX_REPLICAS_PER_NODE)
    return dict(sorted(counts.items()))


REPLICAS = Custom(
    like=Map(values=Int(minimum=0, maximum=MAX_REPLICAS_PER_NODE), key_pattern=NODE_ID_PATTERN),
    parse=_replica_counts,
    description="nodeId -> number of instances on that node (each node must have sent a heartbeat)",
    example={"n1": 2, "n2": 1},
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
CREATE = OneOf(
    options=(
        Obj(
            props={
                "name": DEPLOYMENT_NAME,
                "labels": LABELS,
                "entries": Array(items=ENTRY, min_items=1, max_items=MAX_ENTRIES, what="entries"),
            },
            required=("name", "entries"),
        ),
        Obj(props={"name": DEPLOYMENT_NAME, "labels": LABELS, **_ENTRY}, required=("name", "replicas")),
    ),
    description="entries form, or Plum's legacy form with one entry's fields at the top level",
)
CREATED = Obj(name="DeploymentCreated", props={"deploymentId": TEXT, "instances": Array(items=TEXT)})
_SUMMARY = {
    "deploymentId": TEXT,
    "name": TEXT,
    "labels": Map(values=TEXT),
    "status": Str(enum=("Running", "Stopped")),
    "instances": Int(),
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
    "replicas": Map(values=Int()),
}
DETAIL = Obj(
    name="DeploymentDetail",
    props={
        "deployment": Obj(props=_HEADER, required=tuple(_HEADER), description="PascalCase keys as Plum, and ours"),
        "assignments": Array(items=DEPLOYMENT_INSTANCE),
        "entries": Array(items=Obj(props=_ENTRY_DETAIL, required=tuple(_ENTRY_DETAIL))),
    },
    required=("deployment", "assignments", "entries"),
)
PATCH = Obj(
    name="DeploymentPatch",
    props={
        "name": Str(description="must equal the current name"),
        "labels": LABELS,
        "replicas": REPLICAS,
        "entries": Array(items=Obj(props={"replicas": REPLICAS}), what="entries, one per entry in order"),
    },
)
ACTION_REPLY = Obj(
    name="ActionReply",
    props={"deploymentId": TEXT, "status": Str(enum=("Running", "Stopped")), "message": TEXT},
    required=("deploymentId", "status", "message"),
)

DOCS: dict[str, Doc] = {
    "POST /v1/deployments": Doc(
        "Create a deployment (status Stopped)",
        {200: Reply("created", CREATED), 409: Reply("name taken", ERROR)},
        body=CREATE,
    ),
    "GET /v1/deployments": Doc(
        "List deployments with instance counts", {200: Reply("deployments", Array(items=SUMMARY))}
    ),
    "GET /v1/deployments/{id}": Doc(
        "A deployment, its instances and entries",
        {200: Reply("deployment", DETAIL), 404: Reply("no such deployment", ERROR)},
        query=(Param("lost", description="true: include instances replaced by failover"),),
    ),
    "POST /v1/deployments/{id}": Doc(
        "Start or stop every instance",
        {200: Reply("done", ACTION_REPLY), 404: Reply("no such deployment", ERROR)},
        query=(Param("action", True, "start or stop", Str(enum=("start", "stop"))),),
    ),
    "PATCH /v1/deployments/{id}": Doc(
        "Update labels and per-node replicas in place (same id)",
        {200: Reply("updated", DETAIL), 404: Reply("no such deployment", ERROR)},
        body=PATCH,
    ),
    "DELETE /v1/deployments/{id}": Doc(
        "Delete a deployment and its instances", {204: Reply("deleted"), 404: Reply("no such deployment", ERROR)}
    ),
}
