"""Checks of the order rules that sums alone cannot see, for `tally ledger verify`.

Σ entries = balance holds even when concurrent refunds take an order's points back ten times
over, because every wrong entry still adds up. These are the rules such a bug breaks: an order
is never refunded beyond what was paid, and never loses more points than it earned.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, select, true
from sqlalchemy.orm import Session

from tally.ledger.orm import EntryKind, LedgerEntry
from tally.program.orm import Order, Refund


@dataclass(frozen=True)
class OrderViolation:
    """An order that breaks a money rule."""

    merchant_id: int
    order_id: str
    detail: str


def _of(column: Any, merchant_id: int | None) -> ColumnElement[bool]:
    return true() if merchant_id is None else column == merchant_id


def _order_totals(session: Session, merchant_id: int | None) -> Iterator[OrderViolation]:
    stmt = (
        select(
            Order.merchant_id,
            Order.order_id,
            Order.total,
            Order.refunded_amount,
            Order.points_awarded,
            Order.points_clawed_back,
        ).where(
            (Order.refunded_amount > Order.total)
            | (Order.points_clawed_back > Order.points_awarded)
        )
    ).where(_of(Order.merchant_id, merchant_id))
    for mid, order_id, total, refunded, awarded, clawed in session.execute(stmt):
        if refunded > total:
            yield OrderViolation(mid, order_id, f"refunded {refunded} of a {total} order")
        if clawed > awarded:
            yield OrderViolation(mid, order_id, f"{clawed} points clawed back of {awarded} awarded")


def _refund_rows(session: Session, merchant_id: int | None) -> Iterator[OrderViolation]:
    refunded = func.sum(Refund.amount)
    taken = func.sum(Refund.points_clawed_back)
    stmt = (
        select(
            Order.merchant_id, Order.order_id, Order.total, Order.points_awarded, refunded, taken
        )
        .join(Refund, Refund.order_pk == Order.id)
        .group_by(Order.id, Order.merchant_id, Order.order_id, Order.total, Order.points_awarded)
        .having((refunded > Order.total) | (taken > Order.points_awarded))
    ).where(_of(Order.merchant_id, merchant_id))
    for mid, order_id, total, awarded, amount, points in session.execute(stmt):
        yield OrderViolation(
            mid,
            order_id,
            f"its refunds add up to {amount} of a {total} order and take back {points} "
            f"of {awarded} points",
        )


def _ledger_by_order(session: Session, merchant_id: int | None) -> Iterator[OrderViolation]:
    # Earned and clawed-back entries of one order share its source_ref, whichever path wrote
    # them, so this holds even if the order row itself was wrong.
    earned = func.sum(LedgerEntry.points).filter(LedgerEntry.kind == EntryKind.EARN)
    taken = -func.sum(LedgerEntry.points).filter(LedgerEntry.kind == EntryKind.REFUND)
    stmt = (
        select(LedgerEntry.merchant_id, LedgerEntry.source_ref, earned, taken)
        .where(
            LedgerEntry.source_ref.like("order:%"),
            LedgerEntry.kind.in_([EntryKind.EARN, EntryKind.REFUND]),
        )
        .group_by(LedgerEntry.merchant_id, LedgerEntry.source_ref)
        .having(func.coalesce(taken, 0) > func.coalesce(earned, 0))
    ).where(_of(LedgerEntry.merchant_id, merchant_id))
    for mid, source_ref, earned_points, taken_points in session.execute(stmt):
        yield OrderViolation(
            mid,
            str(source_ref).removeprefix("order:"),
            f"its ledger entries take back {taken_points} points of {earned_points or 0} earned",
        )


def order_violations(session: Session, *, merchant_id: int | None = None) -> list[OrderViolation]:
    """Every order that was refunded beyond its total or lost more points than it earned."""
    return [
        *_order_totals(session, merchant_id),
        *_refund_rows(session, merchant_id),
        *_ledger_by_order(session, merchant_id),
    ]
