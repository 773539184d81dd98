"""What the controller's domain (storage, placement, rollouts) raises; the HTTP layer maps each kind to a
status code (api.py), so repositories know nothing of HTTP and can be driven by a CLI or a loop as well.

Every error carries a message a user can act on and the details a client may key on (the field, the id).
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base: a request the domain refuses. ``details`` go to the answer next to the message."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(DomainError):
    """No such deployment, app, node or instance (404)."""


class Conflict(DomainError):
    """The request contradicts the current state: a name taken, a rollout in progress, a port in use (409)."""


class Invalid(DomainError):
    """A value the domain cannot accept, beyond its shape (400); ``field`` names it."""

    def __init__(self, field: str, message: str, **details: Any) -> None:
        super().__init__(f"{field}: {message}", field=field, **details)
        self.field = field


class Unavailable(DomainError):
    """The controller cannot do it now: no healthy node to place on, storage refused (503)."""
