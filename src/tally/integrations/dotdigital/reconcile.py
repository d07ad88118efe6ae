"""Drift checks: read every contact back from Dotdigital and compare it with Tally's values.

A check (``dotdigital_reconciles``) reads ``GET /contacts/v3`` a page at a time (5,000 contacts,
the most Dotdigital allows, so 40,000 contacts cost 8 calls), each page one call from the
merchant's call budget. Every page is compared and recorded in one transaction together with
Dotdigital's marker of the next page, so a check the budget (or a rate limit, or a dying worker)
cuts short continues from that page on the next run. Each customer found is compared with what
the sync would send now (``contact_values``); after the last page, the customers Dotdigital never
listed are recorded as missing. Customers waiting in the sync's backlog, and those Dotdigital
refused for good (listed under refused contacts), are left out: their values are about to
change or cannot be sent.

"Fix these" (``queue_fixes``) marks the drifted customers for the automatic sync, the one push
path, which sends just them (single upserts, or one bulk import for a large number).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers.orm import Customer
from tally.customers.service import customers_after
from tally.db.base import utcnow
from tally.errors import Conflict
from tally.integrations.dotdigital.client import (
    ContactPage,
    DotdigitalAuthError,
    DotdigitalRateLimited,
    DotdigitalRejected,
    DotdigitalRetryable,
    DotdigitalWrongRegion,
)
from tally.integrations.dotdigital.contact_values import CUSTOMER_COLUMNS, CustomerRow
from tally.integrations.dotdigital.drift import differences
from tally.integrations.dotdigital.failures import rejection_reason
from tally.integrations.dotdigital.fields import DataFieldValueError
from tally.integrations.dotdigital.leases import (
    RECONCILE_LEASE,
    Connected,
    LeasedWork,
    run_each,
)
from tally.integrations.dotdigital.manual_sync import SWITCHED_OFF, Step, StepState, advance_held
from tally.integrations.dotdigital.options import DEFAULT_OPTIONS, SyncOptions
from tally.integrations.dotdigital.orm import (
    DotdigitalConnection,
    PendingContact,
    Reconcile,
    ReconcileContact,
    ReconcileStatus,
    SyncFailure,
)
from tally.integrations.dotdigital.pending import mark_dirty_many
from tally.integrations.dotdigital.service import get_connection
from tally.integrations.dotdigital.statements import execute, execute_alone
from tally.outbox.registry import JobContext

log = logging.getLogger("tally.dotdigital")

SAME = "same"
DIFFERS = "differs"
MISSING = "missing"
_MISSING_BATCH = 5000

# --------------------------------------------------------------------------- views


@dataclass(frozen=True)
class DifferenceView:
    """A customer whose contact differs from Tally's values, or is missing in Dotdigital."""

    customer_id: int
    email: str
    state: str
    # [{"field", "tally", "dotdigital"}]; empty for a missing contact.
    fields: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ReconcileView:
    """A drift check's progress and figures."""

    id: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    pages_read: int
    contacts_read: int
    checked_count: int
    differ_count: int
    missing_count: int
    last_error: str | None
    fix_queued_at: datetime | None
    fix_queued_count: int

    @property
    def drifted(self) -> int:
        """Customers whose contact differs or is missing."""
        return self.differ_count + self.missing_count

    @property
    def compared(self) -> int:
        """Customers the check expected in Dotdigital: those found and those missing."""
        return self.checked_count + self.missing_count


def _view(row: Reconcile) -> ReconcileView:
    # The view's fields are the row's columns of the same names.
    return ReconcileView(**{f.name: getattr(row, f.name) for f in fields(ReconcileView)})


def latest_reconcile(session: Session, *, merchant_id: int) -> ReconcileView | None:
    """The merchant's most recent drift check, if any."""
    row = session.scalar(
        select(Reconcile)
        .where(Reconcile.merchant_id == merchant_id)
        .order_by(Reconcile.id.desc())
        .limit(1)
    )
    return _view(row) if row is not None else None


def read_reconcile(session_factory: sessionmaker[Session], reconcile_id: int) -> ReconcileView:
    """One drift check's current state."""
    with session_factory() as session:
        row = session.get(Reconcile, reconcile_id)
        if row is None:
            raise LookupError(f"Dotdigital drift check {reconcile_id} does not exist")
        return _view(row)


