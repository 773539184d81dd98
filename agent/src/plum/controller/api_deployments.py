"""Routes for deployments: create (entries or Plum's legacy single-entry form), list, get,
start/stop, a real in-place update of labels, replicas, placement and the app or settings (a rolling
update), and delete. Bodies are checked by deployment_schemas.py; what needs the database is checked here."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from plum.common.httpserver import HTTPError, Request, Response, json_response
from plum.common.vocab import ControllerDesired
from plum.controller import deployment_schemas as s
from plum.controller import validation as v
from plum.controller.api import OPERATOR, Context, RouteSpec, no_content, read_json
from plum.controller.deployments import EntryChange, EntrySpec
from plum.controller.placement import Placement
from plum.controller.rollout import UpdatePolicy
from plum.controller.store import Row, loads

# An entry's app and runtime settings: changing one of them rolls the entry out. Each maps to the
# value it has when unset, which is what a PATCH that gives the key empty (or null) sets it to.
UNSET_SETTINGS: dict[str, Any] = {
    "artifactUrl": "",
    "artifactId": "",
    "startCmd": "",
    "runtime": "",
    "image": "",
    "env": {},
    "memory": "",
    "cpus": None,
    "networkMode": "",
    "restartPolicy": "",
    "ports": [],
}
ENTRY_KEYS = (*UNSET_SETTINGS, "replicas", "placement")


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


class DeploymentRoutes:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def routes(self) -> list[RouteSpec]:
        return [
            RouteSpec("POST", "/v1/deployments", self.create, OPERATOR, doc=s.CREATE_DOC),
            RouteSpec("GET", "/v1/deployments", self.list_deployments, OPERATOR, doc=s.LIST_DOC),
            RouteSpec("GET", "/v1/deployments/{id}", self.get, OPERATOR, doc=s.DETAIL_DOC),
            RouteSpec("POST", "/v1/deployments/{id}", self.action, OPERATOR, doc=s.ACTION_DOC),
            RouteSpec("PATCH", "/v1/deployments/{id}", self.patch, OPERATOR, doc=s.PATCH_DOC),
            RouteSpec("DELETE", "/v1/deployments/{id}", self.delete, OPERATOR, doc=s.DELETE_DOC),
        ]

    # -- what the shapes cannot tell: the nodes, the artifacts, the instances ---------------------

    def _known_node(self, node: str, field: str) -> str:
        if self.ctx.nodes.get(node) is None:
            known = ", ".join(sorted(self.ctx.nodes.nodes)[:20]) or "none yet"
            raise HTTPError(
                400,
                f"{field}: unknown node {node!r} (no heartbeat ever received from it; known nodes: {known})",
                field=field,
                nodeId=node,
            )
        return node

    def _replicas(self, data: dict[str, Any], prefix: str) -> dict[str, int] | int:
        """``{nodeId: count}`` (pinned per node, each node known) or a number the controller places."""
        replicas: dict[str, int] | int = data["replicas"]
        field = v.join(prefix, "replicas")
        if isinstance(replicas, dict):
            for node in replicas:
                self._known_node(node, field)
        return replicas

    def _placement(self, data: dict[str, Any], prefix: str) -> Placement:
        field = v.join(prefix, "placement")
        placement = data["placement"]
        listed = tuple(dict.fromkeys(self._known_node(n, f"{field}.nodes") for n in placement.get("nodes", [])))
        return Placement(listed, placement.get("labels", {}))

    def _settings(self, data: dict[str, Any], prefix: str, replicas: dict[str, int] | int) -> EntrySpec:
        """The entry's app (it must exist) and runtime settings (shapes checked by the schema)."""
        url = data.get("artifactUrl") or data.get("artifactId")
        if not url:
            raise v.bad(v.join(prefix, "artifactUrl"), "is required (an app's url, or image://<artifactId>)")
        artifact = self.ctx.apps.resolve(url)
        if artifact is None:
            field = v.join(prefix, "artifactUrl" if "artifactUrl" in data else "artifactId")
            raise v.bad(field, f"unknown artifact {v.show(url)}: upload the app or register the image first")
        runtime = data.get("runtime", "")
        if artifact["type"] == "image" and runtime == "process":
            raise v.bad(v.join(prefix, "runtime"), "an image app can only run with runtime 'docker'")
        network_mode = data.get("networkMode", "")
        ports = data.get("ports", [])
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
            start_cmd=data.get("startCmd", ""),
            runtime=runtime,
            image=data.get("image", ""),
            env=data.get("env", {}),
            memory=data.get("memory", ""),
            cpus=data.get("cpus"),
            network_mode=network_mode,
            restart_policy=data.get("restartPolicy", ""),
            ports=ports,
        )
        self._check_host_ports(spec.ports, spec.replicas, v.join(prefix, "replicas"))
        return spec

    def _entry(self, data: dict[str, Any], prefix: str) -> EntrySpec:
        return self._settings(data, prefix, self._replicas(data, prefix))

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

    def _change(self, item: dict[str, Any], given: Collection[str], entry: Row, prefix: str) -> EntryChange:
        """One PATCH item (``given``: the keys the request named): those replace the entry's, the others stay."""
        replicas = self._replicas(item, prefix) if "replicas" in item else None
        placed = entry["desired_replicas"] if replicas is None else (replicas if isinstance(replicas, int) else None)
        if "placement" in item and placed is None:
            raise v.bad(v.join(prefix, "placement"), "only with a number of replicas (the controller places them)")
        if "placement" in item and replicas is None:
            replicas = placed  # a new placement for the same number
        settings = None
        changed = [key for key in UNSET_SETTINGS if key in given]
        if changed:
            merged = current_settings(entry)
            if "artifactUrl" in given:
                merged.pop("artifactId")
            merged.update((key, item.get(key, UNSET_SETTINGS[key])) for key in changed)
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
        if total > s.MAX_INSTANCES_PER_REQUEST:
            raise v.bad("replicas", f"{total} instances in total; at most {s.MAX_INSTANCES_PER_REQUEST}")

    # -- handlers -------------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        body = s.CREATE.check(await read_json(request), "")
        if "entries" in body:
            items = [(f"entries[{i}]", entry) for i, entry in enumerate(body["entries"])]
        else:  # Plum's legacy form: the single entry's fields at the top level
            items = [("", {key: body[key] for key in ENTRY_KEYS if key in body})]
        entries = [self._entry(entry, prefix) for prefix, entry in items]
        policy = UpdatePolicy.from_json(body["update"]) if "update" in body else UpdatePolicy()
        total = sum(e.placed if e.placed is not None else sum(e.replicas.values()) for e in entries)
        if total > s.MAX_INSTANCES_PER_REQUEST:
            raise v.bad("entries", f"{total} instances requested; at most {s.MAX_INSTANCES_PER_REQUEST}")
        deployment_id, instances = self.ctx.deployments.create(body["name"], body.get("labels", {}), entries, policy)
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
        status = ControllerDesired.RUNNING.value if action == "start" else ControllerDesired.STOPPED.value
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
        raw = await read_json(request)
        body = s.PATCH.check(raw, "")
        dep = self.ctx.deployments.get_row(deployment_id)
        if "name" in body and body["name"] != dep["name"]:
            raise v.bad(
                "name",
                f"renaming is not supported ({dep['name']!r} -> {v.show(body['name'])}); "
                "create a new deployment instead",
            )
        policy = UpdatePolicy.from_json(body["update"]) if "update" in body else None
        entries = self.ctx.deployments.entries(deployment_id)
        changes: dict[int, EntryChange] = {}
        if "replicas" in body and "entries" in body:
            raise v.bad("replicas", "give either replicas (single-entry deployment) or entries[].replicas")
        if "replicas" in body:
            if len(entries) != 1:
                raise v.bad(
                    "replicas",
                    f"this deployment has {len(entries)} entries; "
                    "use entries: [{replicas: {...}}, ...] with one item per entry",
                )
            changes[entries[0]["entry_id"]] = self._change(body, ("replicas",), entries[0], "")
        elif "entries" in body:
            if len(body["entries"]) != len(entries):
                got = v.show(raw["entries"])
                raise v.bad(
                    "entries", f"expected a list of {len(entries)} item(s) (one per entry, in order), got {got}"
                )
            for i, (item, given, entry) in enumerate(zip(body["entries"], raw["entries"], entries)):
                changes[entry["entry_id"]] = self._change(item, given, entry, f"entries[{i}]")
        self._check_patch(entries, changes, top_level="replicas" in body)
        if self.ctx.deployments.update(deployment_id, body.get("labels"), changes, policy):
            self.ctx.hub.announce("rollout", self.ctx.rollouts.event(deployment_id, "started"))
        return json_response(self.ctx.deployments.detail(deployment_id))

    async def delete(self, request: Request) -> Response:
        self.ctx.deployments.delete(request.path_params["id"])
        return no_content()


def _loads_list(text: str) -> list[dict[str, Any]]:
    value = loads(text, [])
    return value if isinstance(value, list) else []
