"""plum-controller: ``--config FILE`` (an env file), ``--check-config``; logs to stderr."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Optional

from plum import __version__
from plum.common.config import ConfigError
from plum.controller.config import ControllerConfig, ensure_tokens
from plum.controller.server import Controller
from plum.controller.store import SchemaError

log = logging.getLogger("plum.controller")


def _raise_fd_limit() -> None:
    """Every agent holds a connection (and an SSE stream): allow many open files."""
    try:
        import resource  # noqa: PLC0415 - POSIX only

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else 65536
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, 65536), hard))
    except (ImportError, ValueError, OSError) as exc:
        log.debug("cannot raise the open-file limit: %s", exc)


async def run(config: ControllerConfig) -> None:
    tokens = ensure_tokens(config)
    controller = Controller(config, tokens)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await controller.start()
        await stop.wait()
        log.info("shutting down")
    finally:
        await controller.stop()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="plum-controller", description=__doc__)
    parser.add_argument("--config", metavar="FILE", help="env file with KEY=VALUE settings (environment wins)")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit (0 ok, 2 bad)")
    parser.add_argument("--version", action="version", version=f"plum-controller {__version__}")
    args = parser.parse_args(argv)
    try:
        config = ControllerConfig.load(args.config)
    except ConfigError as exc:
        print(f"plum-controller: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"plum-controller: configuration OK (listen {config.host}:{config.port}, database {config.db_path})")
        return 0
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _raise_fd_limit()
    # Its database, artifacts and tokens are private whatever started it (systemd's UMask=0077 or a
    # container's 0022).
    os.umask(0o077)
    try:
        asyncio.run(run(config))
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    except (SchemaError, OSError) as exc:
        log.error("cannot run: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
