"""Routes for deployments: create (entries or Plum's legacy single-entry form), list, get,
start/stop, a real in-place update of labels, replicas, placement and the app or settings (a rolling
update), and delete."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from plum.common import resources
from plum.common.httpserver import HTTPError, Request, Response, json_response
from plum.common.vocab import RESTART_POLICIES
from plum.controller import validation as v
from plum.controller.api import OPERATOR, Context, RouteSpec, no_content, read_json
from plum.controller.deployments import RUNTIMES, EntryChange, EntrySpec
from plum.controller.placement import Placement
from plum.controller.rollout import UpdatePolicy
from plum.controller.store import Row, loads

MAX_REPLICAS_PER_NODE = 1000
MAX_INSTANCES_PER_REQUEST = 10_000
# An entry's app and runtime settings: changing one of them rolls the entry out.
SETTINGS_KEYS = (
    "artifactUrl",
    "artifactId",
    "startCmd",
    "runtime",
    "image",
    "env",
    "memory",
    "cpus",
    "networkMode",
    "restartPolicy",
    "ports",
)
ENTRY_KEYS = (*SETTINGS_KEYS, "replicas", "placement")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.:@-]{0,127}")
# The domain's refusals as HTTP answers (here until the HTTP layer maps them for every route).


def current_settings(entry: Row) -> dict[str, Any]:
    """An entry's stored app and settings in the request's keys: what a PATCH's keys are laid over."""
    return {
        "artifactId": entry["artifact_id"],
        "startCmd": entry["start_cmd"],
        "runtime": entry["runtime"],
        "image": entry["image"],
        "env": loads(entry["env"], {}),
        "memory": entry["memory"],
        "cpus": entry["cpus"],
        "networkMode": entry["network_mode"],
        "restartPolicy": entry["restart_policy"],
        "ports": loads(entry["ports"], []),
    }


