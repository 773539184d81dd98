"""Routes for the service registry: register, heartbeat, deregister, list, discovery, endpoint edits."""

from __future__ import annotations

from typing import Any

from plum.common.httpserver import Request, Response, json_response
from plum.common.vocab import PROTOCOLS
from plum.controller import api_schemas as s
from plum.controller import validation as v
from plum.controller.api import AGENT, OPERATOR, Context, RouteSpec, ip_or_host, no_content, read_body
from plum.controller.openapi import Doc, Param, Reply
from plum.controller.schema import Array, Int, Str
from plum.controller.services import EndpointKey, EndpointSpec

_DISCOVERY = (Param("service", True), Param("version"), Param("protocol", schema=Str(enum=PROTOCOLS)))
_ENDPOINT_KEY = (
    Param("service", True, "service name"),
    Param("instanceId", True),
    Param("ip", True),
    Param("port", True, schema=s.PORT_NUMBER),
    Param("protocol", description="default http", schema=Str(enum=PROTOCOLS)),
)
_NONE = Reply("no healthy endpoint", s.ERROR)


def _spec(item: dict[str, Any]) -> EndpointSpec:
    """An endpoint as ``ENDPOINT_SPEC`` (or ``ENDPOINT_PUT``) checked it."""
    return EndpointSpec(
        service_name=item["serviceName"],
        port=item["port"],
        protocol=item["protocol"],
        version=item.get("version", ""),
        labels=item.get("labels", {}),
    )


def _check_identity(body: dict[str, Any], key: EndpointKey, node_id: str) -> None:
    """Plum's UI PATCHes the whole endpoint object: its identity fields may come along, but must match."""
    identity = {
        "serviceName": key.service_name,
        "instanceId": key.instance_id,
        "ip": key.ip,
        "port": key.port,
        "protocol": key.protocol,
        "nodeId": node_id,
    }
    for name, expected in identity.items():
        if name in body and body[name] != expected:
            raise v.bad(
                name,
                f"{v.show(body[name])} does not match the endpoint being patched ({v.show(expected)}); "
                "an endpoint's identity cannot be changed: DELETE it and PUT the new one",
            )


def _key_from_query(query: dict[str, str]) -> EndpointKey:
    service = query.get("service") or query.get("serviceName") or ""
    instance = query.get("instanceId", "")
    ip = query.get("ip", "")
    port_text = query.get("port", "")
    protocol = query.get("protocol") or "http"
    for name, value in (("service", service), ("instanceId", instance), ("ip", ip), ("port", port_text)):
        if not value:
            raise v.bad(name, "query parameter is required (an endpoint is service, instanceId, ip, port, protocol)")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise v.bad("port", f"must be a number from 1 to 65535, got {v.show(port_text)}")
    if protocol not in PROTOCOLS:
        raise v.bad("protocol", f"must be one of {', '.join(PROTOCOLS)}, got {v.show(protocol)}")
    return EndpointKey(service, instance, ip, int(port_text), protocol)


