"""Who calls: the operator, one node (with its own node token), or a holder of the join token.

CONTROLLER_AGENT_TOKEN is the join token: it is shared by every agent of the fleet and buys one
call, ``POST /v1/nodes/{id}/join``, which mints that node's own token. The controller keeps only the
SHA-256 of a node token (table node_credentials); the token is shown once, in the join answer.

- A node token acts for its own node only: every agent route checks the node it names (403 naming
  both nodes otherwise). See ``Access``.
- A node that already has a credential can join again (a reinstall that lost its data directory)
  only once it is not live, i.e. no heartbeat within the heartbeat TTL: a stolen join token cannot
  take over a live node. ``DELETE /v1/nodes/{id}/credential`` (operator) revokes it at once.
- Agents of the previous release send the join token on every call. With CONTROLLER_LEGACY_AGENTS
  (on by default, for the upgrade), it is accepted on the agent routes of a node that has never
  joined, with a warning in the log; a node that joined is refused it. Set it to false once every
  agent is upgraded: the join token then buys the join call and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Callable, Optional

from plum.common.httpserver import HTTPError, Request
from plum.controller.config import Tokens
from plum.controller.errors import Conflict
from plum.controller.nodes import NodeRepo
from plum.controller.store import Store

log = logging.getLogger(__name__)

OPERATOR, NODE, JOIN = "operator", "node", "join"
TOKEN_PREFIX = "plumnode_"  # noqa: S105 - a prefix, not a secret; tells a node token from the shared tokens in a config file or a log
LEGACY_WARNING_INTERVAL = 3600.0  # a node still using the shared token is named at most once an hour


@dataclass
class Caller:
    """The holder of a request's bearer token; ``scoped`` records that its node was checked."""

    role: str
    node_id: str = ""
    scoped: bool = False

    def describe(self) -> str:
        if self.role == NODE:
            return f"node {self.node_id}'s token"
        return "the join token (CONTROLLER_AGENT_TOKEN)" if self.role == JOIN else "the operator token"


def token_hash(token: str) -> str:
    """What is stored of a node token: 32 random bytes need no slow hash, only a one-way one."""
    return hashlib.sha256(token.encode()).hexdigest()


class NodeCredentials:
    """The node tokens, by hash, mirrored in memory (every request is authenticated from RAM)."""

    def __init__(self, store: Store, nodes: NodeRepo, tokens: Tokens) -> None:
        self.store = store
        self.nodes = nodes
        self.tokens = tokens
        self._node_of: dict[str, str] = {}  # token hash -> node id
        self._hash_of: dict[str, str] = {}  # node id -> token hash

    def load(self) -> None:
        for row in self.store.all("SELECT node_id, token_hash FROM node_credentials"):
            self._remember(row["node_id"], row["token_hash"])
        log.info("loaded %d node credential(s)", len(self._hash_of))

    def _remember(self, node_id: str, hashed: str) -> None:
        self._forget(node_id)
        self._node_of[hashed] = node_id
        self._hash_of[node_id] = hashed

    def _forget(self, node_id: str) -> None:
        old = self._hash_of.pop(node_id, None)
        if old is not None:
            self._node_of.pop(old, None)

    def identify(self, token: str) -> Optional[Caller]:
        """The caller holding ``token``, or None (401) when it is no token of this controller."""
        got = token.encode()
        if hmac.compare_digest(got, self.tokens.operator.encode()):
            return Caller(OPERATOR)
        if hmac.compare_digest(got, self.tokens.agent.encode()):
            return Caller(JOIN)
        node_id = self._node_of.get(token_hash(token)) if token.startswith(TOKEN_PREFIX) else None
        return Caller(NODE, node_id) if node_id is not None else None

    def has(self, node_id: str) -> bool:
        return node_id in self._hash_of

    def join(self, node_id: str) -> str:
        """A new token for ``node_id``; 409 while the node has a credential and is live."""
        node = self.nodes.get(node_id)
        if self.has(node_id) and node is not None and self.nodes.is_healthy(node_id):
            wait = max(1, math.ceil(node.last_seen + self.nodes.ttl - self.nodes.clock()))
            raise Conflict(
                f"node {node_id} already has a credential and is live (last heartbeat from {node.ip}): "
                f"refusing to join it again; retry in {wait}s, once it is not live, or have the operator "
                f"revoke it (DELETE /v1/nodes/{node_id}/credential)",
                field="nodeId",
                nodeId=node_id,
                retryAfterSec=wait,
            )
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        hashed = token_hash(token)
        replaced = self.has(node_id)
        with self.store.write(feeds=False) as tx:
            tx.execute(
                "INSERT INTO node_credentials(node_id, token_hash, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(node_id) DO UPDATE SET token_hash=excluded.token_hash, created_at=excluded.created_at",
                (node_id, hashed, time.time()),
            )
        self._remember(node_id, hashed)
        if replaced:
            log.warning("node %s joined again: its previous credential is revoked", node_id)
        else:
            log.info("node %s joined: credential issued", node_id)
        return token

    def revoke(self, node_id: str) -> bool:
        """Drop the node's credential; False when it had none."""
        if not self.has(node_id):
            return False
        with self.store.write(feeds=False) as tx:
            tx.execute("DELETE FROM node_credentials WHERE node_id=?", (node_id,))
        self._forget(node_id)
        log.warning("credential of node %s revoked: its agent must join again", node_id)
        return True


