"""``dotdigital_pending_contacts``: customers marked for the automatic sync.

A row's ``version`` moves on with every mark, so a send removes the row only if nobody marked
the customer again while it was under way; a row carried by a bulk import remembers the
version that travelled in ``sending_version``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, and_, bindparam, delete, exists, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.integrations.dotdigital.client import IMPORT_STATUS_NOT_FINISHED
from tally.integrations.dotdigital.contact_values import CUSTOMER_COLUMNS, CustomerRow
from tally.integrations.dotdigital.orm import (
    DotdigitalConnection,
    ImportKind,
    PendingContact,
    SyncImport,
)
from tally.integrations.dotdigital.statements import execute

# --------------------------------------------------------------------------- marking


def mark_dirty(
    session: Session, *, merchant_id: int, customer_id: int, now: datetime | None = None
) -> None:
    """Note that a customer needs sending (``mark_dirty_many`` for one customer)."""
    mark_dirty_many(session, merchant_id=merchant_id, customer_ids=[customer_id], now=now)


def mark_dirty_many(
    session: Session,
    *,
    merchant_id: int,
    customer_ids: Sequence[int],
    now: datetime | None = None,
    chunk: int = 2000,
) -> None:
    """Note that customers need sending; many marks before a send make one row each (an upsert).

    A row already backing off after failures keeps its schedule; its version moves on, so the
    next send carries the newest values and a send already under way will not remove it. Ids of
    customers deleted since (or of another merchant) are skipped.
    """
    now = now or utcnow()
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    ids = sorted(set(customer_ids))
    stamp = literal(now, PendingContact.first_marked_at.type)
    for start in range(0, len(ids), chunk):
        present = (
            select(
                Customer.merchant_id,
                Customer.id,
                literal(1),
                stamp,
                stamp,
                literal(0),
                stamp,
            )
            .where(Customer.merchant_id == merchant_id, Customer.id.in_(ids[start : start + chunk]))
            .order_by(Customer.id)
        )
        stmt = insert(PendingContact).from_select(
            [
                "merchant_id",
                "customer_id",
                "version",
                "first_marked_at",
                "last_marked_at",
                "attempts",
                "next_attempt_at",
            ],
            present,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["merchant_id", "customer_id"],
            set_={"version": PendingContact.version + 1, "last_marked_at": now},
        )
        session.execute(stmt)


# --------------------------------------------------------------------------- reading


class PendingRow(NamedTuple):
    """A marked customer with its current values."""

    pending_id: int
    version: int
    attempts: int
    customer: CustomerRow


def _due(now: datetime) -> Any:
    return and_(PendingContact.import_pk.is_(None), PendingContact.next_attempt_at <= now)


def due_merchants(session: Session, now: datetime) -> list[int]:
    """Merchants with syncing on, not paused, and something to send or to poll."""
    pending = exists().where(
        PendingContact.merchant_id == DotdigitalConnection.merchant_id, _due(now)
    )
    imports = exists().where(
        SyncImport.merchant_id == DotdigitalConnection.merchant_id,
        SyncImport.kind == ImportKind.AUTO,
        # Imports running, or starts in doubt (bulk_imports' Starting and Unanswered).
        SyncImport.status.in_((IMPORT_STATUS_NOT_FINISHED, "Starting", "Unanswered")),
    )
    stmt = (
        select(DotdigitalConnection.merchant_id)
        .where(
            DotdigitalConnection.enabled.is_(True),
            or_(
                DotdigitalConnection.paused_until.is_(None),
                DotdigitalConnection.paused_until <= now,
            ),
            or_(pending, imports),
        )
        .order_by(DotdigitalConnection.merchant_id)
    )
    return list(session.scalars(stmt))


def load_due(session: Session, merchant_id: int, now: datetime, limit: int) -> list[PendingRow]:
    """The merchant's rows due for sending, longest waiting first, with current values."""
    stmt = (
        select(
            PendingContact.id,
            PendingContact.version,
            PendingContact.attempts,
            *CUSTOMER_COLUMNS,
        )
        .join(Customer, Customer.id == PendingContact.customer_id)
        .where(PendingContact.merchant_id == merchant_id, _due(now))
        .order_by(PendingContact.next_attempt_at, PendingContact.id)
        .limit(limit)
    )
    return [
        PendingRow(row[0], row[1], row[2], CustomerRow._make(row[3:]))
        for row in session.execute(stmt)
    ]


