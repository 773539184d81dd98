"""Which of the agent's own environment variables an app inherits.

A process app gets a clean environment: these few variables from the agent's (plus LC_*), never the
rest (it may hold tokens). A container gets them from its image instead, so the Docker runtime leaves
them out.
"""

from __future__ import annotations

from collections.abc import Mapping

BASE_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR")


def is_base_env(name: str) -> bool:
    """A variable copied from the agent's environment into a process app's."""
    return name in BASE_ENV or name.startswith("LC_")


def base_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` a process app inherits."""
    return {k: v for k, v in environ.items() if is_base_env(k)}
