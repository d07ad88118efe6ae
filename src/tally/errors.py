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

    def __init_subclass__(
        cls, *, status_code: int | None = None, title: str | None = None, **kwargs: Any
    ) -> None:
        # A kind of refusal names its HTTP status and problem title in its class line.
        super().__init_subclass__(**kwargs)
        if status_code is not None:
            cls.status_code = status_code
        if title is not None:
            cls.title = title

    def __str__(self) -> str:
        return self.detail


class NotFound(DomainError, status_code=404, title="Not found"):
    """The named thing does not exist (or belongs to another merchant)."""


class Conflict(DomainError, status_code=409, title="Conflict"):
    """The action conflicts with the current state."""


class PreconditionFailed(DomainError, status_code=412, title="Precondition failed"):
    """The client changed a version it read, but the version has moved on since (If-Match)."""


class TooLarge(DomainError, status_code=413, title="Content too large"):
    """An upload over the size limit."""


class ValidationFailed(DomainError, status_code=422, title="Validation failed"):
    """Input that is well-formed but not acceptable."""
