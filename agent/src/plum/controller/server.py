"""Wires the controller together and runs its background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Optional

from plum import __version__
from plum.common import prometheus
from plum.common.httpserver import HTTPServer, Request, Response, ServerLimits, json_response, text_response
from plum.controller import api_schemas as s
from plum.controller.api import AGENT, OPERATOR, PUBLIC, Context, CoreRoutes, RouteSpec, build_router
from plum.controller.api_apps import AppRoutes
from plum.controller.api_deployments import DeploymentRoutes
from plum.controller.api_services import ServiceRoutes
from plum.controller.apps import AppRepo
from plum.controller.config import ControllerConfig, Tokens
from plum.controller.credentials import Access, NodeCredentials
from plum.controller.database import open_store
from plum.controller.deployments import DeploymentRepo
from plum.controller.events import EventHub
from plum.controller.failover import Failover
from plum.controller.metrics import ControllerMetrics
from plum.controller.nodes import NodeRepo
from plum.controller.openapi import Doc, Reply, build_document
from plum.controller.rollout import RolloutLoop
from plum.controller.rollouts import RolloutRepo
from plum.controller.services import ServiceRepo
from plum.controller.ui import UiRoutes

log = logging.getLogger(__name__)

NODE_FLUSH_INTERVAL = 2.0
# How long the feed names a removed instance: an agent away for longer keeps it running (and says so).
REMOVED_RETENTION = 7 * 24 * 3600.0
REMOVED_PRUNE_INTERVAL = 3600.0
LISTEN_BACKLOG_MIN = 4096
ROLLOUT_INTERVAL = 0.5  # how often running rollouts look at the instances' reports


def listen_backlog() -> int:
    """The kernel's cap on an accept queue (net.core.somaxconn), which listen() silently applies."""
    try:
        return max(LISTEN_BACKLOG_MIN, int(Path("/proc/sys/net/core/somaxconn").read_text()))
    except (OSError, ValueError):
        return LISTEN_BACKLOG_MIN


def route_specs(ctx: Context, metrics: ControllerMetrics) -> list[RouteSpec]:
    specs: list[RouteSpec] = []
    for group in (CoreRoutes(ctx), AppRoutes(ctx), DeploymentRoutes(ctx), ServiceRoutes(ctx), UiRoutes()):
        specs += group.routes()

    async def metrics_page(request: Request) -> Response:
        return text_response(metrics.render(ctx), content_type=prometheus.CONTENT_TYPE)

    document: dict[str, Any] = {}

    async def openapi(request: Request) -> Response:
        return json_response(document)

    specs.append(
        RouteSpec(
            "GET",
            "/metrics",
            metrics_page,
            PUBLIC if ctx.config.metrics_public else OPERATOR,
            doc=Doc(
                "Fleet metrics in Prometheus text format (operator token unless CONTROLLER_METRICS_PUBLIC)",
                {200: Reply("nodes, instances, failovers, API latency", s.PLAIN_TEXT)},
            ),
        )
    )
    specs.append(
        RouteSpec(
            "GET",
            "/v1/openapi.json",
            openapi,
            AGENT,
            fleet=True,
            doc=Doc("The OpenAPI 3.1 document of this API", {200: Reply("the document", s.ANY_OBJECT)}),
        )
    )
    document.update(build_document(specs, s.ERROR))
    return specs


