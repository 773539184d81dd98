"""plumctl fleet deployments: create from a YAML file, list, status, scale, start, stop, update, delete.

An update PATCHes the entry's app in place and follows the controller's rollout (GET of the deployment,
twice a second) until it finishes: exit 0 when it succeeded, 4 when it failed or was rolled back.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, Optional

from plum.cli import yamlsubset
from plum.cli.http import EXIT_OK, EXIT_ROLLOUT, EXIT_USAGE, CLIError, JsonClient
from plum.cli.output import age, labels, print_json, print_table

POLL_SECONDS = 0.5
FINISHED_OK = "Succeeded"


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def find(client: JsonClient, ref: str) -> dict[str, Any]:
    """The list item of the deployment whose id or name is ``ref``."""
    for item in client.call("GET", "/v1/deployments"):
        if ref in (item["deploymentId"], item["name"]):
            return dict(item)
    raise CLIError(f"no deployment with id or name {ref!r} at {client.url}")


def detail(client: JsonClient, dep_id: str, lost: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = client.call("GET", f"/v1/deployments/{quote(dep_id)}{'?lost=true' if lost else ''}")
    return result


def load_file(path: Path) -> dict[str, Any]:
    try:
        doc = yamlsubset.loads(path.read_text())
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None
    except yamlsubset.YAMLError as exc:
        raise CLIError(f"{path}: {exc}", EXIT_USAGE) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list) or not doc["entries"]:
        raise CLIError(f"{path}: expected a mapping with 'name' and a non-empty list 'entries'", EXIT_USAGE)
    return doc


def app_id(apps: list[dict[str, Any]], name: str, version: Optional[str], where: str) -> str:
    """The artifactId of app ``name`` at ``version``, or its newest upload when no version is given."""
    matching = [a for a in apps if a["name"] == name and (version is None or a["version"] == version)]
    if not matching:
        known = ", ".join(sorted({f"{a['name']} {a['version']}" for a in apps})) or "none"
        wanted = f"{name} {version}" if version else name
        raise CLIError(f"{where}: no app {wanted} on the controller (uploaded: {known}); plumctl fleet apps upload it")
    return str(max(matching, key=lambda a: a.get("createdAt") or 0)["artifactId"])


def request_body(doc: dict[str, Any], apps: list[dict[str, Any]], source: str) -> dict[str, Any]:
    """The POST /v1/deployments body: the file as is, with ``app``/``version`` resolved to an artifactId."""
    body = {k: v for k, v in doc.items()}
    entries = []
    for i, raw in enumerate(doc["entries"]):
        if not isinstance(raw, dict):
            raise CLIError(f"{source}: entries[{i}] must be a mapping", EXIT_USAGE)
        entry = dict(raw)
        if "app" in entry:
            version = entry.pop("version", None)
            entry["artifactId"] = app_id(
                apps, str(entry.pop("app")), None if version is None else str(version), f"{source}: entries[{i}]"
            )
        entries.append(entry)
    body["entries"] = entries
    return body


def create(client: JsonClient, args: argparse.Namespace) -> int:
    path = Path(args.file)
    body = request_body(load_file(path), client.call("GET", "/v1/apps"), str(path))
    created = client.send_json("POST", "/v1/deployments", body)
    if args.start:
        client.call("POST", f"/v1/deployments/{quote(created['deploymentId'])}?action=start")
    if args.json:
        print_json(created)
    else:
        state = "started" if args.start else "created (Stopped: plumctl fleet deployments start it)"
        print(
            f"deployment {body.get('name')} {created['deploymentId']}: {len(created['instances'])} instance(s), {state}"
        )
    return EXIT_OK


def list_all(client: JsonClient, args: argparse.Namespace) -> int:
    items = client.call("GET", "/v1/deployments")
    if args.json:
        print_json(items)
        return EXIT_OK
    rows = [
        (d["name"], d["deploymentId"], d["status"], str(d["instances"]), rollout_text(d.get("rollout"))) for d in items
    ]
    print_table(("NAME", "ID", "STATUS", "INSTANCES", "ROLLOUT"), rows)
    return EXIT_OK


def rollout_text(rollout: Optional[dict[str, Any]]) -> str:
    if not rollout:
        return "-"
    text = (
        f"r{rollout['revision']} {rollout['state']}: {rollout['updated']}/{rollout['total']} updated, "
        f"{rollout['healthy']} healthy"
    )
    return text + (f" ({rollout['message']})" if rollout.get("message") else "")


def status(client: JsonClient, args: argparse.Namespace) -> int:
    found = find(client, args.deployment)
    data = detail(client, found["deploymentId"], args.lost)
    if args.json:
        print_json(data)
        return EXIT_OK
    dep = data["deployment"]
    print(f"deployment {dep['name']} {dep['deploymentId']}  status {dep['status']}  labels {labels(dep['labels'])}")
    print(f"rollout    {rollout_text(dep.get('rollout'))}")
    print()
    entry_rows = []
    for entry in data["entries"]:
        wanted = entry.get("desiredReplicas")
        replicas = ",".join(f"{n}={c}" for n, c in sorted(entry["replicas"].items())) or "-"
        placed = f"{wanted} placed" if wanted is not None else "pinned"
        entry_rows.append((str(entry["position"]), entry["appName"], entry["appVersion"], placed, replicas))
    print_table(("ENTRY", "APP", "VERSION", "REPLICAS", "PER NODE"), entry_rows)
    print()
    rows = []
    for a in sorted(data["assignments"], key=lambda a: (a["nodeId"], a["instanceId"])):
        reason = a.get("message") or ""
        if a.get("exitCode") is not None:
            reason = f"exit {a['exitCode']}" + (f": {reason}" if reason else "")
        rows.append(
            (
                a["instanceId"],
                a["nodeId"],
                a["desired"],
                a.get("phase") or "Pending",
                a["appVersion"],
                str(a.get("restarts") or 0),
                age(a.get("lastReportAt")),
                reason,
            )
        )
    print_table(("INSTANCE", "NODE", "DESIRED", "PHASE", "VERSION", "RESTARTS", "REPORTED", "REASON"), rows)
    return EXIT_OK


def entry_index(data: dict[str, Any], given: Optional[int], app: Optional[str] = None) -> int:
    entries = data["entries"]
    if given is not None:
        if not 0 <= given < len(entries):
            raise CLIError(
                f"--entry {given}: the deployment has {len(entries)} entries (0-{len(entries) - 1})", EXIT_USAGE
            )
        return given
    candidates = [i for i, e in enumerate(entries) if app is None or e["appName"] == app]
    if len(candidates) != 1:
        raise CLIError(f"the deployment has {len(entries)} entries: choose one with --entry", EXIT_USAGE)
    return candidates[0]


def patch_entry(client: JsonClient, data: dict[str, Any], index: int, change: dict[str, Any]) -> dict[str, Any]:
    items: list[dict[str, Any]] = [{} for _ in data["entries"]]
    items[index] = change
    dep_id = data["deployment"]["deploymentId"]
    result: dict[str, Any] = client.send_json("PATCH", f"/v1/deployments/{quote(dep_id)}", {"entries": items})
    return result


def replicas_arg(values: list[str]) -> Any:
    """``3`` (placed by the controller) or ``n1=2 n2=0`` (pinned per node)."""
    if len(values) == 1 and values[0].isdigit():
        return int(values[0])
    pinned = {}
    for value in values:
        node, sep, count = value.partition("=")
        if not sep or not node or not count.isdigit():
            raise CLIError(f"replicas {value!r}: expected a number, or NODE=COUNT pairs", EXIT_USAGE)
        pinned[node] = int(count)
    return pinned


def scale(client: JsonClient, args: argparse.Namespace) -> int:
    data = detail(client, find(client, args.deployment)["deploymentId"])
    change: dict[str, Any] = {"replicas": replicas_arg(args.replicas)}
    placement: dict[str, Any] = {}
    if args.node:
        placement["nodes"] = args.node
    for item in args.label or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise CLIError(f"--label {item!r}: expected KEY=VALUE", EXIT_USAGE)
        placement.setdefault("labels", {})[key] = value
    if placement:
        if not isinstance(change["replicas"], int):
            raise CLIError("--node and --label place a number of replicas; per-node counts are pinned", EXIT_USAGE)
        change["placement"] = placement
    index = entry_index(data, args.entry)
    result = patch_entry(client, data, index, change)
    if args.json:
        print_json(result)
    else:
        entry = result["entries"][index]
        per_node = ", ".join(f"{n}={c}" for n, c in sorted(entry["replicas"].items())) or "none"
        print(f"deployment {result['deployment']['name']} entry {index}: {per_node}")
    return EXIT_OK


def action(client: JsonClient, args: argparse.Namespace) -> int:
    dep_id = find(client, args.deployment)["deploymentId"]
    result = client.call("POST", f"/v1/deployments/{quote(dep_id)}?action={args.action}")
    print_json(result) if args.json else print(f"deployment {args.deployment}: {result['status']}")
    return EXIT_OK


def delete(client: JsonClient, args: argparse.Namespace) -> int:
    dep_id = find(client, args.deployment)["deploymentId"]
    client.call("DELETE", f"/v1/deployments/{quote(dep_id)}")
    print_json({"deploymentId": dep_id, "deleted": True}) if args.json else print(
        f"deployment {args.deployment}: deleted"
    )
    return EXIT_OK


def update(client: JsonClient, args: argparse.Namespace) -> int:
    data = detail(client, find(client, args.deployment)["deploymentId"])
    index = entry_index(data, args.entry, args.app)
    entry = data["entries"][index]
    artifact = app_id(client.call("GET", "/v1/apps"), args.app or entry["appName"], args.version, "update")
    before = data["deployment"].get("rollout")
    result = patch_entry(client, data, index, {"artifactId": artifact})
    rollout = result["deployment"].get("rollout")
    if rollout is None or (before is not None and rollout["revision"] == before["revision"]):
        print_json(result) if args.json else print(
            f"deployment {args.deployment}: already at {args.version}, nothing to roll out"
        )
        return EXIT_OK
    if args.no_wait:
        print_json(rollout) if args.json else print(rollout_text(rollout))
        return EXIT_OK
    return follow(client, result["deployment"]["deploymentId"], rollout, args.json)


def follow(client: JsonClient, dep_id: str, rollout: dict[str, Any], as_json: bool) -> int:
    """Print each change of the rollout until it finishes; its exit code."""
    shown = None
    while True:
        line = rollout_text(rollout)
        if line != shown and not as_json:
            print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)
            shown = line
        if rollout["state"] != "Running":
            break
        time.sleep(POLL_SECONDS)
        current = detail(client, dep_id)["deployment"].get("rollout")
        if current is not None and current["revision"] >= rollout["revision"]:
            rollout = current
    if as_json:
        print_json(rollout)
    if rollout["state"] == FINISHED_OK:
        return EXIT_OK
    print(
        f"plumctl: rollout r{rollout['revision']} {rollout['state']}: {rollout.get('message') or ''}", file=sys.stderr
    )
    return EXIT_ROLLOUT


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "deployments", aliases=["dep"], help="create, list, inspect, scale, update and delete deployments"
    )
    verbs = p.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", aliases=["ls"], help="list deployments").set_defaults(handler=list_all)
    c = verbs.add_parser("create", help="create a deployment from a YAML file (docs/plumctl.md)")
    c.add_argument("file")
    c.add_argument("--start", action="store_true", help="start it right away (it is created Stopped)")
    c.set_defaults(handler=create)
    s = verbs.add_parser("status", help="a deployment, its entries and every instance's node, phase and reason")
    s.add_argument("deployment", help="id or name")
    s.add_argument("--lost", action="store_true", help="include instances replaced by failover")
    s.set_defaults(handler=status)
    sc = verbs.add_parser("scale", help="N replicas placed by the controller, or NODE=COUNT pairs")
    sc.add_argument("deployment", help="id or name")
    sc.add_argument("replicas", nargs="+")
    sc.add_argument("--entry", type=int, help="the entry's position (needed with several entries)")
    sc.add_argument("--node", action="append", help="place only on this node (repeat)")
    sc.add_argument("--label", action="append", metavar="KEY=VALUE", help="place only on nodes with this label")
    sc.set_defaults(handler=scale)
    for name in ("start", "stop"):
        a = verbs.add_parser(name, help=f"{name} every instance")
        a.add_argument("deployment", help="id or name")
        a.set_defaults(handler=action, action=name)
    d = verbs.add_parser("delete", aliases=["rm"], help="delete a deployment and its instances")
    d.add_argument("deployment", help="id or name")
    d.set_defaults(handler=delete)
    u = verbs.add_parser("update", help="roll an entry out to another uploaded version, showing progress")
    u.add_argument("deployment", help="id or name")
    u.add_argument("version")
    u.add_argument("--app", help="the app name (default: the entry's app)")
    u.add_argument("--entry", type=int, help="the entry's position (needed with several entries)")
    u.add_argument("--no-wait", action="store_true", help="start the rollout and return")
    u.set_defaults(handler=update)
