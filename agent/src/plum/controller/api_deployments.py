"""Routes for deployments: create (entries or Plum's legacy single-entry form), list, get,
start/stop, a real in-place update of labels and replicas, and delete."""

from __future__ import annotations

import re
from typing import Any

from plum.common.httpserver import HTTPError, Request, Response, json_response
from plum.controller import validation as v
from plum.controller.api import OPERATOR, Context, RouteSpec, no_content, read_json
from plum.controller.deployments import NETWORK_MODES, RESTART_POLICIES, RUNTIMES, EntrySpec, memory_bytes
from plum.controller.store import loads

MAX_REPLICAS_PER_NODE = 1000
MAX_INSTANCES_PER_REQUEST = 10_000
ENTRY_KEYS = (
    "artifactUrl",
    "artifactId",
    "startCmd",
    "replicas",
    "runtime",
    "image",
    "env",
    "memory",
    "cpus",
    "networkMode",
    "restartPolicy",
    "ports",
)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.:@-]{0,127}")
IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
RESERVED_ENV = ("PLUM_INSTANCE_ID", "PLUM_APP_NAME", "PLUM_APP_VERSION", "WORKER_NODE_ID")
MIN_MEMORY = 6 * 1024 * 1024  # Docker's minimum


class DeploymentRoutes:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def routes(self) -> list[RouteSpec]:
        return [
            RouteSpec("POST", "/v1/deployments", self.create, OPERATOR),
            RouteSpec("GET", "/v1/deployments", self.list_deployments, OPERATOR),
            RouteSpec("GET", "/v1/deployments/{id}", self.get, OPERATOR),
            RouteSpec("POST", "/v1/deployments/{id}", self.action, OPERATOR),
            RouteSpec("PATCH", "/v1/deployments/{id}", self.patch, OPERATOR),
            RouteSpec("DELETE", "/v1/deployments/{id}", self.delete, OPERATOR),
        ]

    # -- validation -----------------------------------------------------------------------------

    def _replicas(self, data: dict[str, Any], prefix: str, required: bool = True) -> dict[str, int]:
        field = v.join(prefix, "replicas")
        value = data.get("replicas")
        if value is None:
            if required:
                raise v.bad(field, "is required: an object of nodeId -> number of instances")
            return {}
        if not isinstance(value, dict):
            raise v.bad(field, f"expected an object of nodeId -> number of instances, got {v.show(value)}")
        out = {}
        for node in value:
            v.node_id(node, f"{field}.{node}")
            if self.ctx.nodes.get(node) is None:
                known = ", ".join(sorted(self.ctx.nodes.nodes)[:20]) or "none yet"
                raise HTTPError(
                    400,
                    f"{field}: unknown node {node!r} (no heartbeat ever received from it; known nodes: {known})",
                    field=field,
                    nodeId=node,
                )
            out[node] = v.integer(value, node, field, minimum=0, maximum=MAX_REPLICAS_PER_NODE)
        return dict(sorted(out.items()))  # type: ignore[arg-type]

    @staticmethod
    def _env(data: dict[str, Any], prefix: str) -> dict[str, str]:
        field = v.join(prefix, "env")
        value = data.get("env")
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise v.bad(field, f"expected an object of NAME: value, got {v.show(value)}")
        out = {}
        for key, item in value.items():
            if not ENV_NAME_RE.fullmatch(key):
                raise v.bad(f"{field}.{key}", f"invalid variable name {v.show(key)}")
            if key in RESERVED_ENV:
                raise v.bad(f"{field}.{key}", "is set by the agent and cannot be overridden")
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise v.bad(f"{field}.{key}", f"value must be a string or number, got {v.show(item)}")
            out[key] = str(item)
        return dict(sorted(out.items()))

    @staticmethod
    def _ports(data: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
        field = v.join(prefix, "ports")
        value = data.get("ports")
        if value is None:
            return []
        if not isinstance(value, list):
            raise v.bad(field, f"expected a list of {{host?, container, protocol?}}, got {v.show(value)}")
        out = []
        for i, raw in enumerate(value):
            p = f"{field}[{i}]"
            item = v.obj(raw, p)
            v.no_unknown(item, ("host", "container", "protocol"), p)
            container = v.integer(item, "container", p, minimum=1, maximum=65535)
            if container is None:
                raise v.bad(f"{p}.container", "is required")
            port: dict[str, Any] = {
                "container": container,
                "protocol": v.choice(item, "protocol", ("tcp", "udp"), p, default="tcp"),
            }
            host = v.integer(item, "host", p, minimum=1, maximum=65535)
            if host is not None:
                port["host"] = host
            out.append(port)
        return out

    def _entry(self, data: Any, prefix: str) -> EntrySpec:
        data = v.obj(data, prefix)
        v.no_unknown(data, ENTRY_KEYS, prefix)
        url = v.string(data, "artifactUrl", prefix, max_length=1024) or v.string(
            data, "artifactId", prefix, max_length=128
        )
        if not url:
            raise v.bad(v.join(prefix, "artifactUrl"), "is required (an app's url, or image://<artifactId>)")
        artifact = self.ctx.apps.resolve(url)
        if artifact is None:
            field = v.join(prefix, "artifactUrl" if "artifactUrl" in data else "artifactId")
            raise v.bad(field, f"unknown artifact {v.show(url)}: upload the app or register the image first")
        is_image = artifact["type"] == "image"
        runtime = v.choice(data, "runtime", RUNTIMES, prefix)
        if is_image and runtime == "process":
            raise v.bad(v.join(prefix, "runtime"), "an image app can only run with runtime 'docker'")
        memory = data.get("memory")
        if isinstance(memory, int) and not isinstance(memory, bool):
            memory = str(memory)
        if memory is not None and not isinstance(memory, str):
            raise v.bad(v.join(prefix, "memory"), f"expected a size such as '512m' or '1g', got {v.show(memory)}")
        memory = (memory or "").strip().lower()
        if memory:
            size = memory_bytes(memory)
            if size is None:
                raise v.bad(v.join(prefix, "memory"), f"expected a size such as '512m' or '1g', got {v.show(memory)}")
            if size < MIN_MEMORY:
                raise v.bad(v.join(prefix, "memory"), f"{memory!r} is below Docker's minimum of 6m")
        spec = EntrySpec(
            artifact=artifact,
            replicas=self._replicas(data, prefix),
            start_cmd=v.string(data, "startCmd", prefix, max_length=4096),
            runtime=runtime,
            image=v.string(data, "image", prefix, pattern=IMAGE_RE, what="a Docker image reference"),
            env=self._env(data, prefix),
            memory=memory,
            cpus=v.number(data, "cpus", prefix, minimum=0.01, maximum=1024),
            network_mode=v.choice(data, "networkMode", NETWORK_MODES, prefix),
            restart_policy=v.choice(data, "restartPolicy", RESTART_POLICIES, prefix),
            ports=self._ports(data, prefix),
        )
        self._check_host_ports(spec.ports, spec.replicas, v.join(prefix, "replicas"))
        return spec

    @staticmethod
    def _check_host_ports(ports: list[dict[str, Any]], replicas: dict[str, int], field: str) -> None:
        host_ports = [p["host"] for p in ports if "host" in p]
        if not host_ports:
            return
        for node, count in replicas.items():
            if count > 1:
                raise v.bad(
                    field,
                    f"{count} replicas on node {node} would all bind host port {host_ports[0]}; "
                    "use one replica per node or drop the host port",
                )

    # -- handlers -------------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        body = await read_json(request)
        name = v.string(
            body,
            "name",
            required=True,
            pattern=NAME_RE,
            what="1-128 letters, digits, spaces or '_', '.', ':', '@', '-'",
        )
        labels = v.labels(body)
        if "entries" in body:
            v.no_unknown(body, ("name", "labels", "entries"))
            raw_entries = body["entries"]
            if not isinstance(raw_entries, list) or not raw_entries:
                raise v.bad("entries", f"expected a non-empty list of entries, got {v.show(raw_entries)}")
            if len(raw_entries) > 64:
                raise v.bad("entries", "at most 64 entries")
            entries = [self._entry(e, f"entries[{i}]") for i, e in enumerate(raw_entries)]
        else:  # Plum's legacy form: the single entry's fields at the top level
            v.no_unknown(body, ("name", "labels", *ENTRY_KEYS))
            entries = [self._entry({k: body[k] for k in ENTRY_KEYS if k in body}, "")]
        total = sum(sum(e.replicas.values()) for e in entries)
        if total > MAX_INSTANCES_PER_REQUEST:
            raise v.bad("entries", f"{total} instances requested; at most {MAX_INSTANCES_PER_REQUEST}")
        deployment_id, instances = self.ctx.deployments.create(name, labels, entries)
        return json_response({"deploymentId": deployment_id, "instances": instances})

    async def list_deployments(self, request: Request) -> Response:
        return json_response(self.ctx.deployments.listing())

    async def get(self, request: Request) -> Response:
        include_lost = request.query.get("lost", "").lower() in ("1", "true", "yes")
        return json_response(self.ctx.deployments.detail(request.path_params["id"], include_lost))

    async def action(self, request: Request) -> Response:
        deployment_id = request.path_params["id"]
        action = request.query.get("action")
        if action not in ("start", "stop"):
            raise v.bad("action", f"query parameter action must be start or stop, got {v.show(action)}")
        await request.drain()
        status = "Running" if action == "start" else "Stopped"
        self.ctx.deployments.set_status(deployment_id, status)
        return json_response(
            {
                "deploymentId": deployment_id,
                "status": status,
                "message": f"Deployment {'started' if action == 'start' else 'stopped'} successfully",
            }
        )

    async def patch(self, request: Request) -> Response:
        deployment_id = request.path_params["id"]
        body = await read_json(request)
        v.no_unknown(body, ("name", "labels", "replicas", "entries"))
        dep = self.ctx.deployments.get_row(deployment_id)
        if "name" in body and body["name"] != dep["name"]:
            raise v.bad(
                "name",
                f"renaming is not supported ({dep['name']!r} -> {v.show(body['name'])}); "
                "create a new deployment instead",
            )
        labels = v.labels(body) if body.get("labels") is not None else None
        entries = self.ctx.deployments.entries(deployment_id)
        wanted: dict[int, dict[str, int]] = {}
        if body.get("replicas") is not None and body.get("entries") is not None:
            raise v.bad("replicas", "give either replicas (single-entry deployment) or entries[].replicas")
        if body.get("replicas") is not None:
            if len(entries) != 1:
                raise v.bad(
                    "replicas",
                    f"this deployment has {len(entries)} entries; "
                    "use entries: [{replicas: {...}}, ...] with one item per entry",
                )
            wanted[entries[0]["entry_id"]] = self._replicas(body, "")
        elif body.get("entries") is not None:
            raw = body["entries"]
            if not isinstance(raw, list) or len(raw) != len(entries):
                raise v.bad(
                    "entries", f"expected a list of {len(entries)} item(s) (one per entry, in order), got {v.show(raw)}"
                )
            for i, (raw_item, entry) in enumerate(zip(raw, entries)):
                prefix = f"entries[{i}]"
                item = v.obj(raw_item, prefix)
                v.no_unknown(item, ("replicas",), prefix)
                if item.get("replicas") is not None:
                    wanted[entry["entry_id"]] = self._replicas(item, prefix)
        total = 0
        for i, entry in enumerate(entries):
            counts: dict[str, int] = {}
            for inst in self.ctx.deployments.instances(entry["entry_id"]):
                counts[inst.node_id] = counts.get(inst.node_id, 0) + 1
            counts.update(wanted.get(entry["entry_id"], {}))
            total += sum(counts.values())
            field = "replicas" if body.get("replicas") is not None else f"entries[{i}].replicas"
            self._check_host_ports(_loads_list(entry["ports"]), counts, field)
        if total > MAX_INSTANCES_PER_REQUEST:
            raise v.bad("replicas", f"{total} instances in total; at most {MAX_INSTANCES_PER_REQUEST}")
        self.ctx.deployments.update(deployment_id, labels, wanted)
        return json_response(self.ctx.deployments.detail(deployment_id))

    async def delete(self, request: Request) -> Response:
        self.ctx.deployments.delete(request.path_params["id"])
        return no_content()


def _loads_list(text: str) -> list[dict[str, Any]]:
    value = loads(text, [])
    return value if isinstance(value, list) else []
