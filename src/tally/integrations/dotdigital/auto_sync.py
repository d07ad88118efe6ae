"""The automatic sync: a scheduled job that sends marked customers' current values.

A backlog the call budget can clear now goes out as single upserts; a larger one as one bulk
import per run, polled on later runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.integrations.dotdigital.bulk_imports import (
    IMPORT_NOT_FINISHED,
    IMPORT_NOT_FOUND,
    IN_DOUBT,
    TERMINAL_STATUSES,
    TOO_MANY_IMPORTS,
    RunningImport,
    confirm_start,
    doubt_check_at,
    final_status,
    forget_attempt,
    holds_values,
    import_counts,
    imports_in_doubt,
    mark_unanswered,
    next_check_at,
    record_attempt,
    record_import_end,
    resolve_doubt,
    running_imports,
    samples,
    status_explanation,
    touch_import,
)
from tally.integrations.dotdigital.call_budget import take_calls, update_connection
from tally.integrations.dotdigital.client import (
    DotdigitalAuthError,
    DotdigitalError,
    DotdigitalRateLimited,
    DotdigitalRejected,
    DotdigitalRetryable,
    DotdigitalUnanswered,
    DotdigitalWrongRegion,
    ImportStatus,
    import_entry,
)
from tally.integrations.dotdigital.consent import (
    NO_CONSENT_NO_CONTACT,
    clear_left_out,
    may_create,
    record_left_out,
)
from tally.integrations.dotdigital.contact_values import CUSTOMER_COLUMNS, CustomerRow
from tally.integrations.dotdigital.failures import (
    record_failure,
    record_import_failures,
    rejection_reason,
)
from tally.integrations.dotdigital.fields import DataFieldValueError, build_import_batches
from tally.integrations.dotdigital.leases import FLUSH_LEASE, Connected, LeasedWork, hold
from tally.integrations.dotdigital.options import DEFAULT_OPTIONS, SyncOptions
from tally.integrations.dotdigital.orm import ImportKind, SyncImport
from tally.integrations.dotdigital.pending import (
    PendingRow,
    attach_to_import,
    count_due,
    detach_import,
    due_merchants,
    import_members,
    load_due,
    postpone,
    release_import,
    remove_sent,
    reschedule,
    settle_import,
)
from tally.integrations.dotdigital.statements import execute
from tally.outbox.registry import JobContext
from tally.outbox.retry import backoff_seconds

log = logging.getLogger("tally.dotdigital")

# An import costs a start and a status read: below this backlog single upserts never cost more.
MIN_BULK_BACKLOG = 2
# How long marked customers without consent whose contacts a bulk run had no calls left to
# look up wait before they are loaded again (others marked later go first meanwhile).
LOOKUP_POSTPONE = timedelta(seconds=60)


class _Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    REJECTED = "rejected"
    LEFT_OUT = "left_out"  # no consent and no contact: nothing sent (consent.py)


@dataclass
class _Result:
    row: PendingRow
    outcome: _Outcome
    code: str = ""
    reason: str = ""


@dataclass
class FlushReport:
    """What one flush of one merchant did (for tests, logs and the benchmark)."""

    merchant_id: int
    sent: int = 0
    retried: int = 0
    rejected: int = 0
    left_out: int = 0
    imports_started: int = 0
    imports_finished: int = 0
    paused: bool = False
    skipped: bool = False


class _Flush(LeasedWork):
    """One flush of one merchant, under the merchant's flush lease."""

    def __init__(self, connected: Connected, *, deadline: float, report: FlushReport) -> None:
        super().__init__(connected, deadline)
        self.report = report
        self.stopped = False

    def _retry_at(self, attempts: int, now: datetime) -> datetime:
        delay = backoff_seconds(
            attempts,
            base=self.settings.worker_backoff_base_seconds,
            maximum=self.settings.worker_backoff_max_seconds,
        )
        return now + timedelta(seconds=delay)

    def _one_call(self) -> bool:
        """Take one call from the budget; False (and the run stops) when there is none."""
        if self.take_one_call().calls < 1:
            self.stopped = True
            return False
        return True

    def _call_failed(self, error: DotdigitalError) -> bool:
        """Handle errors that stop the run; True when the caller should stop."""
        if isinstance(error, DotdigitalRateLimited) and error.code != TOO_MANY_IMPORTS:
            self.pause_for_rate_limit(error)
        elif isinstance(error, DotdigitalAuthError | DotdigitalWrongRegion):
            self.pause_for_refusal(error)
        else:
            return False
        self.report.paused = True
        self.stopped = True
        return True

    # -- single upserts ------------------------------------------------------------------

    def send_single(self, rows: Sequence[PendingRow]) -> int:
        """One upsert per marked customer, as far as the budget allows; the rows it got to.

        A customer without recorded consent costs two calls: the lookup of its contact, then
        the upsert when there is one.
        """
        if not rows:
            return 0
        costs = [1 if may_create(row.customer.accepts_marketing) else 2 for row in rows]
        grant = take_calls(self.session_factory, self.settings, self.merchant_id, sum(costs))
        if grant.stopped:
            self.stopped = True
            return 0
        results: list[_Result] = []
        calls = grant.calls
        done = 0
        for row, cost in zip(rows, costs, strict=True):
            calls -= cost
            if calls < 0 or not self.time_left():
                break
            result = self._send_one(row)
            if result is None:
                break
            done += 1
            results.append(result)
            if len(results) >= 50:
                self._write(results)
                results = []
        self._write(results)
        return done

    def _send_one(self, row: PendingRow) -> _Result | None:
        try:
            values = self.builder.values(row.customer)
        except DataFieldValueError as error:
            return _Result(row, _Outcome.REJECTED, "invalidValue", str(error))
        try:
            # Without consent an upsert must not create the contact (subscribed): look first.
            if (
                not may_create(row.customer.accepts_marketing)
                and self.client.get_contact(row.customer.email) is None
            ):
                return _Result(row, _Outcome.LEFT_OUT, NO_CONSENT_NO_CONTACT)
            # No channelProperties: a new contact is subscribed (consent given), an existing
            # one keeps its status.
            self.client.upsert_contact(row.customer.email, values)
        except DotdigitalRateLimited as error:
            if self._call_failed(error):
                return None
            return _Result(row, _Outcome.RETRY, reason=str(error))
        except DotdigitalRetryable as error:
            return _Result(row, _Outcome.RETRY, reason=str(error))
        except DotdigitalRejected as error:
            code = error.code or f"http{error.status}"
            return _Result(row, _Outcome.REJECTED, code, rejection_reason(error))
        except DotdigitalError as error:
            self._call_failed(error)
            return None
        return _Result(row, _Outcome.SENT)

    def _write(self, results: Sequence[_Result]) -> None:
        if not results:
            return
        now = utcnow()
        with self.session_factory() as session, session.begin():
            for result in results:
                row = result.row
                if result.outcome == _Outcome.RETRY:
                    at = self._retry_at(row.attempts + 1, now)
                    reschedule(session, row, at=at, reason=result.reason)
                    self.report.retried += 1
                    continue
                if result.outcome == _Outcome.LEFT_OUT:
                    record_left_out(
                        session,
                        merchant_id=self.merchant_id,
                        customers=[(row.customer.id, row.customer.email)],
                        code=result.code,
                        job_id=None,
                        now=now,
                    )
                    self.report.left_out += 1
                elif result.outcome == _Outcome.REJECTED:
                    record_failure(
                        session,
                        merchant_id=self.merchant_id,
                        customer_id=row.customer.id,
                        email=row.customer.email,
                        code=result.code,
                        reason=result.reason,
                        job_id=None,
                        now=now,
                    )
                    self.report.rejected += 1
                else:
                    self.report.sent += 1
                remove_sent(session, row)
            sent = [r.row.customer.id for r in results if r.outcome == _Outcome.SENT]
            if sent:
                clear_left_out(session, self.merchant_id, sent)
                execute(session, update_connection(self.merchant_id, last_successful_sync_at=now))

    # -- bulk imports --------------------------------------------------------------------

    def start_import(self, rows: Sequence[PendingRow]) -> None:
        """One bulk import of the backlog; rows stay marked until Dotdigital has finished it.

        An import cannot be told not to create contacts, so it carries only customers with
        recorded consent; the others are looked up one by one as far as the budget allows
        after it (the rest stay marked for the next run).
        """
        consenting = [row for row in rows if may_create(row.customer.accepts_marketing)]
        others = [row for row in rows if not may_create(row.customer.accepts_marketing)]
        self._import(consenting)
        done = 0 if self.stopped else self.send_single(others)
        if done < len(others):
            # Lookups go at the budget's pace: the rows they did not reach step aside for a
            # while, so the customers marked after them are not held up behind them.
            with self.session_factory() as session, session.begin():
                postpone(session, others[done:], at=utcnow() + LOOKUP_POSTPONE)

    def _import(self, rows: Sequence[PendingRow]) -> None:
        entries: list[dict[str, Any]] = []
        included: list[PendingRow] = []
        rejected: list[_Result] = []
        for row in rows:
            try:
                values = self.builder.values(row.customer)
            except DataFieldValueError as error:
                rejected.append(_Result(row, _Outcome.REJECTED, "invalidValue", str(error)))
                continue
            entries.append(import_entry(row.customer.email, values))
            included.append(row)
        self._write(rejected)
        if not entries:
            return
        batch = next(build_import_batches(entries, max_contacts=self.options.import_batch_size))
        included = included[: len(batch)]
        if not self._one_call():
            return
        pk = self._record_attempt(included)
        try:
            import_id = self.client.start_import(batch)
        except DotdigitalUnanswered:
            # Dotdigital may have started it: the rows stay with the import until a few of
            # its contacts are read back (poll_imports).
            mark_unanswered(self.session_factory, pk)
            self.stopped = True
            return
        except DotdigitalError as error:
            self._start_refused(pk, included, error)
            self.stopped = True
            return
        with self.session_factory() as session, session.begin():
            confirm_start(session, pk, import_id)
        self.report.imports_started += 1

    def _record_attempt(self, included: Sequence[PendingRow]) -> int:
        """Record the import and attach its rows before the request goes out."""
        with self.session_factory() as session, session.begin():
            record = record_attempt(
                session,
                merchant_id=self.merchant_id,
                kind=ImportKind.AUTO,
                contact_count=len(included),
                first_customer_id=min(r.customer.id for r in included),
                last_customer_id=max(r.customer.id for r in included),
            )
            attach_to_import(session, record.id, included)
            clear_left_out(session, self.merchant_id, [row.customer.id for row in included])
            # The start may take the client's whole import timeout: keep the lease through it.
            renewal = FLUSH_LEASE.renewal(self.options.lease_seconds)
            execute(session, update_connection(self.merchant_id, **renewal))
            return record.id

    def _start_refused(
        self, pk: int, included: Sequence[PendingRow], error: DotdigitalError
    ) -> None:
        """Dotdigital answered the start with an error (or it never left): nothing started."""
        # Pauses the merchant for a rate limit or a refusal, in its own transaction.
        paused = self._call_failed(error)
        now = utcnow()
        with self.session_factory() as session, session.begin():
            if isinstance(error, DotdigitalRejected):
                # The same request gets the same answer: recorded once, not retried.
                self._record_refused_import(session, error, included, now)
                settle_import(session, pk)
            elif paused or isinstance(error, DotdigitalRateLimited):
                # Paused, or too many imports running (ours or someone else's): the rows wait
                # for the next run as they were.
                detach_import(session, pk)
            else:
                release_import(session, pk, retry_at=self._retry_at(1, now), reason=str(error))
            forget_attempt(session, pk)

    def _record_refused_import(
        self,
        session: Session,
        error: DotdigitalRejected,
        included: Sequence[PendingRow],
        now: datetime,
    ) -> None:
        ids = [row.customer.id for row in included]
        reason = (
            f"Dotdigital refused a bulk import of {len(ids)} contacts (customers {min(ids)} to "
            f"{max(ids)}): {rejection_reason(error)}"
        )
        record_failure(
            session,
            merchant_id=self.merchant_id,
            customer_id=None,
            email=None,
            code=error.code or f"http{error.status}",
            reason=reason,
            job_id=None,
            now=now,
        )
        execute(session, update_connection(self.merchant_id, last_error=reason, last_error_at=now))
        self.report.rejected += len(ids)

    def poll_imports(self) -> None:
        """Ask about the automatic sync's imports that are due for a look, oldest first."""
        now = utcnow()
        with self.session_factory() as session:
            running = running_imports(
                session,
                SyncImport.merchant_id == self.merchant_id,
                SyncImport.kind == ImportKind.AUTO,
            )
        for item in running:
            if next_check_at(item, self.options) > now:
                continue
            if not self.time_left() or self.stopped or not self._one_call():
                return
            result = self._import_status(item)
            if result is None:
                # Younger imports are unlikely to be done before this one.
                return
            self._finish_import(item.pk, result)
            self.report.imports_finished += 1

    def _import_status(self, item: RunningImport) -> ImportStatus | None:
        """How the import ended, or None (looked at, or a failed call) when it has not."""
        try:
            status = self.client.import_status(item.import_id)
        except DotdigitalRejected as error:
            if error.code != IMPORT_NOT_FOUND and error.status != 404:
                touch_import(self.session_factory, item.pk)
                return None
            status = ImportStatus(item.import_id, "NotFound")
        except DotdigitalError as error:
            if not self._call_failed(error):
                touch_import(self.session_factory, item.pk)
            return None
        result = final_status(status, item, self.options)
        if result is None:
            touch_import(self.session_factory, item.pk)
        return result

    def _finish_import(self, pk: int, result: ImportStatus) -> None:
        now = utcnow()
        with self.session_factory() as session, session.begin():
            members = import_members(session, pk)
            failed = 0
            if result.succeeded:
                failed = record_import_failures(
                    session,
                    merchant_id=self.merchant_id,
                    failures=result.failures,
                    customer_ids={email.lower(): customer_id for customer_id, email in members},
                    job_id=None,
                    now=now,
                )
                # Sent (or refused for good) at the version that travelled; newer marks stay.
                settle_import(session, pk)
                execute(session, update_connection(self.merchant_id, last_successful_sync_at=now))
                self.report.sent += len(members) - failed
                self.report.rejected += failed
            elif result.status in TERMINAL_STATUSES:
                self._record_refused_status(session, result, len(members), now)
                # Refused as a whole: sending the same contacts again gets the same answer.
                settle_import(session, pk)
            else:
                reason = f"Dotdigital import {result.import_id} ended with status {result.status}"
                release_import(session, pk, retry_at=self._retry_at(1, now), reason=reason)
                execute(
                    session,
                    update_connection(self.merchant_id, last_error=reason, last_error_at=now),
                )
            record_import_end(
                session, pk, result, counts=import_counts(result), failed=failed, now=now
            )

    def _record_refused_status(
        self, session: Session, result: ImportStatus, contacts: int, now: datetime
    ) -> None:
        reason = (
            f"Dotdigital ended import {result.import_id} of {contacts} contacts with status "
            f"{result.status}" + status_explanation(result.status, "mark them again")
        )
        record_failure(
            session,
            merchant_id=self.merchant_id,
            customer_id=None,
            email=None,
            code=f"import{result.status}",
            reason=reason,
            job_id=None,
            now=now,
        )
        execute(session, update_connection(self.merchant_id, last_error=reason, last_error_at=now))
        self.report.rejected += contacts

    # -- starts that got no answer -------------------------------------------------------

    def settle_doubts(self) -> None:
        """Read back a few contacts of each unanswered start that is due for it."""
        with self.session_factory() as session:
            in_doubt = imports_in_doubt(
                session,
                SyncImport.merchant_id == self.merchant_id,
                SyncImport.kind == ImportKind.AUTO,
            )
        for item in in_doubt:
            if doubt_check_at(item, self.options) > utcnow():
                continue
            if not self.time_left() or self.stopped:
                return
            landed = self._read_back(item)
            if landed is None:
                return
            now = utcnow()
            with self.session_factory() as session, session.begin():
                if landed:
                    self.report.sent += len(import_members(session, item.pk))
                    settle_import(session, item.pk)
                    execute(
                        session, update_connection(self.merchant_id, last_successful_sync_at=now)
                    )
                else:
                    reason = "an import start got no answer and Dotdigital shows no sign of it"
                    release_import(session, item.pk, retry_at=now, reason=reason)
                resolve_doubt(session, item.pk, landed=landed, now=now)

    def _read_back(self, item: RunningImport) -> bool | None:
        """Whether sample contacts hold the current values; None when the run must stop."""
        with self.session_factory() as session:
            ids = [customer_id for customer_id, _email in import_members(session, item.pk)]
            rows = [
                CustomerRow(*row)
                for row in session.execute(
                    select(*CUSTOMER_COLUMNS).where(Customer.id.in_(samples(sorted(ids))))
                )
            ]
        for row in rows:
            if not self._one_call():
                return None
            try:
                values = self.builder.values(row)
                contact = self.client.get_contact(row.email)
            except (DataFieldValueError, DotdigitalRejected):
                return False
            except DotdigitalError as error:
                if not self._call_failed(error):
                    touch_import(self.session_factory, item.pk)
                return None
            if not holds_values(contact, values):
                return False
        return bool(rows)

    # -- one run -------------------------------------------------------------------------

    def run(self) -> None:
        """Poll finished imports, then send the backlog the cheaper way.

        Single upserts reach Dotdigital sooner, so they are used while the budget can send the
        whole backlog now; a larger backlog (more than ``bulk_threshold``, or more than the
        calls left in the bucket) goes out as one bulk import, which costs two calls (start and
        one status read) however many contacts it carries.
        """
        self.poll_imports()
        if not self.stopped:
            self.settle_doubts()
        if self.stopped or not self.time_left():
            return
        now = utcnow()
        threshold = self.options.bulk_threshold
        with self.session_factory() as session:
            backlog = count_due(session, self.merchant_id, now, threshold + 1)
        if backlog == 0:
            return
        budget = take_calls(self.session_factory, self.settings, self.merchant_id, 0)
        if budget.stopped:
            return
        bulk = backlog > threshold or backlog > max(MIN_BULK_BACKLOG, budget.available)
        with self.session_factory() as session:
            if bulk and self._imports_in_flight(session) >= self.options.max_auto_imports:
                return
            limit = self.options.import_batch_size if bulk else self.options.contacts_per_run
            rows = load_due(session, self.merchant_id, now, limit)
        # Sent after the read session has closed: no transaction stays open across calls.
        if bulk:
            self.start_import(rows)
        else:
            self.send_single(rows)

    def _imports_in_flight(self, session: Session) -> int:
        in_flight = session.scalar(
            select(func.count(SyncImport.id)).where(
                SyncImport.merchant_id == self.merchant_id,
                SyncImport.kind == ImportKind.AUTO,
                SyncImport.status.in_((IMPORT_NOT_FINISHED, *IN_DOUBT)),
            )
        )
        return int(in_flight or 0)


