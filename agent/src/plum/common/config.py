"""Configuration from the environment and an optional env file, with errors that name the variable.

Precedence: the process environment wins over the file, so a one-off override such as
``AGENT_API_ADDR=127.0.0.1:7171 plum-agent --config /etc/plum/agent.env`` works. Keys in the file
that no daemon reads are refused, so a typo never silently falls back to a default.

Secrets (the tokens) are never taken from the process environment: any process of the same user, and
root, can read it in /proc/<pid>/environ. They come from the file, or from a file named by their
``*_FILE`` setting.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Optional

from plum.common.httpserver import parse_host_port


class ConfigError(ValueError):
    """A bad setting; the message names the variable and the value."""


_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def read_env_file(path: str, known: Iterable[str]) -> dict[str, str]:
    """Parse KEY=VALUE lines (comments, blank lines, optional quotes and 'export')."""
    known_keys = set(known)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
        key, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        if key not in known_keys:
            raise ConfigError(f"{path}:{number}: unknown setting {key}")
        values[key] = value
    return values


def secret_file_setting(name: str) -> str:
    """The setting that names a file holding the secret ``name``."""
    return f"{name}_FILE"


def refuse_secrets_in_environment(environ: Mapping[str, str], secrets: Iterable[str]) -> None:
    """Stop at start when a secret is in the process environment, saying where it belongs instead."""
    for name in secrets:
        if environ.get(name):
            raise ConfigError(
                f"{name} is set in the process environment, which other processes can read in "
                f"/proc/<pid>/environ: put it in the --config file, or in a file named by "
                f"{secret_file_setting(name)} (value hidden)"
            )


class Settings:
    """Typed access to string settings; every getter raises ConfigError naming the variable."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values

    @classmethod
    def load(cls, config_file: Optional[str], known: Iterable[str], secrets: Iterable[str] = ()) -> Settings:
        known = list(known)
        refuse_secrets_in_environment(os.environ, secrets)
        merged = read_env_file(config_file, known) if config_file else {}
        merged.update({k: v for k, v in os.environ.items() if k in known})
        return cls(merged)

    def raw(self, name: str) -> Optional[str]:
        value = self.values.get(name)
        return value if value not in (None, "") else None

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def optional(self, name: str) -> Optional[str]:
        return self.raw(name)

    def secret(self, name: str) -> Optional[str]:
        """A secret given in the config file as NAME, or in the file that NAME_FILE names."""
        file_setting = secret_file_setting(name)
        value, path = self.raw(name), self.raw(file_setting)
        if value is not None and path is not None:
            raise ConfigError(f"{name} and {file_setting} are both set: keep one (values hidden)")
        if path is None:
            return value
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{file_setting}={path!r}: cannot read the file ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{file_setting}={path!r}: the file is not UTF-8 text") from None
        if not text:
            raise ConfigError(f"{file_setting}={path!r}: the file is empty")
        return text

    def choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        value = (self.raw(name) or default).lower()
        options = list(choices)
        if value not in options:
            raise ConfigError(f"{name}={self.values.get(name)!r}: must be one of {', '.join(options)}")
        return value

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r}: expected a number") from None
        if value < minimum:
            raise ConfigError(f"{name}={raw!r}: must be at least {minimum:g}")
        return value

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        raw = self.raw(name)
        if raw is None:
            return default
        if not re.fullmatch(r"-?\d+", raw.strip()):
            raise ConfigError(f"{name}={raw!r}: expected a whole number")
        value = int(raw)
        if value < minimum:
            raise ConfigError(f"{name}={raw!r}: must be at least {minimum}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.raw(name)
        if raw is None:
            return default
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={raw!r}: expected true or false")

    def address(self, name: str, default: str) -> tuple[str, int]:
        raw = self.raw(name) or default
        try:
            return parse_host_port(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}={raw!r}: {exc}") from None

    def path(self, name: str, default: str) -> Path:
        return Path(self.raw(name) or default).expanduser().absolute()

    def pattern(self, name: str, default: str, regex: str, what: str) -> str:
        value = self.raw(name) or default
        if not re.fullmatch(regex, value):
            raise ConfigError(f"{name}={value!r}: {what}")
        return value
