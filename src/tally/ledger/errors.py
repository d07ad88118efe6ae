"""Ledger errors."""

from __future__ import annotations

from tally.errors import Conflict, FieldProblem, ValidationFailed


class InsufficientPoints(Conflict, title="Insufficient points"):
    """A debit larger than the customer's balance."""

    def __init__(self, *, balance: int, requested: int) -> None:
        super().__init__(
            f"the customer has {balance} points; {requested} cannot be taken",
            [FieldProblem("points", f"at most {balance} can be taken", requested)],
        )
        self.balance = balance
        self.requested = requested


class InvalidPoints(ValidationFailed):
    """A zero or wrongly signed amount."""


class IdempotencyKeyReused(Conflict):
    """The same idempotency key was used for a different movement."""

    title = "Idempotency key reused"
