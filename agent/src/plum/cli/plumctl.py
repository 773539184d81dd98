"""plumctl: list, deploy, start, stop, restart, remove and read the logs of apps on the local agent."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from plum.agent.config import AgentConfig
from plum.common.artifact import zip_directory
from plum.common.config import ConfigError
from plum.common.multipart import Part, encode_multipart
from plum.common.vocab import RESTART_POLICIES, RunMode


class CLIError(Exception):
    pass


class AgentClient:
    def __init__(self, url: str, token: str, token_source: str) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.token_source = token_source

    def call(self, method: str, path: str, body: Optional[bytes] = None, content_type: str = "") -> Any:
        request = urllib.request.Request(self.url + path, data=body, method=method)  # noqa: S310 - http(s) only
        request.add_header("Authorization", f"Bearer {self.token}")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            if exc.code == 401:
                message += f" (token read from {self.token_source})"
            raise CLIError(f"{method} {path}: {exc.code} {message}") from None
        except urllib.error.URLError as exc:
            raise CLIError(
                f"cannot reach the agent at {self.url}: {exc.reason}. Is plum-agent running? "
                f"Check with: curl {self.url}/healthz"
            ) from None


def read_artifact(path: Path) -> bytes:
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


def human_bytes(value: Optional[int]) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return "-"


def age(iso: Optional[str]) -> str:
    if not iso:
        return "-"
    seconds = time.time() - datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def print_table(apps: list[dict[str, Any]]) -> None:
    header = ("NAME", "VERSION", "RUNTIME", "PHASE", "PID", "RESTARTS", "CPU%", "MEM", "UP", "MESSAGE")
    rows = [header]
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
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])


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


def make_client(args: argparse.Namespace) -> AgentClient:
    config = AgentConfig.load(args.config)
    url = args.url or os.environ.get("PLUM_AGENT_URL") or f"http://{config.api_host}:{config.api_port}"
    if args.token or os.environ.get("PLUM_AGENT_TOKEN"):
        return AgentClient(url, args.token or os.environ["PLUM_AGENT_TOKEN"], "--token/PLUM_AGENT_TOKEN")
    if config.api_token:
        return AgentClient(url, config.api_token, "AGENT_API_TOKEN")
    try:
        token = config.token_file.read_text().strip()
    except OSError as exc:
        raise CLIError(
            f"cannot read the agent token at {config.token_file} ({exc.strerror}); "
            "pass --token, set PLUM_AGENT_TOKEN, or point AGENT_DATA_DIR/--config at the agent's data dir"
        ) from None
    return AgentClient(url, token, str(config.token_file))


def run(args: argparse.Namespace) -> int:
    client = make_client(args)
    out = print if args.json else None
    if args.command in ("list", "ls"):
        apps = client.call("GET", "/v1/apps")["apps"]
        print(json.dumps(apps, indent=2)) if out else print_table(apps)
    elif args.command == "status":
        app = client.call("GET", f"/v1/apps/{args.name}")
        print(json.dumps(app, indent=2)) if out else print_app(app)
    elif args.command == "deploy":
        parts = [Part("spec", json.dumps(build_spec(args)).encode(), content_type="application/json")]
        if args.artifact:
            parts.insert(0, Part("artifact", read_artifact(Path(args.artifact)), "app.zip", "application/zip"))
        body, ctype = encode_multipart(parts)
        query = "?start=false" if args.no_start else ""
        result = client.call("PUT", f"/v1/apps/{args.name}{query}", body, ctype)
        if out:
            print(json.dumps(result, indent=2))
        else:
            print(f"{args.name}: {'deployed' if result['changed'] else 'unchanged'}")
            print_app(result["app"])
    elif args.command in ("start", "stop", "restart"):
        result = client.call("POST", f"/v1/apps/{args.name}/{args.command}")
        if out:
            print(json.dumps(result, indent=2))
        else:
            print(f"{args.name}: {result['app']['phase']}{'' if result['changed'] else ' (unchanged)'}")
    elif args.command in ("remove", "rm"):
        result = client.call("DELETE", f"/v1/apps/{args.name}")
        print(json.dumps(result)) if out else print(f"{args.name}: removed")
    elif args.command == "logs":
        result = client.call("GET", f"/v1/apps/{args.name}/logs?tail={args.tail}")
        print(json.dumps(result, indent=2)) if out else print("\n".join(result["lines"]))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plumctl", description="Operate the apps of the local Plum agent.")
    p.add_argument("--url", help="agent URL (default: PLUM_AGENT_URL, else AGENT_API_ADDR)")
    p.add_argument("--token", help="API token (default: PLUM_AGENT_TOKEN, else the agent's token file)")
    p.add_argument("--config", metavar="FILE", help="the agent's env file, to find its address and token")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", aliases=["ls"], help="list apps")
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
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except (CLIError, ConfigError) as exc:
        print(f"plumctl: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