def count_due(session: Session, merchant_id: int, now: datetime, cap: int) -> int:
    """How many rows are due, counting no further than ``cap``."""
    inner = (
        select(PendingContact.id)
        .where(PendingContact.merchant_id == merchant_id, _due(now))
        .limit(cap)
        .subquery()
    )
    return int(session.scalar(select(func.count()).select_from(inner)) or 0)


def import_members(session: Session, import_pk: int) -> list[tuple[int, str]]:
    """(customer id, email) of the rows an import carries."""
    return [
        (customer_id, email)
        for customer_id, email in session.execute(
            select(PendingContact.customer_id, Customer.email)
            .join(Customer, Customer.id == PendingContact.customer_id)
            .where(PendingContact.import_pk == import_pk)
        )
    ]


# --------------------------------------------------------------------------- after a send


def reschedule(session: Session, row: PendingRow, *, at: datetime, reason: str) -> None:
    """Try the row again at ``at`` (one more failed attempt)."""
    execute(
        session,
        update(PendingContact)
        .where(PendingContact.id == row.pending_id)
        .values(attempts=row.attempts + 1, next_attempt_at=at, last_error=reason),
    )


def postpone(session: Session, rows: Sequence[PendingRow], *, at: datetime) -> None:
    """Leave rows for later (not a failed attempt): they are loaded again from ``at``."""
    ids = [row.pending_id for row in rows]
    for start in range(0, len(ids), 500):
        execute(
            session,
            update(PendingContact)
            .where(PendingContact.id.in_(ids[start : start + 500]))
            .values(next_attempt_at=at),
        )


def remove_sent(session: Session, row: PendingRow) -> None:
    """Remove a row that was sent, unless it was marked again meanwhile."""
    removed = execute(
        session,
        delete(PendingContact).where(
            PendingContact.id == row.pending_id, PendingContact.version == row.version
        ),
    )
    if not removed:
        # Changed again while we were sending: send the newer values next time.
        execute(
            session,
            update(PendingContact)
            .where(PendingContact.id == row.pending_id)
            .values(attempts=0, last_error=None),
        )


def attach_to_import(session: Session, import_pk: int, rows: Sequence[PendingRow]) -> None:
    """Mark rows as travelling in an import, at the version each had when its values were read."""
    # Core, not an ORM bulk update: a row deleted meanwhile is simply not there.
    table = cast(Table, PendingContact.__table__)
    session.execute(
        update(table)
        .where(table.c.id == bindparam("row_id"))
        .values(import_pk=import_pk, sending_version=bindparam("row_version")),
        [{"row_id": r.pending_id, "row_version": r.version} for r in rows],
    )


def settle_import(session: Session, import_pk: int) -> None:
    """After a finished import: remove the rows it sent, free the ones marked again since."""
    execute(
        session,
        delete(PendingContact).where(
            PendingContact.import_pk == import_pk,
            PendingContact.version == PendingContact.sending_version,
        ),
    )
    execute(
        session,
        update(PendingContact)
        .where(PendingContact.import_pk == import_pk)
        .values(import_pk=None, sending_version=None, attempts=0, last_error=None),
    )


def detach_import(session: Session, import_pk: int) -> None:
    """An import that was not started after all: its rows are due again as they were."""
    execute(
        session,
        update(PendingContact)
        .where(PendingContact.import_pk == import_pk)
        .values(import_pk=None, sending_version=None),
    )


def release_import(session: Session, import_pk: int, *, retry_at: datetime, reason: str) -> None:
    """After a failed import: its rows wait for ``retry_at`` and are sent again."""
    execute(
        session,
        update(PendingContact)
        .where(PendingContact.import_pk == import_pk)
        .values(
            import_pk=None,
            sending_version=None,
            attempts=PendingContact.attempts + 1,
            next_attempt_at=retry_at,
            last_error=reason,
        ),
    )
