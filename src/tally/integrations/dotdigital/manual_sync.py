"""The manual sync: every customer of a merchant, by id, in bulk imports.

A job's cursor (the last customer id sent) moves in the same transaction that records the
import carrying the batch, so a restarted worker resumes after it and polls the recorded
imports instead of sending finished batches again. Each start is recorded before its request
goes out; a start that got no answer (or that a dying worker left behind) holds the job until a
few of its contacts are read back (``bulk_imports``), so a batch is sent again only when
Dotdigital shows no sign of having it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Update, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.integrations.dotdigital import bulk_imports
from tally.integrations.dotdigital.call_budget import update_connection
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
    NO_CONSENT_NOT_LOOKED_UP,
    clear_left_out,
    may_create,
    record_left_out,
)
from tally.integrations.dotdigital.contact_values import CUSTOMER_COLUMNS, CustomerRow
from tally.integrations.dotdigital.failures import (
    customer_ids_by_email,
    record_failure,
    record_import_failures,
    rejection_reason,
)
from tally.integrations.dotdigital.fields import DataFieldValueError, build_import_batches
from tally.integrations.dotdigital.leases import (
    MANUAL_SYNC_LEASE,
    Connected,
    Lease,
    LeasedWork,
    hold,
    run_each,
)
from tally.integrations.dotdigital.options import DEFAULT_OPTIONS, SyncOptions
from tally.integrations.dotdigital.orm import ImportKind, SyncImport, SyncJob, SyncJobStatus
from tally.integrations.dotdigital.service import JobView, job_view
from tally.integrations.dotdigital.statements import execute, execute_alone
from tally.outbox.registry import JobContext

log = logging.getLogger("tally.dotdigital")

SWITCHED_OFF = "Dotdigital syncing was switched off or disconnected"


class StepState(StrEnum):
    """Where a manual sync stands after one slice of work."""

    FINISHED = "finished"
    FAILED = "failed"
    WAITING = "waiting"  # imports running, budget spent or paused: come back later
    BUSY = "busy"  # another worker holds the job


@dataclass(frozen=True)
class Step:
    """The outcome of one slice of a manual sync."""

    state: StepState
    wait_seconds: float = 0.0


def _update_job(job_id: int, **values: Any) -> Update:
    return update(SyncJob).where(SyncJob.id == job_id).values(**values)


def fail_job(session_factory: sessionmaker[Session], job_id: int, reason: str) -> Step:
    """End a manual sync as failed, with the reason shown to the merchant."""
    execute_alone(
        session_factory,
        _update_job(job_id, status=SyncJobStatus.FAILED, last_error=reason, finished_at=utcnow()),
    )
    return Step(StepState.FAILED)


def note_job_error(session_factory: sessionmaker[Session], job_id: int, reason: str) -> None:
    """Show a trouble the job survives (it carries on, or resumes on a later run)."""
    execute_alone(session_factory, _update_job(job_id, last_error=reason))


@dataclass
class _Batch:
    """Customers read for one import: the entries to send and the refused ones."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    refused: list[tuple[CustomerRow, str]] = field(default_factory=list)
    # Customers without recorded consent: an import would create their missing contacts as
    # subscribed, and looking each up costs a call, so a full sync leaves them out.
    left_out: list[CustomerRow] = field(default_factory=list)
    # The cursor after this batch: the last customer id it covers.
    last_id: int = 0


