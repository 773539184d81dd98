"""The HTTP API: route table, token auth (operator, node, join token), and the node/assignment/instance routes.

Access levels: ``public`` (``GET /healthz`` and the status page's files under ``/ui``), ``join``
(``POST /v1/nodes/{id}/join``: the join token CONTROLLER_AGENT_TOKEN or the operator token), ``agent``
(what an agent needs: heartbeat, assignments, instance status, stream, artifacts, service registration and
discovery) and ``operator`` (everything else). A missing or unknown token is 401. On an agent route, a node token
acts for its own node only (403 naming the node otherwise; ``Access`` in credentials.py), and the
operator token works everywhere. See credentials.py for the join token on agent routes.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sqlite3
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from plum.common.httpserver import HTTPError, Request, Response, Router, json_response, text_response
from plum.common.vocab import Phase
from plum.controller import api_schemas as s
from plum.controller import validation as v
from plum.controller.apps import AppRepo
from plum.controller.config import ControllerConfig, Tokens
from plum.controller.credentials import NODE, Access, NodeCredentials
from plum.controller.credentials import OPERATOR as OPERATOR_CALLER
from plum.controller.deployments import DeploymentRepo
from plum.controller.errors import Conflict, DomainError, Invalid, NotFound, Unavailable
from plum.controller.events import EventHub
from plum.controller.nodes import NodeRepo
from plum.controller.openapi import Doc, Param, Reply
from plum.controller.rollouts import RolloutRepo
from plum.controller.schema import Array, Int, Obj
from plum.controller.services import ServiceRepo
from plum.controller.store import StorageError, Store

PUBLIC, JOIN, AGENT, OPERATOR = "public", "join", "agent", "operator"
JSON_LIMIT = 1024 * 1024
MAX_CACHED_FEEDS = 100_000  # encoded feeds kept (a few hundred bytes to a few KiB each)
HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: Handler
    access: str
    max_body: int = JSON_LIMIT
    limit_hint: str = ""  # names the setting behind max_body in the 413 answer
    fleet: bool = False  # an agent route that reads fleet-wide data (discovery): no node to check
    doc: Optional[Doc] = None  # what the OpenAPI document and docs/controller.md say of it


@dataclass
class Context:
    config: ControllerConfig
    tokens: Tokens
    store: Store
    nodes: NodeRepo
    apps: AppRepo
    deployments: DeploymentRepo
    rollouts: RolloutRepo
    services: ServiceRepo
    hub: EventHub
    credentials: NodeCredentials
    access: Access


def no_content() -> Response:
    return Response(204, b"", "application/json")


def seconds(value: float) -> Any:
    return int(value) if float(value).is_integer() else value


def bearer(request: Request) -> str:
    return request.headers.get("authorization", "").partition(" ")[2].strip()


def ip_or_host(value: str, field: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        if HOSTNAME_RE.fullmatch(value):
            return value
    raise v.bad(field, f"{v.show(value)} is neither an IP address nor a host name")


async def read_json(request: Request) -> dict[str, Any]:
    return v.obj(await request.json(limit=JSON_LIMIT))


async def read_body(request: Request, body: Obj) -> dict[str, Any]:
    """The request's JSON body as ``body`` checks it: a 400 naming the field and value otherwise."""
    return body.check(await request.json(limit=JSON_LIMIT))


def restrict(handler: Handler, access: str) -> Handler:
    """The handler behind the check of its access level (the router already refused unknown tokens)."""

    async def operator_only(request: Request) -> Response:
        caller = Access.caller(request)
        if caller.role != OPERATOR_CALLER:
            raise HTTPError(
                403,
                f"{request.method} {request.path} needs the operator token (CONTROLLER_OPERATOR_TOKEN); "
                f"{caller.describe()} is not allowed here",
            )
        return await handler(request)

    async def join_only(request: Request) -> Response:
        caller = Access.caller(request)
        if caller.role == NODE:
            raise HTTPError(
                403,
                f"{request.method} {request.path} needs the join token (CONTROLLER_AGENT_TOKEN) or the operator "
                f"token; {caller.describe()} is not allowed here",
            )
        return await handler(request)

    return {OPERATOR: operator_only, JOIN: join_only}[access]