class ServiceRoutes:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def routes(self) -> list[RouteSpec]:
        no_endpoint = Reply("no such endpoint", s.ERROR)
        return [
            RouteSpec(
                "POST",
                "/v1/services/register",
                self.register,
                AGENT,
                doc=Doc(
                    "Register an instance's endpoints",
                    {204: Reply("registered")},
                    body=s.SERVICE_REGISTER,
                    query=(Param("replace", description="true: drop the instance's other endpoints"),),
                ),
            ),
            RouteSpec(
                "POST",
                "/v1/services/heartbeat",
                self.heartbeat,
                AGENT,
                doc=Doc(
                    "Keep an instance's endpoints alive; optional health reports",
                    {204: Reply("ok"), 404: Reply("nothing registered", s.ERROR)},
                    body=s.SERVICE_HEARTBEAT,
                ),
            ),
            RouteSpec(
                "DELETE",
                "/v1/services",
                self.deregister,
                AGENT,
                doc=Doc(
                    "Deregister an instance's endpoints", {204: Reply("deleted")}, query=(Param("instanceId", True),)
                ),
            ),
            RouteSpec(
                "GET",
                "/v1/services/list",
                self.list_services,
                AGENT,
                fleet=True,
                doc=Doc("Service names", {200: Reply("names", s.SERVICE_NAMES)}),
            ),
            RouteSpec(
                "GET",
                "/v1/discovery",
                self.discovery,
                AGENT,
                fleet=True,
                doc=Doc(
                    "Endpoints of a service (healthy and seen within SERVICE_HEALTH_TTL_SEC unless all=true)",
                    {200: Reply("endpoints", Array(items=s.ENDPOINT))},
                    query=(
                        *_DISCOVERY,
                        Param("limit", schema=Int(minimum=0, maximum=10_000)),
                        Param("all", description="true: every endpoint"),
                    ),
                ),
            ),
            RouteSpec(
                "GET",
                "/v1/discovery/random",
                self.random,
                AGENT,
                fleet=True,
                doc=Doc(
                    "One random healthy endpoint", {200: Reply("endpoint", s.ENDPOINT), 404: _NONE}, query=_DISCOVERY
                ),
            ),
            RouteSpec(
                "GET",
                "/v1/discovery/one",
                self.one,
                AGENT,
                fleet=True,
                doc=Doc(
                    "One healthy endpoint; lazy keeps returning the same one while healthy",
                    {200: Reply("endpoint", s.ENDPOINT), 404: _NONE},
                    query=(
                        *_DISCOVERY,
                        Param("strategy", description="random (default) or lazy", schema=Str(enum=("random", "lazy"))),
                    ),
                ),
            ),
            RouteSpec(
                "PUT",
                "/v1/services/endpoint",
                self.put_endpoint,
                OPERATOR,
                doc=Doc("Create or replace one endpoint by hand", {204: Reply("stored")}, body=s.ENDPOINT_PUT),
            ),
            RouteSpec(
                "PATCH",
                "/v1/services/endpoint",
                self.patch_endpoint,
                OPERATOR,
                doc=Doc(
                    "Change one endpoint's health, version or labels",
                    {204: Reply("updated"), 404: no_endpoint},
                    body=s.ENDPOINT_PATCH,
                    query=_ENDPOINT_KEY,
                ),
            ),
            RouteSpec(
                "DELETE",
                "/v1/services/endpoint",
                self.delete_endpoint,
                OPERATOR,
                doc=Doc("Delete one endpoint", {204: Reply("deleted"), 404: no_endpoint}, query=_ENDPOINT_KEY),
            ),
        ]

    def _instance_owner(self, request: Request, instance_id: str) -> None:
        """The caller acts for the node running this instance, or the one that registered it."""
        owners = set(self.ctx.deployments.nodes_of_instance(instance_id))
        owners.update(self.ctx.services.nodes_of_instance(instance_id))
        self.ctx.access.any_node(request, sorted(owners), f"instance {instance_id}")

    async def register(self, request: Request) -> Response:
        body = await read_body(request, s.SERVICE_REGISTER)
        instance_id, node_id = body["instanceId"], body["nodeId"]
        self.ctx.access.node(request, node_id)  # endpoints are published under the caller's own node
        self._instance_owner(request, instance_id)
        ip = ip_or_host(body["ip"], "ip")
        endpoints = [_spec(item) for item in body["endpoints"]]
        replace = request.query.get("replace", "").lower() in ("1", "true", "yes")
        self.ctx.services.register(instance_id, node_id, ip, endpoints, replace=replace)
        return no_content()

    async def heartbeat(self, request: Request) -> Response:
        body = await read_body(request, s.SERVICE_HEARTBEAT)
        instance_id = body["instanceId"]
        reports = [(r["serviceName"], r.get("port"), r["healthy"]) for r in body.get("health", [])]
        self._instance_owner(request, instance_id)
        self.ctx.services.heartbeat(instance_id, reports)
        return no_content()

    async def deregister(self, request: Request) -> Response:
        instance_id = request.query.get("instanceId", "")
        if not instance_id:
            raise v.bad("instanceId", "query parameter is required")
        self._instance_owner(request, instance_id)
        self.ctx.services.deregister(instance_id)
        return no_content()

    async def list_services(self, request: Request) -> Response:
        return json_response(self.ctx.services.services())

    def _filters(self, request: Request) -> tuple[str, str, str]:
        service = request.query.get("service", "")
        if not service:
            raise v.bad("service", "query parameter is required")
        protocol = request.query.get("protocol", "")
        if protocol and protocol not in PROTOCOLS:
            raise v.bad("protocol", f"must be one of {', '.join(PROTOCOLS)}, got {v.show(protocol)}")
        return service, request.query.get("version", ""), protocol

    async def discovery(self, request: Request) -> Response:
        service, version, protocol = self._filters(request)
        limit = v.query_int(request.query, "limit", default=0, minimum=0, maximum=10_000)
        include_all = request.query.get("all", "").lower() in ("1", "true", "yes")
        return json_response(self.ctx.services.discover(service, version, protocol, limit, include_all))

    async def random(self, request: Request) -> Response:
        service, version, protocol = self._filters(request)
        return json_response(self.ctx.services.pick(service, version, protocol, "random"))

    async def one(self, request: Request) -> Response:
        service, version, protocol = self._filters(request)
        strategy = request.query.get("strategy") or "random"
        if strategy not in ("random", "lazy"):
            raise v.bad("strategy", f"must be random or lazy, got {v.show(strategy)}")
        return json_response(self.ctx.services.pick(service, version, protocol, strategy))

    async def put_endpoint(self, request: Request) -> Response:
        body = await read_body(request, s.ENDPOINT_PUT)  # lastSeen is the registry's to set: ignored, as Plum does
        spec = _spec(body)
        key = EndpointKey(spec.service_name, body["instanceId"], ip_or_host(body["ip"], "ip"), spec.port, spec.protocol)
        self.ctx.services.put_endpoint(key, body["nodeId"], spec, body.get("healthy"))
        return no_content()

    async def patch_endpoint(self, request: Request) -> Response:
        key = _key_from_query(request.query)
        body = await read_body(request, s.ENDPOINT_PATCH)
        _check_identity(body, key, self.ctx.services.get_endpoint(key)["node_id"])
        self.ctx.services.patch_endpoint(key, body.get("healthy"), body.get("version"), body.get("labels"))
        return no_content()

    async def delete_endpoint(self, request: Request) -> Response:
        self.ctx.services.delete_endpoint(_key_from_query(request.query))
        return no_content()