class _ManualSync(LeasedWork):
    """One slice of work on a manual sync job, under the job's lease."""

    def __init__(
        self,
        connected: Connected,
        *,
        job_id: int,
        deadline: float,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(connected, deadline)
        self.job_id = job_id
        self.on_progress = on_progress
        self.imports_full = False

    def _progressed(self) -> None:
        if self.on_progress is not None:
            self.on_progress()

    def _update(self, session: Session, **values: Any) -> None:
        # Every write of progress also renews the lease, so a long slice keeps its job.
        renewal = MANUAL_SYNC_LEASE.renewal(self.options.lease_seconds)
        execute(session, _update_job(self.job_id, **values, **renewal))

    def _job_state(self) -> tuple[int, bool, list[bulk_imports.RunningImport]]:
        with self.session_factory() as session:
            job = session.get(SyncJob, self.job_id)
            assert job is not None
            running = bulk_imports.running_imports(session, SyncImport.job_id == self.job_id)
            return job.cursor_customer_id, job.all_sent, running

    def _in_doubt(self) -> list[bulk_imports.RunningImport]:
        with self.session_factory() as session:
            return bulk_imports.imports_in_doubt(session, SyncImport.job_id == self.job_id)

    def _read_batch(self, cursor: int) -> _Batch | None:
        with self.session_factory() as session:
            rows = [
                CustomerRow(*row)
                for row in session.execute(
                    select(*CUSTOMER_COLUMNS)
                    .where(Customer.merchant_id == self.merchant_id, Customer.id > cursor)
                    .order_by(Customer.id)
                    .limit(self.options.import_batch_size)
                )
            ]
        if not rows:
            return None
        batch = _Batch(last_id=rows[-1].id)
        valid: list[CustomerRow] = []
        for row in rows:
            if not may_create(row.accepts_marketing):
                batch.left_out.append(row)
                continue
            try:
                values = self.builder.values(row)
            except DataFieldValueError as error:
                batch.refused.append((row, str(error)))
                continue
            batch.entries.append(import_entry(row.email, values))
            valid.append(row)
        if batch.entries:
            first = next(
                build_import_batches(batch.entries, max_contacts=self.options.import_batch_size)
            )
            if len(first) < len(batch.entries):
                # The byte limit cut the batch: the rest waits for the next import.
                last_included = valid[len(first) - 1].id
                batch.entries = first
                batch.refused = [(r, e) for r, e in batch.refused if r.id < last_included]
                batch.left_out = [r for r in batch.left_out if r.id < last_included]
                batch.last_id = last_included
            batch.ids = [row.id for row in valid[: len(batch.entries)]]
        return batch

    def _record_attempt(self, batch: _Batch) -> int:
        """Record the import about to be started (and keep the lease through its long call)."""
        with self.session_factory() as session, session.begin():
            record = bulk_imports.record_attempt(
                session,
                merchant_id=self.merchant_id,
                job_id=self.job_id,
                kind=ImportKind.MANUAL,
                contact_count=len(batch.entries),
                first_customer_id=batch.ids[0],
                last_customer_id=batch.ids[-1],
            )
            self._update(session)
            return record.id

    def _forget_attempt(self, pk: int) -> None:
        with self.session_factory() as session, session.begin():
            bulk_imports.forget_attempt(session, pk)

    def _record_start(
        self, batch: _Batch, pk: int | None = None, import_id: str | None = None
    ) -> None:
        """The batch is with Dotdigital (started as ``import_id``, or found landed): move on."""
        now = utcnow()
        with self.session_factory() as session, session.begin():
            if pk is not None and import_id is not None:
                bulk_imports.confirm_start(session, pk, import_id)
            elif pk is not None:
                bulk_imports.resolve_doubt(session, pk, landed=True, now=now)
            for row, reason in batch.refused:
                record_failure(
                    session,
                    merchant_id=self.merchant_id,
                    customer_id=row.id,
                    email=row.email,
                    code="invalidValue",
                    reason=reason,
                    job_id=self.job_id,
                    now=now,
                )
            clear_left_out(session, self.merchant_id, batch.ids)
            record_left_out(
                session,
                merchant_id=self.merchant_id,
                customers=[(row.id, row.email) for row in batch.left_out],
                code=NO_CONSENT_NOT_LOOKED_UP,
                job_id=self.job_id,
                now=now,
            )
            self._update(
                session,
                cursor_customer_id=batch.last_id,
                sent_count=SyncJob.sent_count + len(batch.entries),
                failed_count=SyncJob.failed_count + len(batch.refused),
            )

    def _set_all_sent(self) -> None:
        with self.session_factory() as session, session.begin():
            self._update(session, all_sent=True)

    def _finish(self) -> Step:
        now = utcnow()
        with self.session_factory() as session, session.begin():
            job = session.get(SyncJob, self.job_id)
            assert job is not None
            job.status = SyncJobStatus.FINISHED
            job.finished_at = now
            job.last_error = None
            # Customers created during the sync (after the cursor) were sent as well.
            covered = session.scalar(
                select(func.count(Customer.id)).where(
                    Customer.merchant_id == self.merchant_id,
                    Customer.id <= job.cursor_customer_id,
                )
            )
            job.total_count = max(job.total_count, int(covered or 0))
            if job.created_count + job.updated_count > 0:
                execute(session, update_connection(self.merchant_id, last_successful_sync_at=now))
        return Step(StepState.FINISHED)

    def _record_result(self, pk: int, result: ImportStatus) -> None:
        now = utcnow()
        with self.session_factory() as session, session.begin():
            record = session.get(SyncImport, pk)
            assert record is not None
            if result.succeeded:
                emails = (f.email for f in result.failures if f.email)
                failed = record_import_failures(
                    session,
                    merchant_id=self.merchant_id,
                    failures=result.failures,
                    customer_ids=customer_ids_by_email(session, self.merchant_id, emails),
                    job_id=self.job_id,
                    now=now,
                )
                counts = bulk_imports.import_counts(result)
            else:
                counts = (0, 0)
                failed = record.contact_count
                record_failure(
                    session,
                    merchant_id=self.merchant_id,
                    customer_id=None,
                    email=None,
                    code=f"import{result.status}",
                    reason=(
                        f"Dotdigital ended import {result.import_id} of {record.contact_count} "
                        f"contacts (customers {record.first_customer_id} to "
                        f"{record.last_customer_id}) with status {result.status}"
                        + bulk_imports.status_explanation(result.status, "run the sync again")
                    ),
                    job_id=self.job_id,
                    now=now,
                )
            bulk_imports.record_import_end(
                session, pk, result, counts=counts, failed=failed, now=now
            )
            self._update(
                session,
                created_count=SyncJob.created_count + counts[0],
                updated_count=SyncJob.updated_count + counts[1],
                failed_count=SyncJob.failed_count + failed,
            )

    def _fail(self, reason: str) -> Step:
        return fail_job(self.session_factory, self.job_id, reason)

    def _refused(self, error: DotdigitalAuthError | DotdigitalWrongRegion) -> Step:
        self.pause_for_refusal(error)
        return self._fail(f"Dotdigital refused the connection: {error}")

    def _wait_for_rate_limit(self, error: DotdigitalRateLimited) -> Step:
        return Step(StepState.WAITING, self.pause_for_rate_limit(error))

    def _one_call(self) -> Step | None:
        """Take one call from the budget; the step to return when there is none."""
        grant = self.take_one_call()
        if grant.stopped:
            return self._fail(SWITCHED_OFF)
        if grant.calls < 1:
            return Step(StepState.WAITING, grant.wait_seconds)
        return None

    def _not_yet(self, item: bulk_imports.RunningImport, error: Exception) -> None:
        note_job_error(
            self.session_factory, self.job_id, f"checking import {item.import_id} failed: {error}"
        )
        bulk_imports.touch_import(self.session_factory, item.pk)

    def _import_status(self, item: bulk_imports.RunningImport) -> ImportStatus | Step | None:
        """How the import ended; a step when the slice must stop; None when not finished."""
        try:
            status = self.client.import_status(item.import_id)
        except DotdigitalRateLimited as error:
            return self._wait_for_rate_limit(error)
        except DotdigitalRetryable as error:
            self._not_yet(item, error)
            return None
        except DotdigitalRejected as error:
            if error.status != 404:
                self._not_yet(item, error)
                return None
            status = ImportStatus(item.import_id, "NotFound")
        except (DotdigitalAuthError, DotdigitalWrongRegion) as error:
            return self._refused(error)
        result = bulk_imports.final_status(status, item, self.options)
        if result is None:
            bulk_imports.touch_import(self.session_factory, item.pk)
        return result

    def poll(self, running: list[bulk_imports.RunningImport]) -> Step | None:
        """Ask about due imports, oldest first; stops at the first one still running."""
        for item in running:
            if bulk_imports.next_check_at(item, self.options) > utcnow() or not self.time_left():
                return None
            step = self._one_call()
            if step is not None:
                return step
            result = self._import_status(item)
            if not isinstance(result, ImportStatus):
                return result
            self._record_result(item.pk, result)
            self.imports_full = False
            self._progressed()
        return None

    def start_next(self, cursor: int) -> Step | None:
        """Read the next batch after the cursor and start its import."""
        batch = self._read_batch(cursor)
        if batch is None:
            self._set_all_sent()
            return None
        if not batch.entries:
            self._record_start(batch)
            return None
        return self._start_import(batch)

    def _send(self, batch: _Batch) -> Step | None:
        """One import start, recorded before the request goes out."""
        step = self._one_call()
        if step is not None:
            return step
        pk = self._record_attempt(batch)
        try:
            import_id = self.client.start_import(batch.entries)
        except DotdigitalUnanswered as error:
            bulk_imports.mark_unanswered(self.session_factory, pk)
            note_job_error(
                self.session_factory,
                self.job_id,
                f"starting an import got no answer ({error}); Dotdigital may have started it, "
                "so its contacts are read back before anything is sent again",
            )
            return Step(StepState.WAITING, self.options.unanswered_wait_seconds)
        except DotdigitalError:
            # Dotdigital answered no (or the call never left): nothing was started. Any other
            # exception leaves the attempt in doubt, like a worker that died mid-call.
            self._forget_attempt(pk)
            raise
        self._record_start(batch, pk, import_id)
        self._progressed()
        return None

    def _start_import(self, batch: _Batch) -> Step | None:
        """Start the batch's import and record it; a step when the slice must stop."""
        try:
            return self._send(batch)
        except DotdigitalRateLimited as error:
            if error.code == bulk_imports.TOO_MANY_IMPORTS:
                self.imports_full = True
                return None
            return self._wait_for_rate_limit(error)
        except DotdigitalRetryable as error:
            note_job_error(
                self.session_factory,
                self.job_id,
                f"starting an import failed, will retry: {error}",
            )
            return Step(StepState.WAITING, self.options.import_poll_seconds)
        except (DotdigitalAuthError, DotdigitalWrongRegion) as error:
            return self._refused(error)
        except DotdigitalRejected as error:
            return self._fail(f"Dotdigital refused an import: {rejection_reason(error)}")

    def settle_doubt(self) -> Step | None:
        """Learn whether an unanswered start landed; a step while the job must wait for it.

        Nothing else is started meanwhile, so the start in doubt carried the batch after the
        cursor, which is read again (with the customers' current values) to compare.
        """
        in_doubt = self._in_doubt()
        if not in_doubt:
            return None
        item = in_doubt[0]
        due_at = bulk_imports.doubt_check_at(item, self.options)
        if due_at > utcnow():
            return Step(StepState.WAITING, (due_at - utcnow()).total_seconds())
        cursor, _all_sent, _running = self._job_state()
        batch = self._read_batch(cursor)
        entries = batch.entries if batch is not None else []
        landed = self._read_back(item, entries) if entries else False
        if isinstance(landed, Step):
            return landed
        if landed and batch is not None:
            self._record_start(batch, item.pk)
            self._progressed()
            return None
        with self.session_factory() as session, session.begin():
            bulk_imports.resolve_doubt(session, item.pk, landed=False, now=utcnow())
        note_job_error(
            self.session_factory,
            self.job_id,
            "Dotdigital shows no sign of the import start that got no answer; sending its "
            "contacts again",
        )
        return None

    def _read_back(
        self, item: bulk_imports.RunningImport, entries: Sequence[dict[str, Any]]
    ) -> bool | Step:
        """Whether sample contacts already hold the entries' values; a step to stop the slice."""
        for entry in bulk_imports.samples(entries):
            step = self._one_call()
            if step is not None:
                return step
            try:
                contact = self.client.get_contact(entry["identifiers"]["email"])
            except DotdigitalRateLimited as error:
                return self._wait_for_rate_limit(error)
            except (DotdigitalAuthError, DotdigitalWrongRegion) as error:
                return self._refused(error)
            except DotdigitalRejected:
                return False
            except DotdigitalRetryable as error:
                self._not_yet(item, error)
                return Step(StepState.WAITING, self.options.import_poll_seconds)
            if not bulk_imports.holds_values(contact, entry["dataFields"]):
                return False
        return True

    def advance(self) -> Step:
        """Work until the deadline, the end of the job, or a reason to wait."""
        while True:
            cursor, all_sent, running = self._job_state()
            if all_sent and not running:
                return self._finish()
            step = self.poll(running)
            if step is None:
                step = self.settle_doubt()
            if step is not None:
                return step
            cursor, all_sent, running = self._job_state()
            started = False
            while self._may_start(all_sent, running):
                step = self.start_next(cursor)
                if step is not None:
                    return step
                if self.imports_full:
                    break
                started = True
                cursor, all_sent, running = self._job_state()
            if all_sent and not running:
                return self._finish()
            if not self.time_left():
                return Step(StepState.WAITING, 0.0)
            if not started:
                return Step(StepState.WAITING, self._next_poll_in(running))

    def _may_start(self, all_sent: bool, running: Sequence[object]) -> bool:
        return (
            not all_sent
            and not self.imports_full
            and len(running) < self.options.max_active_imports
            and self.time_left()
        )

    def _next_poll_in(self, running: list[bulk_imports.RunningImport]) -> float:
        if not running:
            return self.options.import_poll_seconds
        due_at = bulk_imports.next_check_at(running[0], self.options)
        return max(0.0, (due_at - utcnow()).total_seconds())


def advance_job(
    settings: Settings,
    session_factory: sessionmaker[Session],
    job_id: int,
    *,
    options: SyncOptions = DEFAULT_OPTIONS,
    deadline: float | None = None,
    on_progress: Callable[[], None] | None = None,
) -> Step:
    """One slice of work on a manual sync: poll its imports and start new ones.

    ``on_progress`` is called after every import started or finished.
    """
    return advance_held(
        JobContext(settings, session_factory),
        (MANUAL_SYNC_LEASE, job_id),
        options,
        deadline,
        fail=fail_job,
        work=lambda connected, until: _ManualSync(
            connected, job_id=job_id, deadline=until, on_progress=on_progress
        ).advance(),
    )


def advance_held(
    context: JobContext,
    leased: tuple[Lease, int],
    options: SyncOptions,
    deadline: float | None,
    *,
    fail: Callable[[sessionmaker[Session], int, str], Step],
    work: Callable[[Connected, float], Step],
) -> Step:
    """One slice of a job (the lease's row ``key``) until ``deadline`` (default: one run):
    ``work`` with a connection; ``fail`` when the connection is gone or switched off; BUSY
    while another worker holds the job."""
    lease, key = leased
    with hold(context.settings, context.session_factory, lease, key, options) as held:
        if held is None:
            return Step(StepState.BUSY, options.import_poll_seconds)
        if held.connection is None:
            return fail(context.session_factory, key, SWITCHED_OFF)
        return work(held.connection, deadline or time.monotonic() + options.run_seconds)


def run_manual_syncs(context: JobContext, options: SyncOptions = DEFAULT_OPTIONS) -> None:
    """The scheduled job that moves every running manual sync along."""
    run_each(
        context,
        MANUAL_SYNC_LEASE,
        options,
        lambda job_id, deadline: advance_job(
            context.settings, context.session_factory, job_id, options=options, deadline=deadline
        ),
        lambda job_id, reason: note_job_error(context.session_factory, job_id, reason),
    )


def read_job(session_factory: sessionmaker[Session], job_id: int) -> JobView:
    """The current state of a manual sync."""
    with session_factory() as session:
        job = session.get(SyncJob, job_id)
        if job is None:
            raise LookupError(f"Dotdigital sync job {job_id} does not exist")
        return job_view(session, job)


def run_manual_sync(
    settings: Settings,
    session_factory: sessionmaker[Session],
    job_id: int,
    *,
    options: SyncOptions = DEFAULT_OPTIONS,
    progress: Callable[[JobView], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> JobView:
    """Run a manual sync to its end in the foreground (the CLI), reporting progress.

    If a worker is working on the same job at the moment, this follows its progress until the
    job ends instead of competing for it.
    """
    reported = [0.0]

    def report() -> None:
        # At most twice a second: each report reads the job.
        now = time.monotonic()
        if progress is not None and now - reported[0] >= 0.5:
            reported[0] = now
            progress(read_job(session_factory, job_id))

    while True:
        step = advance_job(settings, session_factory, job_id, options=options, on_progress=report)
        view = read_job(session_factory, job_id)
        if progress is not None:
            progress(view)
        if view.status != SyncJobStatus.RUNNING:
            return view
        sleep(min(max(step.wait_seconds, 0.02), 5.0))