def scoped(handler: Handler, access: Access, fleet: bool) -> Handler:
    """An agent route: the join token only where accepted, and a node token only for its own node.

    A node-scoped handler calls ``ctx.access.node()`` (or ``any_node``) with the node it acts for;
    one that answers a node token without that check is a bug, refused here rather than served."""

    async def agent_route(request: Request) -> Response:
        access.allowed_on_agent_route(request)
        if fleet:
            access.fleet(request)
        response = await handler(request)
        caller = Access.caller(request)
        if caller.role != OPERATOR_CALLER and not caller.scoped:
            raise HTTPError(500, f"{request.method} {request.path}: the caller's node was not checked")
        return response

    return agent_route


DOMAIN_STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (Invalid, 400),
    (Unavailable, 503),
)


def domain_errors(exc: Exception) -> Optional[HTTPError]:
    """What the domain refused, answered with the status of its kind and its details next to the message."""
    if not isinstance(exc, DomainError):
        return None
    status = next((code for kind, code in DOMAIN_STATUS if isinstance(exc, kind)), 400)
    return HTTPError(status, exc.message, **exc.details)


def database_errors(db_path: Path) -> Callable[[Exception], Optional[HTTPError]]:
    """A failed database call as a JSON answer naming the file: 507 when the disk is full, 503 when busy."""

    def mapped(exc: Exception) -> Optional[HTTPError]:
        if isinstance(exc, StorageError):
            return HTTPError(500, str(exc), path=str(db_path))
        if not isinstance(exc, sqlite3.Error):
            return None
        reason = str(exc)
        status = 507 if "full" in reason else 503 if "locked" in reason or "busy" in reason else 500
        return HTTPError(status, f"database {db_path}: {reason}", path=str(db_path))

    return mapped


def build_router(ctx: Context, specs: Iterable[RouteSpec]) -> Router:
    router = Router(
        token_check=ctx.credentials.identify, error_mappers=[domain_errors, database_errors(ctx.config.db_path)]
    )
    for spec in specs:
        handler = spec.handler
        if spec.access in (OPERATOR, JOIN):
            handler = restrict(handler, spec.access)
        elif spec.access == AGENT:
            handler = scoped(handler, ctx.access, spec.fleet)
        auth = spec.access != PUBLIC
        router.add(spec.method, spec.path, handler, auth=auth, max_body=spec.max_body, limit_hint=spec.limit_hint)
    return router


