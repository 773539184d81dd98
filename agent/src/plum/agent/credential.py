"""This node's own credential for the controller: the node token its join returned.

CONTROLLER_AGENT_TOKEN is the fleet's join token: the agent spends it on one call,
``POST /v1/nodes/{nodeId}/join``, and uses the node token it gets for everything else. The token
is kept in AGENT_DATA_DIR/controller-node.token (0600, written atomically and durably), so a
restart needs no join. The controller refuses a join while the node is live with another
credential (409, with ``retryAfterSec``): a reinstall that lost the data directory joins again once
the old agent's heartbeats have lapsed (the heartbeat TTL), or at once after an operator revoked
the old credential.

A controller of the previous release has no join route (404): the agent then uses the shared token
as before and tries to join again from time to time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

from plum.common import fsio
from plum.common.httpclient import ClientError, HTTPClient

log = logging.getLogger(__name__)

CREDENTIAL_FILE = "controller-node.token"
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,512}")
MAX_JOIN_WAIT = 60.0  # a refused join is retried at least this often
LEGACY_REJOIN_INTERVAL = 300.0  # with an older controller: how often to see whether it was upgraded

JOINED, LEGACY, REFUSED, UNREACHABLE = "joined", "legacy", "refused", "unreachable"


def read_token(path: Path) -> Optional[str]:
    """The saved node token, or None when there is none (or it is unusable: the agent joins again)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s (%s): joining the controller again", path, exc)
        return None
    if TOKEN_RE.fullmatch(text):
        return text
    log.warning("%s does not hold a node token: joining the controller again", path)
    return None


class NodeCredential:
    """Joins the controller when needed and knows which token the agent's calls carry."""

    def __init__(self, data_dir: Path, node_id: str, base_url: str, join_token: Optional[str]) -> None:
        self.path = data_dir / CREDENTIAL_FILE
        self.node_id = node_id
        self.join_client = HTTPClient(base_url, join_token, timeout=10.0)
        self.join_token = join_token
        self.token: Optional[str] = read_token(self.path)
        self.state = JOINED if self.token else "joining"
        self.ready = asyncio.Event()  # set while self.token is usable
        self.needed = asyncio.Event()  # set when a join must be made
        self._wake = asyncio.Event()  # cuts a wait between two joins short: the token was refused
        (self.ready if self.token else self.needed).set()
        self._last_refusal = ""

    def status(self) -> str:
        """For /healthz: joined, legacy (the shared token, older controller), joining, refused, unreachable."""
        return self.state

    def refused(self, token: Optional[str], exc: ClientError) -> None:
        """A call made with ``token`` was refused: join again when the controller no longer knows it.

        401 with the node token: revoked, or the controller's database was replaced. 401 or 403 with the
        shared token: the controller now wants node credentials. A refusal of a token already replaced
        is stale and ignored (a second join while this node is live would be refused)."""
        if token is None or token != self.token or exc.status not in (401, 403):
            return
        if self.state == JOINED and exc.status != 401:
            return  # a node token acting beyond its node: a bug to report, not a reason to join again
        log.warning("controller refused this node's %s (%s): joining again", self._kind(), exc)
        self.token = None
        self.state = "joining"
        self.ready.clear()
        self.needed.set()
        self._wake.set()

    def _kind(self) -> str:
        return "credential" if self.state == JOINED else "shared token (CONTROLLER_AGENT_TOKEN)"

    async def run(self) -> None:
        """Join whenever needed, with backoff; one clear log line per kind of refusal."""
        backoff = 1.0
        while True:
            await self.needed.wait()
            wait = await self._join_once(backoff)
            if wait is None:
                backoff = 1.0
                continue
            backoff = min(backoff * 2, MAX_JOIN_WAIT)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _join_once(self, backoff: float) -> Optional[float]:
        """One join attempt; None when done, else the seconds to wait before the next one."""
        path = f"/v1/nodes/{quote(self.node_id)}/join"
        try:
            answer = await self.join_client.call("POST", path, {})
        except ClientError as exc:
            return self._join_refused(exc, backoff)
        token = (answer or {}).get("nodeToken") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
            return self._log_refusal(REFUSED, f"the join answer holds no usable nodeToken: {answer!r:.200}", backoff)
        await self._save(token)
        self.token, self.state, self._last_refusal = token, JOINED, ""
        self.needed.clear()
        self.ready.set()
        log.info(
            "joined controller %s as node %s (credential in %s)", self.join_client.base_url, self.node_id, self.path
        )
        return None

    def _join_refused(self, exc: ClientError, backoff: float) -> float:
        if exc.status == 404 and self.join_token:  # a controller of the previous release: no join route
            if self.state != LEGACY:
                log.warning(
                    "controller %s has no join route (an older release): using the shared CONTROLLER_AGENT_TOKEN",
                    self.join_client.base_url,
                )
            self.token, self.state = self.join_token, LEGACY
            self.ready.set()
            return LEGACY_REJOIN_INTERVAL
        if exc.status == 409:
            retry = _retry_after(exc.answer)
            wait = min(max(retry, 1.0), MAX_JOIN_WAIT) if retry is not None else backoff
            return self._log_refusal(REFUSED, f"{exc}; retrying in {wait:g}s", wait)
        if exc.status in (401, 403):
            return self._log_refusal(
                REFUSED, f"{exc}: check CONTROLLER_AGENT_TOKEN (the join token); retrying in {backoff:g}s", backoff
            )
        return self._log_refusal(UNREACHABLE, f"{exc}; retrying in {backoff:g}s", backoff)

    def _log_refusal(self, state: str, reason: str, wait: float) -> float:
        if self.state != LEGACY:  # with an older controller the shared token keeps working meanwhile
            self.state = state
        kind = reason.split(";", 1)[0]
        if kind != self._last_refusal:  # one line per kind of refusal, not one per retry
            self._last_refusal = kind
            log.warning("cannot join controller %s as node %s: %s", self.join_client.base_url, self.node_id, reason)
        return wait

    async def _save(self, token: str) -> None:
        try:
            await asyncio.to_thread(fsio.write_atomic, self.path, (token + "\n").encode(), mode=0o600)
        except fsio.StorageError as exc:  # used from memory; after a restart the agent joins again
            log.error("%s: the node credential is kept in memory only", exc.message)


def _retry_after(answer: Any) -> Optional[float]:
    value = answer.get("retryAfterSec") if isinstance(answer, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
