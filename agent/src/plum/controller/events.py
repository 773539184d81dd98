"""The SSE hub: agents subscribe per node and are nudged when their assignments change.

Each subscriber holds one pending flag, so any number of publishes before the subscriber wakes
coalesce into a single ``update`` frame; publishing never blocks and never drops the last nudge.
Frames follow Plum (``event: ping`` on connect, ``event: update`` per change) plus a ``: keepalive``
comment so proxies and dead-peer detection see traffic on quiet streams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Optional

log = logging.getLogger(__name__)

PING = b"event: ping\ndata: init\n\n"
UPDATE = b"event: update\ndata: assignments\n\n"
KEEPALIVE = b": keepalive\n\n"


class Subscriber:
    def __init__(self, node_id: Optional[str]) -> None:
        self.node_id = node_id
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """True when an update is pending (and consume it), False after ``timeout`` of silence."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        self._event.clear()
        return True


class EventHub:
    def __init__(self, keepalive: float = 15.0) -> None:
        self.keepalive = keepalive
        self._subs: dict[Optional[str], set[Subscriber]] = {}

    def subscribe(self, node_id: Optional[str]) -> Subscriber:
        sub = Subscriber(node_id)
        self._subs.setdefault(node_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._subs.get(sub.node_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.node_id]

    def stream_count(self) -> int:
        """Every open stream: the nodes' own and the ones following all nodes."""
        return sum(len(subs) for subs in self._subs.values())

    def publish(self, node_ids: Iterable[str]) -> None:
        """Nudge every subscriber of these nodes, and the subscribers to all nodes (node None)."""
        targets = set(node_ids)
        if not targets:
            return
        for node in targets:
            for sub in self._subs.get(node, ()):
                sub.notify()
        for sub in self._subs.get(None, ()):
            sub.notify()
        log.debug("nudged %s", ", ".join(sorted(targets)))

    async def stream(self, node_id: Optional[str]) -> AsyncIterator[bytes]:
        """The frames of one SSE connection; unsubscribes when the client goes away."""
        sub = self.subscribe(node_id)
        try:
            yield PING
            while True:
                yield UPDATE if await sub.wait(self.keepalive) else KEEPALIVE
        finally:
            self.unsubscribe(sub)
