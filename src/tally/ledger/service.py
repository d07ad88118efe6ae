"""Single postings (a batch of one for `ledger.batch`), credit helpers, and reading the ledger."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from tally.audit import recorder as audit
from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.db.pages import page
from tally.errors import FieldProblem
from tally.ledger.batch import Outcome, Transfer, post_transfers
from tally.ledger.bounds import MAX_POINTS
from tally.ledger.errors import InsufficientPoints, InvalidPoints
from tally.ledger.orm import EntryKind, LedgerEntry

CREDIT_BATCH = 20
CREDIT_KINDS = {EntryKind.EARN, EntryKind.IMPORT, EntryKind.ADJUST, EntryKind.REFUND}


@dataclass(frozen=True)
class Posting:
    """The entry a call wrote, or found already written under the same key."""

    entry: LedgerEntry
    replayed: bool


def post(
    session: Session,
    *,
    customer: Customer,
    points: int,
    kind: EntryKind,
    idempotency_key: str,
    reason: str = "",
    source_ref: str | None = None,
    rule_id: str | None = None,
    rule_version: int | None = None,
    expires_at: datetime | None = None,
    details: dict[str, Any] | None = None,
    created_at: datetime | None = None,
) -> Posting:
    """Write one entry of `points` (positive credits, negative debits) exactly once per key."""
    now = created_at or utcnow()
    result = post_transfers(
        session,
        merchant_id=customer.merchant_id,
        transfers=[
            Transfer(
                customer_id=customer.id,
                points=points,
                kind=kind,
                idempotency_key=idempotency_key,
                reason=reason,
                source_ref=source_ref,
                rule_id=rule_id,
                rule_version=rule_version,
                expires_at=expires_at,
                details=details,
                created_at=now,
            )
        ],
        now=now,
    ).results[0]
    if result.outcome == Outcome.INSUFFICIENT:
        balance = session.scalar(select(Customer.points_balance).where(Customer.id == customer.id))
        raise InsufficientPoints(balance=int(balance or 0), requested=-points)
    assert result.entry_id is not None
    entry = session.get_one(LedgerEntry, result.entry_id)
    return Posting(entry, replayed=result.outcome == Outcome.REPLAYED)


def _open_credits_query(customer_id: int) -> Select[LedgerEntry]:
    return (
        select(LedgerEntry)
        .where(LedgerEntry.customer_id == customer_id, LedgerEntry.remaining > 0)
        .order_by(LedgerEntry.expires_at.is_(None), LedgerEntry.expires_at, LedgerEntry.id)
    )


def open_credits(session: Session, customer_id: int) -> Iterator[LedgerEntry]:
    """Credits with points left, soonest-expiring first, never-expiring last, then oldest."""
    yield from session.scalars(_open_credits_query(customer_id))


def _require_positive(points: int, message: str) -> None:
    # Credits and debits take a magnitude; the sign comes from which one is called.
    if points <= 0:
        raise InvalidPoints(message, [FieldProblem("points", "must be > 0", points)])


def credit(
    session: Session, *, customer: Customer, points: int, kind: EntryKind, **kwargs: Any
) -> Posting:
    """Add points (must be positive)."""
    _require_positive(points, "a credit must be positive")
    return post(session, customer=customer, points=points, kind=kind, **kwargs)


def debit(
    session: Session, *, customer: Customer, points: int, kind: EntryKind, **kwargs: Any
) -> Posting:
    """Take points away (a positive amount); refuses to go below zero."""
    _require_positive(points, "a debit amount must be positive")
    return post(session, customer=customer, points=-points, kind=kind, **kwargs)


def adjust(
    session: Session,
    *,
    customer: Customer,
    points: int,
    reason: str,
    idempotency_key: str,
    source_ref: str | None = None,
) -> Posting:
    """A manual correction by the merchant, positive or negative, with a mandatory reason.

    The adjustment is one audit event (amount, reason, balance before and after); a replay of
    the same key changes nothing and records nothing.
    """
    if not reason.strip():
        raise InvalidPoints(
            "a manual adjustment needs a reason",
            [FieldProblem("reason", "must not be empty", reason)],
        )
    balance_before = customer.points_balance
    posting = post(
        session,
        customer=customer,
        points=points,
        kind=EntryKind.ADJUST,
        idempotency_key=idempotency_key,
        reason=reason.strip(),
        source_ref=source_ref,
    )
    if not posting.replayed:
        audit.record(
            session,
            merchant_id=customer.merchant_id,
            action="points.adjusted",
            target_type="customer",
            target_id=customer.id,
            before={"points_balance": balance_before},
            after={
                "points_balance": customer.points_balance,
                "points": posting.entry.points,
                "reason": posting.entry.reason,
                "ledger_entry": posting.entry.id,
            },
        )
    return posting


@dataclass(frozen=True)
class BalanceMismatch:
    """A customer whose cached balance differs from the sum of its entries."""

    merchant_id: int
    customer_id: int
    email: str
    cached: int
    computed: int


@dataclass(frozen=True)
class CorruptCustomer:
    """A customer whose stored points cannot be checked by summing (out of every bound)."""

    merchant_id: int
    customer_id: int
    email: str
    detail: str


# No sequence of bounded movements gets near this; a balance beyond it was written by something
# that bypassed the bound (or overflowed SQLite's integers, which then stores a REAL).
CORRUPT_BALANCE = MAX_POINTS * 1_000_000


def _out_of_bounds_entries(merchant_id: int | None) -> Select[Any]:
    stmt = select(LedgerEntry.customer_id).where(func.abs(LedgerEntry.points) > MAX_POINTS)
    if merchant_id is not None:
        stmt = stmt.where(LedgerEntry.merchant_id == merchant_id)
    return stmt


def find_corrupt_customers(
    session: Session, *, merchant_id: int | None = None
) -> Iterator[CorruptCustomer]:
    """Customers with an entry beyond the points bound or a balance that no entries explain."""
    balance = Customer.points_balance
    broken = or_(
        func.abs(balance) > CORRUPT_BALANCE,
        Customer.id.in_(_out_of_bounds_entries(merchant_id)),
    )
    if session.get_bind().dialect.name == "sqlite":
        broken = or_(broken, func.typeof(balance) != "integer")
    stmt = select(Customer.merchant_id, Customer.id, Customer.email, balance).where(broken)
    if merchant_id is not None:
        stmt = stmt.where(Customer.merchant_id == merchant_id)
    for mid, cid, email, cached in session.execute(stmt.order_by(Customer.id)):
        yield CorruptCustomer(
            mid,
            cid,
            email,
            f"balance {cached!r} or one of its entries is beyond the bound of "
            f"{MAX_POINTS:,} points per movement",
        )


def verify_balances(
    session: Session, *, merchant_id: int | None = None
) -> Iterator[BalanceMismatch]:
    """Recompute every balance from the entries and yield each customer where they disagree.

    Customers that `find_corrupt_customers` reports are left out: summing their entries may
    overflow, and that must not stop every other customer from being checked.
    """
    corrupt = {c.customer_id for c in find_corrupt_customers(session, merchant_id=merchant_id)}
    sums = (
        select(LedgerEntry.customer_id, func.coalesce(func.sum(LedgerEntry.points), 0).label("s"))
        .where(LedgerEntry.customer_id.not_in(_out_of_bounds_entries(merchant_id)))
        .group_by(LedgerEntry.customer_id)
        .subquery()
    )
    stmt = select(
        Customer.merchant_id,
        Customer.id,
        Customer.email,
        Customer.points_balance,
        func.coalesce(sums.c.s, 0),
    ).outerjoin(sums, sums.c.customer_id == Customer.id)
    if merchant_id is not None:
        stmt = stmt.where(Customer.merchant_id == merchant_id)
    stmt = stmt.where(Customer.points_balance != func.coalesce(sums.c.s, 0))
    for mid, cid, email, cached, computed in session.execute(stmt.order_by(Customer.id)):
        if cid not in corrupt:
            yield BalanceMismatch(mid, cid, email, int(cached), int(computed))


def list_entries(
    session: Session, *, customer_id: int, limit: int = 50, offset: int = 0
) -> tuple[list[LedgerEntry], int]:
    """A page of a customer's entries, newest first, and the total count."""
    entries = select(LedgerEntry).where(LedgerEntry.customer_id == customer_id)
    return page(session, entries, order_by=LedgerEntry.id.desc(), limit=limit, offset=offset)
