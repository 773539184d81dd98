# -*- coding: utf-8 -*-
# Copyright: Plum Deploy maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the plum.deploy collection: it can change at any time, without notice.
"""HTTP client for the Plum agent and controller APIs, on ansible.module_utils.urls only.

Targets need nothing beyond Python's standard library and ansible-core. Errors say what to do:
an unreachable API names its URL and how to check it, a 401 says where the token came from, and
a 4xx passes the API's own message on.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import socket
import uuid
from typing import IO, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode, urlsplit

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import SSLValidationError, open_url

DEFAULT_AGENT_URL = "http://127.0.0.1:7070"
DEFAULT_AGENT_TOKEN_FILE = "/var/lib/plum/agent/agent.token"
DEFAULT_CONTROLLER_URL = "http://127.0.0.1:8080"
DEFAULT_CONTROLLER_TOKEN_FILE = "/var/lib/plum/controller/operator.token"
DEFAULT_TIMEOUT = 60

# Every module of the group accepts every connection option, so that one
# ``module_defaults: group/plum.deploy.plum:`` block can set both the agent and the controller.
CONNECTION_ARGS: Dict[str, Dict[str, Any]] = dict(
    agent_url=dict(type="str", default=DEFAULT_AGENT_URL, fallback=(env_fallback, ["PLUM_AGENT_URL"])),
    agent_token=dict(type="str", no_log=True),
    agent_token_file=dict(type="path", default=DEFAULT_AGENT_TOKEN_FILE),
    controller_url=dict(
        type="str", default=DEFAULT_CONTROLLER_URL, fallback=(env_fallback, ["PLUM_CONTROLLER_URL"])
    ),
    controller_token=dict(type="str", no_log=True),
    controller_token_file=dict(type="path", default=DEFAULT_CONTROLLER_TOKEN_FILE),
    validate_certs=dict(type="bool", default=True),
    request_timeout=dict(type="int", default=DEFAULT_TIMEOUT),
)


def connection_argument_spec(**more: Dict[str, Any]) -> Dict[str, Any]:
    spec = dict((k, dict(v)) for k, v in CONNECTION_ARGS.items())
    spec.update(more)
    return spec


class PlumError(Exception):
    """Any failure talking to the API; ``str()`` is the message to show the user."""

    def __init__(self, message: str, status: Optional[int] = None, field: Optional[str] = None,
                 body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field
        self.body = body


class PlumNotFound(PlumError):
    """HTTP 404 with the API's message."""


class _Kind:
    def __init__(self, label: str, url_option: str, url_env: str, token_option: str, token_env: str,
                 token_file_option: str, token_hint: str) -> None:
        self.label = label
        self.url_option = url_option
        self.url_env = url_env
        self.token_option = token_option
        self.token_env = token_env
        self.token_file_option = token_file_option
        self.token_hint = token_hint


AGENT = _Kind(
    "Plum agent",
    "agent_url",
    "PLUM_AGENT_URL",
    "agent_token",
    "PLUM_AGENT_TOKEN",
    "agent_token_file",
    "the agent's token is AGENT_API_TOKEN when set, else the agent.token file in its data dir "
    "(AGENT_DATA_DIR, default /var/lib/plum/agent)",
)
CONTROLLER = _Kind(
    "Plum controller",
    "controller_url",
    "PLUM_CONTROLLER_URL",
    "controller_token",
    "PLUM_CONTROLLER_TOKEN",
    "controller_token_file",
    "the controller's operator token is CONTROLLER_OPERATOR_TOKEN when set, else the operator.token file in "
    "its data dir (CONTROLLER_DATA_DIR, default /var/lib/plum/controller)",
)


def resolve_token(kind: _Kind, explicit: Optional[str], token_file: Optional[str],
                  environ: Optional[Mapping[str, str]] = None) -> Tuple[Optional[str], str]:
    """(token, where it came from), or (None, why there is none)."""
    environ = os.environ if environ is None else environ
    if explicit:
        return explicit, "the %s option" % kind.token_option
    from_env = environ.get(kind.token_env, "").strip()
    if from_env:
        return from_env, "the %s environment variable on the target" % kind.token_env
    if token_file:
        try:
            with open(token_file) as fh:
                token = fh.read().strip()
        except OSError as exc:
            if getattr(exc, "errno", None) == 13:
                why = "the token file %s is not readable by this user (it is only readable by its owner: " \
                    "use become: true)" % token_file
            elif getattr(exc, "errno", None) == 2:
                why = "the token file %s does not exist" % token_file
            else:
                why = "the token file %s cannot be read (%s)" % (token_file, to_native(exc))
            return None, "%s and %s are not set, and %s" % (kind.token_option, kind.token_env, why)
        if token:
            return token, "the token file %s on the target (%s)" % (token_file, kind.token_file_option)
        return None, "%s and %s are not set, and the token file %s is empty" % (
            kind.token_option, kind.token_env, token_file)
    return None, "%s and %s are not set" % (kind.token_option, kind.token_env)


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


