"""Human output: aligned tables, ages and sizes; JSON output for scripts."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Optional, Union


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell; the last column is not padded (it holds free text)."""
    table = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print(("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]).rstrip())


def human_bytes(value: Optional[int]) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return "-"


def age(when: Union[str, float, None], now: Optional[float] = None) -> str:
    """How long ago ``when`` (an ISO time or unix seconds) was: 5s, 3m, 2h, 1d; "-" when unknown."""
    if when is None or when == "":
        return "-"
    if isinstance(when, str):
        when = datetime.fromisoformat(when.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()
    seconds = max(0.0, (time.time() if now is None else now) - float(when))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def labels(value: Optional[dict[str, Any]]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((value or {}).items())) or "-"
