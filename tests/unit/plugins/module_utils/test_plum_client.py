"""The HTTP client's requests and error messages (plugins/module_utils/_client.py), against a local server."""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

pytest.importorskip("ansible")

from ansible_collections.plum.deploy.plugins.module_utils import _client

TOKEN = "secret-token-0123456789"


class Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers.items()),
                "body": body,
            }
        )
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, b'{"error": "missing or invalid bearer token"}')
        elif self.path.startswith("/v1/apps/bad"):
            self._answer(
                400,
                b'{"error": "spec.restart_policy: must be one of always, on-failure", "field": "restart_policy"}',
            )
        elif self.path.startswith("/v1/apps/missing"):
            self._answer(
                404,
                b'{"error": "no app named \'missing\' on this agent", "field": "name"}',
            )
        elif self.path.startswith("/v1/apps/boom"):
            self._answer(500, b"internal error")
        elif self.path.startswith("/v1/apps/text"):
            self._answer(200, b"<html>hello</html>", "text/html")
        else:
            self._answer(200, json.dumps({"ok": True, "path": self.path}).encode())

    do_GET = do_PUT = do_POST = do_DELETE = _handle


@pytest.fixture
def server() -> Iterator[str]:
    Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def client(url: str, token: str | None = TOKEN, source: str = "the agent_token option") -> _client.PlumClient:
    return _client.PlumClient(_client.AGENT, url, token, source, timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_json_answer_and_bearer_token(server):
    assert client(server).request("GET", "/v1/apps", query={"tail": 5}) == {
        "ok": True,
        "path": "/v1/apps?tail=5",
    }
    assert Handler.seen[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"


def test_unreachable_names_the_url_and_how_to_check_it():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(_client.PlumError) as err:
        client(url).request("GET", "/v1/apps")
    message = err.value.message
    assert f"Cannot reach the Plum agent at {url}" in message
    assert f"curl {url}/healthz" in message
    assert "agent_url" in message and "PLUM_AGENT_URL" in message


def test_401_says_where_the_token_came_from(server):
    with pytest.raises(_client.PlumError) as err:
        client(
            server,
            token="wrong",
            source="the PLUM_AGENT_TOKEN environment variable on the target",
        ).request("GET", "/v1/apps")
    message = err.value.message
    assert err.value.status == 401
    assert "HTTP 401: missing or invalid bearer token" in message
    assert "The token came from the PLUM_AGENT_TOKEN environment variable on the target" in message
    assert "AGENT_API_TOKEN" in message and "agent.token" in message


def test_4xx_passes_the_api_message_on(server):
    with pytest.raises(_client.PlumError) as err:
        client(server).request("PUT", "/v1/apps/bad")
    assert err.value.message.startswith("spec.restart_policy: must be one of always, on-failure")
    assert "[HTTP 400 from PUT /v1/apps/bad" in err.value.message
    assert err.value.field == "restart_policy"


def test_404_is_its_own_error(server):
    with pytest.raises(_client.PlumNotFound) as err:
        client(server).request("GET", "/v1/apps/missing")
    assert err.value.message == "no app named 'missing' on this agent"


def test_5xx_and_non_json(server):
    with pytest.raises(
        _client.PlumError,
        match=r"failed on GET /v1/apps/boom \(HTTP 500: internal error\)",
    ):
        client(server).request("GET", "/v1/apps/boom")
    with pytest.raises(_client.PlumError, match="not JSON: is it a Plum agent"):
        client(server).request("GET", "/v1/apps/text")


def test_bad_url():
    with pytest.raises(_client.PlumError, match=re.escape("agent_url='127.0.0.1:7070' is not an http")):
        client("127.0.0.1:7070")


def test_multipart_streams_files_and_parses_back(server, tmp_path: Path):
    artifact = tmp_path / "app.zip"
    artifact.write_bytes(bytes(range(256)) * 5000)  # 1.28 MB, more than one chunk
    body = _client.MultipartBody(
        [
            ("artifact", "app.zip", "application/zip", str(artifact)),
            ("spec", None, "application/json", b'{"env": {}}'),
        ]
    )
    assert client(server).request("PUT", "/v1/apps/hello", body=body) == {
        "ok": True,
        "path": "/v1/apps/hello",
    }
    seen = Handler.seen[-1]
    assert int(seen["headers"]["Content-Length"]) == body.length == len(seen["body"])
    raw = f"Content-Type: {seen['headers']['Content-Type']}\r\n\r\n".encode() + seen["body"]
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    parts = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
    assert parts["artifact"].get_content() == artifact.read_bytes()
    assert parts["artifact"].get_filename() == "app.zip"
    assert json.loads(parts["spec"].get_content()) == {"env": {}}


def test_multipart_read_sizes(tmp_path: Path):
    data = tmp_path / "f"
    data.write_bytes(b"x" * 10)
    body = _client.MultipartBody([("a", "f", "application/zip", str(data))])
    pieces = []
    while True:
        piece = body.read(7)
        if not piece:
            break
        assert len(piece) <= 7
        pieces.append(piece)
    whole = b"".join(pieces)
    assert len(whole) == body.length
    expected_head = f'--{body.boundary}\r\nContent-Disposition: form-data; name="a"; filename="f"\r\n'
    assert whole.startswith(expected_head.encode())
    assert whole.endswith(b"\r\n\r\nxxxxxxxxxx\r\n--" + body.boundary.encode() + b"--\r\n")


def test_token_sources(tmp_path: Path):
    token_file = tmp_path / "agent.token"
    assert _client.resolve_token(_client.AGENT, "t1", str(token_file), {}) == (
        "t1",
        "the agent_token option",
    )
    token, source = _client.resolve_token(_client.AGENT, None, str(token_file), {"PLUM_AGENT_TOKEN": "t2"})
    assert (token, source) == (
        "t2",
        "the PLUM_AGENT_TOKEN environment variable on the target",
    )
    token, source = _client.resolve_token(_client.AGENT, None, str(token_file), {})
    assert token is None and f"the token file {token_file} does not exist" in source
    token_file.write_text("t3\n")
    token, source = _client.resolve_token(_client.AGENT, None, str(token_file), {})
    assert token == "t3" and f"the token file {token_file} on the target" in source
    token, source = _client.resolve_token(_client.CONTROLLER, None, None, {"PLUM_CONTROLLER_TOKEN": "t4"})
    assert (token, source) == (
        "t4",
        "the PLUM_CONTROLLER_TOKEN environment variable on the target",
    )


def test_no_token_is_explained_on_401(server, tmp_path: Path):
    token, source = _client.resolve_token(_client.AGENT, None, str(tmp_path / "nope"), {})
    with pytest.raises(
        _client.PlumError,
        match="No token was sent: agent_token and PLUM_AGENT_TOKEN are not set",
    ):
        client(server, token=token, source=source).request("GET", "/v1/apps")
    assert "Authorization" not in Handler.seen[-1]["headers"]


def test_from_params_uses_the_right_options(tmp_path: Path):
    params = {
        "agent_url": "http://127.0.0.1:1/",
        "agent_token": None,
        "agent_token_file": str(tmp_path / "none"),
        "controller_url": "http://127.0.0.1:2",
        "controller_token": "ctl-token",
        "controller_token_file": None,
        "validate_certs": True,
        "request_timeout": 9,
    }
    agent = _client.PlumClient.from_params(_client.AGENT, params, environ={"PLUM_AGENT_TOKEN": "env-token"})
    assert (agent.url, agent.token, agent.timeout) == (
        "http://127.0.0.1:1",
        "env-token",
        9,
    )
    controller = _client.PlumClient.from_params(_client.CONTROLLER, params, environ={})
    assert (controller.url, controller.token) == ("http://127.0.0.1:2", "ctl-token")


def test_connection_spec_is_shared_and_documented_defaults():
    spec = _client.connection_argument_spec(name={"type": "str"})
    assert spec["agent_url"]["default"] == "http://127.0.0.1:7070"
    assert spec["agent_token"]["no_log"] and spec["controller_token"]["no_log"]
    assert spec["agent_token_file"]["default"] == "/var/lib/plum/agent/agent.token"
    assert "name" in spec and "name" not in _client.CONNECTION_ARGS


def test_loopback_detection():
    assert _client._is_loopback("http://127.0.0.1:7070")
    assert _client._is_loopback("http://localhost:7070")
    assert _client._is_loopback("http://[::1]:7070")
    assert not _client._is_loopback("https://plum.example.com")
