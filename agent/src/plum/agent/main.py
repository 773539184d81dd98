"""plum-agent: the node agent daemon."""

from __future__ import annotations

import plum.common.tls  # noqa: F401 - first: asyncio without OpenSSL until TLS is used

# isort: split
import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Optional

from plum import __version__
from plum.agent import logfiles
from plum.agent.api import AgentAPI
from plum.agent.config import PRIVATE_DIR_MODE, AgentConfig, private_dir
from plum.agent.runtimes.base import Runtime
from plum.agent.runtimes.docker import docker_runtime
from plum.agent.runtimes.process import ProcessRuntime
from plum.agent.state import saved_runtimes
from plum.agent.supervisor import Supervisor
from plum.common.config import ConfigError
from plum.common.httpserver import HTTPServer, ServerLimits

if TYPE_CHECKING:
    from plum.agent.sync import ControllerSync

log = logging.getLogger("plum.agent")


def build_runtimes(config: AgentConfig) -> dict[str, Runtime]:
    runtimes: dict[str, Runtime] = {"process": ProcessRuntime(config.app_user, config.data_dir)}
    required = config.docker_required or "docker" in saved_runtimes(config.data_dir / "apps")
    docker = docker_runtime(config, required)  # None: no engine here, docker apps are refused
    if docker is not None:
        runtimes["docker"] = docker
    return runtimes


# The folders the agent keeps in its data directory, and in each app's folder under apps/.
AGENT_FOLDERS = ("apps", "artifacts", "tmp")
APP_FOLDERS = ("logs", "releases")


def secure_dir(path: Path) -> None:
    """private_dir(path), or a warning when its mode cannot be changed (a folder another user owns)."""
    try:
        private_dir(path)
    except PermissionError as exc:
        log.warning("cannot make %s mode %o (%s): other users may read it", path, PRIVATE_DIR_MODE, exc.strerror)


def secure_data_dir(data_dir: Path) -> None:
    """Correct the modes of what the agent keeps, at every start: earlier versions left the data directory
    and the app folders 0755 and the rotated logs 0644. Release trees are not walked: other users reach
    them only where the agent granted it (an app's own user, a container's mount)."""
    for name in AGENT_FOLDERS:
        secure_dir(data_dir / name)
    for app_dir in sorted((data_dir / "apps").iterdir()):
        if app_dir.is_symlink() or not app_dir.is_dir():
            continue
        secure_dir(app_dir)
        for name in APP_FOLDERS:
            if (app_dir / name).is_dir():
                secure_dir(app_dir / name)
        logfiles.restrict_modes(app_dir / "logs")


def lock_data_dir(data_dir: Path) -> IO[str]:
    """One agent per data dir: a second one would start every app twice."""
    secure_dir(data_dir)
    try:  # close-on-exec: apps never inherit it
        handle = os.fdopen(os.open(data_dir / "agent.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640), "r+")
    except OSError as exc:
        raise ConfigError(f"AGENT_DATA_DIR={data_dir}: cannot use it ({exc.strerror})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        raise ConfigError(f"AGENT_DATA_DIR={data_dir}: already used by another running agent (pid {owner})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


async def serve(config: AgentConfig) -> None:
    token = config.ensure_token()
    supervisor = Supervisor(config, build_runtimes(config))
    await supervisor.open()
    limits = ServerLimits(max_connections=config.max_connections, setting="AGENT_MAX_CONNECTIONS")
    sync: Optional[ControllerSync] = None
    if config.controller_base:  # the controller client is loaded only on nodes that follow one
        from plum.agent.sync import ControllerSync  # noqa: PLC0415

        sync = ControllerSync(config, supervisor)
    api = AgentAPI(supervisor, token, controller_status=sync.status if sync is not None else None)
    server = HTTPServer(api.router, server_name=f"plum-agent/{__version__}", limits=limits)
    try:
        await server.start(config.api_host, config.api_port)
    except OSError as exc:
        await supervisor.close()
        address = f"{config.api_host}:{config.api_port}"
        raise ConfigError(f"AGENT_API_ADDR={address}: cannot listen ({exc.strerror})") from None
    log.info(
        "plum-agent %s node=%s listening on http://%s:%d data=%s mode=%s apps=%d",
        __version__,
        config.node_id,
        config.api_host,
        server.port,
        config.data_dir,
        config.run_mode,
        len(supervisor.apps),
    )
    if sync is not None:
        sync.start()
        log.info("following the controller at %s as node %s", config.controller_base, config.node_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down; apps keep running and are re-adopted on the next start")
    if sync is not None:
        await sync.close()
    await server.close()
    await supervisor.close()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="plum-agent", description="Plum node agent: runs and supervises apps.")
    parser.add_argument("--config", metavar="FILE", help="env file with settings (the environment wins over it)")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    parser.add_argument("--version", action="version", version=f"plum-agent {__version__}")
    args = parser.parse_args(argv)
    try:
        config = AgentConfig.load(args.config)
    except ConfigError as exc:
        print(f"plum-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(
            f"configuration OK: node={config.node_id} data={config.data_dir} "
            f"api={config.api_host}:{config.api_port} mode={config.run_mode}"
        )
        return 0
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        lock = lock_data_dir(config.data_dir)
        with contextlib.closing(lock):
            secure_data_dir(config.data_dir)
            asyncio.run(serve(config))
    except ConfigError as exc:
        print(f"plum-agent: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
