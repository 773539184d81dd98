"""A documented subset of YAML, enough for a deployment file, without a YAML library at run time.

Supported: block mappings and sequences (nested by indentation with spaces), flow collections
(``[a, b]``, ``{k: v}``), plain, 'single' and "double" quoted scalars, ``#`` comments, and a leading
``---``. Plain scalars are typed as YAML 1.2's core schema does: ``null``/``~``, ``true``/``false``,
integers and floats; anything else is a string (``1.0.0`` is a string, ``2.0`` a float). Anchors,
aliases, tags, block scalars (``|``, ``>``), several documents and tabs in indentation are refused with
the line number, never misread. Why not PyYAML: plumctl ships in the runtime wheel every node installs
offline, and a compiled dependency for one CLI command is not worth it (docs/plumctl.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Optional

INT_RE = re.compile(r"[-+]?(0|[1-9][0-9]*)")
FLOAT_RE = re.compile(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+")
UNSUPPORTED = {
    "&": "anchors",
    "*": "aliases",
    "!": "tags",
    "|": "block scalars",
    ">": "block scalars",
    "%": "directives",
}


class YAMLError(ValueError):
    pass


@dataclass
class Line:
    number: int
    indent: int
    text: str


def loads(source: str) -> Any:
    """The value of a YAML document in the subset above; YAMLError naming the line otherwise."""
    lines = _lines(source)
    if not lines:
        return None
    value, end = _block(lines, 0, lines[0].indent)
    if end < len(lines):
        raise _error(lines[end], "unexpected indentation")
    return value


def _lines(source: str) -> list[Line]:
    out: list[Line] = []
    for number, raw in enumerate(source.splitlines(), 1):
        stripped = raw.lstrip(" ")
        if stripped.startswith("\t"):
            raise YAMLError(f"line {number}: tabs cannot indent YAML; use spaces")
        text = _strip_comment(stripped).rstrip()
        if not text:
            continue
        if text in ("---", "...") or text.startswith("--- "):
            if out or text != "---":
                raise YAMLError(f"line {number}: only one document, without content on its '---' line, is supported")
            continue
        out.append(Line(number, len(raw) - len(stripped), text))
    return out


def _strip_comment(text: str) -> str:
    quote = ""
    for i, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"" and (i == 0 or text[i - 1] in " [{,:-"):
            quote = char
        elif char == "#" and (i == 0 or text[i - 1] == " "):
            return text[:i]
    return text


def _error(line: Line, message: str) -> YAMLError:
    return YAMLError(f"line {line.number}: {message}: {line.text!r}")


def _is_item(text: str) -> bool:
    return text == "-" or text.startswith("- ")


def _block(lines: list[Line], i: int, indent: int) -> tuple[Any, int]:
    return _sequence(lines, i, indent) if _is_item(lines[i].text) else _mapping(lines, i, indent)


def _mapping(lines: list[Line], i: int, indent: int) -> tuple[Any, int]:
    first = lines[i]
    if _split_key(first.text) is None:  # a lone scalar document or item
        if i + 1 < len(lines) and lines[i + 1].indent >= indent:
            raise _error(lines[i + 1], "a mapping key ('key: value') was expected")
        return _scalar(first.text, first), i + 1
    result: dict[str, Any] = {}
    while i < len(lines) and lines[i].indent == indent and not _is_item(lines[i].text):
        line = lines[i]
        split = _split_key(line.text)
        if split is None:
            raise _error(line, "a mapping key ('key: value') was expected")
        key, rest = split
        if key in result:
            raise _error(line, f"duplicate key {key!r}")
        i += 1
        if rest:
            result[key] = _scalar(rest, line)
        elif i < len(lines) and lines[i].indent > indent:
            result[key], i = _block(lines, i, lines[i].indent)
        elif i < len(lines) and lines[i].indent == indent and _is_item(lines[i].text):
            result[key], i = _sequence(lines, i, indent)
        else:
            result[key] = None
    if i < len(lines) and lines[i].indent > indent:
        raise _error(lines[i], "unexpected indentation")
    return result, i


def _sequence(lines: list[Line], i: int, indent: int) -> tuple[Any, int]:
    result: list[Any] = []
    while i < len(lines) and lines[i].indent == indent and _is_item(lines[i].text):
        line = lines[i]
        rest = line.text[1:].lstrip(" ")
        if not rest:
            i += 1
            if i < len(lines) and lines[i].indent > indent:
                value, i = _block(lines, i, lines[i].indent)
            else:
                value = None
            result.append(value)
            continue
        if _is_item(rest) or _split_key(rest) is not None:  # "- key: v" or "- - v": a block inside the item
            inner = indent + len(line.text) - len(rest)
            lines[i] = Line(line.number, inner, rest)
            value, i = _block(lines, i, inner)
        else:
            value, i = _scalar(rest, line), i + 1
        result.append(value)
    if i < len(lines) and lines[i].indent > indent:
        raise _error(lines[i], "unexpected indentation")
    return result, i


def _split_key(text: str) -> Optional[tuple[str, str]]:
    """``key: rest`` -> (key, rest); None when the text is not a mapping entry."""
    if text[0] in "[{":
        return None
    if text[0] in "'\"":
        end = _quoted_end(text, 0)
        if end < 0 or not (text[end:] == ":" or text.startswith(": ", end)):
            return None
        return _quoted(text[:end], Line(0, 0, text)), text[end + 1 :].strip()
    match = re.search(r":( |$)", text)
    if match is None:
        return None
    key = text[: match.start()].strip()
    return (key, text[match.end() :].strip()) if key else None


def _quoted_end(text: str, start: int) -> int:
    """The index just past the quoted scalar starting at ``start``; -1 when it is not closed."""
    quote, i = text[start], start + 1
    while i < len(text):
        if quote == '"' and text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            if quote == "'" and text[i + 1 : i + 2] == "'":
                i += 2
                continue
            return i + 1
        i += 1
    return -1


def _quoted(text: str, line: Line) -> str:
    if text[0] == "'":
        return text[1:-1].replace("''", "'")
    try:
        value = json.loads(text)
    except ValueError:
        raise _error(line, "a double-quoted string with an escape JSON does not know") from None
    return str(value)


def _scalar(text: str, line: Line) -> Any:
    if text[0] in UNSUPPORTED:
        raise _error(line, f"{UNSUPPORTED[text[0]]} are not supported")
    if text[0] in "[{'\"":
        value, end = _Flow(text, line).value(0)
        if text[end:].strip():
            raise _error(line, f"unexpected text after the value: {text[end:].strip()!r}")
        return value
    return _plain(text)


def _plain(text: str) -> Any:
    if text in ("null", "Null", "NULL", "~"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if INT_RE.fullmatch(text):
        return int(text)
    if FLOAT_RE.fullmatch(text):
        return float(text)
    return text


class _Flow:
    """``[a, {b: c}]`` and ``{k: [v]}`` with scalars inside."""

    def __init__(self, text: str, line: Line) -> None:
        self.text = text
        self.line = line

    def _skip(self, i: int) -> int:
        while i < len(self.text) and self.text[i] == " ":
            i += 1
        return i

    def value(self, i: int, stops: str = "") -> tuple[Any, int]:
        i = self._skip(i)
        char = self.text[i : i + 1]
        if char == "[":
            return self._collection(i, "]")
        if char == "{":
            return self._collection(i, "}")
        if char in ("'", '"'):
            end = _quoted_end(self.text, i)
            if end < 0:
                raise _error(self.line, "a quoted string is not closed")
            return _quoted(self.text[i:end], self.line), self._skip(end)
        if char and char in UNSUPPORTED:
            raise _error(self.line, f"{UNSUPPORTED[char]} are not supported")
        end = i
        while end < len(self.text) and self.text[end] not in stops and not self.text.startswith(": ", end):
            end += 1
        if not stops:
            end = len(self.text)
        raw = self.text[i:end].strip()
        if not raw:
            raise _error(self.line, "a value was expected")
        return _plain(raw), end

    def _collection(self, i: int, close: str) -> tuple[Any, int]:
        items: list[Any] = []
        pairs: dict[str, Any] = {}
        i = self._skip(i + 1)
        while self.text[i : i + 1] != close:
            if close == "]":
                item, i = self.value(i, ",]")
                items.append(item)
            else:
                key, i = self.value(i, ",}:")
                i = self._skip(i)
                if self.text[i : i + 1] != ":":
                    raise _error(self.line, f"':' expected after the key {key!r}")
                pairs[str(key)], i = self.value(i + 1, ",}")
            i = self._skip(i)
            if self.text[i : i + 1] == ",":
                i = self._skip(i + 1)
            elif self.text[i : i + 1] != close:
                raise _error(self.line, f"',' or {close!r} expected")
        return (items if close == "]" else pairs), i + 1
