"""The OpenAPI 3.1 document served at ``GET /v1/openapi.json`` and the API table of docs/controller.md,
both built from the route table: each route carries a ``Doc`` whose bodies are the schemas its handler
checks requests with (schema.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from plum import __version__
from plum.controller.schema import Raw, Schema, Str, components

JSON = "application/json"


@dataclass(frozen=True)
class Param:
    """A query parameter."""

    name: str
    required: bool = False
    description: str = ""
    schema: Schema = field(default_factory=Str)


@dataclass(frozen=True)
class Reply:
    description: str
    body: Optional[Schema] = None


@dataclass(frozen=True)
class Doc:
    summary: str
    replies: Mapping[int, Reply]
    body: Optional[Schema] = None
    query: tuple[Param, ...] = ()


class Route(Protocol):
    """What the document needs of a route (the controller's RouteSpec)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def access(self) -> str: ...
    @property
    def doc(self) -> Optional[Doc]: ...


ACCESS_ERRORS = {
    "operator": Reply("another token on an operator route", None),
    "agent": Reply("a node token acting for another node", None),
    "join": Reply("a node token on the join route", None),
}


def doc_of(route: Route, fallback: Mapping[str, Doc]) -> Doc:
    key = f"{route.method} {route.path}"
    found = route.doc or fallback.get(key)
    if found is None:
        raise KeyError(f"route {key} has no OpenAPI description")
    return found


def _content(body: Schema) -> dict[str, Any]:
    media = body.media if isinstance(body, Raw) else JSON
    return {media: {"schema": body.describe()}}


def _operation(route: Route, doc: Doc, error: Schema) -> dict[str, Any]:
    key = f"{route.method} {route.path}"
    op: dict[str, Any] = {"summary": doc.summary, "operationId": re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_")}
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"\{(\w+)\}", route.path)
    ]
    for p in doc.query:
        param = {"name": p.name, "in": "query", "required": p.required, "schema": p.schema.describe()}
        if p.description:
            param["description"] = p.description
        params.append(param)
    if params:
        op["parameters"] = params
    if doc.body is not None:
        op["requestBody"] = {"required": True, "content": _content(doc.body)}
    replies = dict(doc.replies)
    replies.setdefault(400, Reply("bad request: names the field and value", error))
    if route.access == "public":
        op["security"] = []
    else:
        replies.setdefault(401, Reply("missing or invalid bearer token", error))
        denied = ACCESS_ERRORS[route.access]
        replies.setdefault(403, Reply(denied.description, error))
        op["x-plum-access"] = route.access
    op["responses"] = {
        str(status): {"description": r.description, **({"content": _content(r.body)} if r.body else {})}
        for status, r in sorted(replies.items())
    }
    return op


def build_document(routes: Iterable[Route], error: Schema, fallback: Mapping[str, Doc]) -> dict[str, Any]:
    """``fallback``: the Doc of routes that do not carry one yet, by "METHOD path"."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: list[Schema] = [error]
    for route in routes:
        doc = doc_of(route, fallback)
        schemas += [r.body for r in doc.replies.values() if r.body is not None]
        schemas += [doc.body] if doc.body is not None else []
        schemas += [p.schema for p in doc.query]
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, doc, error)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "plum-controller",
            "version": __version__,
            "description": "Plum's deployment API with token auth. Errors are JSON {error, field}. "
            "Agent routes accept a node token (from POST /v1/nodes/{id}/join, for its own node only) or "
            "CONTROLLER_OPERATOR_TOKEN; the join route accepts the join token CONTROLLER_AGENT_TOKEN; the "
            "others only the operator token.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components(*schemas),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def api_table(routes: Iterable[Route], fallback: Mapping[str, Doc]) -> str:
    """The Markdown table of docs/controller.md: every route, its access level and summary."""
    lines = ["| Method | Path | Access | Summary |", "|---|---|---|---|"]
    for route in sorted(routes, key=lambda r: (r.path, r.method)):
        summary = doc_of(route, fallback).summary.replace("|", "\\|")
        lines.append(f"| {route.method} | `{route.path}` | {route.access} | {summary} |")
    return "\n".join(lines) + "\n"