def list_differences(
    session: Session, *, merchant_id: int, reconcile_id: int, limit: int, offset: int = 0
) -> list[DifferenceView]:
    """A page of a check's differences, in customer id order."""
    rows = session.scalars(
        select(ReconcileContact)
        .where(
            ReconcileContact.merchant_id == merchant_id,
            ReconcileContact.reconcile_id == reconcile_id,
            ReconcileContact.state.in_((DIFFERS, MISSING)),
        )
        .order_by(ReconcileContact.customer_id)
        .limit(limit)
        .offset(offset)
    )
    return [DifferenceView(r.customer_id, r.email, r.state, list(r.fields or [])) for r in rows]


# --------------------------------------------------------------------------- use cases


def start_reconcile(session: Session, *, merchant_id: int) -> Reconcile:
    """Queue a drift check (or return the one still running, so a second click continues it).

    Only the newest check keeps its list of differences; older ones keep their figures.
    """
    connection = get_connection(session, merchant_id)
    if not connection.enabled:
        raise Conflict(
            "Dotdigital syncing is off: enable it first (which also checks the data fields)"
        )
    # Two clicks at once start one check: the connection row serialises them.
    session.execute(
        select(DotdigitalConnection.id)
        .where(DotdigitalConnection.id == connection.id)
        .with_for_update()
    )
    running = session.scalar(
        select(Reconcile).where(
            Reconcile.merchant_id == merchant_id, Reconcile.status == ReconcileStatus.RUNNING
        )
    )
    if running is not None:
        return running
    session.execute(delete(ReconcileContact).where(ReconcileContact.merchant_id == merchant_id))
    row = Reconcile(
        merchant_id=merchant_id,
        status=ReconcileStatus.RUNNING,
        pages_read=0,
        contacts_read=0,
        checked_count=0,
        differ_count=0,
        missing_count=0,
        fix_queued_count=0,
        started_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def queue_fixes(session: Session, *, merchant_id: int) -> int:
    """Mark the latest check's drifted customers for the sync; how many were marked.

    Only those customers are sent, with their values at send time, by the automatic sync.
    """
    connection = get_connection(session, merchant_id)
    if not connection.enabled:
        raise Conflict("Dotdigital syncing is off: enable it first")
    row = session.scalar(
        select(Reconcile)
        .where(Reconcile.merchant_id == merchant_id)
        .order_by(Reconcile.id.desc())
        .limit(1)
    )
    if row is None or row.status == ReconcileStatus.FAILED:
        raise Conflict("no finished drift check to fix: check for drift first")
    if row.status == ReconcileStatus.RUNNING:
        raise Conflict(f"drift check {row.id} is still running: fix once it has finished")
    ids = list(
        session.scalars(
            select(ReconcileContact.customer_id).where(
                ReconcileContact.reconcile_id == row.id,
                ReconcileContact.state.in_((DIFFERS, MISSING)),
            )
        )
    )
    now = utcnow()
    mark_dirty_many(session, merchant_id=merchant_id, customer_ids=ids, now=now)
    row.fix_queued_at = now
    row.fix_queued_count = len(ids)
    session.flush()
    return len(ids)


# --------------------------------------------------------------------------- the check


def _comparable(merchant_id: int) -> list[Any]:
    """Conditions for customers worth comparing: not about to be sent, not refused for good."""
    return [
        ~exists().where(
            PendingContact.merchant_id == merchant_id, PendingContact.customer_id == Customer.id
        ),
        ~exists().where(
            SyncFailure.merchant_id == merchant_id, SyncFailure.customer_id == Customer.id
        ),
    ]


def _note(session_factory: sessionmaker[Session], reconcile_id: int, reason: str) -> None:
    """Show a trouble the check survives (it goes on from its marker later)."""
    execute_alone(
        session_factory,
        update(Reconcile).where(Reconcile.id == reconcile_id).values(last_error=reason),
    )


def fail_reconcile(session_factory: sessionmaker[Session], reconcile_id: int, reason: str) -> Step:
    """End a drift check as failed, with the reason shown to the merchant."""
    execute_alone(
        session_factory,
        update(Reconcile)
        .where(Reconcile.id == reconcile_id)
        .values(status=ReconcileStatus.FAILED, last_error=reason, finished_at=utcnow()),
    )
    return Step(StepState.FAILED)


class _Check(LeasedWork):
    """One slice of work on a drift check, under its lease."""

    def __init__(self, connected: Connected, *, reconcile_id: int, deadline: float) -> None:
        super().__init__(connected, deadline)
        self.reconcile_id = reconcile_id
        self.mapping = self.builder.mapping
        self.fields = [spec.name for spec in self.mapping.specs()]

    def _update(self, session: Session, **values: Any) -> None:
        renewal = RECONCILE_LEASE.renewal(self.options.lease_seconds)
        execute(
            session,
            update(Reconcile).where(Reconcile.id == self.reconcile_id).values(**values, **renewal),
        )

    def _fail(self, reason: str) -> Step:
        return fail_reconcile(self.session_factory, self.reconcile_id, reason)

    def _note(self, reason: str) -> None:
        _note(self.session_factory, self.reconcile_id, reason)

    def _marker(self) -> str | None:
        with self.session_factory() as session:
            return session.scalar(select(Reconcile.marker).where(Reconcile.id == self.reconcile_id))

    def _read_page(self, marker: str | None) -> ContactPage | Step:
        """One page from Dotdigital; a step when the slice must stop instead."""
        grant = self.take_one_call()
        if grant.stopped:
            return self._fail(SWITCHED_OFF)
        if grant.calls < 1:
            return Step(StepState.WAITING, grant.wait_seconds)
        try:
            return self.client.list_contacts(
                self.fields, limit=self.options.reconcile_page_size, marker=marker
            )
        except DotdigitalRateLimited as error:
            return Step(StepState.WAITING, self.pause_for_rate_limit(error))
        except (DotdigitalAuthError, DotdigitalWrongRegion) as error:
            self.pause_for_refusal(error)
            return self._fail(f"Dotdigital refused the connection: {error}")
        except DotdigitalRetryable as error:
            self._note(f"reading contacts failed, will retry: {error}")
            return Step(StepState.WAITING, self.options.import_poll_seconds)
        except DotdigitalRejected as error:
            return self._fail(f"Dotdigital refused to list contacts: {rejection_reason(error)}")

    def advance(self) -> Step:
        """Read and compare pages until the end, the deadline, or a reason to wait."""
        while self.time_left():
            marker = self._marker()
            page = self._read_page(marker)
            if isinstance(page, Step):
                return page
            with self.session_factory() as session, session.begin():
                self._record_page(session, page)
                if page.next_marker is None:
                    self._finish(session)
            if page.next_marker is None:
                return Step(StepState.FINISHED)
        return Step(StepState.WAITING, 0.0)

    def _row(self, customer: CustomerRow) -> dict[str, Any] | None:
        try:
            return dict(self.builder.values(customer))
        except DataFieldValueError:
            # Tally cannot send it either; the sync records it as refused when it tries.
            return None

    def _record_page(self, session: Session, page: ContactPage) -> None:
        held = {c.email.lower(): c.data_fields for c in page.contacts}
        # Every listed customer is noted as seen, so the end of the check does not take one
        # that was in the backlog at this page, and sent since, for missing.
        comparable = and_(*_comparable(self.merchant_id))
        found = session.execute(
            select(*CUSTOMER_COLUMNS, comparable).where(
                Customer.merchant_id == self.merchant_id, Customer.email.in_(list(held))
            )
        )
        records: list[dict[str, Any]] = []
        checked = differ = 0
        for row in found:
            customer = CustomerRow._make(row[: len(CUSTOMER_COLUMNS)])
            expected = self._row(customer) if row[-1] else None
            if expected is None:
                records.append(self._record(customer, SAME, []))
                continue
            drift = differences(self.mapping, expected, held[customer.email.lower()])
            checked += 1
            differ += bool(drift)
            records.append(
                self._record(customer, DIFFERS if drift else SAME, [d.as_json() for d in drift])
            )
        if records:
            session.execute(insert(ReconcileContact), records)
        self._update(
            session,
            marker=page.next_marker,
            pages_read=Reconcile.pages_read + 1,
            contacts_read=Reconcile.contacts_read + len(page.contacts),
            checked_count=Reconcile.checked_count + checked,
            differ_count=Reconcile.differ_count + differ,
            last_error=None,
        )

    def _record(self, customer: CustomerRow, state: str, fields: list[Any]) -> dict[str, Any]:
        return {
            "merchant_id": self.merchant_id,
            "reconcile_id": self.reconcile_id,
            "customer_id": customer.id,
            "email": customer.email,
            "state": state,
            "fields": fields,
        }

    def _finish(self, session: Session) -> None:
        """Record the customers no page listed as missing, and end the check."""
        listed = exists().where(
            ReconcileContact.reconcile_id == self.reconcile_id,
            ReconcileContact.customer_id == Customer.id,
        )
        where = [~listed, *_comparable(self.merchant_id)]
        missing, cursor = 0, 0
        while batch := customers_after(
            session, self.merchant_id, cursor, where=where, limit=_MISSING_BATCH
        ):
            cursor = batch[-1].id
            records = []
            for customer in batch:
                row = CustomerRow(
                    customer.id,
                    customer.email,
                    customer.points_balance,
                    customer.birthday,
                    customer.vip_tier,
                    customer.referral_code,
                )
                if self._row(row) is not None:
                    records.append(self._record(row, MISSING, []))
            if records:
                session.execute(insert(ReconcileContact), records)
                missing += len(records)
        session.execute(
            delete(ReconcileContact).where(
                ReconcileContact.reconcile_id == self.reconcile_id, ReconcileContact.state == SAME
            )
        )
        self._update(
            session,
            status=ReconcileStatus.FINISHED,
            missing_count=missing,
            finished_at=utcnow(),
        )


# --------------------------------------------------------------------------- runners


def advance_reconcile(
    context: JobContext, reconcile_id: int, options: SyncOptions, deadline: float | None = None
) -> Step:
    """One slice of work on a drift check."""
    return advance_held(
        context,
        (RECONCILE_LEASE, reconcile_id),
        options,
        deadline,
        fail=fail_reconcile,
        work=lambda connected, until: _Check(
            connected, reconcile_id=reconcile_id, deadline=until
        ).advance(),
    )


def run_reconciles(context: JobContext, options: SyncOptions = DEFAULT_OPTIONS) -> None:
    """The scheduled job that moves every running drift check along."""
    run_each(
        context,
        RECONCILE_LEASE,
        options,
        lambda reconcile_id, deadline: advance_reconcile(context, reconcile_id, options, deadline),
        lambda reconcile_id, reason: _note(context.session_factory, reconcile_id, reason),
    )


def run_reconcile(
    settings: Settings,
    session_factory: sessionmaker[Session],
    reconcile_id: int,
    *,
    options: SyncOptions = DEFAULT_OPTIONS,
    sleep: Callable[[float], None] = time.sleep,
) -> ReconcileView:
    """Work on a drift check in the foreground (the CLI) until it ends or must wait.

    It returns a check that is still running when the call budget is spent or Dotdigital asks
    to wait; a later run (or the worker) continues from the page it stopped at. While a worker
    holds the check, this follows it until it ends.
    """
    while True:
        step = advance_reconcile(JobContext(settings, session_factory), reconcile_id, options)
        view = read_reconcile(session_factory, reconcile_id)
        if view.status != ReconcileStatus.RUNNING:
            return view
        if step.state == StepState.WAITING and step.wait_seconds > 0:
            return view
        sleep(min(max(step.wait_seconds, 0.05), 2.0))


def flush_fixes(
    flush: Callable[[], Any],
    pending: Callable[[], int],
    *,
    timeout_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run the sync's flush until the backlog is empty or the time is up; what is left."""
    deadline = time.monotonic() + timeout_seconds
    left = pending()
    while left and time.monotonic() < deadline:
        flush()
        left = pending()
        if left:
            sleep(0.1)
    return left


def backlog_size(session: Session, *, merchant_id: int) -> int:
    """Customers waiting in the merchant's sync backlog."""
    count = session.scalar(
        select(func.count(PendingContact.id)).where(PendingContact.merchant_id == merchant_id)
    )
    return int(count or 0)


__all__ = [
    "DifferenceView",
    "ReconcileView",
    "advance_reconcile",
    "backlog_size",
    "flush_fixes",
    "latest_reconcile",
    "list_differences",
    "queue_fixes",
    "read_reconcile",
    "run_reconcile",
    "run_reconciles",
    "start_reconcile",
]
