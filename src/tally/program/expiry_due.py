"""What the expiry job expires when it runs at a given moment: one definition for the job itself
and for the reports that forecast it (points liability: what expires in the next 30/60/90 days).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from tally.customers.orm import Customer
from tally.ledger.orm import LedgerEntry
from tally.program import expiry
from tally.program.settings import ExpiryMode, ExpiryPolicy


def expiry_runs_at(policy: ExpiryPolicy, now: datetime) -> bool:
    """Whether a run at `now` expires anything at all under this policy."""
    if policy.mode == ExpiryMode.OFF or policy.enabled_at is None:
        return False
    # Turning expiry on never expires anything retroactively: nothing before enabled_at + grace.
    return now >= policy.enabled_at + expiry.ENABLE_GRACE


def due_balances(merchant_id: int, days: int, now: datetime) -> Select[int, int, datetime | None]:
    """Rolling expiry: the customers whose whole balance a run at `now` expires."""
    return select(Customer.id, Customer.points_balance, Customer.last_activity_at).where(
        Customer.merchant_id == merchant_id,
        Customer.points_balance > 0,
        Customer.last_activity_at <= now - timedelta(days=days),
    )


def due_credits(merchant_id: int, now: datetime) -> Select[int, int, int | None]:
    """Per-grant expiry: the credits (id, customer, points left) a run at `now` expires."""
    return select(LedgerEntry.id, LedgerEntry.customer_id, LedgerEntry.remaining).where(
        LedgerEntry.merchant_id == merchant_id,
        LedgerEntry.remaining > 0,
        LedgerEntry.expires_at <= now,
    )


def points_due(session: Session, *, merchant_id: int, policy: ExpiryPolicy, at: datetime) -> int:
    """The points a run of the expiry job at `at` would expire, if nothing changed until then."""
    if not expiry_runs_at(policy, at):
        return 0
    if policy.mode == ExpiryMode.ROLLING:
        due = due_balances(merchant_id, policy.days, at).subquery()
        total = session.scalar(select(func.sum(due.c.points_balance)))
    else:
        credits = due_credits(merchant_id, at).subquery()
        total = session.scalar(select(func.sum(credits.c.remaining)))
    return int(total or 0)
