"""Where plumctl's fleet commands find the controller and the operator token.

The URL: ``--controller``, else ``PLUM_CONTROLLER_URL``, else the controller's default address on this
host (``http://127.0.0.1:8080``). The token, first found wins: ``--token-file``, ``PLUM_CONTROLLER_TOKEN_FILE``,
``PLUM_CONTROLLER_TOKEN`` (a value), then the file the plum_controller role copies to the control node,
``~/.config/plum/operator.token``. Errors name the source, so a 401 says which token was refused.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from plum.cli.http import EXIT_USAGE, CLIError, JsonClient

DEFAULT_URL = "http://127.0.0.1:8080"
ROLE_TOKEN_FILE = Path("~/.config/plum/operator.token")


def controller_url(flag: Optional[str], env: Mapping[str, str]) -> str:
    return flag or env.get("PLUM_CONTROLLER_URL") or DEFAULT_URL


def operator_token(flag_file: Optional[str], env: Mapping[str, str]) -> tuple[str, str]:
    """(token, where it came from)."""
    if flag_file:
        return _read(Path(flag_file), f"--token-file {flag_file}"), f"--token-file {flag_file}"
    if env.get("PLUM_CONTROLLER_TOKEN_FILE"):
        path = env["PLUM_CONTROLLER_TOKEN_FILE"]
        return _read(Path(path), f"PLUM_CONTROLLER_TOKEN_FILE={path}"), f"PLUM_CONTROLLER_TOKEN_FILE={path}"
    if env.get("PLUM_CONTROLLER_TOKEN"):
        return env["PLUM_CONTROLLER_TOKEN"].strip(), "PLUM_CONTROLLER_TOKEN"
    role_file = ROLE_TOKEN_FILE.expanduser()
    return _read(role_file, f"{role_file} (the plum_controller role's copy)"), str(role_file)


def _read(path: Path, source: str) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise CLIError(
            f"cannot read the operator token from {source}: {exc.strerror}; pass --token-file, or set "
            "PLUM_CONTROLLER_TOKEN_FILE (docs/plumctl.md)",
            EXIT_USAGE,
        ) from None
    if not token:
        raise CLIError(f"the operator token file {path} ({source}) is empty", EXIT_USAGE)
    return token


def controller_client(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> JsonClient:
    url = controller_url(args.controller, env)
    token, source = operator_token(args.token_file, env)
    hint = f"Is plum-controller running there? Check with: curl {url.rstrip('/')}/healthz (or pass --controller URL)"
    return JsonClient(url, token, source, "controller", hint)