class CoreRoutes:
    """/healthz, nodes, assignments, instance status and the SSE stream."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        cfg = ctx.config
        # The heartbeat's answer never changes while the controller runs: encoded once.
        self._heartbeat_reply = json_response(
            {"ttlSec": seconds(cfg.heartbeat_ttl), "heartbeatIntervalSec": seconds(cfg.heartbeat_interval)}
        ).body
        # Encoded assignment feeds by (node, limit), valid for one store generation: a poll that finds
        # nothing changed since the last one (almost every poll) costs no query and no JSON encoding.
        self._feeds: dict[tuple[str, int], bytes] = {}
        self._feeds_generation = -1

    def routes(self) -> list[RouteSpec]:
        error = s.ERROR
        return [
            RouteSpec(
                "GET",
                "/healthz",
                self.healthz,
                PUBLIC,
                doc=Doc("Liveness (no token needed)", {200: Reply("ok", s.PLAIN_TEXT)}),
            ),
            RouteSpec(
                "POST",
                "/v1/nodes/heartbeat",
                self.heartbeat,
                AGENT,
                doc=Doc(
                    "Node heartbeat; tells the agent the TTL and the interval to use",
                    {
                        200: Reply("accepted", s.HEARTBEAT_REPLY),
                        409: Reply("node id alive at another address", error),
                    },
                    body=s.HEARTBEAT,
                ),
            ),
            RouteSpec(
                "GET",
                "/v1/nodes",
                self.list_nodes,
                OPERATOR,
                doc=Doc("List nodes with health", {200: Reply("nodes", Array(items=s.NODE))}),
            ),
            RouteSpec(
                "GET",
                "/v1/nodes/{id}",
                self.get_node,
                OPERATOR,
                doc=Doc("One node with health", {200: Reply("node", s.NODE), 404: Reply("no such node", error)}),
            ),
            RouteSpec(
                "DELETE",
                "/v1/nodes/{id}",
                self.delete_node,
                OPERATOR,
                doc=Doc(
                    "Forget a node (its credential too)",
                    {204: Reply("deleted"), 404: Reply("no such node", error), 409: Reply("node in use", error)},
                ),
            ),
            RouteSpec(
                "POST",
                "/v1/nodes/{id}/join",
                self.join,
                JOIN,
                doc=Doc(
                    "Exchange the join token for this node's own token (replaces its credential once it is not live)",
                    {
                        200: Reply("the node token, shown once", s.JOIN_REPLY),
                        409: Reply("the node has a credential and is live", error),
                    },
                ),
            ),
            RouteSpec(
                "DELETE",
                "/v1/nodes/{id}/credential",
                self.revoke_credential,
                OPERATOR,
                doc=Doc(
                    "Revoke a node's credential: its agent must join again",
                    {204: Reply("revoked"), 404: Reply("the node has no credential", error)},
                ),
            ),
            RouteSpec(
                "GET",
                "/v1/assignments",
                self.assignments,
                AGENT,
                doc=Doc(
                    "A node's instances of Running deployments (failed-over instances excluded)",
                    {200: Reply("assignment feed", s.ASSIGNMENT_FEED)},
                    query=(
                        Param("nodeId", True),
                        Param("limit", description="at most this many items", schema=Int(minimum=1, maximum=100_000)),
                    ),
                ),
            ),
            RouteSpec(
                "PATCH",
                "/v1/assignments/{id}",
                self.patch_assignment,
                OPERATOR,
                doc=Doc(
                    "Start or stop one instance",
                    {
                        204: Reply("updated"),
                        404: Reply("no such instance", error),
                        409: Reply("instance was failed over", error),
                    },
                    body=s.DESIRED_PATCH,
                ),
            ),
            RouteSpec(
                "DELETE",
                "/v1/assignments/{id}",
                self.delete_assignment,
                OPERATOR,
                doc=Doc("Delete one instance", {204: Reply("deleted"), 404: Reply("no such instance", error)}),
            ),
            RouteSpec(
                "POST",
                "/v1/instances/status",
                self.instance_status,
                AGENT,
                doc=Doc(
                    "Report an instance's phase",
                    {204: Reply("recorded"), 404: Reply("unknown instance", error)},
                    body=s.INSTANCE_STATUS,
                ),
            ),
            RouteSpec(
                "GET",
                "/v1/instances/{id}/statuses",
                self.instance_history,
                OPERATOR,
                doc=Doc(
                    "An instance's recent statuses, newest first (bounded)", {200: Reply("history", s.STATUS_HISTORY)}
                ),
            ),
            RouteSpec(
                "GET",
                "/v1/stream",
                self.stream,
                AGENT,
                doc=Doc(
                    "Server-Sent Events: 'event: ping' on connect, 'event: update' when assignments change, "
                    "': keepalive' every 15 s",
                    {200: Reply("event stream", s.EVENT_STREAM)},
                    query=(Param("nodeId", description="omit to follow every node"),),
                ),
            ),
        ]

    async def healthz(self, request: Request) -> Response:
        return text_response("ok")

    async def heartbeat(self, request: Request) -> Response:
        body = await read_body(request, s.HEARTBEAT)
        node_id = body["nodeId"]
        self.ctx.access.node(request, node_id)
        ip = ip_or_host(body["ip"], "ip") if "ip" in body else request.peer
        self.ctx.nodes.heartbeat(node_id, ip, body.get("labels"))
        return Response(200, self._heartbeat_reply, "application/json")

    async def list_nodes(self, request: Request) -> Response:
        return json_response(self.ctx.nodes.listing())

    def _node(self, request: Request) -> str:
        node_id = v.node_id(request.path_params["id"], "id")
        if self.ctx.nodes.get(node_id) is None:
            raise NotFound(f"no such node: {node_id}", field="id")
        return node_id

    async def get_node(self, request: Request) -> Response:
        node = self.ctx.nodes.nodes[self._node(request)]
        return json_response(node.to_json(self.ctx.nodes.clock(), self.ctx.nodes.ttl))

    async def delete_node(self, request: Request) -> Response:
        node_id = self._node(request)
        self.ctx.nodes.delete(node_id)
        self.ctx.credentials.revoke(node_id)  # a forgotten node joins again from scratch
        return no_content()

    async def join(self, request: Request) -> Response:
        """A node token for this node, shown once; the agent uses it for every other call."""
        node_id = v.node_id(request.path_params["id"], "id")
        token = self.ctx.credentials.join(node_id)
        return json_response({"nodeId": node_id, "nodeToken": token, "controllerId": self.ctx.store.identity()})

    async def revoke_credential(self, request: Request) -> Response:
        node_id = v.node_id(request.path_params["id"], "id")
        if not self.ctx.credentials.revoke(node_id):
            raise NotFound(f"node {node_id} has no credential (it never joined, or it was revoked)", field="id")
        return no_content()

    async def assignments(self, request: Request) -> Response:
        node_id = v.node_id(request.query.get("nodeId"))
        self.ctx.access.node(request, node_id)
        limit = v.query_int(request.query, "limit", default=100_000, minimum=1, maximum=100_000)
        # controllerId: the database's identity; agents hold their instances when it changes (docs/agent.md).
        # removed: the instances an agent may remove; one missing from both lists is kept running.
        store = self.ctx.store
        if self._feeds_generation != store.generation or len(self._feeds) >= MAX_CACHED_FEEDS:
            self._feeds.clear()
            self._feeds_generation = store.generation
        body = self._feeds.get((node_id, limit))
        if body is None:
            feed = self.ctx.deployments.feed(node_id, limit)
            removed = self.ctx.deployments.removed_from(node_id)
            answer = {"items": feed, "removed": removed, "controllerId": store.identity()}
            body = self._feeds[(node_id, limit)] = (
                json.dumps(answer, separators=(",", ":"), default=str).encode() + b"\n"
            )
        return Response(200, body, "application/json")

    async def patch_assignment(self, request: Request) -> Response:
        body = await read_body(request, s.DESIRED_PATCH)
        self.ctx.deployments.set_desired(request.path_params["id"], body["desired"])
        return no_content()

    async def delete_assignment(self, request: Request) -> Response:
        self.ctx.deployments.delete_instance(request.path_params["id"])
        return no_content()

    async def instance_status(self, request: Request) -> Response:
        body = await read_body(request, s.INSTANCE_STATUS)
        instance_id, phase = body["instanceId"], body["phase"]
        owners = self.ctx.deployments.nodes_of_instance(instance_id)
        self.ctx.access.any_node(request, owners, f"instance {instance_id}")
        self.ctx.deployments.record_status(
            instance_id,
            phase=phase,
            healthy=body.get("healthy", phase not in (Phase.FAILED, Phase.BACKOFF)),
            message=body.get("message", ""),
            exit_code=body.get("exitCode"),
            restarts=body.get("restarts"),
            ts_unix=body.get("tsUnix"),
        )
        return no_content()

    async def instance_history(self, request: Request) -> Response:
        instance_id = request.path_params["id"]
        return json_response({"instanceId": instance_id, "items": self.ctx.deployments.history(instance_id)})

    async def stream(self, request: Request) -> Response:
        raw: Optional[str] = request.query.get("nodeId")
        node_id = v.node_id(raw) if raw else None
        self.ctx.access.node(request, node_id)
        return Response(
            200,
            self.ctx.hub.stream(node_id),
            "text/event-stream",
            {"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
