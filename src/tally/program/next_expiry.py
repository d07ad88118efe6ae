"""When a customer's next points expire, as the customer pages and the API show it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tally.customers.orm import Customer
from tally.ledger.orm import LedgerEntry
from tally.program import expiry
from tally.program.service import Program
from tally.program.settings import ExpiryMode


@dataclass(frozen=True)
class PointsExpiry:
    """The next points to expire and when."""

    expires_at: datetime | None
    points: int


def next_expiry(session: Session, program: Program, customer: Customer) -> PointsExpiry:
    """When the customer's next points expire, and how many."""
    return next_expiries(session, program, [customer])[customer.id]


def next_expiries(
    session: Session, program: Program, customers: Sequence[Customer]
) -> dict[int, PointsExpiry]:
    """`next_expiry` for a batch of customers, in one query (exports read thousands)."""
    policy = program.settings.expiry
    found = {customer.id: PointsExpiry(None, 0) for customer in customers}
    holders = [customer for customer in customers if customer.points_balance > 0]
    if policy.mode == ExpiryMode.OFF or not holders:
        return found
    if policy.mode == ExpiryMode.ROLLING:
        for customer in holders:
            last = customer.last_activity_at or customer.created_at
            at = expiry.rolling_expires_at(last, policy)
            found[customer.id] = PointsExpiry(at, customer.points_balance if at else 0)
        return found
    open_credits = (
        LedgerEntry.customer_id.in_([customer.id for customer in holders]),
        LedgerEntry.remaining > 0,
        LedgerEntry.expires_at.is_not(None),
    )
    soonest = (
        select(LedgerEntry.customer_id, func.min(LedgerEntry.expires_at).label("at"))
        .where(*open_credits)
        .group_by(LedgerEntry.customer_id)
        .subquery()
    )
    rows = session.execute(
        select(LedgerEntry.customer_id, LedgerEntry.expires_at, func.sum(LedgerEntry.remaining))
        .join(
            soonest,
            (soonest.c.customer_id == LedgerEntry.customer_id)
            & (soonest.c.at == LedgerEntry.expires_at),
        )
        .where(*open_credits)
        .group_by(LedgerEntry.customer_id, LedgerEntry.expires_at)
    )
    for customer_id, expires_at, points in rows:
        if expires_at is None:  # pragma: no cover - the query leaves out credits without one
            continue
        at = expiry.effective_expiry(expires_at, policy.enabled_at)
        found[customer_id] = PointsExpiry(at, int(points or 0))
    return found