def flush_merchant(
    settings: Settings,
    session_factory: sessionmaker[Session],
    merchant_id: int,
    *,
    options: SyncOptions = DEFAULT_OPTIONS,
    deadline: float | None = None,
) -> FlushReport:
    """Send one merchant's marked customers (and check its running imports) once."""
    report = FlushReport(merchant_id)
    with hold(settings, session_factory, FLUSH_LEASE, merchant_id, options) as held:
        if held is None or held.connection is None:
            report.skipped = True
            return report
        deadline = deadline or time.monotonic() + options.run_seconds
        _Flush(held.connection, deadline=deadline, report=report).run()
    return report


def flush_all(
    settings: Settings,
    session_factory: sessionmaker[Session],
    *,
    options: SyncOptions = DEFAULT_OPTIONS,
) -> list[FlushReport]:
    """One flush of every merchant that has something due."""
    with session_factory() as session:
        merchant_ids = due_merchants(session, utcnow())
    deadline = time.monotonic() + options.run_seconds
    reports = []
    for merchant_id in merchant_ids:
        if time.monotonic() >= deadline:
            break
        try:
            reports.append(
                flush_merchant(
                    settings, session_factory, merchant_id, options=options, deadline=deadline
                )
            )
        except Exception:
            # One merchant's trouble must not starve the others.
            log.exception("Dotdigital flush failed for merchant %s", merchant_id)
    return reports


def run_flush(context: JobContext, options: SyncOptions = DEFAULT_OPTIONS) -> None:
    """The scheduled job of the automatic sync."""
    flush_all(context.settings, context.session_factory, options=options)
