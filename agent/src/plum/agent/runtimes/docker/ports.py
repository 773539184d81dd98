"""Host ports: which ones an app's spec (or meta.ini) asks for, and which ones the app's running
container holds, so that a deploy is refused before anything stops when another app or program has them.

A host port is (host ip, port, protocol). Ports Docker picks itself never conflict and are not held.
"""

from __future__ import annotations

import socket
from typing import Optional

from plum.agent.spec import AppSpec
from plum.common.artifact import AppMeta
from plum.common.resources import PortMapping, parse_port

HostPort = tuple[str, int, str]
WILDCARDS = ("0.0.0.0", "::")  # noqa: S104 - compared, not bound


def port_mappings(spec: AppSpec, meta: Optional[AppMeta], network_mode: str) -> list[PortMapping]:
    """spec.ports when given, else every meta.ini service on the same host port (bridge mode only)."""
    if network_mode != "bridge":
        return []
    if spec.ports:
        return [parse_port(p) for p in spec.ports]
    services = meta.services if meta is not None else ()
    return [PortMapping(None, s.port, s.port, "udp" if s.protocol == "udp" else "tcp") for s in services]


def host_ports(mappings: list[PortMapping], publish_host: str) -> list[HostPort]:
    """The explicit host ports of mappings; Docker-picked ones never conflict."""
    return [(m.host_ip or publish_host, m.host_port, m.protocol) for m in mappings if m.host_port is not None]


def ports_overlap(a: HostPort, b: HostPort) -> bool:
    return a[1:] == b[1:] and (a[0] == b[0] or a[0] in WILDCARDS or b[0] in WILDCARDS)


def port_in_use(host_ip: str, port: int, protocol: str) -> Optional[str]:
    """Why (host_ip, port) cannot be published, found by binding it for a moment; None when it is free."""
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            sock.bind((host_ip, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


class HeldPorts:
    """The host ports each app's running container holds, and which container that is."""

    def __init__(self) -> None:
        self.by_app: dict[str, tuple[object, set[HostPort]]] = {}

    def hold(self, app: str, holder: object, ports: set[HostPort]) -> None:
        self.by_app[app] = (holder, ports)

    def release(self, app: str, holder: Optional[object] = None) -> None:
        """Free the app's ports (only if holder still holds them, when given)."""
        held = self.by_app.get(app)
        if held is not None and (holder is None or held[0] is holder):
            del self.by_app[app]

    def of(self, app: str) -> set[HostPort]:
        held = self.by_app.get(app)
        return held[1] if held is not None else set()

    def problem(self, app: str, wanted: list[HostPort], own_held: bool) -> Optional[str]:
        """Why app cannot publish wanted; own_held: what its own running container holds is fine (a redeploy)."""
        for port in wanted:
            for other, (_, held) in self.by_app.items():
                if other != app and any(ports_overlap(port, h) for h in held):
                    return f"host port {port[0]}:{port[1]}/{port[2]} is already published by app {other!r}"
            if own_held and port in self.of(app):
                continue  # held by this app's running container, which the deploy replaces
            reason = port_in_use(*port)
            if reason is not None:
                return f"host port {port[0]}:{port[1]}/{port[2]} is not free ({reason})"
        return None
