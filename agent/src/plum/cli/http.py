"""The JSON-over-HTTP client plumctl uses for both the agent and the controller, and its exit codes.

An error says which URL was called, where the token came from when it was refused, and the API's own
message; its exit code tells a script what happened (see docs/plumctl.md).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Optional

EXIT_OK = 0
EXIT_REFUSED = 1  # the API answered with an error
EXIT_USAGE = 2  # bad arguments, input file or token file (argparse uses 2 as well)
EXIT_UNREACHABLE = 3  # no answer: connection refused, name not resolved, timeout
EXIT_ROLLOUT = 4  # a rolling update failed or was rolled back


class CLIError(Exception):
    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


class JsonClient:
    """Bearer-token JSON calls to one daemon; ``what`` names it in errors ("agent", "controller")."""

    def __init__(self, url: str, token: str, token_source: str, what: str, hint: str = "") -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.token_source = token_source
        self.what = what
        self.hint = hint

    def call(
        self, method: str, path: str, body: Optional[bytes] = None, content_type: str = "", timeout: float = 120
    ) -> Any:
        request = urllib.request.Request(self.url + path, data=body, method=method)  # noqa: S310 - http(s) only
        request.add_header("Authorization", f"Bearer {self.token}")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise CLIError(f"{method} {self.url}{path}: {exc.code} {self._message(exc)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise CLIError(
                f"cannot reach the {self.what} at {self.url}: {reason}.{' ' + self.hint if self.hint else ''}",
                EXIT_UNREACHABLE,
            ) from None

    def send_json(self, method: str, path: str, data: Any) -> Any:
        return self.call(method, path, json.dumps(data).encode(), "application/json")

    def _message(self, exc: urllib.error.HTTPError) -> str:
        try:
            message = str(json.loads(exc.read()).get("error", exc.reason))
        except (ValueError, AttributeError):
            message = str(exc.reason)
        if exc.code in (401, 403):
            message += f" (token read from {self.token_source})"
        return message
