"""Request-body checks that answer 400 with ``{"error": ..., "field": ...}`` naming the field and value."""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional, TypeVar

from plum.common import resources
from plum.common.httpserver import HTTPError
from plum.common.vocab import NODE_ID_RE

T = TypeVar("T")

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,62}")
MAX_LABELS = 64


def show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bad(field: str, message: str, status: int = 400) -> HTTPError:
    return HTTPError(status, f"{field}: {message}" if field else message, field=field)


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def obj(value: Any, field: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        what = field or "request body"
        raise bad(field, f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def no_unknown(data: Mapping[str, Any], allowed: Iterable[str], prefix: str = "") -> None:
    known = set(allowed)
    unknown = sorted(set(data) - known)
    if unknown:
        raise bad(join(prefix, unknown[0]), f"unknown field (known: {', '.join(sorted(known))})")


def string(
    data: Mapping[str, Any],
    key: str,
    prefix: str = "",
    *,
    required: bool = False,
    default: str = "",
    pattern: Optional[re.Pattern[str]] = None,
    what: str = "",
    max_length: int = 4096,
) -> str:
    field = join(prefix, key)
    value = data.get(key)
    if value is None or (value == "" and not required):
        if required:
            raise bad(field, "is required")
        return default
    if not isinstance(value, str):
        raise bad(field, f"expected a string, got {show(value)}")
    if required and not value.strip():
        raise bad(field, "must not be empty")
    if len(value) > max_length:
        raise bad(field, f"longer than {max_length} characters")
    if any(ord(c) < 32 and c not in "\t" for c in value):
        raise bad(field, f"contains control characters: {show(value)}")
    if pattern is not None and not pattern.fullmatch(value):
        raise bad(field, f"{show(value)} is not valid ({what or 'bad format'})")
    return value


def integer(
    data: Mapping[str, Any], key: str, prefix: str = "", *, minimum: int, maximum: int, default: Optional[int] = None
) -> Optional[int]:
    field = join(prefix, key)
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(field, f"expected a whole number, got {show(value)}")
    if not minimum <= value <= maximum:
        raise bad(field, f"must be between {minimum} and {maximum}, got {value}")
    return value


def number(data: Mapping[str, Any], key: str, prefix: str = "", *, minimum: float, maximum: float) -> Optional[float]:
    field = join(prefix, key)
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad(field, f"expected a number, got {show(value)}")
    if not minimum <= value <= maximum:
        raise bad(field, f"must be between {minimum:g} and {maximum:g}, got {value}")
    return float(value)


def boolean(data: Mapping[str, Any], key: str, prefix: str = "") -> Optional[bool]:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise bad(join(prefix, key), f"expected true or false, got {show(value)}")
    return value


def choice(data: Mapping[str, Any], key: str, options: Iterable[str], prefix: str = "", default: str = "") -> str:
    field = join(prefix, key)
    value = data.get(key)
    allowed = tuple(options)
    if value is None or value == "":
        return default
    if value not in allowed:
        raise bad(field, f"must be one of {', '.join(allowed)}, got {show(value)}")
    return str(value)


def labels(data: Mapping[str, Any], key: str = "labels", prefix: str = "") -> dict[str, str]:
    field = join(prefix, key)
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(field, f"expected an object of string values, got {show(value)}")
    if len(value) > MAX_LABELS:
        raise bad(field, f"at most {MAX_LABELS} labels")
    out = {}
    for k, v in value.items():
        if not LABEL_KEY_RE.fullmatch(k):
            raise bad(f"{field}.{k}", f"invalid label name {show(k)} (letters, digits, '_', '.', '/', '-')")
        if not isinstance(v, str) or len(v) > 256:
            raise bad(f"{field}.{k}", f"label value must be a string of at most 256 characters, got {show(v)}")
        out[k] = v
    return dict(sorted(out.items()))


def node_id(value: Any, field: str = "nodeId") -> str:
    if value is None or value == "":
        raise bad(field, "is required")
    if not isinstance(value, str) or not NODE_ID_RE.fullmatch(value):
        raise bad(field, f"{show(value)} is not a valid node id (letters, digits, '_', '.', '-'; at most 63)")
    return value


def query_int(query: Mapping[str, str], key: str, *, default: int, minimum: int, maximum: int) -> int:
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"\d+", raw) or not minimum <= int(raw) <= maximum:
        raise bad(key, f"must be a whole number from {minimum} to {maximum}, got {show(raw)}")
    return int(raw)


# --- an app's runtime settings: the agent's own parsers (plum.common.resources), so both accept the same values


def parsed(data: Mapping[str, Any], key: str, prefix: str, parse: Callable[[Any], T]) -> Optional[T]:
    """data[key] through one of the shared parsers (None when absent or empty); a ValueError is a 400."""
    value = data.get(key)
    if value is None or value == "":
        return None
    try:
        return parse(value)
    except ValueError as exc:
        raise bad(join(prefix, key), str(exc)) from None


def start_cmd(data: Mapping[str, Any], key: str = "startCmd", prefix: str = "") -> str:
    """A shell command line, refused here when the agent could not parse it either ("" when absent)."""
    value = string(data, key, prefix, max_length=4096)
    if value:
        try:
            shlex.split(value)
        except ValueError as exc:
            raise bad(join(prefix, key), f"cannot be parsed as a shell command ({exc}): {show(value)}") from None
    return value


def memory(data: Mapping[str, Any], key: str = "memory", prefix: str = "") -> str:
    """A memory limit as the agent reads it ("512m", "1.5g", bytes...), kept as text ("" when absent)."""
    if parsed(data, key, prefix, resources.parse_memory) is None:
        return ""
    return str(data[key]).strip().lower()


def image(data: Mapping[str, Any], key: str = "image", prefix: str = "") -> str:
    """A Docker image reference as the agent reads it (repository[:tag][@digest]), "" when absent."""
    if parsed(data, key, prefix, resources.validate_image) is None:
        return ""
    return str(data[key]).strip()


def env(data: Mapping[str, Any], key: str = "env", prefix: str = "") -> dict[str, str]:
    """An app's variables: the agent's names rules (reserved PLUM_* names refused), string or number values."""
    field = join(prefix, key)
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(field, f"expected an object of NAME: value, got {show(value)}")
    out = {}
    for name, item in value.items():
        try:
            out[name] = resources.check_env_var(name, item)
        except ValueError as exc:
            raise bad(f"{field}.{name}", str(exc)) from None
    return dict(sorted(out.items()))


def ports(data: Mapping[str, Any], key: str = "ports", prefix: str = "") -> list[dict[str, Any]]:
    """Ports to publish, each as the agent parses it, stored as {"container", "protocol", "host"?, "hostIp"?}."""
    field = join(prefix, key)
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad(field, f"expected a list of {{host?, container, protocol?}}, got {show(value)}")
    out = []
    seen = set()
    for i, raw in enumerate(value):
        item = f"{field}[{i}]"
        try:
            mapping = resources.parse_port(raw)
        except resources.PortError as exc:
            raise bad(join(item, exc.key) if exc.key else item, str(exc)) from None
        if mapping.host_port is not None:
            host = (mapping.host_ip, mapping.host_port, mapping.protocol)
            if host in seen:
                raise bad(item, f"host port {mapping.host_port}/{mapping.protocol} is published twice")
            seen.add(host)
        out.append(mapping.to_object())
    return out
