"""plumctl's agent commands: list, deploy, start, stop, restart, remove and read the logs of apps on one agent."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from plum.agent.config import AgentConfig
from plum.cli.http import CLIError, JsonClient
from plum.cli.output import age, human_bytes, print_json, print_table
from plum.common.artifact import zip_directory
from plum.common.multipart import Part, encode_multipart
from plum.common.vocab import RESTART_POLICIES, RunMode

COMMANDS = ("list", "ls", "status", "deploy", "start", "stop", "restart", "remove", "rm", "logs")


def agent_client(url: str, token: str, token_source: str) -> JsonClient:
    hint = f"Is plum-agent running? Check with: curl {url.rstrip('/')}/healthz"
    return JsonClient(url, token, token_source, "agent", hint)


def read_artifact(path: Path) -> bytes:
    """A zip's bytes, or a directory zipped reproducibly (start.sh and meta.ini at its root)."""
    if path.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "app.zip"
            zip_directory(path, target)
            return target.read_bytes()
    if not path.is_file():
        raise CLIError(f"artifact not found: {path}")
    return path.read_bytes()


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(Path(args.spec_file).read_text()) if args.spec_file else {}
    if args.start_cmd:
        spec["start_cmd"] = args.start_cmd
    if args.restart_policy:
        spec["restart_policy"] = args.restart_policy
    if args.stop_timeout is not None:
        spec["stop_timeout"] = args.stop_timeout
    if args.runtime:
        spec["runtime"] = args.runtime
    for item in args.env or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise CLIError(f"--env {item!r}: expected NAME=value")
        spec.setdefault("env", {})[key] = value
    return spec


def print_apps(apps: list[dict[str, Any]]) -> None:
    header = ("NAME", "VERSION", "RUNTIME", "PHASE", "PID", "RESTARTS", "CPU%", "MEM", "UP", "MESSAGE")
    rows = []
    for app in apps:
        cpu = app.get("cpu_percent")
        rows.append(
            (
                app["name"],
                app.get("version") or "-",
                app["runtime"],
                app["phase"],
                str(app.get("pid") or "-"),
                str(app["restarts"]),
                "-" if cpu is None else f"{cpu:.1f}",
                human_bytes(app.get("memory_bytes")),
                age(app.get("started_at")) if app.get("pid") else "-",
                app.get("message") or "",
            )
        )
    print_table(header, rows)


def print_app(app: dict[str, Any]) -> None:
    keys = (
        "name",
        "package",
        "version",
        "runtime",
        "phase",
        "desired",
        "pid",
        "restarts",
        "exit_code",
        "message",
        "started_at",
        "next_restart_at",
        "artifact_sha256",
        "instance_id",
        "log_path",
    )
    for key in keys:
        print(f"{key + ':':18} {app.get(key) if app.get(key) not in (None, '') else '-'}")
    for line in app.get("last_logs") or []:
        print(f"  | {line}")


def make_client(args: argparse.Namespace) -> JsonClient:
    """The agent's URL and token the way the agent finds them (its env file), unless --url/--token say."""
    config = AgentConfig.load(args.config)
    url = args.url or os.environ.get("PLUM_AGENT_URL") or f"http://{config.api_host}:{config.api_port}"
    if args.token or os.environ.get("PLUM_AGENT_TOKEN"):
        return agent_client(url, args.token or os.environ["PLUM_AGENT_TOKEN"], "--token/PLUM_AGENT_TOKEN")
    if config.api_token:
        return agent_client(url, config.api_token, "AGENT_API_TOKEN")
    try:
        token = config.token_file.read_text().strip()
    except OSError as exc:
        raise CLIError(
            f"cannot read the agent token at {config.token_file} ({exc.strerror}); "
            "pass --token, set PLUM_AGENT_TOKEN, or point AGENT_DATA_DIR/--config at the agent's data dir"
        ) from None
    return agent_client(url, token, str(config.token_file))


def run(args: argparse.Namespace) -> int:
    client = make_client(args)
    if args.command in ("list", "ls"):
        apps = client.call("GET", "/v1/apps")["apps"]
        print_json(apps) if args.json else print_apps(apps)
    elif args.command == "status":
        app = client.call("GET", f"/v1/apps/{args.name}")
        print_json(app) if args.json else print_app(app)
    elif args.command == "deploy":
        parts = [Part("spec", json.dumps(build_spec(args)).encode(), content_type="application/json")]
        if args.artifact:
            parts.insert(0, Part("artifact", read_artifact(Path(args.artifact)), "app.zip", "application/zip"))
        body, ctype = encode_multipart(parts)
        query = "?start=false" if args.no_start else ""
        result = client.call("PUT", f"/v1/apps/{args.name}{query}", body, ctype)
        if args.json:
            print_json(result)
        else:
            print(f"{args.name}: {'deployed' if result['changed'] else 'unchanged'}")
            print_app(result["app"])
    elif args.command in ("start", "stop", "restart"):
        result = client.call("POST", f"/v1/apps/{args.name}/{args.command}")
        if args.json:
            print_json(result)
        else:
            print(f"{args.name}: {result['app']['phase']}{'' if result['changed'] else ' (unchanged)'}")
    elif args.command in ("remove", "rm"):
        result = client.call("DELETE", f"/v1/apps/{args.name}")
        print(json.dumps(result)) if args.json else print(f"{args.name}: removed")
    elif args.command == "logs":
        result = client.call("GET", f"/v1/apps/{args.name}/logs?tail={args.tail}")
        print_json(result) if args.json else print("\n".join(result["lines"]))
    return 0


def add_commands(sub: Any) -> None:
    """The agent commands, at plumctl's top level (as before the fleet commands existed)."""
    sub.add_parser("list", aliases=["ls"], help="list the agent's apps")
    for name in ("status", "start", "stop", "restart", "remove"):
        sp = sub.add_parser(name, aliases=["rm"] if name == "remove" else [], help=f"{name} an app")
        sp.add_argument("name")
    logs = sub.add_parser("logs", help="print the last lines of an app's output")
    logs.add_argument("name")
    logs.add_argument("--tail", type=int, default=100)
    deploy = sub.add_parser("deploy", help="deploy a zip or a directory (start.sh + meta.ini at its root)")
    deploy.add_argument("name")
    deploy.add_argument("artifact", nargs="?", help="zip file or directory; omit to change only the spec")
    deploy.add_argument("--spec-file", help="JSON spec file")
    deploy.add_argument("--start-cmd")
    deploy.add_argument("--env", action="append", metavar="NAME=VALUE")
    deploy.add_argument("--restart-policy", choices=RESTART_POLICIES)
    deploy.add_argument("--stop-timeout", type=float)
    deploy.add_argument("--runtime", choices=[mode.value for mode in RunMode])
    deploy.add_argument("--no-start", action="store_true", help="deploy without starting a stopped app")
