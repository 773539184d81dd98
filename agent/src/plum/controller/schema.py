"""A small declarative model of JSON bodies: each node checks a request value and describes itself as
OpenAPI 3.1 (JSON Schema), so the validators and the document cannot drift apart.

``check(value, field)`` returns the value as the handler uses it (defaults filled in, labels sorted) or
raises the 400 that names the field path and the value (validation.py's messages). ``describe()`` is the
OpenAPI schema. A named ``Obj`` is a component (``$ref``); ``Custom`` documents a shape and checks it with
one of the agent's own parsers, so the controller accepts what the agent runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from plum.common.httpserver import HTTPError
from plum.controller import validation as v

COMPONENTS = "#/components/schemas/"


@dataclass(frozen=True, kw_only=True)
class Schema:
    description: str = ""
    example: Any = None
    nullable: bool = False  # a response value that may be null
    default: Any = None  # filled in by Obj.check when the key is absent

    def check(self, value: Any, field: str) -> Any:
        raise NotImplementedError(f"{type(self).__name__} describes answers only")

    def shape(self) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        out = self.shape()
        if self.nullable:
            out = {"anyOf": [out, {"type": "null"}]} if "$ref" in out or "type" not in out else _or_null(out)
        for key, value in (("description", self.description), ("example", self.example)):
            if value:
                out[key] = value
        if self.default is not None:
            out["default"] = self.default
        return out

    def absent(self, value: Any) -> bool:
        """Values treated as not sent: null, and an empty string where a string is expected."""
        return value is None


def _or_null(out: dict[str, Any]) -> dict[str, Any]:
    return {**out, "type": [out["type"], "null"]}


@dataclass(frozen=True, kw_only=True)
class Str(Schema):
    max_length: int = 4096
    pattern: str = ""
    what: str = ""  # how a bad value is explained: "an instance id"
    enum: tuple[str, ...] = ()
    format: str = ""
    nonempty: bool = False  # "   " refused
    keep_empty: bool = False  # "" is a value (clears a version), not an absent key

    def check(self, value: Any, field: str) -> str:
        if self.enum:
            return v.one_of(value, field, self.enum)
        pattern = re.compile(self.pattern) if self.pattern else None
        return v.text(value, field, required=self.nonempty, pattern=pattern, what=self.what, max_length=self.max_length)

    def shape(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if self.enum:
            out["enum"] = list(self.enum)
            return out
        out["maxLength"] = self.max_length
        if self.nonempty:
            out["minLength"] = 1
        if self.pattern:
            out["pattern"] = f"^(?:{self.pattern})$"
        if self.format:
            out["format"] = self.format
        return out

    def absent(self, value: Any) -> bool:
        return value is None or (value == "" and not self.keep_empty)


@dataclass(frozen=True, kw_only=True)
class Int(Schema):
    minimum: int = -(2**63)
    maximum: int = 2**63 - 1

    def check(self, value: Any, field: str) -> int:
        return v.whole(value, field, minimum=self.minimum, maximum=self.maximum)

    def shape(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer"}
        if self.minimum > -(2**63):
            out["minimum"] = self.minimum
        if self.maximum < 2**63 - 1:
            out["maximum"] = self.maximum
        return out


@dataclass(frozen=True, kw_only=True)
class Num(Schema):
    minimum: Optional[float] = None
    maximum: Optional[float] = None

    def check(self, value: Any, field: str) -> float:
        low = -float("inf") if self.minimum is None else self.minimum
        high = float("inf") if self.maximum is None else self.maximum
        return v.real(value, field, minimum=low, maximum=high)

    def shape(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "number"}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


@dataclass(frozen=True, kw_only=True)
class Bool(Schema):
    def check(self, value: Any, field: str) -> bool:
        return v.flag(value, field)

    def shape(self) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True, kw_only=True)
class Array(Schema):
    items: Schema
    max_items: Optional[int] = None
    min_items: int = 0
    what: str = ""  # the items, for the error: "endpoints"

    def check(self, value: Any, field: str) -> list[Any]:
        bounds = f"at most {self.max_items} " if self.max_items is not None else ""
        if (
            not isinstance(value, list)
            or len(value) < self.min_items
            or (self.max_items is not None and len(value) > self.max_items)
        ):
            raise v.bad(field, f"expected a list of {bounds}{self.what or 'items'}, got {v.show(value)}")
        return [self.items.check(item, f"{field}[{i}]") for i, item in enumerate(value)]

    def shape(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array", "items": self.items.describe()}
        if self.max_items is not None:
            out["maxItems"] = self.max_items
        if self.min_items:
            out["minItems"] = self.min_items
        return out


@dataclass(frozen=True, kw_only=True)
class Map(Schema):
    """An object of free keys (labels, env, replicas per node), described by its values."""

    values: Schema
    key_pattern: str = ""
    max_entries: Optional[int] = None

    def shape(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object", "additionalProperties": self.values.describe()}
        if self.key_pattern:
            out["propertyNames"] = {"pattern": f"^(?:{self.key_pattern})$"}
        if self.max_entries is not None:
            out["maxProperties"] = self.max_entries
        return out


@dataclass(frozen=True, kw_only=True)
class Obj(Schema):
    """An object of known keys. ``extra``: unknown keys are ignored (agent bodies, so that agents of other
    versions keep working) instead of refused (operator bodies: a typo is an error)."""

    props: Mapping[str, Schema]
    required: tuple[str, ...] = ()
    extra: bool = False
    name: str = ""  # a component of the document, referenced by $ref

    def __post_init__(self) -> None:
        unknown = set(self.required) - set(self.props)
        assert not unknown, f"{self.name}: required keys without a schema: {unknown}"

    def check(self, value: Any, field: str = "") -> dict[str, Any]:
        data = v.obj(value, field)
        if not self.extra:
            v.no_unknown(data, self.props, field)
        out: dict[str, Any] = {}
        for key, schema in self.props.items():
            path = v.join(field, key)
            item = data.get(key)
            if item is None or (key not in self.required and schema.absent(item)):
                if key in self.required:
                    raise v.bad(path, "is required")
                if schema.default is not None:
                    out[key] = schema.default
                continue
            out[key] = schema.check(item, path)
        return out

    def shape(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object", "properties": {k: s.describe() for k, s in self.props.items()}}
        if self.required:
            out["required"] = list(self.required)
        if not self.extra:
            out["additionalProperties"] = False
        return out

    def describe(self) -> dict[str, Any]:
        return ref(self.name) if self.name else super().describe()

    def component(self) -> dict[str, Any]:
        return super().describe()


@dataclass(frozen=True, kw_only=True)
class OneOf(Schema):
    options: tuple[Schema, ...]

    def check(self, value: Any, field: str) -> Any:
        first: Optional[HTTPError] = None
        for option in self.options:
            try:
                return option.check(value, field)
            except HTTPError as exc:  # the first option's complaint is the one shown
                first = first or exc
        assert first is not None, "OneOf without options"
        raise first

    def shape(self) -> dict[str, Any]:
        return {"oneOf": [o.describe() for o in self.options]}


@dataclass(frozen=True, kw_only=True)
class Custom(Schema):
    """A shape checked by a parser of its own (the agent's port, memory or env rules)."""

    like: Schema
    parse: Callable[[Any, str], Any] = field(compare=False)
    empty_is_absent: bool = False

    def check(self, value: Any, field: str) -> Any:
        return self.parse(value, field)

    def shape(self) -> dict[str, Any]:
        return self.like.describe()

    def absent(self, value: Any) -> bool:
        return value is None or (self.empty_is_absent and value == "")


@dataclass(frozen=True, kw_only=True)
class Raw(Schema):
    """A body that is no JSON (text, an event stream, a zip, a form): only its media type is described."""

    media: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})

    def shape(self) -> dict[str, Any]:
        return dict(self.schema)


def ref(name: str) -> dict[str, Any]:
    return {"$ref": COMPONENTS + name}


def components(*roots: Schema) -> dict[str, dict[str, Any]]:
    """Every named Obj reachable from ``roots``, by name; two different ones with one name is a bug."""
    found: dict[str, Obj] = {}

    def walk(node: Schema) -> None:
        if isinstance(node, Obj) and node.name:
            seen = found.get(node.name)
            assert seen is None or seen is node or seen == node, f"two schemas named {node.name}"
            if seen is not None:
                return
            found[node.name] = node
        children: list[Schema] = []
        if isinstance(node, Obj):
            children = list(node.props.values())
        elif isinstance(node, Array):
            children = [node.items]
        elif isinstance(node, Map):
            children = [node.values]
        elif isinstance(node, OneOf):
            children = list(node.options)
        elif isinstance(node, Custom):
            children = [node.like]
        for child in children:
            walk(child)

    for root in roots:
        walk(root)
    return {name: found[name].component() for name in sorted(found)}
