"""The agent's node credential: which refusals make it join again, and what it reads from disk."""

from __future__ import annotations

import asyncio
from pathlib import Path

from plum.agent.credential import CREDENTIAL_FILE, NodeCredential, read_token
from plum.common.httpclient import ClientError

TOKEN = "plumnode_" + "x" * 43


def credential(tmp_path: Path, saved: str = TOKEN) -> NodeCredential:
    (tmp_path / CREDENTIAL_FILE).write_text(saved + "\n")
    return NodeCredential(tmp_path, "n1", "http://127.0.0.1:1", "j" * 32)


def test_a_saved_token_is_used_and_a_bad_file_means_joining(tmp_path: Path) -> None:
    async def run() -> None:
        assert credential(tmp_path).token == TOKEN
        bad = credential(tmp_path, saved="not a token\x00")
        assert bad.token is None and bad.needed.is_set() and not bad.ready.is_set()

    asyncio.run(run())
    assert read_token(tmp_path / "missing") is None


def test_only_a_401_of_the_current_token_makes_it_join_again(tmp_path: Path) -> None:
    async def run() -> None:
        cred = credential(tmp_path)
        cred.refused("plumnode_stale-token-0123456789", ClientError("401", 401))  # already replaced
        cred.refused(TOKEN, ClientError("403", 403))  # another node's resource: not a lost credential
        cred.refused(TOKEN, ClientError("down"))
        assert cred.ready.is_set() and cred.token == TOKEN
        cred.refused(TOKEN, ClientError("401 invalid bearer token", 401))
        assert not cred.ready.is_set() and cred.needed.is_set() and cred.token is None

    asyncio.run(run())
