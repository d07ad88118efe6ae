"""When a customer's next points expire, as the customer pages and the API show it."""

from __future__ import annotations

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
    policy = program.settings.expiry
    if policy.mode == ExpiryMode.OFF or customer.points_balance <= 0:
        return PointsExpiry(None, 0)
    if policy.mode == ExpiryMode.ROLLING:
        last = customer.last_activity_at or customer.created_at
        at = expiry.rolling_expires_at(last, policy)
        return PointsExpiry(at, customer.points_balance if at else 0)
    soonest = session.execute(
        select(LedgerEntry.expires_at, func.sum(LedgerEntry.remaining))
        .where(
            LedgerEntry.customer_id == customer.id,
            LedgerEntry.remaining > 0,
            LedgerEntry.expires_at.is_not(None),
        )
        .group_by(LedgerEntry.expires_at)
        .order_by(LedgerEntry.expires_at)
        .limit(1)
    ).first()
    if soonest is None or soonest[0] is None:
        return PointsExpiry(None, 0)
    at = expiry.effective_expiry(soonest[0], policy.enabled_at)
    return PointsExpiry(at, int(soonest[1] or 0))
