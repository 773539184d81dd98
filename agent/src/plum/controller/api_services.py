"""Routes for the service registry: register, heartbeat, deregister, list, discovery, endpoint edits."""

from __future__ import annotations

from typing import Any, Optional

from plum.common.httpserver import Request, Response, json_response
from plum.common.vocab import PROTOCOLS
from plum.controller import validation as v
from plum.controller.api import AGENT, OPERATOR, Context, RouteSpec, ip_or_host, no_content, read_json
from plum.controller.services import EndpointKey, EndpointSpec

MAX_ENDPOINTS = 256
# The endpoint object as discovery lists it (what Plum's clients send back); lastSeen is accepted and ignored.
ENDPOINT_FIELDS = (
    "serviceName",
    "instanceId",
    "nodeId",
    "ip",
    "port",
    "protocol",
    "version",
    "labels",
    "healthy",
    "lastSeen",
)


def _endpoint(item: Any, prefix: str) -> EndpointSpec:
    item = v.obj(item, prefix)
    v.no_unknown(item, ("serviceName", "protocol", "port", "version", "labels"), prefix)
    name = v.string(item, "serviceName", prefix, required=True, max_length=128)
    port = v.integer(item, "port", prefix, minimum=1, maximum=65535)
    if port is None:
        raise v.bad(v.join(prefix, "port"), "is required")
    return EndpointSpec(
        service_name=name,
        port=port,
        protocol=v.choice(item, "protocol", PROTOCOLS, prefix, default="http"),
        version=v.string(item, "version", prefix, max_length=64),
        labels=v.labels(item, "labels", prefix),
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
        return [
            RouteSpec("POST", "/v1/services/register", self.register, AGENT),
            RouteSpec("POST", "/v1/services/heartbeat", self.heartbeat, AGENT),
            RouteSpec("DELETE", "/v1/services", self.deregister, AGENT),
            RouteSpec("GET", "/v1/services/list", self.list_services, AGENT, fleet=True),
            RouteSpec("GET", "/v1/discovery", self.discovery, AGENT, fleet=True),
            RouteSpec("GET", "/v1/discovery/random", self.random, AGENT, fleet=True),
            RouteSpec("GET", "/v1/discovery/one", self.one, AGENT, fleet=True),
            RouteSpec("PUT", "/v1/services/endpoint", self.put_endpoint, OPERATOR),
            RouteSpec("PATCH", "/v1/services/endpoint", self.patch_endpoint, OPERATOR),
            RouteSpec("DELETE", "/v1/services/endpoint", self.delete_endpoint, OPERATOR),
        ]

    def _instance_owner(self, request: Request, instance_id: str) -> None:
        """The caller acts for the node running this instance, or the one that registered it."""
        owners = set(self.ctx.deployments.nodes_of_instance(instance_id))
        owners.update(self.ctx.services.nodes_of_instance(instance_id))
        self.ctx.access.any_node(request, sorted(owners), f"instance {instance_id}")

    async def register(self, request: Request) -> Response:
        body = await read_json(request)
        instance_id = v.string(body, "instanceId", required=True, pattern=v.ID_RE, what="an instance id")
        node_id = v.node_id(body.get("nodeId") or "manual")
        self.ctx.access.node(request, node_id)  # endpoints are published under the caller's own node
        self._instance_owner(request, instance_id)
        ip = ip_or_host(v.string(body, "ip", required=True, max_length=253), "ip")
        raw = body.get("endpoints")
        if not isinstance(raw, list) or len(raw) > MAX_ENDPOINTS:
            raise v.bad("endpoints", f"expected a list of at most {MAX_ENDPOINTS} endpoints, got {v.show(raw)}")
        endpoints = [_endpoint(item, f"endpoints[{i}]") for i, item in enumerate(raw)]
        replace = request.query.get("replace", "").lower() in ("1", "true", "yes")
        self.ctx.services.register(instance_id, node_id, ip, endpoints, replace=replace)
        return no_content()

    async def heartbeat(self, request: Request) -> Response:
        body = await read_json(request)
        instance_id = v.string(body, "instanceId", required=True, pattern=v.ID_RE, what="an instance id")
        reports: list[tuple[str, Optional[int], bool]] = []
        raw = body.get("health")
        if raw is not None:
            if not isinstance(raw, list):
                raise v.bad("health", f"expected a list of {{serviceName, port?, healthy}}, got {v.show(raw)}")
            for i, raw_item in enumerate(raw):
                prefix = f"health[{i}]"
                item = v.obj(raw_item, prefix)
                healthy = v.boolean(item, "healthy", prefix)
                if healthy is None:
                    raise v.bad(f"{prefix}.healthy", "is required")
                reports.append(
                    (
                        v.string(item, "serviceName", prefix, required=True, max_length=128),
                        v.integer(item, "port", prefix, minimum=1, maximum=65535),
                        healthy,
                    )
                )
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
        body = await read_json(request)
        v.no_unknown(body, ENDPOINT_FIELDS)  # lastSeen is the registry's to set: ignored, as Plum does
        spec = _endpoint(
            {k: body[k] for k in ("serviceName", "protocol", "port", "version", "labels") if k in body}, ""
        )
        instance_id = v.string(body, "instanceId", required=True, pattern=v.ID_RE, what="an instance id")
        ip = ip_or_host(v.string(body, "ip", required=True, max_length=253), "ip")
        node_id = v.node_id(body.get("nodeId") or "manual")
        key = EndpointKey(spec.service_name, instance_id, ip, spec.port, spec.protocol)
        self.ctx.services.put_endpoint(key, node_id, spec, v.boolean(body, "healthy"))
        return no_content()

    async def patch_endpoint(self, request: Request) -> Response:
        key = _key_from_query(request.query)
        body = await read_json(request)
        v.no_unknown(body, ENDPOINT_FIELDS)
        _check_identity(body, key, self.ctx.services.get_endpoint(key)["node_id"])
        labels = v.labels(body) if body.get("labels") is not None else None
        version = v.string(body, "version", max_length=64) if "version" in body else None
        self.ctx.services.patch_endpoint(key, v.boolean(body, "healthy"), version, labels)
        return no_content()

    async def delete_endpoint(self, request: Request) -> Response:
        self.ctx.services.delete_endpoint(_key_from_query(request.query))
        return no_content()
