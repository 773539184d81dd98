"""The SSE hub: agents subscribe per node and are nudged when their assignments change.

Each subscriber holds one pending flag, so any number of publishes before the subscriber wakes
coalesce into a single ``update`` frame; publishing never blocks and never drops the last nudge.
Frames follow Plum (``event: ping`` on connect, ``event: update`` per change) plus a ``: keepalive``
comment so proxies and dead-peer detection see traffic on quiet streams. The streams that follow every
node also get typed events (``event: rollout``), queued per subscriber up to MAX_QUEUED_EVENTS (the
oldest go first); node streams never see them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any, Optional

log = logging.getLogger(__name__)

PING = b"event: ping\ndata: init\n\n"
UPDATE = b"event: update\ndata: assignments\n\n"
KEEPALIVE = b": keepalive\n\n"
MAX_QUEUED_EVENTS = 256


class Subscriber:
    def __init__(self, node_id: Optional[str]) -> None:
        self.node_id = node_id
        self._event = asyncio.Event()
        self._update = False
        self._frames: deque[bytes] = deque(maxlen=MAX_QUEUED_EVENTS)

    def notify(self) -> None:
        self._update = True
        self._event.set()

    def tell(self, frame: bytes) -> None:
        self._frames.append(frame)
        self._event.set()

    async def wait(self, timeout: float) -> list[bytes]:
        """The frames pending (and consume them): the queued events, then one update if any is pending;
        empty after ``timeout`` of silence."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return []
        self._event.clear()
        frames = list(self._frames)
        self._frames.clear()
        if self._update:
            self._update = False
            frames.append(UPDATE)
        return frames


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

    def announce(self, kind: str, data: dict[str, Any]) -> None:
        """A typed event for the streams that follow every node (operators' UIs)."""
        frame = f"event: {kind}\ndata: {json.dumps(data, sort_keys=True)}\n\n".encode()
        for sub in self._subs.get(None, ()):
            sub.tell(frame)

    async def stream(self, node_id: Optional[str]) -> AsyncIterator[bytes]:
        """The frames of one SSE connection; unsubscribes when the client goes away."""
        sub = self.subscribe(node_id)
        try:
            yield PING
            while True:
                frames = await sub.wait(self.keepalive)
                for frame in frames or [KEEPALIVE]:
                    yield frame
        finally:
            self.unsubscribe(sub)
