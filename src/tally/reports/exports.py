"""Customers and the ledger as CSV, streamed: read in keyset-paged chunks, written as read.

Each chunk is read in its own short unit of work from `open_session` (on SQLite every
transaction takes the write lock, so one transaction for a whole export would hold every writer
up), and turned into CSV text at once; nothing keeps more than one chunk of rows. Keyset paging
(`id > last`) means a chunk never repeats or skips a row whatever is inserted meanwhile; rows
written during an export may or may not appear in it. Every cell goes through `csv_safety`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from tally import csv_safety
from tally.customers.orm import Customer
from tally.customers.service import customers_after
from tally.ledger.orm import LedgerEntry
from tally.program import service as program_service
from tally.program.next_expiry import next_expiries

OpenSession = Callable[[], AbstractContextManager[Session]]
CHUNK_SIZE = 1000

CUSTOMER_COLUMNS = (
    "customer_id",
    "email",
    "first_name",
    "last_name",
    "state",
    "points_balance",
    "vip_tier",
    "next_expiry_date",
    "points_expiring",
    "created_at",
)
LEDGER_COLUMNS = (
    "entry_id",
    "customer_id",
    "email",
    "created_at",
    "kind",
    "points",
    "balance_after",
    "reason",
    "source_ref",
)


def _csv(rows: Iterable[Iterable[object]]) -> str:
    buffer = io.StringIO()
    csv_safety.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


def _timestamp(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def export_customers(
    open_session: OpenSession, *, merchant_id: int, chunk_size: int = CHUNK_SIZE
) -> Iterator[str]:
    """The merchant's customers as CSV text, one piece per chunk (the header first).

    The next expiry is computed as the customer pages show it (`next_expiry`), its date in
    the merchant's time zone.
    """
    yield _csv([CUSTOMER_COLUMNS])
    last_id = 0
    while True:
        with open_session() as session:
            program = program_service.load(session, merchant_id)
            batch = customers_after(session, merchant_id, last_id, limit=chunk_size)
            if not batch:
                return
            expiries = next_expiries(session, program, batch)
            rows = []
            for customer in batch:
                expiring = expiries[customer.id]
                rows.append(
                    (
                        customer.id,
                        customer.email,
                        customer.first_name,
                        customer.last_name,
                        customer.state,
                        customer.points_balance,
                        customer.vip_tier,
                        expiring.expires_at.astimezone(program.zone).date().isoformat()
                        if expiring.expires_at
                        else "",
                        expiring.points or "",
                        _timestamp(customer.created_at),
                    )
                )
            last_id = batch[-1].id
        yield _csv(rows)


def export_ledger(
    open_session: OpenSession, *, merchant_id: int, chunk_size: int = CHUNK_SIZE
) -> Iterator[str]:
    """The merchant's ledger as CSV text, one piece per chunk (the header first).

    Entries come customer by customer, each customer's in the order they were written, so the
    balance after each entry is a running sum that needs only the current customer's total
    (the cached balance always equals the sum of the entries).
    """
    yield _csv([LEDGER_COLUMNS])
    last = (0, 0)
    balance = 0
    while True:
        with open_session() as session:
            after = or_(
                LedgerEntry.customer_id > last[0],
                and_(LedgerEntry.customer_id == last[0], LedgerEntry.id > last[1]),
            )
            batch = session.execute(
                select(LedgerEntry, Customer.email)
                .join(Customer, Customer.id == LedgerEntry.customer_id)
                .where(LedgerEntry.merchant_id == merchant_id, after)
                .order_by(LedgerEntry.customer_id, LedgerEntry.id)
                .limit(chunk_size)
            ).all()
            if not batch:
                return
            rows = []
            for entry, email in batch:
                if entry.customer_id != last[0]:
                    balance = 0
                balance += entry.points
                last = (entry.customer_id, entry.id)
                rows.append(
                    (
                        entry.id,
                        entry.customer_id,
                        email,
                        _timestamp(entry.created_at),
                        entry.kind,
                        entry.points,
                        balance,
                        entry.reason,
                        entry.source_ref,
                    )
                )
        yield _csv(rows)
