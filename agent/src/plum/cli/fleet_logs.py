"""plumctl fleet logs: an instance's output, read from the agent that runs it.

The controller does not hold logs, and it has no token for the agents' APIs, so plumctl asks the agent
itself: the controller says which node runs the instance and at which address the node heartbeats; the
agent's URL is ``--agent-url``, else ``http://<that address>:<--agent-port, 7070>``; its token comes from
``--agent-token-file``, ``PLUM_AGENT_TOKEN_FILE``, ``PLUM_AGENT_TOKEN``, else the local agent's token file
(run on the node). Agents listen on loopback by default: run it on the node, or give ``--agent-url``
through an SSH tunnel. The agent's /healthz must name the instance's node, so another agent's logs are
never shown by mistake.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from plum.agent.config import DEFAULT_API_ADDR, AgentConfig
from plum.cli.agent import agent_client
from plum.cli.fleet_deployments import detail, quote
from plum.cli.http import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, CLIError, JsonClient
from plum.cli.output import print_json
from plum.common.vocab import deployment_of

DEFAULT_AGENT_PORT = int(DEFAULT_API_ADDR.rpartition(":")[2])


def instance_node(client: JsonClient, instance: str) -> str:
    try:
        dep_id = deployment_of(instance)
    except ValueError as exc:
        raise CLIError(
            f"{exc} (an instance id is <deploymentId>-<8 hex>: see plumctl fleet deployments status)", EXIT_USAGE
        ) from None
    for a in detail(client, dep_id, lost=True)["assignments"]:
        if a["instanceId"] == instance:
            return str(a["nodeId"])
    raise CLIError(f"deployment {dep_id} at {client.url} has no instance {instance}")


def agent_token(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[str, str]:
    path_source = [
        (args.agent_token_file, "--agent-token-file"),
        (env.get("PLUM_AGENT_TOKEN_FILE"), "PLUM_AGENT_TOKEN_FILE"),
    ]
    for path, source in path_source:
        if path:
            return _read(Path(path), f"{source} {path}"), f"{source} {path}"
    if env.get("PLUM_AGENT_TOKEN"):
        return env["PLUM_AGENT_TOKEN"].strip(), "PLUM_AGENT_TOKEN"
    path = AgentConfig.load(None).token_file
    return _read(path, f"{path} (this host's agent)"), str(path)


def _read(path: Path, source: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise CLIError(
            f"cannot read the agent token from {source}: {exc.strerror}; pass --agent-token-file", EXIT_USAGE
        ) from None


def agent_node(url: str) -> str:
    """The node id the agent at ``url`` serves (its /healthz needs no token)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/healthz", timeout=10) as response:  # noqa: S310 - http(s)
            health: dict[str, Any] = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise CLIError(
            f"cannot reach the agent at {url}: {reason}. Agents listen on loopback by default: run this on the "
            "node, or pass --agent-url (for example through an SSH tunnel)",
            EXIT_UNREACHABLE,
        ) from None
    return str(health.get("node_id"))


def logs(client: JsonClient, args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> int:
    node = instance_node(client, args.instance)
    url = args.agent_url or f"http://{client.call('GET', f'/v1/nodes/{quote(node)}')['ip']}:{args.agent_port}"
    served = agent_node(url)
    if served != node:
        raise CLIError(f"the agent at {url} is node {served}, but instance {args.instance} runs on node {node}")
    token, source = agent_token(args, env)
    result = agent_client(url, token, source).call("GET", f"/v1/apps/{quote(args.instance)}/logs?tail={args.tail}")
    if args.json:
        print_json({**result, "nodeId": node, "agentUrl": url})
    else:
        print("\n".join(result["lines"]))
    return EXIT_OK


def add_command(sub: Any) -> None:
    p = sub.add_parser("logs", help="an instance's last output lines, from the agent that runs it")
    p.add_argument("instance", help="the instance id (plumctl fleet deployments status lists them)")
    p.add_argument("--tail", type=int, default=100)
    p.add_argument("--agent-url", help="the agent's URL (default: the node's address and --agent-port)")
    p.add_argument("--agent-port", type=int, default=DEFAULT_AGENT_PORT)
    p.add_argument("--agent-token-file", help="the agent's token file (default: PLUM_AGENT_TOKEN_FILE, ...)")
    p.set_defaults(handler=logs)
