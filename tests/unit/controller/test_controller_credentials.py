"""The controller's credential logic: who a token is, joins, revocation, and scoping to a node."""

from __future__ import annotations

from pathlib import Path

import pytest

from plum.common.httpserver import HTTPError, Request
from plum.controller.config import Tokens
from plum.controller.credentials import (
    JOIN,
    NODE,
    OPERATOR,
    Access,
    Caller,
    NodeCredentials,
    token_hash,
)
from plum.controller.errors import Conflict
from plum.controller.nodes import NodeRepo
from plum.controller.store import Store

TOKENS = Tokens(agent="j" * 32, operator="o" * 32)
TTL = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path: Path) -> tuple[NodeCredentials, NodeRepo, Clock, Store]:
    store = Store(tmp_path / "c.db")
    store.migrate()
    clock = Clock()
    nodes = NodeRepo(store, TTL, clock=clock)
    creds = NodeCredentials(store, nodes, TOKENS)
    creds.load()
    return creds, nodes, clock, store


def request_as(caller: Caller) -> Request:
    request = Request.__new__(Request)  # no connection needed: only the principal is read
    request.method, request.path, request.principal = "GET", "/v1/x", caller
    return request


def test_tokens_identify_their_holder(setup) -> None:
    creds, *_ = setup
    token = creds.join("n1")
    assert creds.identify(TOKENS.operator) == Caller(OPERATOR)
    assert creds.identify(TOKENS.agent) == Caller(JOIN)
    assert creds.identify(token) == Caller(NODE, "n1")
    assert creds.identify(token + "x") is None and creds.identify("plumnode_guess") is None


def test_only_the_hash_is_stored_and_survives_a_restart(setup) -> None:
    creds, nodes, _, store = setup
    token = creds.join("n1")
    rows = store.all("SELECT node_id, token_hash FROM node_credentials")
    assert [(r["node_id"], r["token_hash"]) for r in rows] == [("n1", token_hash(token))]
    again = NodeCredentials(store, nodes, TOKENS)
    again.load()
    assert again.identify(token) == Caller(NODE, "n1")


def test_rejoin_is_refused_while_live_and_allowed_after_the_ttl(setup) -> None:
    creds, nodes, clock, _ = setup
    first = creds.join("n1")
    nodes.heartbeat("n1", "10.0.0.1", None)
    clock.now += 4
    with pytest.raises(Conflict) as refused:
        creds.join("n1")
    assert refused.value.details["field"] == "nodeId" and "live" in str(refused.value)
    assert creds.identify(first) == Caller(NODE, "n1"), "a refused join keeps the credential"
    clock.now += TTL  # no heartbeat for longer than the TTL: the node is not live
    second = creds.join("n1")
    assert creds.identify(first) is None and creds.identify(second) == Caller(NODE, "n1")


def test_a_node_that_joined_but_never_heartbeated_can_join_again(setup) -> None:
    creds, *_ = setup
    first = creds.join("n1")
    assert creds.join("n1") != first


def test_revoke_drops_the_credential_at_once(setup) -> None:
    creds, nodes, _, _ = setup
    token = creds.join("n1")
    nodes.heartbeat("n1", "10.0.0.1", None)
    assert creds.revoke("n1") and not creds.revoke("n1")
    assert creds.identify(token) is None
    assert creds.join("n1")  # live, but without a credential: joins at once


def test_access_scopes_a_node_token_to_its_node(setup) -> None:
    creds, *_ = setup
    access = Access(creds, accept_legacy=False)
    own = request_as(Caller(NODE, "n1"))
    access.node(own, "n1")
    with pytest.raises(HTTPError) as other:
        access.node(request_as(Caller(NODE, "n1")), "n2")
    assert other.value.status == 403 and "node n1" in str(other.value) and "node n2" in str(other.value)
    with pytest.raises(HTTPError):
        access.node(request_as(Caller(NODE, "n1")), None)  # every node's stream
    access.any_node(request_as(Caller(NODE, "n1")), ["n2", "n1"], "artifact x")
    access.node(request_as(Caller(OPERATOR)), "n2")


def test_the_join_token_on_agent_routes(setup) -> None:
    creds, *_ = setup
    creds.join("joined")
    with pytest.raises(HTTPError) as strict:
        Access(creds, accept_legacy=False).allowed_on_agent_route(request_as(Caller(JOIN)))
    assert strict.value.status == 403 and "CONTROLLER_LEGACY_AGENTS" in str(strict.value)
    legacy = Access(creds, accept_legacy=True)
    legacy.allowed_on_agent_route(request_as(Caller(JOIN)))
    legacy.node(request_as(Caller(JOIN)), "never-joined")
    with pytest.raises(HTTPError) as joined:
        legacy.node(request_as(Caller(JOIN)), "joined")
    assert joined.value.status == 403 and "own node credential" in str(joined.value)
