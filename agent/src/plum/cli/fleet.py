"""plumctl fleet: the whole fleet through the controller: nodes, apps, deployments, services, logs."""

from __future__ import annotations

import argparse
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

from plum.cli import fleet_deployments, fleet_logs
from plum.cli.agent import read_artifact
from plum.cli.http import EXIT_OK, EXIT_USAGE, CLIError, JsonClient
from plum.cli.output import age, human_bytes, labels, print_json, print_table
from plum.cli.target import controller_client
from plum.common.multipart import Part, encode_multipart


def instances_per_node(client: JsonClient) -> Counter[str]:
    counts: Counter[str] = Counter()
    for dep in client.call("GET", "/v1/deployments"):
        for a in fleet_deployments.detail(client, dep["deploymentId"])["assignments"]:
            counts[a["nodeId"]] += 1
    return counts


def nodes(client: JsonClient, args: argparse.Namespace) -> int:
    items = client.call("GET", "/v1/nodes")
    counts = instances_per_node(client)
    if args.json:
        print_json([{**n, "instances": counts[n["nodeId"]]} for n in items])
        return EXIT_OK
    rows = [
        (
            n["nodeId"],
            n.get("ip") or "-",
            n["health"],
            age(n.get("lastSeen")),
            str(counts[n["nodeId"]]),
            labels(n.get("labels")),
        )
        for n in items
    ]
    print_table(("NODE", "IP", "HEALTH", "LAST SEEN", "INSTANCES", "LABELS"), rows)
    return EXIT_OK


def apps_list(client: JsonClient, args: argparse.Namespace) -> int:
    items = client.call("GET", "/v1/apps")
    if args.json:
        print_json(items)
        return EXIT_OK
    rows = [
        (
            a["artifactId"],
            a["name"],
            a["version"],
            a.get("type") or "zip",
            human_bytes(a.get("sizeBytes")),
            age(a.get("createdAt")),
            ",".join(f"{s['name']}:{s['protocol']}:{s['port']}" for s in a.get("services") or []),
        )
        for a in items
    ]
    print_table(("ID", "NAME", "VERSION", "TYPE", "SIZE", "CREATED", "SERVICES"), rows)
    return EXIT_OK


def apps_upload(client: JsonClient, args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists():
        raise CLIError(f"no zip or directory at {path}", EXIT_USAGE)
    data = read_artifact(path)
    body, ctype = encode_multipart([Part("file", data, path.name if path.is_file() else "app.zip", "application/zip")])
    app = client.call("POST", "/v1/apps/upload", body, ctype)
    print_json(app) if args.json else print(
        f"uploaded {app['name']} {app['version']}: {app['artifactId']} ({app['url']})"
    )
    return EXIT_OK


def apps_delete(client: JsonClient, args: argparse.Namespace) -> int:
    client.call("DELETE", f"/v1/apps/{urllib.parse.quote(args.app, safe='')}")
    print_json({"artifactId": args.app, "deleted": True}) if args.json else print(f"app {args.app}: deleted")
    return EXIT_OK


def services(client: JsonClient, args: argparse.Namespace) -> int:
    names = client.call("GET", "/v1/services/list")
    print_json(names) if args.json else print("\n".join(names))
    return EXIT_OK


def discover(client: JsonClient, args: argparse.Namespace) -> int:
    query = {"service": args.service, **({"all": "true"} if args.all else {})}
    if args.version:
        query["version"] = args.version
    if args.protocol:
        query["protocol"] = args.protocol
    items = client.call("GET", "/v1/discovery?" + urllib.parse.urlencode(query))
    if args.json:
        print_json(items)
        return EXIT_OK
    rows = [
        (
            e["serviceName"],
            f"{e['ip']}:{e['port']}",
            e["protocol"],
            e.get("version") or "-",
            "yes" if e.get("healthy") else "no",
            age(e.get("lastSeen")),
            e["nodeId"],
            e["instanceId"],
        )
        for e in items
    ]
    print_table(("SERVICE", "ADDRESS", "PROTOCOL", "VERSION", "HEALTHY", "LAST SEEN", "NODE", "INSTANCE"), rows)
    return EXIT_OK


def add_parser(sub: Any) -> None:
    p = sub.add_parser("fleet", help="the whole fleet, through the controller (plumctl fleet --help)")
    p.add_argument(
        "--controller", metavar="URL", help="controller URL (default: PLUM_CONTROLLER_URL, else http://127.0.0.1:8080)"
    )
    p.add_argument(
        "--token-file",
        help="operator token file (default: PLUM_CONTROLLER_TOKEN_FILE, PLUM_CONTROLLER_TOKEN, "
        "~/.config/plum/operator.token)",
    )
    p.add_argument("--json", dest="fleet_json", action="store_true", help="print JSON instead of tables")
    groups = p.add_subparsers(dest="group", required=True)
    groups.add_parser("nodes", help="nodes: health, last seen, instances").set_defaults(handler=nodes)

    apps = groups.add_parser("apps", help="list, upload and delete apps").add_subparsers(dest="verb", required=True)
    apps.add_parser("list", aliases=["ls"], help="list uploaded apps").set_defaults(handler=apps_list)
    up = apps.add_parser("upload", help="upload a zip, or a directory (zipped reproducibly)")
    up.add_argument("path")
    up.set_defaults(handler=apps_upload)
    rm = apps.add_parser("delete", aliases=["rm"], help="delete an app no deployment uses")
    rm.add_argument("app", help="the app's artifactId")
    rm.set_defaults(handler=apps_delete)

    fleet_deployments.add_commands(groups)

    svc = groups.add_parser("services", help="service names and discovery").add_subparsers(dest="verb", required=True)
    svc.add_parser("list", aliases=["ls"], help="registered service names").set_defaults(handler=services)
    d = svc.add_parser("discover", help="a service's endpoints")
    d.add_argument("service")
    d.add_argument("--all", action="store_true", help="unhealthy and stale endpoints too")
    d.add_argument("--version")
    d.add_argument("--protocol")
    d.set_defaults(handler=discover)

    fleet_logs.add_command(groups)


def run(args: argparse.Namespace) -> int:
    args.json = args.json or args.fleet_json
    code: int = args.handler(controller_client(args), args)
    return code
