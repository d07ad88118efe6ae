"""Reverting an import: every point it credited taken back, all or nothing; its orders deleted.

Revert writes a reversing entry for every credit the import made (import entries and create-
account points; the points of the imported orders), or refuses, naming every customer whose
balance is now lower than what is to be taken back (the points were spent). A failed import
(stopped part way) can be reverted too: what it applied is taken back. Customers the import
created stay, and the VIP tiers it kept go back to what the customers had before
(``imports/kept_tiers.py``). The orders of a reverted orders import are deleted (refused if a
refund was recorded for one since) and their customers' VIP tiers recomputed, so the corrected
file can be imported again; tier entry rewards are taken back with the orders' points but, given
once per tier ever, are not given again by a re-import.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from tally.audit.actor import Actor
from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.db.bulk import chunks
from tally.db.engine import unit_of_work
from tally.errors import FieldProblem
from tally.imports.errors import RevertRefused
from tally.imports.events import announce, job_source_ref
from tally.imports.job_record import get_import
from tally.imports.kept_tiers import undo_kept_tiers
from tally.imports.orm import ImportJob, ImportKind, ImportStatus
from tally.imports.rejected import MAX_REPORTED_ERRORS
from tally.ledger.batch import Transfer, post_transfers
from tally.ledger.orm import EntryKind, LedgerEntry
from tally.program import service as program_service
from tally.program.orm import Order, Refund


@dataclass
class _Credit:
    id: int
    customer_id: int
    points: int
    kind: str
    remaining: int | None


def _job_entries(session: Session, job: ImportJob) -> list[_Credit]:
    """What the import credited: the entries it wrote are marked with the job."""
    stmt = select(
        LedgerEntry.id,
        LedgerEntry.customer_id,
        LedgerEntry.points,
        LedgerEntry.kind,
        LedgerEntry.remaining,
    ).where(
        LedgerEntry.merchant_id == job.merchant_id,
        LedgerEntry.source_ref == job_source_ref(job.id),
    )
    return [_Credit(*row) for row in session.execute(stmt.order_by(LedgerEntry.id))]


def _refunded_since(session: Session, job: ImportJob) -> list[str]:
    """Order ids of the import's orders that had a refund recorded after the import."""
    return list(
        session.scalars(
            select(Order.order_id)
            .join(Refund, Refund.order_pk == Order.id)
            .where(Order.merchant_id == job.merchant_id, Order.import_id == job.id)
            .distinct()
            .order_by(Order.order_id)
            .limit(MAX_REPORTED_ERRORS)
        )
    )


def _remove_orders(session: Session, job: ImportJob, now: datetime) -> None:
    """Delete a reverted import's orders and move their customers' tiers back.

    The orders go (rather than stay, marked) so that they stop counting toward VIP tiers and
    the corrected file can be imported again.
    """
    customer_ids = list(
        session.scalars(
            select(Order.customer_id)
            .where(Order.merchant_id == job.merchant_id, Order.import_id == job.id)
            .distinct()
        )
    )
    session.execute(
        delete(Order)
        .where(Order.merchant_id == job.merchant_id, Order.import_id == job.id)
        .execution_options(synchronize_session=False)
    )
    program = program_service.load(session, job.merchant_id)
    if not program.settings.vip.enabled:
        return
    for part in chunks(customer_ids):
        for customer in session.scalars(select(Customer).where(Customer.id.in_(part))):
            program_service.recompute_tier(session, program, customer, now=now)


