"""plum-controller: ``--config FILE`` (an env file), ``--check-config``, ``--init-database``,
``backup DIR`` and ``restore DIR`` (see plum.controller.backup); logs to stderr."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Optional

from plum import __version__
from plum.common.config import ConfigError
from plum.controller import backup
from plum.controller.config import ControllerConfig, ensure_tokens
from plum.controller.server import Controller
from plum.controller.store import StorageError

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


PROFILE_VARIABLE = "PLUM_CONTROLLER_PROFILE"
GC_THRESHOLDS = (10_000, 50, 100)


def tune_gc() -> None:
    """Fewer, cheaper collections: what is loaded at start is frozen out of them, and the young generation
    is collected every 10000 allocations rather than 700, so a request's short-lived objects are gone
    before a collection sees them. Each agent's open stream adds long-lived objects; with the default
    thresholds full collections over them stalled every request for hundreds of milliseconds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _run_profiled(config: ControllerConfig) -> None:
    """Run under cProfile and write its stats to the file PLUM_CONTROLLER_PROFILE names when stopped
    (for the benchmarks; ``python -m pstats FILE`` reads it)."""
    import cProfile  # noqa: PLC0415 - only when asked for

    profile = cProfile.Profile()
    profile.enable()
    try:
        asyncio.run(run(config))
    finally:
        profile.disable()
        profile.dump_stats(os.environ[PROFILE_VARIABLE])


async def run(config: ControllerConfig) -> None:
    tokens = ensure_tokens(config)
    controller = Controller(config, tokens)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await controller.start()
        tune_gc()
        await stop.wait()
        log.info("shutting down")
    finally:
        await controller.stop()


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="plum-controller", description=__doc__)
    config_help = "env file with KEY=VALUE settings (environment wins)"
    parser.add_argument("--config", metavar="FILE", help=config_help)
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit (0 ok, 2 bad)")
    parser.add_argument(
        "--init-database",
        action="store_true",
        help="start although the database is missing, emptied or lost its WAL in a data directory used before "
        "(as CONTROLLER_INIT_DATABASE=true): it goes on with what is left under a new identity",
    )
    parser.add_argument("--version", action="version", version=f"plum-controller {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{backup,restore}")
    for name, what, meta in (
        ("backup", "write an online backup of the database, artifacts and tokens into a new directory", "DEST"),
        ("restore", "replace the database with a backup (the controller must be stopped)", "SRC"),
    ):
        command = commands.add_parser(name, help=what, description=what)
        command.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help=config_help)
        command.add_argument("directory", metavar=meta, type=Path)
    return parser.parse_args(argv)


def run_command(args: argparse.Namespace, config: ControllerConfig) -> int:
    """backup or restore: one line on stdout when done, one line on stderr (exit 1) when not."""
    try:
        if args.command == "backup":
            manifest = backup.backup(config, args.directory)
            print(f"plum-controller: backup of {backup.summary(manifest)} written to {args.directory}")
        else:
            manifest = backup.restore(config, args.directory)
            print(
                f"plum-controller: restored {backup.summary(manifest)} from {args.directory} "
                f"(taken {manifest['createdAt']}) into {config.db_path}; start the controller"
            )
    except StorageError as exc:
        print(f"plum-controller: {args.command} failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"plum-controller: {args.command} failed: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        config = ControllerConfig.load(args.config)
    except ConfigError as exc:
        print(f"plum-controller: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.init_database:
        config = dataclasses.replace(config, init_database=True)
    if args.check_config:
        print(f"plum-controller: configuration OK (listen {config.host}:{config.port}, database {config.db_path})")
        return 0
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Its database, artifacts, tokens and backups are private whatever started it (systemd's UMask=0077
    # or a container's 0022).
    os.umask(0o077)
    if args.command:
        return run_command(args, config)
    _raise_fd_limit()
    try:
        _run_profiled(config) if os.environ.get(PROFILE_VARIABLE) else asyncio.run(run(config))
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    except StorageError as exc:
        log.error("cannot run: %s", exc)
        return 1
    except sqlite3.Error as exc:
        log.error("cannot run: database %s: %s", config.db_path, exc)
        return 1
    except OSError as exc:
        log.error("cannot run: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
