"""plumctl: the apps of one agent (plumctl list, deploy, ...) and the whole fleet (plumctl fleet ...)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from plum.cli import agent, fleet
from plum.cli.http import EXIT_REFUSED, CLIError
from plum.common.config import ConfigError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="plumctl",
        description="Operate the apps of the local Plum agent, or the whole fleet through the controller (fleet).",
    )
    p.add_argument("--url", help="agent URL (default: PLUM_AGENT_URL, else AGENT_API_ADDR)")
    p.add_argument("--token", help="API token (default: PLUM_AGENT_TOKEN, else the agent's token file)")
    p.add_argument("--config", metavar="FILE", help="the agent's env file, to find its address and token")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sub = p.add_subparsers(dest="command", required=True)
    agent.add_commands(sub)
    fleet.add_parser(sub)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "fleet":
            return fleet.run(args)
        return agent.run(args)
    except CLIError as exc:
        print(f"plumctl: {exc}", file=sys.stderr)
        return exc.code if args.command == "fleet" else EXIT_REFUSED
    except ConfigError as exc:
        print(f"plumctl: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print("plumctl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
