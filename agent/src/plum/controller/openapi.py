"""The OpenAPI 3 document served at ``GET /v1/openapi.json``, built from the route table."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from plum import __version__

_S = "#/components/schemas/"


def ref(name: str) -> dict[str, Any]:
    return {"$ref": _S + name}


def arr(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def o(props: dict[str, Any], required: Iterable[str] = (), extra: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    if not extra:
        schema["additionalProperties"] = False
    return schema


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
REPLICAS = {
    "type": "object",
    "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 1000},
    "description": "nodeId -> number of instances on that node",
}
PHASE = {"type": "string", "enum": ["Downloading", "Starting", "Running", "BackOff", "Failed", "Stopped", "Completed"]}
PORT_MAPPING = o({"host": INT, "container": INT, "serviceName": STR, "protocol": STR}, ["container"])
PORT = o(
    {
        "host": {"type": "integer", "description": "absent: Docker picks a free host port"},
        "container": INT,
        "protocol": {"type": "string", "enum": ["tcp", "udp"]},
        "hostIp": {"type": "string", "description": "absent: the agent's PLUM_PUBLISH_HOST"},
    },
    ["container"],
)

_ENTRY_PROPS = {
    "artifactUrl": {"type": "string", "description": "an app's url (/artifacts/<file>) or image://<artifactId>"},
    "artifactId": {"type": "string", "description": "alternative to artifactUrl"},
    "replicas": REPLICAS,
    "startCmd": STR,
    "runtime": {"type": "string", "enum": ["process", "docker"], "description": "empty: the agent's default"},
    "image": {"type": "string", "description": "docker runtime: base image for a zip app, or an override"},
    "env": {"type": "object", "additionalProperties": {"type": "string"}},
    "memory": {"type": "string", "description": "docker memory limit such as 512m or 1g"},
    "cpus": {"type": "number", "minimum": 0.01},
    "networkMode": {"type": "string", "enum": ["host", "bridge", "none"]},
    "restartPolicy": {"type": "string", "enum": ["always", "on-failure", "never"]},
    "ports": {
        **arr({"oneOf": [PORT, PORT_MAPPING, STR]}),
        "description": "as the agent's spec.ports: objects, Plum's port mappings, or '[[IP:]HOST:]CONTAINER[/udp]'",
    },
}

_ASSIGNMENT_PROPS = {
    "instanceId": STR,
    "deploymentId": STR,
    "nodeId": STR,
    "desired": {"type": "string", "enum": ["Running", "Stopped", "Lost"]},
    "artifactUrl": STR,
    "startCmd": STR,
    "appName": STR,
    "appVersion": STR,
    "artifactType": {"type": "string", "enum": ["zip", "image"]},
    "imageRepository": STR,
    "imageTag": STR,
    "portMappings": {"type": "string", "description": "JSON text"},
    "phase": {"type": "string", "description": "last reported phase, empty before the first report"},
    "healthy": BOOL,
    "lastReportAt": {"type": "integer", "description": "unix seconds, controller clock"},
    "message": STR,
    "exitCode": {"type": "integer", "nullable": True},
    "restarts": INT,
}

SCHEMAS: dict[str, Any] = {
    "Error": o({"error": STR, "field": STR}, ["error"], extra=True),
    "Heartbeat": o({"nodeId": STR, "ip": STR, "labels": LABELS}, ["nodeId"], extra=True),
    "HeartbeatReply": o({"ttlSec": NUM, "heartbeatIntervalSec": NUM}, ["ttlSec", "heartbeatIntervalSec"]),
    "JoinReply": o(
        {"nodeId": STR, "nodeToken": {"type": "string", "description": "shown once"}, "controllerId": STR},
        ["nodeId", "nodeToken"],
    ),
    "Node": o(
        {
            "nodeId": STR,
            "ip": STR,
            "labels": LABELS,
            "lastSeen": INT,
            "health": {"type": "string", "enum": ["Healthy", "Unhealthy"]},
        }
    ),
    "App": o(
        {
            "artifactId": STR,
            "name": STR,
            "version": STR,
            "url": STR,
            "sha256": STR,
            "sizeBytes": INT,
            "createdAt": INT,
            "type": {"type": "string", "enum": ["zip", "image"]},
            "services": arr(o({"name": STR, "protocol": STR, "port": INT})),
            "imageRepository": STR,
            "imageTag": STR,
            "portMappings": STR,
        }
    ),
    "ImageApp": o(
        {"name": STR, "version": STR, "imageRepository": STR, "imageTag": STR, "portMappings": arr(PORT_MAPPING)},
        ["name", "version", "imageRepository"],
    ),
    "DockerImage": o({"repository": STR, "tag": STR, "id": STR, "size": STR, "created": STR}),
    "Entry": o(_ENTRY_PROPS, ["replicas"]),
    "DeploymentCreate": {
        "description": "entries form, or Plum's legacy form with one entry's fields at the top level",
        "oneOf": [
            o({"name": STR, "labels": LABELS, "entries": arr(ref("Entry"))}, ["name", "entries"]),
            o({"name": STR, "labels": LABELS, **_ENTRY_PROPS}, ["name", "replicas"]),
        ],
    },
    "DeploymentCreated": o({"deploymentId": STR, "instances": arr(STR)}),
    "DeploymentSummary": o(
        {
            "deploymentId": STR,
            "name": STR,
            "labels": LABELS,
            "status": {"type": "string", "enum": ["Running", "Stopped"]},
            "instances": INT,
        }
    ),
    "DeploymentDetail": o(
        {
            "deployment": o(
                {
                    "DeploymentID": STR,
                    "Name": STR,
                    "Labels": LABELS,
                    "Status": STR,
                    "deploymentId": STR,
                    "name": STR,
                    "labels": LABELS,
                    "status": STR,
                }
            ),
            "assignments": arr(o(_ASSIGNMENT_PROPS)),
            "entries": arr(
                o(
                    {
                        **_ENTRY_PROPS,
                        "position": INT,
                        "appName": STR,
                        "appVersion": STR,
                        "memory": STR,
                        "cpus": {"type": "number", "nullable": True},
                    }
                )
            ),
        }
    ),
    "DeploymentPatch": o(
        {
            "name": {"type": "string", "description": "must equal the current name"},
            "labels": LABELS,
            "replicas": REPLICAS,
            "entries": arr(o({"replicas": REPLICAS})),
        }
    ),
    "ActionReply": o({"deploymentId": STR, "status": STR, "message": STR}),
    "Assignment": o(
        {
            **_ASSIGNMENT_PROPS,
            "artifactSha256": STR,
            "runtime": STR,
            "image": STR,
            "env": LABELS,
            "memory": STR,
            "memoryBytes": {"type": "integer", "nullable": True},
            "cpus": {"type": "number", "nullable": True},
            "networkMode": STR,
            "restartPolicy": STR,
            "ports": arr(PORT),
        }
    ),
    "AssignmentFeed": o(
        {
            "items": arr(ref("Assignment")),
            "removed": {
                "type": "array",
                "items": STR,
                "description": "instance ids of this node the controller removed or failover replaced: the only "
                "ones an agent removes; one missing from items and removed keeps running",
            },
            "controllerId": {
                "type": "string",
                "description": "the database's identity (a UUID); agents hold their instances when it changes",
            },
        }
    ),
    "DesiredPatch": o({"desired": {"type": "string", "enum": ["Running", "Stopped"]}}, ["desired"]),
    "InstanceStatus": o(
        {
            "instanceId": STR,
            "phase": PHASE,
            "message": STR,
            "exitCode": INT,
            "restarts": INT,
            "healthy": BOOL,
            "tsUnix": NUM,
        },
        ["instanceId", "phase"],
        extra=True,
    ),
    "StatusHistory": o(
        {
            "instanceId": STR,
            "items": arr(
                o(
                    {
                        "phase": PHASE,
                        "healthy": BOOL,
                        "message": STR,
                        "exitCode": {"type": "integer", "nullable": True},
                        "restarts": INT,
                        "tsUnix": {"type": "number", "nullable": True},
                        "receivedAt": NUM,
                    }
                )
            ),
        }
    ),
    "ServiceRegister": o(
        {
            "instanceId": STR,
            "nodeId": STR,
            "ip": STR,
            "endpoints": arr(
                o(
                    {"serviceName": STR, "protocol": STR, "port": INT, "version": STR, "labels": LABELS},
                    ["serviceName", "port"],
                )
            ),
        },
        ["instanceId", "ip", "endpoints"],
        extra=True,
    ),
    "ServiceHeartbeat": o(
        {
            "instanceId": STR,
            "health": arr(
                o({"serviceName": STR, "port": INT, "healthy": BOOL}, ["serviceName", "healthy"], extra=True)
            ),
        },
        ["instanceId"],
        extra=True,
    ),
    "Endpoint": o(
        {
            "serviceName": STR,
            "instanceId": STR,
            "nodeId": STR,
            "ip": STR,
            "port": INT,
            "protocol": STR,
            "version": STR,
            "labels": LABELS,
            "healthy": BOOL,
            "lastSeen": INT,
        }
    ),
    "EndpointPut": o(
        {
            "serviceName": STR,
            "instanceId": STR,
            "nodeId": STR,
            "ip": STR,
            "port": INT,
            "protocol": STR,
            "version": STR,
            "labels": LABELS,
            "healthy": BOOL,
        },
        ["serviceName", "instanceId", "ip", "port"],
    ),
    "EndpointPatch": o({"healthy": BOOL, "version": STR, "labels": LABELS}),
}

_ENDPOINT_KEY = [
    ("service", True, "service name"),
    ("instanceId", True, ""),
    ("ip", True, ""),
    ("port", True, ""),
    ("protocol", False, "default http"),
]
_DISCOVERY = [("service", True, ""), ("version", False, ""), ("protocol", False, "")]

# (summary, query params [(name, required, description)], request body, {status: (description, body)})
# body: a schema name, "text", "sse", "zip", "multipart" or None.
DOCS: dict[str, tuple[str, list[tuple[str, bool, str]], Any, dict[int, tuple[str, Any]]]] = {
    "GET /healthz": ("Liveness (no token needed)", [], None, {200: ("ok", "text")}),
    "GET /metrics": (
        "Fleet metrics in Prometheus text format (operator token unless CONTROLLER_METRICS_PUBLIC)",
        [],
        None,
        {200: ("nodes, instances, failovers, API latency", "text")},
    ),
    "GET /v1/openapi.json": ("This document", [], None, {200: ("OpenAPI 3 document", "object")}),
    "POST /v1/nodes/heartbeat": (
        "Node heartbeat; tells the agent the TTL and the interval to use",
        [],
        "Heartbeat",
        {200: ("accepted", "HeartbeatReply"), 409: ("node id alive at another address", "Error")},
    ),
    "GET /v1/nodes": ("List nodes with health", [], None, {200: ("nodes", ["Node"])}),
    "GET /v1/nodes/{id}": ("One node with health", [], None, {200: ("node", "Node")}),
    "DELETE /v1/nodes/{id}": (
        "Forget a node (its credential too)",
        [],
        None,
        {204: ("deleted", None), 409: ("node in use", "Error")},
    ),
    "POST /v1/nodes/{id}/join": (
        "Exchange the join token for this node's own token (replaces its credential once it is not live)",
        [],
        None,
        {200: ("the node token, shown once", "JoinReply"), 409: ("the node has a credential and is live", "Error")},
    ),
    "DELETE /v1/nodes/{id}/credential": (
        "Revoke a node's credential: its agent must join again",
        [],
        None,
        {204: ("revoked", None), 404: ("the node has no credential", "Error")},
    ),
    "GET /v1/assignments": (
        "A node's instances of Running deployments (failed-over instances excluded)",
        [("nodeId", True, ""), ("limit", False, "at most this many items")],
        None,
        {200: ("assignment feed", "AssignmentFeed")},
    ),
    "PATCH /v1/assignments/{id}": (
        "Start or stop one instance",
        [],
        "DesiredPatch",
        {204: ("updated", None), 409: ("instance was failed over", "Error")},
    ),
    "DELETE /v1/assignments/{id}": ("Delete one instance", [], None, {204: ("deleted", None)}),
    "POST /v1/instances/status": (
        "Report an instance's phase",
        [],
        "InstanceStatus",
        {204: ("recorded", None), 404: ("unknown instance", "Error")},
    ),
    "GET /v1/instances/{id}/statuses": (
        "An instance's recent statuses, newest first (bounded)",
        [],
        None,
        {200: ("history", "StatusHistory")},
    ),
    "GET /v1/stream": (
        "Server-Sent Events: 'event: ping' on connect, 'event: update' when assignments change, "
        "': keepalive' every 15 s",
        [("nodeId", False, "omit to follow every node")],
        None,
        {200: ("event stream", "sse")},
    ),
    "POST /v1/apps/upload": (
        "Upload an app zip (multipart field 'file'): start.sh and meta.ini at the root",
        [],
        "multipart",
        {
            200: ("stored", "App"),
            400: ("invalid zip", "Error"),
            409: ("name+version exists", "Error"),
            413: ("larger than CONTROLLER_MAX_ARTIFACT_BYTES", "Error"),
        },
    ),
    "POST /v1/apps/create-image": (
        "Register an image app",
        [],
        "ImageApp",
        {200: ("stored", "App"), 409: ("name+version exists", "Error")},
    ),
    "GET /v1/apps": ("List apps", [], None, {200: ("apps", ["App"])}),
    "GET /v1/apps/docker-images": (
        "Images on the controller host's Docker daemon ([] without Docker)",
        [],
        None,
        {200: ("images", ["DockerImage"])},
    ),
    "DELETE /v1/apps/{id}": (
        "Delete an app unless a deployment uses it",
        [],
        None,
        {204: ("deleted", None), 409: ("in use", "Error")},
    ),
    "GET /artifacts/{file}": (
        "Download an uploaded zip (ETag = sha256; If-None-Match gives 304)",
        [],
        None,
        {200: ("the zip", "zip"), 304: ("not modified", None)},
    ),
    "POST /v1/deployments": (
        "Create a deployment (status Stopped)",
        [],
        "DeploymentCreate",
        {200: ("created", "DeploymentCreated"), 409: ("name taken", "Error")},
    ),
    "GET /v1/deployments": (
        "List deployments with instance counts",
        [],
        None,
        {200: ("deployments", ["DeploymentSummary"])},
    ),
    "GET /v1/deployments/{id}": (
        "A deployment, its instances and entries",
        [("lost", False, "true: include instances replaced by failover")],
        None,
        {200: ("deployment", "DeploymentDetail")},
    ),
    "POST /v1/deployments/{id}": (
        "Start or stop every instance",
        [("action", True, "start or stop")],
        None,
        {200: ("done", "ActionReply")},
    ),
    "PATCH /v1/deployments/{id}": (
        "Update labels and per-node replicas in place (same id)",
        [],
        "DeploymentPatch",
        {200: ("updated", "DeploymentDetail")},
    ),
    "DELETE /v1/deployments/{id}": ("Delete a deployment and its instances", [], None, {204: ("deleted", None)}),
    "POST /v1/services/register": (
        "Register an instance's endpoints",
        [("replace", False, "true: drop the instance's other endpoints")],
        "ServiceRegister",
        {204: ("registered", None)},
    ),
    "POST /v1/services/heartbeat": (
        "Keep an instance's endpoints alive; optional health reports",
        [],
        "ServiceHeartbeat",
        {204: ("ok", None), 404: ("nothing registered", "Error")},
    ),
    "DELETE /v1/services": (
        "Deregister an instance's endpoints",
        [("instanceId", True, "")],
        None,
        {204: ("deleted", None)},
    ),
    "GET /v1/services/list": ("Service names", [], None, {200: ("names", [STR])}),
    "GET /v1/discovery": (
        "Endpoints of a service (healthy and seen within SERVICE_HEALTH_TTL_SEC unless all=true)",
        [*_DISCOVERY, ("limit", False, ""), ("all", False, "true: every endpoint")],
        None,
        {200: ("endpoints", ["Endpoint"])},
    ),
    "GET /v1/discovery/random": (
        "One random healthy endpoint",
        _DISCOVERY,
        None,
        {200: ("endpoint", "Endpoint"), 404: ("none", "Error")},
    ),
    "GET /v1/discovery/one": (
        "One healthy endpoint; lazy keeps returning the same one while healthy",
        [*_DISCOVERY, ("strategy", False, "random (default) or lazy")],
        None,
        {200: ("endpoint", "Endpoint"), 404: ("none", "Error")},
    ),
    "PUT /v1/services/endpoint": ("Create or replace one endpoint by hand", [], "EndpointPut", {204: ("stored", None)}),
    "PATCH /v1/services/endpoint": (
        "Change one endpoint's health, version or labels",
        _ENDPOINT_KEY,
        "EndpointPatch",
        {204: ("updated", None)},
    ),
    "DELETE /v1/services/endpoint": ("Delete one endpoint", _ENDPOINT_KEY, None, {204: ("deleted", None)}),
}


def _content(body: Any) -> dict[str, Any]:
    if body == "text":
        return {"text/plain": {"schema": STR}}
    if body == "sse":
        return {"text/event-stream": {"schema": STR}}
    if body == "zip":
        return {"application/zip": {"schema": {"type": "string", "format": "binary"}}}
    if body == "object":
        return {"application/json": {"schema": {"type": "object"}}}
    if body == "multipart":
        return {"multipart/form-data": {"schema": o({"file": {"type": "string", "format": "binary"}}, ["file"])}}
    if isinstance(body, list):
        item = ref(body[0]) if isinstance(body[0], str) else body[0]
        return {"application/json": {"schema": arr(item)}}
    return {"application/json": {"schema": ref(body)}}


def _operation(method: str, path: str, access: str) -> dict[str, Any]:
    key = f"{method} {path}"
    if key not in DOCS:
        raise KeyError(f"route {key} has no OpenAPI description")
    summary, query, request_body, responses = DOCS[key]
    op: dict[str, Any] = {"summary": summary, "operationId": re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_")}
    params = [{"name": name, "in": "path", "required": True, "schema": STR} for name in re.findall(r"\{(\w+)\}", path)]
    params += [
        {"name": name, "in": "query", "required": required, "schema": STR, **({"description": d} if d else {})}
        for name, required, d in query
    ]
    if params:
        op["parameters"] = params
    if request_body is not None:
        op["requestBody"] = {"required": True, "content": _content(request_body)}
    out: dict[str, Any] = {}
    for status, (description, body) in sorted(responses.items()):
        out[str(status)] = {"description": description, **({"content": _content(body)} if body else {})}
    out.setdefault("400", {"description": "bad request: names the field and value", "content": _content("Error")})
    if access == "public":
        op["security"] = []
    else:
        out["401"] = {"description": "missing or invalid bearer token", "content": _content("Error")}
        if access == "operator":
            out["403"] = {"description": "another token on an operator route", "content": _content("Error")}
        elif access == "agent":
            out["403"] = {"description": "a node token acting for another node", "content": _content("Error")}
        op["x-plum-access"] = access
    op["responses"] = out
    return op


def build_document(routes: Iterable[Any]) -> dict[str, Any]:
    """``routes``: objects with ``method``, ``path`` and ``access`` (the controller's RouteSpec)."""
    paths: dict[str, dict[str, Any]] = {}
    all_routes = [*routes]
    if not any(r.path == "/v1/openapi.json" for r in all_routes):
        all_routes.append(_Self())
    for route in all_routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route.method, route.path, route.access)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "plum-controller",
            "version": __version__,
            "description": "Plum's deployment API with token auth. Errors are JSON {error, field}. "
            "Agent routes accept a node token (from POST /v1/nodes/{id}/join, for its own node only) or "
            "CONTROLLER_OPERATOR_TOKEN; the join route accepts the join token CONTROLLER_AGENT_TOKEN; the "
            "others only the operator token.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


class _Self:
    method = "GET"
    path = "/v1/openapi.json"
    access = "agent"