def revert_import(
    factory: sessionmaker[Session], *, merchant_id: int, job_id: int, actor: Actor | None = None
) -> ImportJob:
    """Take back every point a completed (or part-applied, failed) import credited, all or nothing.

    ``actor`` records the revert in the audit log (one event: the job's status).

    Refuses (``RevertRefused``, naming each customer) when a customer's balance is now lower
    than what the import credited them: those points were spent.
    """
    now = utcnow()
    with unit_of_work(factory, merchant_id=merchant_id, actor=actor) as session:
        job = get_import(session, merchant_id=merchant_id, job_id=job_id)
        if job.status == ImportStatus.REVERTED:
            raise RevertRefused(f"import {job.id} was already reverted")
        if job.status not in (ImportStatus.COMPLETED, ImportStatus.FAILED):
            raise RevertRefused(
                f"import {job.id} is {job.status}: only a completed import, or one that stopped "
                "part way (failed), can be reverted"
            )
        if job.kind == ImportKind.ORDERS and (refunded := _refunded_since(session, job)):
            raise RevertRefused(
                f"import {job.id} cannot be reverted: refunds were recorded for some of its "
                "orders since it ran, and reverting would delete those orders; nothing was "
                f"changed (orders: {', '.join(refunded)})"
            )
        credits = _job_entries(session, job)
        per_customer: dict[int, int] = defaultdict(int)
        for credit in credits:
            per_customer[credit.customer_id] += credit.points
        balances = _lock_balances(session, list(per_customer))
        short = [
            (customer_id, amount)
            for customer_id, amount in per_customer.items()
            if amount > balances.get(customer_id, (0, ""))[0]
        ]
        if short:
            listed = (
                ""
                if len(short) <= MAX_REPORTED_ERRORS
                else f" (the first {MAX_REPORTED_ERRORS} are listed)"
            )
            raise RevertRefused(
                f"import {job.id} cannot be reverted: "
                + (
                    "1 customer has already spent points it credited (the balance is"
                    if len(short) == 1
                    else f"{len(short)} customers have already spent points it credited (their "
                    "balance is"
                )
                + " lower than what it would take back); "
                f"nothing was changed{listed}",
                [
                    FieldProblem(
                        balances[customer_id][1],
                        f"balance {balances[customer_id][0]} is lower than the {amount} "
                        "points to take back",
                        balances[customer_id][0],
                    )
                    for customer_id, amount in short[:MAX_REPORTED_ERRORS]
                ],
            )
        _write_reversals(session, job, credits, per_customer, now)
        if job.kind == ImportKind.ORDERS:
            _remove_orders(session, job, now)
        else:
            undo_kept_tiers(session, job, now)
        job.status = ImportStatus.REVERTED
        job.reverted_at = now
        session.flush()
        return job


def _lock_balances(session: Session, ids: Sequence[int]) -> dict[int, tuple[int, str]]:
    """Balance and email of each customer, locked until the end of the transaction."""
    found: dict[int, tuple[int, str]] = {}
    postgres = session.get_bind().dialect.name == "postgresql"
    for part in chunks(list(ids)):
        stmt = select(Customer.id, Customer.points_balance, Customer.email).where(
            Customer.id.in_(part)
        )
        if postgres:
            stmt = stmt.with_for_update()
        for customer_id, balance, email in session.execute(stmt):
            found[customer_id] = (int(balance), email)
    return found


def _write_reversals(
    session: Session,
    job: ImportJob,
    credits: Sequence[_Credit],
    per_customer: dict[int, int],
    now: datetime,
) -> None:
    program = program_service.load(session, job.merchant_id)
    expires_at = program_service.credit_expiry(program, now)
    # Each reversal draws first on the credit it reverses; what was already spent from that
    # credit comes out of the customer's other credits, soonest-expiring first (as a spend).
    post_transfers(
        session,
        merchant_id=job.merchant_id,
        now=now,
        announce=False,
        transfers=[
            Transfer(
                customer_id=credit.customer_id,
                points=-credit.points,
                kind=EntryKind.IMPORT if credit.kind == EntryKind.IMPORT else EntryKind.ADJUST,
                reason=f"Import {job.id} reverted",
                idempotency_key=f"import-revert:{job.id}:{credit.id}",
                source_ref=f"import-revert:{job.id}",
                expires_at=expires_at,
                draws_on=credit.id if credit.points > 0 else None,
            )
            for credit in credits
        ],
    )
    announce(
        session, job.merchant_id, job.id, {cid for cid, amount in per_customer.items() if amount}
    )
