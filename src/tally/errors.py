"""The root of Tally's domain errors, mapped once to HTTP problems and CLI messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FieldProblem:
    """One specific problem with one input field."""

    field: str
    message: str
    value: Any = None

    def as_dict(self) -> dict[str, Any]:
        """The problem as the `errors` entry of a problem response."""
        out: dict[str, Any] = {"field": self.field, "message": self.message}
        if self.value is not None:
            out["value"] = self.value
        return out


@dataclass
class DomainError(Exception):
    """A refused action, with what a merchant or API client needs to fix it."""

    detail: str
    errors: list[FieldProblem] = field(default_factory=list)
    status_code = 400
    title = "Bad request"

    def __str__(self) -> str:
        return self.detail


class NotFound(DomainError):
    """The named thing does not exist (or belongs to another merchant)."""

    status_code = 404
    title = "Not found"


class Conflict(DomainError):
    """The action conflicts with the current state."""

    status_code = 409
    title = "Conflict"


class PreconditionFailed(DomainError):
    """The client changed a version it read, but the version has moved on since (If-Match)."""

    status_code = 412
    title = "Precondition failed"


class TooLarge(DomainError):
    """An upload over the size limit."""

    status_code = 413
    title = "Content too large"


class ValidationFailed(DomainError):
    """Input that is well-formed but not acceptable."""

    status_code = 422
    title = "Validation failed"