class Access:
    """Scopes an agent call to the caller's node: the one place that says who may act for a node."""

    def __init__(
        self, credentials: NodeCredentials, accept_legacy: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.credentials = credentials
        self.accept_legacy = accept_legacy
        self.clock = clock
        self._warned: dict[str, float] = {}

    @staticmethod
    def caller(request: Request) -> Caller:
        principal = request.principal
        assert isinstance(principal, Caller), "the router authenticates every non-public route"
        return principal

    def allowed_on_agent_route(self, request: Request) -> None:
        """403 for the join token on an agent route, unless it is accepted from older agents."""
        caller = self.caller(request)
        if caller.role == JOIN and not self.accept_legacy:
            raise HTTPError(
                403,
                f"{request.method} {request.path}: the join token (CONTROLLER_AGENT_TOKEN) only allows "
                "POST /v1/nodes/{id}/join; join first and use the node token it returns "
                "(agents older than node credentials: upgrade them, or set CONTROLLER_LEGACY_AGENTS=true)",
            )

    def node(self, request: Request, node_id: Optional[str]) -> None:
        """The caller may act for ``node_id`` (None: every node); 403 naming the node otherwise."""
        caller = self.caller(request)
        if node_id is None and caller.role == NODE:
            caller.scoped = True
            raise HTTPError(
                403, f"{caller.describe()} cannot act for every node: name its own (nodeId={caller.node_id})"
            )
        if node_id is None and caller.role == JOIN:  # every host holds the join token: never the whole fleet
            caller.scoped = True
            raise HTTPError(403, f"{caller.describe()} cannot act for every node: only the operator token can")
        self.any_node(request, [] if node_id is None else [node_id], f"node {node_id}")

    def any_node(self, request: Request, node_ids: Iterable[str], what: str) -> None:
        """The caller may act for one of ``node_ids``, the nodes a resource belongs to.

        No node at all (an unknown instance or file) is let through: the handler answers it as it
        would anyone (404, or nothing to do), and there is nothing of another node to protect."""
        caller = self.caller(request)
        caller.scoped = True
        candidates = list(node_ids)
        if caller.role == OPERATOR or not candidates:
            return
        if caller.role == NODE:
            if caller.node_id in candidates:
                return
            raise HTTPError(403, f"{caller.describe()} cannot act for {what}", field="nodeId", nodeId=caller.node_id)
        legacy = [n for n in candidates if not self.credentials.has(n)]
        if not legacy:
            raise HTTPError(
                403,
                f"{what}: {', '.join(candidates)} has its own node credential; the shared join token "
                "(CONTROLLER_AGENT_TOKEN) is only accepted for nodes that never joined",
                field="nodeId",
            )
        self._warn_legacy(legacy[0])

    def fleet(self, request: Request) -> None:
        """A fleet-wide read (service discovery): any authenticated agent may make it."""
        self.caller(request).scoped = True

    def _warn_legacy(self, node_id: str) -> None:
        now = self.clock()
        if now - self._warned.get(node_id, -math.inf) >= LEGACY_WARNING_INTERVAL:
            self._warned[node_id] = now
            log.warning(
                "node %s uses the shared CONTROLLER_AGENT_TOKEN (an agent of the previous release): upgrade it "
                "so that it joins and gets a credential of its own; CONTROLLER_LEGACY_AGENTS=false refuses it",
                node_id,
            )