class Controller:
    """Call ``start()`` and ``stop()`` from inside the running event loop."""

    def __init__(self, config: ControllerConfig, tokens: Tokens) -> None:
        self.config = config
        self.tokens = tokens
        self.http: Optional[HTTPServer] = None
        self.ctx: Optional[Context] = None
        self.failover: Optional[Failover] = None
        self.metrics = ControllerMetrics(failovers=lambda: self.failover.moved if self.failover else 0)
        self._tasks: list[asyncio.Task[None]] = []

    def _prepare_dirs(self) -> None:
        cfg = self.config
        if not cfg.data_dir.exists():  # tokens and the database live here: private unless set up otherwise
            cfg.data_dir.mkdir(parents=True, mode=0o700)
        for path in (cfg.artifacts_dir, cfg.tmp_dir):
            path.mkdir(parents=True, exist_ok=True)
        # uploads interrupted by a crash or a stop
        for leftover in cfg.tmp_dir.iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    leftover.unlink()

    async def start(self) -> None:
        cfg = self.config
        self._prepare_dirs()
        hub = EventHub()
        store = open_store(cfg, on_commit=hub.publish)
        nodes = NodeRepo(store, cfg.heartbeat_ttl)
        nodes.load()
        credentials = NodeCredentials(store, nodes, self.tokens)
        credentials.load()
        rollouts = RolloutRepo(store, nodes)
        self.ctx = ctx = Context(
            config=cfg,
            tokens=self.tokens,
            store=store,
            nodes=nodes,
            apps=AppRepo(store, cfg.artifacts_dir),
            deployments=DeploymentRepo(store, cfg.status_history, nodes, rollouts),
            rollouts=rollouts,
            services=ServiceRepo(store, cfg.service_health_ttl),
            hub=hub,
            credentials=credentials,
            access=Access(credentials, cfg.legacy_agents),
        )
        limits = ServerLimits(max_connections=cfg.max_connections, setting="CONTROLLER_MAX_CONNECTIONS")
        router = build_router(ctx, route_specs(ctx, self.metrics))
        self.http = HTTPServer(
            router, server_name=f"plum-controller/{__version__}", limits=limits, observe=self.metrics.observe_request
        )
        await self.http.start(cfg.host, cfg.port)
        for sock in self.http.listener.sockets:
            # Agents open a connection per call: a deeper accept queue absorbs the bursts (a full one drops
            # SYNs, which the client only retries after a second).
            with contextlib.suppress(OSError):
                sock.listen(listen_backlog())
        self._spawn(self._flush_nodes(), "node flush")
        self._spawn(self._forget_old_removals(), "tombstone pruning")
        self._spawn(ctx.services.run_checks(cfg.service_check_interval), "service checks")
        self._spawn(RolloutLoop(ctx.rollouts, ROLLOUT_INTERVAL, hub.announce).run(), "rollouts")
        if cfg.auto_migration:
            self.failover = Failover(store, nodes, cfg.failover_interval)
            self._spawn(self.failover.run(), "failover")
        else:
            log.info("failover disabled (AUTO_MIGRATION_ENABLED=false)")
        if cfg.legacy_agents:
            log.info("nodes that never joined may use the shared CONTROLLER_AGENT_TOKEN (CONTROLLER_LEGACY_AGENTS)")
        log.info(
            "plum-controller listening on http://%s:%d (database %s, heartbeat TTL %gs, interval %gs)",
            cfg.host,
            self.http.port,
            cfg.db_path,
            cfg.heartbeat_ttl,
            cfg.heartbeat_interval,
        )

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.append(task)

    async def _forget_old_removals(self) -> None:
        assert self.ctx is not None
        while True:
            try:
                forgotten = self.ctx.deployments.forget_removed(time.time() - REMOVED_RETENTION)
                if forgotten:
                    log.info("forgot %d instance removals older than %d days", forgotten, REMOVED_RETENTION // 86400)
            except Exception:
                log.exception("pruning instance removals failed; retrying later")
            await asyncio.sleep(REMOVED_PRUNE_INTERVAL)

    async def _flush_nodes(self) -> None:
        assert self.ctx is not None
        while True:
            await asyncio.sleep(NODE_FLUSH_INTERVAL)
            try:
                self.ctx.nodes.flush()
            except Exception:
                log.exception("writing node heartbeats failed; retrying")

    async def stop(self) -> None:
        if self.ctx is None and self.http is None:
            return  # never started (its database refused): nothing to stop, nothing to report
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.close()
        if self.ctx is not None:
            try:
                self.ctx.nodes.flush()
            finally:
                self.ctx.store.close()
        log.info("plum-controller stopped")