class MultipartBody:
    """multipart/form-data streamed from memory and files, so large artifacts are never held in memory.

    parts: (name, filename or None, content type, bytes or a file path)
    """

    CHUNK = 1024 * 1024

    def __init__(self, parts: Sequence[Tuple[str, Optional[str], str, Union[bytes, str]]]) -> None:
        self.boundary = "plum-%s" % uuid.uuid4().hex
        self._segments: List[Union[bytes, Tuple[str, str]]] = []
        for name, filename, content_type, content in parts:
            head = '--%s\r\nContent-Disposition: form-data; name="%s"' % (self.boundary, name)
            if filename is not None:
                head += '; filename="%s"' % filename.replace('"', "")
            head += "\r\nContent-Type: %s\r\n\r\n" % content_type
            self._segments.append(to_bytes(head))
            if isinstance(content, bytes):
                self._segments.append(content)
            else:
                self._segments.append(("file", content))
            self._segments.append(b"\r\n")
        self._segments.append(to_bytes("--%s--\r\n" % self.boundary))
        self.length = 0
        for seg in self._segments:
            self.length += os.path.getsize(seg[1]) if isinstance(seg, tuple) else len(seg)
        self._index = 0
        self._buffer = b""
        self._fh: Optional[IO[bytes]] = None

    @property
    def content_type(self) -> str:
        return "multipart/form-data; boundary=%s" % self.boundary

    def _next(self) -> bytes:
        while self._index < len(self._segments):
            seg = self._segments[self._index]
            if isinstance(seg, tuple):
                if self._fh is None:
                    self._fh = open(seg[1], "rb")
                data = self._fh.read(self.CHUNK)
                if data:
                    return data
                self._fh.close()
                self._fh = None
                self._index += 1
                continue
            self._index += 1
            return seg
        return b""

    def read(self, size: Optional[int] = -1) -> bytes:
        if size is None or size < 0:
            chunks = [self._buffer]
            self._buffer = b""
            while True:
                data = self._next()
                if not data:
                    break
                chunks.append(data)
            return b"".join(chunks)
        while len(self._buffer) < size:
            data = self._next()
            if not data:
                break
            self._buffer += data
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _api_message(raw: Optional[bytes]) -> Tuple[str, Optional[str], Any]:
    """(message, field, parsed body) from an error answer: Plum's JSON {"error", "field"}, else text."""
    text = to_text(raw or b"", errors="surrogate_or_replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text[:2000], None, text
    if isinstance(body, dict):
        message = body.get("error") or body.get("message") or body.get("msg") or text
        return to_text(message), body.get("field"), body
    return text[:2000], None, body


class PlumClient:
    def __init__(self, kind: _Kind, url: Optional[str], token: Optional[str], token_source: str,
                 validate_certs: bool = True, timeout: int = DEFAULT_TIMEOUT) -> None:
        self.kind = kind
        self.url = (url or "").rstrip("/")
        self.token = token
        self.token_source = token_source
        self.validate_certs = validate_certs
        self.timeout = timeout
        if not self.url.startswith(("http://", "https://")):
            raise PlumError(
                "%s=%r is not an http:// or https:// URL (%s)" % (kind.url_option, url, self._url_origin())
            )

    @classmethod
    def from_params(cls, kind: _Kind, params: Mapping[str, Any],
                    environ: Optional[Mapping[str, str]] = None) -> "PlumClient":
        if kind is AGENT:
            url, explicit, token_file = params.get("agent_url"), params.get("agent_token"), params.get("agent_token_file")
        else:
            url = params.get("controller_url")
            explicit, token_file = params.get("controller_token"), params.get("controller_token_file")
        token, source = resolve_token(kind, explicit, token_file, environ)
        return cls(kind, url, token, source, params.get("validate_certs", True),
                   params.get("request_timeout") or DEFAULT_TIMEOUT)

    def _url_origin(self) -> str:
        return "set %s or the %s environment variable" % (self.kind.url_option, self.kind.url_env)

    def unreachable(self, reason: str) -> PlumError:
        return PlumError(
            "Cannot reach the %s at %s (%s). Check that it is running and listening there: "
            "`curl %s/healthz` on the target should answer; otherwise %s."
            % (self.kind.label, self.url, reason, self.url, self._url_origin())
        )

    def request(self, method: str, path: str, query: Optional[Mapping[str, Any]] = None, json_body: Any = None,
                body: Optional[MultipartBody] = None, content_type: Optional[str] = None,
                timeout: Optional[float] = None) -> Any:
        """Send a request; return the decoded JSON answer (None for an empty one) or raise PlumError."""
        url = self.url + path
        if query:
            url += "?" + urlencode(query)
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer %s" % self.token
        data = None
        if json_body is not None:
            data = to_bytes(json.dumps(json_body))
            headers["Content-Type"] = "application/json"
        elif body is not None:
            data = body
            headers["Content-Type"] = content_type or body.content_type
            headers["Content-Length"] = str(body.length)
        what = "%s %s" % (method, path)
        try:
            response = open_url(
                url,
                data=data,
                headers=headers,
                method=method,
                use_proxy=not _is_loopback(self.url),
                timeout=timeout or self.timeout,
                validate_certs=self.validate_certs,
                follow_redirects="none",
                use_netrc=False,
                http_agent="plum.deploy-ansible",
            )
            raw = response.read()
        except HTTPError as exc:
            try:
                raw = exc.read()
            except Exception:  # pylint: disable=broad-except
                raw = b""
            raise self._http_error(exc.code, raw, what)
        except SSLValidationError as exc:
            raise PlumError(
                "TLS certificate of the %s at %s could not be verified (%s); fix the certificate or set "
                "validate_certs: false" % (self.kind.label, self.url, to_native(exc))
            )
        except socket.timeout:
            raise PlumError(
                "The %s at %s did not answer %s within %s seconds (request_timeout)."
                % (self.kind.label, self.url, what, timeout or self.timeout)
            )
        except URLError as exc:
            raise self.unreachable(to_native(getattr(exc, "reason", exc)))
        except (UrlsConnectionError, OSError) as exc:
            raise self.unreachable(to_native(exc))
        finally:
            if body is not None:
                body.close()
        if not raw:
            return None
        try:
            return json.loads(to_text(raw, errors="surrogate_or_replace"))
        except ValueError:
            raise PlumError(
                "The server at %s answered %s with something that is not JSON: is it a %s? (%s)"
                % (self.url, what, self.kind.label, to_text(raw[:200], errors="surrogate_or_replace"))
            )

    def _http_error(self, status: int, raw: bytes, what: str) -> PlumError:
        message, field, body = _api_message(raw)
        if status == 401:
            origin = ("The token came from %s" if self.token else "No token was sent: %s") % self.token_source
            return PlumError(
                "The %s at %s refused the request %s (HTTP 401: %s). %s; "
                "%s. Set %s or %s to it, or point %s at the right file."
                % (self.kind.label, self.url, what, message or "unauthorized", origin,
                   self.kind.token_hint, self.kind.token_option, self.kind.token_env, self.kind.token_file_option),
                status=status, field=field, body=body,
            )
        if status == 403:
            return PlumError(
                "The %s at %s denied %s (HTTP 403: %s). The token came from %s; %s."
                % (self.kind.label, self.url, what, message, self.token_source, self.kind.token_hint),
                status=status, field=field, body=body,
            )
        if status == 404:
            return PlumNotFound(message or "not found", status=status, field=field, body=body)
        if status < 500:
            suffix = " (field %s)" % field if field and ("%s" % field) not in message else ""
            return PlumError(
                "%s%s [HTTP %d from %s at %s]" % (message, suffix, status, what, self.url),
                status=status, field=field, body=body,
            )
        return PlumError(
            "The %s at %s failed on %s (HTTP %d: %s)" % (self.kind.label, self.url, what, status, message),
            status=status, field=field, body=body,
        )

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def path(*segments: Any) -> str:
        return "/" + "/".join(quote(to_text(s), safe="") for s in segments)

    def healthz(self) -> Any:
        return self.request("GET", "/healthz")
