"""Request-value checks that answer 400 with ``{"error": ..., "field": ...}`` naming the field and value.

The value-level checks (``text``, ``whole``, ``label_map``...) are what the schema model (schema.py) checks
bodies with; the ``(data, key, prefix)`` forms are for handlers that still read their bodies by hand."""

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

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"
LABEL_KEY_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_./-]{0,62}"
LABEL_KEY_RE = re.compile(LABEL_KEY_PATTERN)
MAX_LABELS = 64
MAX_LABEL_VALUE = 256


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
    value = data.get(key)
    field = join(prefix, key)
    if value is None or (value == "" and not required):
        if required:
            raise bad(field, "is required")
        return default
    return text(value, field, required=required, pattern=pattern, what=what, max_length=max_length)


def text(
    value: Any,
    field: str,
    *,
    required: bool = False,
    pattern: Optional[re.Pattern[str]] = None,
    what: str = "",
    max_length: int = 4096,
) -> str:
    """A present string value: printable, bounded, and matching ``pattern`` when given."""
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
    value = data.get(key)
    if value is None:
        return default
    return whole(value, join(prefix, key), minimum=minimum, maximum=maximum)


def whole(value: Any, field: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(field, f"expected a whole number, got {show(value)}")
    if not minimum <= value <= maximum:
        raise bad(field, f"must be between {minimum} and {maximum}, got {value}")
    return value


def real(value: Any, field: str, *, minimum: float, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad(field, f"expected a number, got {show(value)}")
    if not minimum <= value <= maximum:
        raise bad(field, f"must be between {minimum:g} and {maximum:g}, got {value}")
    return float(value)


def flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise bad(field, f"expected true or false, got {show(value)}")
    return value


def choice(data: Mapping[str, Any], key: str, options: Iterable[str], prefix: str = "", default: str = "") -> str:
    value = data.get(key)
    if value is None or value == "":
        return default
    return one_of(value, join(prefix, key), tuple(options))


def one_of(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise bad(field, f"must be one of {', '.join(allowed)}, got {show(value)}")
    return str(value)


def labels(data: Mapping[str, Any], key: str = "labels", prefix: str = "") -> dict[str, str]:
    value = data.get(key)
    return {} if value is None else label_map(value, join(prefix, key))


def label_map(value: Any, field: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise bad(field, f"expected an object of string values, got {show(value)}")
    if len(value) > MAX_LABELS:
        raise bad(field, f"at most {MAX_LABELS} labels")
    out = {}
    for k, item in value.items():
        if not LABEL_KEY_RE.fullmatch(k):
            raise bad(f"{field}.{k}", f"invalid label name {show(k)} (letters, digits, '_', '.', '/', '-')")
        if not isinstance(item, str) or len(item) > MAX_LABEL_VALUE:
            raise bad(
                f"{field}.{k}",
                f"label value must be a string of at most {MAX_LABEL_VALUE} characters, got {show(item)}",
            )
        out[k] = item
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
    return parse_with(value, join(prefix, key), parse)


def parse_with(value: Any, field: str, parse: Callable[[Any], T]) -> T:
    try:
        return parse(value)
    except ValueError as exc:
        raise bad(field, str(exc)) from None


def start_cmd(data: Mapping[str, Any], key: str = "startCmd", prefix: str = "") -> str:
    """A shell command line, refused here when the agent could not parse it either ("" when absent)."""
    value = string(data, key, prefix, max_length=4096)
    return shell_command(value, join(prefix, key)) if value else value


def shell_command(value: Any, field: str) -> str:
    command = text(value, field, max_length=4096)
    try:
        shlex.split(command)
    except ValueError as exc:
        raise bad(field, f"cannot be parsed as a shell command ({exc}): {show(command)}") from None
    return command


def memory(data: Mapping[str, Any], key: str = "memory", prefix: str = "") -> str:
    """A memory limit as the agent reads it ("512m", "1.5g", bytes...), kept as text ("" when absent)."""
    value = data.get(key)
    return "" if value is None or value == "" else memory_limit(value, join(prefix, key))


def memory_limit(value: Any, field: str) -> str:
    parse_with(value, field, resources.parse_memory)
    return str(value).strip().lower()


def image(data: Mapping[str, Any], key: str = "image", prefix: str = "") -> str:
    """A Docker image reference as the agent reads it (repository[:tag][@digest]), "" when absent."""
    value = data.get(key)
    return "" if value is None or value == "" else image_ref(value, join(prefix, key))


def image_ref(value: Any, field: str) -> str:
    parse_with(value, field, resources.validate_image)
    return str(value).strip()


def env(data: Mapping[str, Any], key: str = "env", prefix: str = "") -> dict[str, str]:
    """An app's variables: the agent's names rules (reserved PLUM_* names refused), string or number values."""
    value = data.get(key)
    return {} if value is None else env_map(value, join(prefix, key))


def env_map(value: Any, field: str) -> dict[str, str]:
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
    value = data.get(key)
    return [] if value is None else port_list(value, join(prefix, key))


def port_list(value: Any, field: str) -> list[dict[str, Any]]:
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
