"""One description of the API: the route table's schemas check requests, make the OpenAPI document and
the route table of docs/controller.md; each of those is checked against the others here."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from plum.common.config import Settings
from plum.common.httpserver import HTTPError
from plum.controller import api_schemas as s
from plum.controller.api import RouteSpec
from plum.controller.config import ControllerConfig, Tokens
from plum.controller.deployment_schemas import CREATE, DOCS
from plum.controller.openapi import api_table, build_document
from plum.controller.schema import Obj, Schema
from plum.controller.server import Controller, route_specs

DOCS_FILE = Path(__file__).parents[3] / "docs" / "controller.md"
TABLE_START = "<!-- routes: generated from the route table, checked by tests/unit/controller/test_openapi.py -->\n"
TABLE_END = "<!-- end of routes -->"


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RouteSpec]]:
    async def build() -> list[RouteSpec]:
        data = tmp_path_factory.mktemp("ctl")
        cfg = ControllerConfig.from_settings(
            Settings({"CONTROLLER_DATA_DIR": str(data), "CONTROLLER_ADDR": "127.0.0.1:0"})
        )
        controller = Controller(cfg, Tokens("a" * 20, "o" * 20))
        await controller.start()
        try:
            assert controller.ctx is not None
            return route_specs(controller.ctx, controller.metrics)
        finally:
            await controller.stop()

    yield asyncio.run(build())


@pytest.fixture(scope="module")
def document(specs: list[RouteSpec]) -> dict[str, Any]:
    return build_document(specs, s.ERROR, DOCS)


def test_every_route_is_in_the_document_with_its_access(specs: list[RouteSpec], document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    for spec in specs:
        op = document["paths"][spec.path][spec.method.lower()]
        assert op["summary"] and op["responses"], spec.path
        assert op.get("x-plum-access", "public") == spec.access
    assert document["paths"]["/healthz"]["get"]["security"] == []
    documented = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    assert documented == {(spec.path, spec.method) for spec in specs}


def test_deployment_docs_name_only_real_routes(specs: list[RouteSpec]) -> None:
    routes = {f"{spec.method} {spec.path}" for spec in specs}
    assert set(DOCS) <= routes
    assert {r for r in routes if "/v1/deployments" in r} == set(DOCS)


def test_every_schema_of_the_document_is_valid_json_schema(document: dict[str, Any]) -> None:
    for name, schema in document["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema), name
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', repr(document).replace("'", '"')))
    assert refs <= set(document["components"]["schemas"]), "every $ref resolves"


def test_the_api_table_of_the_docs_is_the_route_table(specs: list[RouteSpec]) -> None:
    text = DOCS_FILE.read_text()
    assert TABLE_START in text, f"docs/controller.md lost its route table marker {TABLE_START!r}"
    written = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    assert written == api_table(specs, DOCS), "regenerate it: print(api_table(route_specs(...), DOCS))"


# --- the validators and the document agree --------------------------------------------------------------


def accepted_by_document(document: dict[str, Any], schema: Schema, body: Any) -> bool:
    wrapper = {**schema.describe(), "components": document["components"]}
    try:
        jsonschema.validate(body, wrapper)
    except jsonschema.ValidationError:
        return False
    return True


def accepted_by_check(schema: Schema, body: Any) -> bool:
    try:
        schema.check(body, "")
    except HTTPError:
        return False
    return True


CASES: list[tuple[str, Obj | Schema, Any, bool]] = [
    ("heartbeat", s.HEARTBEAT, {"nodeId": "n1", "ip": "10.0.0.5", "labels": {"zone": "a"}}, True),
    ("heartbeat, newer agent field", s.HEARTBEAT, {"nodeId": "n1", "agentVersion": "9"}, True),
    ("heartbeat, bad node id", s.HEARTBEAT, {"nodeId": "no spaces"}, False),
    ("heartbeat, label not a string", s.HEARTBEAT, {"nodeId": "n1", "labels": {"zone": 1}}, False),
    ("status", s.INSTANCE_STATUS, {"instanceId": "i-1", "phase": "Running", "restarts": 2}, True),
    ("status, unknown phase", s.INSTANCE_STATUS, {"instanceId": "i-1", "phase": "Dancing"}, False),
    ("status, negative restarts", s.INSTANCE_STATUS, {"instanceId": "i-1", "phase": "Failed", "restarts": -1}, False),
    ("desired", s.DESIRED_PATCH, {"desired": "Stopped"}, True),
    ("desired, unknown key", s.DESIRED_PATCH, {"desired": "Stopped", "x": 1}, False),
    ("image app", s.IMAGE_APP, {"name": "web", "version": "1.0", "imageRepository": "nginx"}, True),
    (
        "image app, port",
        s.IMAGE_APP,
        {"name": "web", "version": "1", "imageRepository": "nginx", "portMappings": [{"container": 80}]},
        True,
    ),
    (
        "image app, bad port",
        s.IMAGE_APP,
        {"name": "w", "version": "1", "imageRepository": "n", "portMappings": [{}]},
        False,
    ),
    ("image app, typo", s.IMAGE_APP, {"name": "w", "version": "1", "imageRepository": "n", "imagetag": "x"}, False),
    (
        "register",
        s.SERVICE_REGISTER,
        {"instanceId": "i-1", "ip": "10.0.0.5", "endpoints": [{"serviceName": "web", "port": 80}]},
        True,
    ),
    (
        "register, port 0",
        s.SERVICE_REGISTER,
        {"instanceId": "i", "ip": "h", "endpoints": [{"serviceName": "w", "port": 0}]},
        False,
    ),
    (
        "service heartbeat",
        s.SERVICE_HEARTBEAT,
        {"instanceId": "i-1", "health": [{"serviceName": "w", "healthy": True}]},
        True,
    ),
    (
        "service heartbeat, no healthy",
        s.SERVICE_HEARTBEAT,
        {"instanceId": "i-1", "health": [{"serviceName": "w"}]},
        False,
    ),
    ("endpoint patch", s.ENDPOINT_PATCH, {"healthy": False, "version": "2", "port": 80}, True),
    ("legacy deployment", CREATE, {"name": "web", "replicas": {"n1": 2}, "artifactUrl": "/artifacts/a.zip"}, True),
    ("deployment entries", CREATE, {"name": "web", "entries": [{"replicas": {"n1": 1}, "ports": ["8080:80"]}]}, True),
    ("deployment, number in env", CREATE, {"name": "w", "replicas": {"n1": 1}, "env": {"WORKERS": 4}}, True),
    ("deployment, bad env name", CREATE, {"name": "w", "replicas": {"n1": 1}, "env": {"A-B": "1"}}, False),
    ("heartbeat, node id too long", s.HEARTBEAT, {"nodeId": "n" * 64}, False),
    ("deployment, no entries", CREATE, {"name": "web", "entries": []}, False),
    ("deployment, too many replicas", CREATE, {"name": "web", "replicas": {"n1": 1001}}, False),
]


@pytest.mark.parametrize(("case", "schema", "body", "ok"), CASES, ids=[c[0] for c in CASES])
def test_the_validator_and_the_document_accept_the_same_bodies(
    document: dict[str, Any], case: str, schema: Schema, body: Any, ok: bool
) -> None:
    assert accepted_by_check(schema, body) is ok
    assert accepted_by_document(document, schema, body) is ok


@pytest.mark.parametrize(
    ("schema", "body", "field", "message"),
    [
        (s.HEARTBEAT, [], "", "request body must be a JSON object, got list"),
        (s.HEARTBEAT, {}, "nodeId", "nodeId: is required"),
        (s.HEARTBEAT, {"nodeId": "a b"}, "nodeId", "nodeId: 'a b' is not a valid node id"),
        (s.HEARTBEAT, {"nodeId": "n1", "labels": {"zone": 7}}, "labels.zone", "labels.zone: label value must be"),
        (s.INSTANCE_STATUS, {"instanceId": "i", "phase": "Up"}, "phase", "phase: must be one of Downloading,"),
        (s.INSTANCE_STATUS, {"instanceId": " ", "phase": "Running"}, "instanceId", "instanceId: must not be empty"),
        (s.IMAGE_APP, {"name": "w", "version": "1", "imageRepository": "n", "tag": "x"}, "tag", "tag: unknown field"),
        (
            s.IMAGE_APP,
            {"name": "w", "version": "1", "imageRepository": "n", "portMappings": [{"container": 0}]},
            "portMappings[0].container",
            "portMappings[0].container: must be between 1 and 65535, got 0",
        ),
        (
            s.SERVICE_REGISTER,
            {"instanceId": "i", "ip": "h", "endpoints": "web"},
            "endpoints",
            "endpoints: expected a list of at most 256 endpoints, got 'web'",
        ),
    ],
)
def test_a_refused_body_names_the_field_path_and_the_value(schema: Obj, body: Any, field: str, message: str) -> None:
    with pytest.raises(HTTPError) as refused:
        schema.check(body)
    assert refused.value.status == 400
    assert refused.value.details["field"] == field
    assert refused.value.message.startswith(message)


def test_the_checked_body_has_the_defaults_of_the_model() -> None:
    app = s.IMAGE_APP.check({"name": "w", "version": "1", "imageRepository": "n", "portMappings": [{"container": 80}]})
    assert app == {
        "name": "w",
        "version": "1",
        "imageRepository": "n",
        "imageTag": "latest",
        "portMappings": [{"container": 80, "protocol": "tcp"}],
    }
    assert s.SERVICE_REGISTER.check({"instanceId": "i", "ip": "h", "nodeId": "", "endpoints": []})["nodeId"] == "manual"