def update_policy(body: Mapping[str, Any]) -> UpdatePolicy:
    raw = body.get("update")
    if raw is None:
        return UpdatePolicy()
    return UpdatePolicy.from_json(v.obj(raw, "update"))


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

    def _known_node(self, node: Any, field: str, shape_field: str) -> str:
        v.node_id(node, shape_field)
        if self.ctx.nodes.get(node) is None:
            known = ", ".join(sorted(self.ctx.nodes.nodes)[:20]) or "none yet"
            raise HTTPError(
                400,
                f"{field}: unknown node {node!r} (no heartbeat ever received from it; known nodes: {known})",
                field=field,
                nodeId=node,
            )
        return str(node)

    def _pinned(self, value: dict[str, Any], field: str) -> dict[str, int]:
        out = {}
        for node in value:
            self._known_node(node, field, f"{field}.{node}")
            out[node] = v.integer(value, node, field, minimum=0, maximum=MAX_REPLICAS_PER_NODE)
        return dict(sorted(out.items()))  # type: ignore[arg-type]

    def _replicas(self, data: dict[str, Any], prefix: str) -> dict[str, int] | int:
        """``{nodeId: count}`` (pinned per node) or a number the controller places."""
        field = v.join(prefix, "replicas")
        value = data.get("replicas")
        if value is None:
            raise v.bad(field, "is required: an object of nodeId -> number of instances, or a number to place")
        if isinstance(value, dict):
            return self._pinned(value, field)
        if isinstance(value, int) and not isinstance(value, bool):
            placed = v.integer(data, "replicas", prefix, minimum=0, maximum=MAX_INSTANCES_PER_REQUEST)
            assert placed is not None
            return placed
        raise v.bad(field, f"expected an object of nodeId -> number of instances or a number, got {v.show(value)}")

    def _placement(self, data: dict[str, Any], prefix: str) -> Placement:
        field = v.join(prefix, "placement")
        raw = v.obj(data["placement"], field)
        v.no_unknown(raw, ("nodes", "labels"), field)
        nodes = raw.get("nodes", [])
        if not isinstance(nodes, list) or len(nodes) > 1000:
            raise v.bad(v.join(field, "nodes"), f"expected a list of node ids, got {v.show(nodes)}")
        known = (self._known_node(n, f"{field}.nodes", f"{field}.nodes[{i}]") for i, n in enumerate(nodes))
        listed = tuple(dict.fromkeys(known))
        return Placement(listed, v.labels(raw, "labels", field))

    def _settings(self, data: dict[str, Any], prefix: str, replicas: dict[str, int] | int) -> EntrySpec:
        """The entry's app and runtime settings, checked as the agent will read them."""
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
        # Runtime settings go through the agent's own parsers: what is accepted here, the agent runs.
        network_mode = v.choice(data, "networkMode", resources.NETWORK_MODES, prefix)
        ports = v.ports(data, "ports", prefix)
        if ports and network_mode in ("host", "none"):
            raise v.bad(
                v.join(prefix, "ports"), f"cannot publish ports with networkMode {network_mode!r} (only bridge)"
            )
        placed = replicas if isinstance(replicas, int) else None
        placement = self._placement(data, prefix) if placed is not None and "placement" in data else Placement()
        spec = EntrySpec(
            artifact=artifact,
            replicas=replicas if isinstance(replicas, dict) else {},
            placed=placed,
            placement=placement,
            start_cmd=v.start_cmd(data, "startCmd", prefix),
            runtime=runtime,
            image=v.image(data, "image", prefix),
            env=v.env(data, "env", prefix),
            memory=v.memory(data, "memory", prefix),
            cpus=v.parsed(data, "cpus", prefix, resources.parse_cpus),
            network_mode=network_mode,
            restart_policy=v.choice(data, "restartPolicy", RESTART_POLICIES, prefix),
            ports=ports,
        )
        self._check_host_ports(spec.ports, spec.replicas, v.join(prefix, "replicas"))
        return spec

    def _entry(self, data: Any, prefix: str) -> EntrySpec:
        data = v.obj(data, prefix)
        v.no_unknown(data, ENTRY_KEYS, prefix)
        replicas = self._replicas(data, prefix)
        if "placement" in data and not isinstance(replicas, int):
            raise v.bad(v.join(prefix, "placement"), "only with a number of replicas (the controller places them)")
        return self._settings(data, prefix, replicas)

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

    def _change(self, item: dict[str, Any], entry: Row, prefix: str) -> EntryChange:
        """One PATCH item: the keys it gives replace the entry's, the others stay."""
        v.no_unknown(item, ENTRY_KEYS, prefix)
        replicas = self._replicas(item, prefix) if item.get("replicas") is not None else None
        placed = entry["desired_replicas"] if replicas is None else (replicas if isinstance(replicas, int) else None)
        if "placement" in item and placed is None:
            raise v.bad(v.join(prefix, "placement"), "only with a number of replicas (the controller places them)")
        if "placement" in item and replicas is None:
            replicas = placed  # a new placement for the same number
        settings = None
        if any(key in item for key in SETTINGS_KEYS):
            merged = current_settings(entry)
            if "artifactUrl" in item:
                merged.pop("artifactId")
            merged.update((k, item[k]) for k in SETTINGS_KEYS if k in item)
            settings = self._settings(merged, prefix, {})
        return EntryChange(
            replicas=replicas if isinstance(replicas, dict) else None,
            placed=replicas if isinstance(replicas, int) else None,
            placement=self._placement(item, prefix) if "placement" in item else None,
            settings=settings,
        )

    def _check_patch(self, entries: list[Row], changes: dict[int, EntryChange], top_level: bool) -> None:
        """Host ports and the instance limit over what the entries will hold."""
        total = 0
        for i, entry in enumerate(entries):
            change = changes.get(entry["entry_id"], EntryChange())
            field = "replicas" if top_level else f"entries[{i}].replicas"
            ports = change.settings.ports if change.settings else _loads_list(entry["ports"])
            if change.placed is not None:
                total += change.placed
                continue
            counts: dict[str, int] = {}
            for inst in self.ctx.deployments.instances(entry["entry_id"]):
                counts[inst.node_id] = counts.get(inst.node_id, 0) + 1
            counts.update(change.replicas or {})
            total += sum(counts.values())
            if entry["desired_replicas"] is None or change.replicas is not None:
                self._check_host_ports(ports, counts, field)
        if total > MAX_INSTANCES_PER_REQUEST:
            raise v.bad("replicas", f"{total} instances in total; at most {MAX_INSTANCES_PER_REQUEST}")

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
            v.no_unknown(body, ("name", "labels", "entries", "update"))
            raw_entries = body["entries"]
            if not isinstance(raw_entries, list) or not raw_entries:
                raise v.bad("entries", f"expected a non-empty list of entries, got {v.show(raw_entries)}")
            if len(raw_entries) > 64:
                raise v.bad("entries", "at most 64 entries")
            entries = [self._entry(e, f"entries[{i}]") for i, e in enumerate(raw_entries)]
        else:  # Plum's legacy form: the single entry's fields at the top level
            v.no_unknown(body, ("name", "labels", "update", *ENTRY_KEYS))
            entries = [self._entry({k: body[k] for k in ENTRY_KEYS if k in body}, "")]
        policy = update_policy(body)
        total = sum(e.placed if e.placed is not None else sum(e.replicas.values()) for e in entries)
        if total > MAX_INSTANCES_PER_REQUEST:
            raise v.bad("entries", f"{total} instances requested; at most {MAX_INSTANCES_PER_REQUEST}")
        deployment_id, instances = self.ctx.deployments.create(name, labels, entries, policy)
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
        v.no_unknown(body, ("name", "labels", "replicas", "entries", "update"))
        dep = self.ctx.deployments.get_row(deployment_id)
        if "name" in body and body["name"] != dep["name"]:
            raise v.bad(
                "name",
                f"renaming is not supported ({dep['name']!r} -> {v.show(body['name'])}); "
                "create a new deployment instead",
            )
        labels = v.labels(body) if body.get("labels") is not None else None
        policy = update_policy(body) if body.get("update") is not None else None
        entries = self.ctx.deployments.entries(deployment_id)
        changes: dict[int, EntryChange] = {}
        if body.get("replicas") is not None and body.get("entries") is not None:
            raise v.bad("replicas", "give either replicas (single-entry deployment) or entries[].replicas")
        if body.get("replicas") is not None:
            if len(entries) != 1:
                raise v.bad(
                    "replicas",
                    f"this deployment has {len(entries)} entries; "
                    "use entries: [{replicas: {...}}, ...] with one item per entry",
                )
            changes[entries[0]["entry_id"]] = self._change({"replicas": body["replicas"]}, entries[0], "")
        elif body.get("entries") is not None:
            raw = body["entries"]
            if not isinstance(raw, list) or len(raw) != len(entries):
                raise v.bad(
                    "entries", f"expected a list of {len(entries)} item(s) (one per entry, in order), got {v.show(raw)}"
                )
            for i, (raw_item, entry) in enumerate(zip(raw, entries)):
                prefix = f"entries[{i}]"
                changes[entry["entry_id"]] = self._change(v.obj(raw_item, prefix), entry, prefix)
        self._check_patch(entries, changes, top_level=body.get("replicas") is not None)
        if self.ctx.deployments.update(deployment_id, labels, changes, policy):
            self.ctx.hub.announce("rollout", self.ctx.deployments.rollout_event(deployment_id, "started"))
        return json_response(self.ctx.deployments.detail(deployment_id))

    async def delete(self, request: Request) -> Response:
        self.ctx.deployments.delete(request.path_params["id"])
        return no_content()


def _loads_list(text: str) -> list[dict[str, Any]]:
    value = loads(text, [])
    return value if isinstance(value, list) else []
