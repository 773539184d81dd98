"""The HTTP layer answers each kind of domain error with its status and the same JSON shape as before."""

from __future__ import annotations

import pytest

from plum.controller.api import domain_errors
from plum.controller.errors import Conflict, DomainError, Invalid, NotFound, Unavailable


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (
            NotFound("no such app: x", field="id"),
            404,
            {"error": "no such app: x", "field": "id"},
        ),
        (
            Conflict("name taken", field="name", deploymentId="d1"),
            409,
            {"error": "name taken", "field": "name", "deploymentId": "d1"},
        ),
        (
            Invalid("replicas.n1", "unknown node"),
            400,
            {"error": "replicas.n1: unknown node", "field": "replicas.n1"},
        ),
        (Unavailable("no healthy node"), 503, {"error": "no healthy node"}),
    ],
)
def test_each_domain_error_has_its_status_and_keeps_its_details(error: DomainError, status: int, body: dict) -> None:
    mapped = domain_errors(error)
    assert mapped is not None
    assert (mapped.status, mapped.body()) == (status, body)


def test_other_exceptions_are_left_to_the_next_mapper() -> None:
    assert domain_errors(ValueError("x")) is None
