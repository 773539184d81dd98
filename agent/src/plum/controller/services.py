"""Service registry and discovery, with endpoint health checks in a background task.

Plum health-checked endpoints inside the register and heartbeat requests, so one hung endpoint
stalled the agent's loop for seconds. Here requests only write rows; a background task checks
every live endpoint on a timer (and right after a registration): ``http``/``https`` endpoints
answer any HTTP response to ``HEAD /``, other TCP protocols must accept a connection. ``udp`` cannot
be probed, so a UDP endpoint counts as healthy while its instance keeps heartbeating (Plum dialled
UDP ports over TCP and showed them unhealthy forever). An agent may also report health itself in
the service heartbeat; such a report wins over the probe for SERVICE_HEALTH_TTL_SEC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from plum.controller.errors import NotFound
from plum.controller.store import Row, Store, dumps, loads

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0
CHECK_CONCURRENCY = 32

_KEY = "service_name=? AND instance_id=? AND ip=? AND port=? AND protocol=?"


@dataclass(frozen=True)
class EndpointSpec:
    service_name: str
    port: int
    protocol: str = "http"
    version: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EndpointKey:
    service_name: str
    instance_id: str
    ip: str
    port: int
    protocol: str

    def params(self) -> tuple[Any, ...]:
        return (self.service_name, self.instance_id, self.ip, self.port, self.protocol)


def endpoint_json(row: Row) -> dict[str, Any]:
    return {
        "serviceName": row["service_name"],
        "instanceId": row["instance_id"],
        "nodeId": row["node_id"],
        "ip": row["ip"],
        "port": row["port"],
        "protocol": row["protocol"],
        "version": row["version"],
        "labels": loads(row["labels"], {}),
        "healthy": bool(row["healthy"]),
        "lastSeen": int(row["last_seen"]),
    }


class ServiceRepo:
    def __init__(self, store: Store, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self.wake = asyncio.Event()
        self._sticky: dict[tuple[str, str, str], tuple[Any, ...]] = {}

    # -- writes (from requests) -----------------------------------------------------------------

    def register(
        self, instance_id: str, node_id: str, ip: str, endpoints: Sequence[EndpointSpec], *, replace: bool
    ) -> int:
        now = self.clock()
        app_version = self.store.one(
            "SELECT r.version FROM assignments a JOIN deployment_entries e ON e.entry_id = a.entry_id"
            " JOIN artifacts r ON r.artifact_id = e.artifact_id WHERE a.instance_id=?",
            (instance_id,),
        )
        default_version = app_version["version"] if app_version else ""
        with self.store.write(feeds=False) as tx:
            if replace:
                tx.execute("DELETE FROM endpoints WHERE instance_id=?", (instance_id,))
            for ep in endpoints:
                tx.execute(
                    "INSERT INTO endpoints(service_name, instance_id, node_id, ip, port, protocol, version, labels,"
                    " healthy, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(service_name, instance_id, ip, port, protocol) DO UPDATE SET"
                    " node_id=excluded.node_id, version=excluded.version, labels=excluded.labels,"
                    " last_seen=excluded.last_seen",
                    (
                        ep.service_name,
                        instance_id,
                        node_id,
                        ip,
                        ep.port,
                        ep.protocol,
                        ep.version or default_version,
                        dumps(ep.labels),
                        int(ep.protocol == "udp"),
                        now,
                    ),
                )
        self.wake.set()
        return len(endpoints)

    def heartbeat(self, instance_id: str, health: Sequence[tuple[str, Optional[int], bool]]) -> int:
        now = self.clock()
        with self.store.write(feeds=False) as tx:
            count = tx.execute("UPDATE endpoints SET last_seen=? WHERE instance_id=?", (now, instance_id)).rowcount
            for service, port, healthy in health:
                sql = "UPDATE endpoints SET healthy=?, reported_at=? WHERE instance_id=? AND service_name=?"
                params: list[Any] = [int(healthy), now, instance_id, service]
                if port is not None:
                    sql += " AND port=?"
                    params.append(port)
                tx.execute(sql, params)
        if not count:
            raise NotFound(
                f"no endpoints registered for instance {instance_id}; register them again",
                field="instanceId",
            )
        return count

    def nodes_of_instance(self, instance_id: str) -> list[str]:
        """The nodes that registered this instance's endpoints."""
        sql = "SELECT DISTINCT node_id FROM endpoints WHERE instance_id=? ORDER BY node_id"
        rows = self.store.all(sql, (instance_id,))
        return [r["node_id"] for r in rows]

    def deregister(self, instance_id: str) -> int:
        with self.store.write(feeds=False) as tx:
            return tx.execute("DELETE FROM endpoints WHERE instance_id=?", (instance_id,)).rowcount

    def get_endpoint(self, key: EndpointKey) -> Row:
        row = self.store.one(f"SELECT * FROM endpoints WHERE {_KEY}", key.params())  # noqa: S608
        if row is None:
            raise NotFound(
                f"no such endpoint: {key.service_name} {key.instance_id} {key.ip}:{key.port}/{key.protocol}",
                field="service",
            )
        return row

    def put_endpoint(self, key: EndpointKey, node_id: str, spec: EndpointSpec, healthy: Optional[bool]) -> None:
        now = self.clock()
        with self.store.write(feeds=False) as tx:
            tx.execute(
                "INSERT INTO endpoints(service_name, instance_id, node_id, ip, port, protocol, version, labels,"
                " healthy, last_seen, reported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(service_name, instance_id, ip, port, protocol) DO UPDATE SET node_id=excluded.node_id,"
                " version=excluded.version, labels=excluded.labels, healthy=excluded.healthy,"
                " last_seen=excluded.last_seen, reported_at=excluded.reported_at",
                (
                    *key.params()[:2],
                    node_id,
                    *key.params()[2:],
                    spec.version,
                    dumps(spec.labels),
                    int(bool(healthy)) if healthy is not None else int(key.protocol == "udp"),
                    now,
                    now if healthy is not None else None,
                ),
            )
        if healthy is None:
            self.wake.set()

    def patch_endpoint(
        self, key: EndpointKey, healthy: Optional[bool], version: Optional[str], labels: Optional[dict[str, str]]
    ) -> None:
        self.get_endpoint(key)
        now = self.clock()
        with self.store.write(feeds=False) as tx:
            if healthy is not None:
                tx.execute(
                    f"UPDATE endpoints SET healthy=?, reported_at=? WHERE {_KEY}",  # noqa: S608
                    (int(healthy), now, *key.params()),
                )
            if version is not None:
                tx.execute(f"UPDATE endpoints SET version=? WHERE {_KEY}", (version, *key.params()))  # noqa: S608
            if labels is not None:
                tx.execute(f"UPDATE endpoints SET labels=? WHERE {_KEY}", (dumps(labels), *key.params()))  # noqa: S608

    def delete_endpoint(self, key: EndpointKey) -> None:
        self.get_endpoint(key)
        with self.store.write(feeds=False) as tx:
            tx.execute(f"DELETE FROM endpoints WHERE {_KEY}", key.params())  # noqa: S608

    # -- reads ----------------------------------------------------------------------------------

    def services(self) -> list[str]:
        return [r[0] for r in self.store.all("SELECT DISTINCT service_name FROM endpoints ORDER BY service_name")]

    def discover(
        self, service: str, version: str = "", protocol: str = "", limit: int = 0, include_all: bool = False
    ) -> list[dict[str, Any]]:
        sql = "SELECT * FROM endpoints WHERE service_name=?"
        params: list[Any] = [service]
        if version:
            sql += " AND version=?"
            params.append(version)
        if protocol:
            sql += " AND protocol=?"
            params.append(protocol)
        if not include_all:
            sql += " AND healthy=1 AND last_seen >= ?"
            params.append(self.clock() - self.ttl)
        sql += " ORDER BY node_id, instance_id, port"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return [endpoint_json(r) for r in self.store.all(sql, params)]

    def pick(self, service: str, version: str, protocol: str, strategy: str) -> dict[str, Any]:
        candidates = self.discover(service, version, protocol)
        if not candidates:
            raise NotFound(f"no healthy endpoint for service {service!r}", field="service")
        if strategy == "lazy":
            sticky_key = (service, version, protocol)
            chosen = self._sticky.get(sticky_key)
            for ep in candidates:
                if (ep["instanceId"], ep["ip"], ep["port"], ep["protocol"]) == chosen:
                    return ep
        ep = random.choice(candidates)  # noqa: S311 - load spreading, not security
        if strategy == "lazy":
            self._sticky[(service, version, protocol)] = (ep["instanceId"], ep["ip"], ep["port"], ep["protocol"])
        return ep

    # -- background health checks ---------------------------------------------------------------

    async def run_checks(self, interval: float) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), interval)
            self.wake.clear()
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("endpoint health checks failed; retrying next round")

    async def check_once(self) -> int:
        now = self.clock()
        rows = self.store.all(
            "SELECT service_name, instance_id, ip, port, protocol, healthy FROM endpoints"
            " WHERE last_seen >= ? AND protocol != 'udp' AND (reported_at IS NULL OR reported_at < ?)",
            (now - self.ttl, now - self.ttl),
        )
        if not rows:
            return 0
        limiter = asyncio.Semaphore(CHECK_CONCURRENCY)

        async def probe(row: Row) -> bool:
            async with limiter:
                return await check_endpoint(row["ip"], row["port"], row["protocol"])

        results = await asyncio.gather(*(probe(r) for r in rows))
        checked_at = self.clock()
        changed = 0
        with self.store.write(feeds=False) as tx:
            for row, healthy in zip(rows, results):
                if bool(row["healthy"]) != healthy:
                    changed += 1
                    log.info(
                        "endpoint %s %s:%d/%s is now %s",
                        row["service_name"],
                        row["ip"],
                        row["port"],
                        row["protocol"],
                        "healthy" if healthy else "unhealthy",
                    )
                tx.execute(
                    f"UPDATE endpoints SET healthy=?, checked_at=? WHERE {_KEY}"  # noqa: S608
                    " AND (reported_at IS NULL OR reported_at < ?)",
                    (
                        int(healthy),
                        checked_at,
                        row["service_name"],
                        row["instance_id"],
                        row["ip"],
                        row["port"],
                        row["protocol"],
                        checked_at - self.ttl,
                    ),
                )
        return changed


async def check_endpoint(ip: str, port: int, protocol: str, timeout: float = CHECK_TIMEOUT) -> bool:
    """True when the endpoint answers: any HTTP response for http(s), an accepted connection otherwise."""
    writer: Optional[asyncio.StreamWriter] = None
    try:
        if protocol in ("http", "https"):
            context: Optional[ssl.SSLContext] = None
            if protocol == "https":  # liveness only: the certificate is not what is being checked
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            reader, http = await asyncio.wait_for(asyncio.open_connection(ip, port, ssl=context), timeout)
            writer = http
            http.write(f"HEAD / HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: plum-controller\r\n\r\n".encode())
            line = await asyncio.wait_for(reader.readline(), timeout)
            return line.startswith(b"HTTP/")
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
        return True
    except (OSError, asyncio.TimeoutError, ssl.SSLError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
