"""Sending loyalty data to Dotdigital: the automatic flush of changed customers and manual syncs.

Automatic sync. Event handlers mark changed customers in ``dotdigital_pending_contacts`` (one
row per customer, however many changes). A scheduled job (``run_flush``) sends each marked
customer's *current* values, read just before sending, so any number of changes costs one call.
A small backlog goes out as single upserts (``PATCH /contacts/v3/email/...``); a backlog above
``SyncOptions.bulk_threshold`` goes out as one bulk import per run, polled on later runs. A row is
removed only if its ``version`` is still the one that was sent.

Manual sync. ``run_manual_syncs`` (scheduled) and ``run_manual_sync`` (the CLI, in the
foreground) walk every customer by id in batches, start bulk imports (at most
``max_active_imports`` at once), record each import and move the job's cursor in one
transaction, then poll the imports and record per-contact failures. A restarted worker
continues from the cursor and polls the recorded imports, so no finished batch is sent again.
The one unavoidable window: if the process dies while an import request is in flight (or
before the transaction recording its id commits), Tally cannot know whether Dotdigital accepted
it, and that one batch is sent again on restart (harmless: the values are absolute).

Every call to Dotdigital spends a token from the merchant's call budget (a token bucket kept on
the connection row, ``calls_per_minute`` per minute, a sixth of that as burst), and a 429 pauses
the merchant until Dotdigital's ``x-ratelimit-reset``. Leases on the connection (flush) and on
the job (manual sync) keep two workers from working on the same merchant or job at once.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, and_, bindparam, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.errors import DomainError
from tally.integrations.dotdigital.client import (
    DataFieldValue,
    DotdigitalApi,
    DotdigitalAuthError,
    DotdigitalError,
    DotdigitalRateLimited,
    DotdigitalRejected,
    DotdigitalRetryable,
    DotdigitalWrongRegion,
    ImportFailure,
    ImportStatus,
    import_entry,
)
from tally.integrations.dotdigital.fields import (
    DataFieldMapping,
    DataFieldValueError,
    build_import_batches,
    contact_data_fields,
)
from tally.integrations.dotdigital.orm import (
    DotdigitalConnection,
    ImportKind,
    PendingContact,
    SyncFailure,
    SyncImport,
    SyncJob,
    SyncJobStatus,
)
from tally.integrations.dotdigital.service import (
    ClientFactory,
    ConnectionAccess,
    JobView,
    close_client,
    connection_access,
    default_client_factory,
    job_view,
)
from tally.outbox.registry import JobContext
from tally.outbox.worker import backoff_seconds
from tally.program.config_service import load_program

log = logging.getLogger("tally.dotdigital")

IMPORT_NOT_FINISHED = "NotFinished"
TOO_MANY_IMPORTS = "contacts:tooManyActiveImports"
IMPORT_NOT_FOUND = "contacts:importNotFound"
# An import costs a start and a status read: below this backlog single upserts never cost more.
MIN_BULK_BACKLOG = 2
SWITCHED_OFF = "Dotdigital syncing was switched off or disconnected"


# Contacts per bulk import. Dotdigital's own plugins send about 2,000, but every import also
# costs at least one status read, so 2,000 per import needs 1,000 calls per million contacts;
# 5,000 (about 1.3 MB of JSON, far under the 50 MB limit) keeps a million to 400 calls.
DEFAULT_IMPORT_CONTACTS = 5000


@dataclass(frozen=True)
class SyncOptions:
    """How the sync paces itself; the defaults suit a production Dotdigital account."""

    flush_every: timedelta = timedelta(seconds=2)
    manual_every: timedelta = timedelta(seconds=2)
    # A backlog larger than this goes out as a bulk import instead of one call per contact.
    bulk_threshold: int = 100
    import_batch_size: int = DEFAULT_IMPORT_CONTACTS
    # Dotdigital allows 25 imports in progress per account.
    max_active_imports: int = 25
    # Bulk imports of the automatic sync in flight per merchant.
    max_auto_imports: int = 2
    # First look at an import this long after starting it; while it is still running, the
    # wait between looks grows with its age (1, 2, 4, 8... s) up to import_poll_max_seconds.
    import_poll_seconds: float = 1.0
    import_poll_max_seconds: float = 30.0
    # An import still unfinished after this long is given up (its contacts are retried).
    import_give_up_seconds: float = 3600.0
    # Most single upserts one flush run sends for one merchant.
    contacts_per_run: int = 500
    # How long one run of a scheduled job keeps working before it yields.
    run_seconds: float = 20.0
    # Leases outlive a run (plus one call's timeout); a dead worker's lease expires after this.
    lease_seconds: float = 60.0
    client_timeout_seconds: float = 20.0
    # Pause after a 429 that does not say when the limit resets.
    rate_limit_pause_seconds: float = 60.0
    # Pause after Dotdigital refuses the credentials (401) or the region (403).
    auth_pause_seconds: float = 300.0
    client_factory: ClientFactory = default_client_factory


DEFAULT_OPTIONS = SyncOptions()


class CustomerRow(NamedTuple):
    """The customer facts a sync sends."""

    id: int
    email: str
    points_balance: int
    birthday: date | None
    vip_tier: str | None
    referral_code: str | None


class RunningImport(NamedTuple):
    """A bulk import Dotdigital has not finished yet."""

    pk: int
    import_id: str
    started_at: datetime
    checked_at: datetime | None


def next_check_at(running: RunningImport, options: SyncOptions) -> datetime:
    """When to ask about an import next: soon after it starts, then less and less often."""
    first = timedelta(seconds=options.import_poll_seconds)
    if running.checked_at is None:
        return running.started_at + first
    age = running.checked_at - running.started_at
    wait = min(max(first, age), timedelta(seconds=options.import_poll_max_seconds))
    return running.checked_at + wait


_CUSTOMER_COLUMNS = (
    Customer.id,
    Customer.email,
    Customer.points_balance,
    Customer.birthday,
    Customer.vip_tier,
    Customer.referral_code,
)


@dataclass(frozen=True)
class ValueBuilder:
    """Turns a customer row into Dotdigital data field values."""

    mapping: DataFieldMapping
    tier_names: dict[str, str]
    base_url: str

    def values(self, row: CustomerRow) -> dict[str, DataFieldValue]:
        """The mapped fields' values; DataFieldValueError when one cannot be sent."""
        tier = self.tier_names.get(row.vip_tier, row.vip_tier) if row.vip_tier else None
        referral = f"{self.base_url}/r/{row.referral_code}" if row.referral_code else None
        return contact_data_fields(
            self.mapping,
            points_balance=int(row.points_balance),
            referral_url=referral,
            birthday=row.birthday,
            vip_tier=tier,
        )


def value_builder(
    session: Session, settings: Settings, merchant_id: int, mapping: DataFieldMapping
) -> ValueBuilder:
    """Values as the merchant's program names them (VIP tier names, not ids)."""
    _merchant, program = load_program(session, merchant_id)
    return ValueBuilder(
        mapping=mapping,
        tier_names={tier.id: tier.name for tier in program.vip.tiers},
        base_url=settings.public_base_url,
    )


def rejection_reason(error: DotdigitalRejected) -> str:
    """Dotdigital's description of a refusal, with its per-item details."""
    details = "; ".join(
        str(d.get("description")) for d in error.details if d.get("description") is not None
    )
    message = error.message or str(error)
    return f"{message.rstrip('.')}: {details}" if details else message


def _owner() -> str:
    return uuid.uuid4().hex


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


# --------------------------------------------------------------------------- call budget


@dataclass(frozen=True)
class Grant:
    """Calls granted from the budget, and how long to wait for one more when none were."""

    calls: int
    wait_seconds: float = 0.0
    stopped: bool = False  # the connection is gone or switched off
    # Whole calls still in the bucket after this grant.
    available: int = 0


def calls_per_minute(settings: Settings, connection: DotdigitalConnection) -> int:
    """The merchant's budget, or the installation's."""
    return max(1, connection.calls_per_minute or settings.dotdigital_calls_per_minute)


def take_calls(
    session_factory: sessionmaker[Session],
    settings: Settings,
    merchant_id: int,
    wanted: int,
    *,
    require_enabled: bool = True,
) -> Grant:
    """Spend up to ``wanted`` tokens of the merchant's bucket (one short transaction).

    The row is locked (FOR UPDATE on PostgreSQL; SQLite serialises writers), so workers sharing
    a merchant never spend the same token twice.
    """
    now = utcnow()
    with session_factory() as session, session.begin():
        connection = session.scalar(
            select(DotdigitalConnection)
            .where(DotdigitalConnection.merchant_id == merchant_id)
            .with_for_update()
        )
        if connection is None or (require_enabled and not connection.enabled):
            return Grant(0, stopped=True)
        if connection.paused_until is not None and connection.paused_until > now:
            return Grant(0, (connection.paused_until - now).total_seconds())
        budget = calls_per_minute(settings, connection)
        rate = budget / 60.0
        capacity = max(1.0, budget / 6.0)
        if connection.budget_tokens is None or connection.budget_updated_at is None:
            tokens = capacity
        else:
            elapsed = max(0.0, (now - connection.budget_updated_at).total_seconds())
            tokens = min(capacity, connection.budget_tokens + elapsed * rate)
        granted = max(0, min(wanted, math.floor(tokens)))
        connection.budget_tokens = tokens - granted
        connection.budget_updated_at = now
        wait = 0.0 if granted or tokens >= 1.0 else (1.0 - tokens) / rate
        return Grant(granted, wait, available=math.floor(tokens - granted))


def pause_merchant(
    session_factory: sessionmaker[Session], merchant_id: int, seconds: float, reason: str
) -> datetime:
    """No calls for this merchant until ``seconds`` from now (a 429, or refused credentials)."""
    now = utcnow()
    until = now + timedelta(seconds=max(0.0, seconds))
    with session_factory() as session, session.begin():
        session.execute(
            update(DotdigitalConnection)
            .where(DotdigitalConnection.merchant_id == merchant_id)
            .values(
                paused_until=until,
                budget_tokens=0.0,
                budget_updated_at=until,
                last_error=reason,
                last_error_at=now,
            )
            .execution_options(synchronize_session=False)
        )
    return until


def _record_connection_error(
    session_factory: sessionmaker[Session], merchant_id: int, reason: str
) -> None:
    with session_factory() as session, session.begin():
        session.execute(
            update(DotdigitalConnection)
            .where(DotdigitalConnection.merchant_id == merchant_id)
            .values(last_error=reason, last_error_at=utcnow())
            .execution_options(synchronize_session=False)
        )


def _rate_limited(
    session_factory: sessionmaker[Session],
    merchant_id: int,
    error: DotdigitalRateLimited,
    options: SyncOptions,
) -> float:
    seconds = (
        error.reset_seconds if error.reset_seconds is not None else options.rate_limit_pause_seconds
    )
    pause_merchant(
        session_factory,
        merchant_id,
        seconds,
        f"Dotdigital rate limit reached; paused for {seconds:g} s ({error})",
    )
    return seconds


def _connection_refused(
    session_factory: sessionmaker[Session],
    merchant_id: int,
    error: DotdigitalError,
    options: SyncOptions,
) -> None:
    if isinstance(error, DotdigitalAuthError):
        reason = "Dotdigital refused the API user's username or password; save them again"
    else:
        reason = "Dotdigital says the account lives in another region; save the credentials again"
    pause_merchant(session_factory, merchant_id, options.auth_pause_seconds, reason)


# --------------------------------------------------------------------------- failures


def _record_failure(
    session: Session,
    *,
    merchant_id: int,
    customer_id: int | None,
    email: str | None,
    code: str,
    reason: str,
    job_id: int | None,
    now: datetime,
) -> None:
    """One row per customer and code: a customer refused again replaces the older record."""
    if customer_id is not None:
        session.execute(
            delete(SyncFailure)
            .where(
                SyncFailure.merchant_id == merchant_id,
                SyncFailure.customer_id == customer_id,
                SyncFailure.code == code,
            )
            .execution_options(synchronize_session=False)
        )
    session.add(
        SyncFailure(
            merchant_id=merchant_id,
            customer_id=customer_id,
            email=email,
            code=code[:100],
            reason=reason,
            sync_job_id=job_id,
            failed_at=now,
        )
    )


def _failure_code_and_reason(failure: ImportFailure) -> tuple[str, str]:
    codes = [code for code, _ in failure.reasons if code]
    reasons = [text for _, text in failure.reasons if text]
    return (codes[0] if codes else "importFailure"), ("; ".join(reasons) or "refused by Dotdigital")


def _customer_ids_by_email(
    session: Session, merchant_id: int, emails: Iterable[str]
) -> dict[str, int]:
    wanted = sorted({email.lower() for email in emails})
    found: dict[str, int] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for customer_id, email in session.execute(
            select(Customer.id, Customer.email).where(
                Customer.merchant_id == merchant_id, Customer.email.in_(chunk)
            )
        ):
            found[email.lower()] = customer_id
    return found


# --------------------------------------------------------------------------- automatic sync


class PendingRow(NamedTuple):
    """A marked customer with its current values."""

    pending_id: int
    version: int
    attempts: int
    customer: CustomerRow


class _Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    REJECTED = "rejected"


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
    imports_started: int = 0
    imports_finished: int = 0
    paused: bool = False
    skipped: bool = False


def _due_pending(now: datetime) -> Any:
    return and_(PendingContact.import_pk.is_(None), PendingContact.next_attempt_at <= now)


def due_merchants(session: Session, now: datetime) -> list[int]:
    """Merchants with syncing on, not paused, and something to send or to poll."""
    pending = exists().where(
        PendingContact.merchant_id == DotdigitalConnection.merchant_id, _due_pending(now)
    )
    imports = exists().where(
        SyncImport.merchant_id == DotdigitalConnection.merchant_id,
        SyncImport.kind == ImportKind.AUTO,
        SyncImport.status == IMPORT_NOT_FINISHED,
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


def _load_pending(
    session: Session, merchant_id: int, now: datetime, limit: int
) -> list[PendingRow]:
    stmt = (
        select(
            PendingContact.id,
            PendingContact.version,
            PendingContact.attempts,
            *_CUSTOMER_COLUMNS,
        )
        .join(Customer, Customer.id == PendingContact.customer_id)
        .where(PendingContact.merchant_id == merchant_id, _due_pending(now))
        .order_by(PendingContact.next_attempt_at, PendingContact.id)
        .limit(limit)
    )
    return [
        PendingRow(row[0], row[1], row[2], CustomerRow(*row[3:])) for row in session.execute(stmt)
    ]


def _count_due(session: Session, merchant_id: int, now: datetime, cap: int) -> int:
    inner = (
        select(PendingContact.id)
        .where(PendingContact.merchant_id == merchant_id, _due_pending(now))
        .limit(cap)
        .subquery()
    )
    return int(session.scalar(select(func.count()).select_from(inner)) or 0)


class _Flush:
    """One flush of one merchant, under the merchant's flush lease."""

    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        merchant_id: int,
        client: DotdigitalApi,
        builder: ValueBuilder,
        options: SyncOptions,
        deadline: float,
        report: FlushReport,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.merchant_id = merchant_id
        self.client = client
        self.builder = builder
        self.options = options
        self.deadline = deadline
        self.report = report
        self.stopped = False

    def _time_left(self) -> bool:
        return time.monotonic() < self.deadline

    def _backoff(self, attempts: int) -> timedelta:
        return timedelta(
            seconds=backoff_seconds(
                attempts,
                base=self.settings.worker_backoff_base_seconds,
                maximum=self.settings.worker_backoff_max_seconds,
            )
        )

    def _call_failed(self, error: DotdigitalError) -> bool:
        """Handle errors that stop the run; True when the caller should stop."""
        if isinstance(error, DotdigitalRateLimited) and error.code != TOO_MANY_IMPORTS:
            _rate_limited(self.session_factory, self.merchant_id, error, self.options)
            self.report.paused = True
            self.stopped = True
            return True
        if isinstance(error, DotdigitalAuthError | DotdigitalWrongRegion):
            _connection_refused(self.session_factory, self.merchant_id, error, self.options)
            self.report.paused = True
            self.stopped = True
            return True
        return False

    # -- single upserts ------------------------------------------------------------------

    def send_single(self, rows: Sequence[PendingRow]) -> None:
        """One upsert per marked customer, as far as the budget allows."""
        if not rows:
            return
        grant = take_calls(self.session_factory, self.settings, self.merchant_id, len(rows))
        if grant.stopped:
            self.stopped = True
            return
        results: list[_Result] = []
        for row in rows[: grant.calls]:
            if not self._time_left():
                break
            result = self._send_one(row)
            if result is None:
                break
            results.append(result)
            if len(results) >= 50:
                self._write(results)
                results = []
        self._write(results)

    def _send_one(self, row: PendingRow) -> _Result | None:
        try:
            values = self.builder.values(row.customer)
        except DataFieldValueError as error:
            return _Result(row, _Outcome.REJECTED, "invalidValue", str(error))
        try:
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
                current = and_(
                    PendingContact.id == row.pending_id, PendingContact.version == row.version
                )
                if result.outcome == _Outcome.RETRY:
                    attempts = row.attempts + 1
                    session.execute(
                        update(PendingContact)
                        .where(PendingContact.id == row.pending_id)
                        .values(
                            attempts=attempts,
                            next_attempt_at=now + self._backoff(attempts),
                            last_error=result.reason,
                        )
                        .execution_options(synchronize_session=False)
                    )
                    self.report.retried += 1
                    continue
                if result.outcome == _Outcome.REJECTED:
                    _record_failure(
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
                removed = session.execute(
                    delete(PendingContact)
                    .where(current)
                    .execution_options(synchronize_session=False)
                )
                if not _rowcount(removed):
                    # Changed again while we were sending: send the newer values next time.
                    session.execute(
                        update(PendingContact)
                        .where(PendingContact.id == row.pending_id)
                        .values(attempts=0, last_error=None)
                        .execution_options(synchronize_session=False)
                    )
            if any(r.outcome == _Outcome.SENT for r in results):
                session.execute(
                    update(DotdigitalConnection)
                    .where(DotdigitalConnection.merchant_id == self.merchant_id)
                    .values(last_successful_sync_at=now)
                    .execution_options(synchronize_session=False)
                )

    # -- bulk imports --------------------------------------------------------------------

    def start_import(self, rows: Sequence[PendingRow]) -> None:
        """One bulk import of the backlog; rows stay marked until Dotdigital has finished it."""
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
        grant = take_calls(self.session_factory, self.settings, self.merchant_id, 1)
        if grant.calls < 1:
            self.stopped = True
            return
        try:
            import_id = self.client.start_import(batch)
        except DotdigitalError as error:
            if self._call_failed(error):
                return
            if isinstance(error, DotdigitalRateLimited):
                # Too many imports running (ours or someone else's): try again next run.
                self.stopped = True
                return
            self._write([_Result(row, _Outcome.RETRY, reason=str(error)) for row in included])
            self.stopped = True
            return
        now = utcnow()
        with self.session_factory() as session, session.begin():
            record = SyncImport(
                merchant_id=self.merchant_id,
                kind=ImportKind.AUTO,
                import_id=import_id,
                status=IMPORT_NOT_FINISHED,
                contact_count=len(included),
                first_customer_id=min(r.customer.id for r in included),
                last_customer_id=max(r.customer.id for r in included),
                started_at=now,
            )
            session.add(record)
            session.flush()
            # The version each row had when its values were read, not whatever it is now.
            # (Core, not an ORM bulk update: a row deleted meanwhile is simply not there.)
            table = cast(Table, PendingContact.__table__)
            session.execute(
                update(table)
                .where(table.c.id == bindparam("row_id"))
                .values(import_pk=record.id, sending_version=bindparam("row_version")),
                [{"row_id": r.pending_id, "row_version": r.version} for r in included],
            )
        self.report.imports_started += 1

    def poll_imports(self) -> None:
        """Ask about the automatic sync's imports that are due for a look, oldest first."""
        now = utcnow()
        with self.session_factory() as session:
            running = [
                RunningImport(*row)
                for row in session.execute(
                    select(
                        SyncImport.id,
                        SyncImport.import_id,
                        SyncImport.started_at,
                        SyncImport.checked_at,
                    )
                    .where(
                        SyncImport.merchant_id == self.merchant_id,
                        SyncImport.kind == ImportKind.AUTO,
                        SyncImport.status == IMPORT_NOT_FINISHED,
                    )
                    .order_by(SyncImport.id)
                )
            ]
        due = [r for r in running if next_check_at(r, self.options) <= now]
        for pk, import_id, started_at, _checked_at in due:
            if not self._time_left() or self.stopped:
                return
            grant = take_calls(self.session_factory, self.settings, self.merchant_id, 1)
            if grant.calls < 1:
                self.stopped = True
                return
            try:
                result = self.client.import_status(import_id)
            except DotdigitalRejected as error:
                if error.code != IMPORT_NOT_FOUND and error.status != 404:
                    self._touch(pk)
                    return
                result = ImportStatus(import_id, "NotFound")
            except DotdigitalError as error:
                if not self._call_failed(error):
                    self._touch(pk)
                return
            if not result.finished:
                too_old = utcnow() - started_at > timedelta(
                    seconds=self.options.import_give_up_seconds
                )
                if not too_old:
                    self._touch(pk)
                    # Younger imports are unlikely to be done before this one.
                    return
                result = ImportStatus(import_id, "GaveUp")
            self._finish_import(pk, result)
            self.report.imports_finished += 1

    def _touch(self, pk: int) -> None:
        with self.session_factory() as session, session.begin():
            session.execute(
                update(SyncImport)
                .where(SyncImport.id == pk)
                .values(checked_at=utcnow())
                .execution_options(synchronize_session=False)
            )

    def _finish_import(self, pk: int, result: ImportStatus) -> None:
        now = utcnow()
        with self.session_factory() as session, session.begin():
            rows = session.execute(
                select(PendingContact.id, PendingContact.customer_id, Customer.email)
                .join(Customer, Customer.id == PendingContact.customer_id)
                .where(PendingContact.import_pk == pk)
            ).all()
            failed = 0
            if result.succeeded:
                by_email = {email.lower(): customer_id for _, customer_id, email in rows}
                for failure in result.failures:
                    email = (failure.email or "").lower()
                    code, reason = _failure_code_and_reason(failure)
                    _record_failure(
                        session,
                        merchant_id=self.merchant_id,
                        customer_id=by_email.get(email),
                        email=failure.email,
                        code=code,
                        reason=reason,
                        job_id=None,
                        now=now,
                    )
                    failed += 1
                # Sent (or refused for good) at the version that travelled; newer marks stay.
                session.execute(
                    delete(PendingContact)
                    .where(
                        PendingContact.import_pk == pk,
                        PendingContact.version == PendingContact.sending_version,
                    )
                    .execution_options(synchronize_session=False)
                )
                session.execute(
                    update(PendingContact)
                    .where(PendingContact.import_pk == pk)
                    .values(import_pk=None, sending_version=None, attempts=0, last_error=None)
                    .execution_options(synchronize_session=False)
                )
                session.execute(
                    update(DotdigitalConnection)
                    .where(DotdigitalConnection.merchant_id == self.merchant_id)
                    .values(last_successful_sync_at=now)
                    .execution_options(synchronize_session=False)
                )
                self.report.sent += len(rows) - failed
                self.report.rejected += failed
            else:
                reason = f"Dotdigital import {result.import_id} ended with status {result.status}"
                session.execute(
                    update(PendingContact)
                    .where(PendingContact.import_pk == pk)
                    .values(
                        import_pk=None,
                        sending_version=None,
                        attempts=PendingContact.attempts + 1,
                        next_attempt_at=now + self._backoff(1),
                        last_error=reason,
                    )
                    .execution_options(synchronize_session=False)
                )
                session.execute(
                    update(DotdigitalConnection)
                    .where(DotdigitalConnection.merchant_id == self.merchant_id)
                    .values(last_error=reason, last_error_at=now)
                    .execution_options(synchronize_session=False)
                )
            summary = result.summary
            session.execute(
                update(SyncImport)
                .where(SyncImport.id == pk)
                .values(
                    status=result.status,
                    created_count=summary.get("newContacts", len(result.created)),
                    updated_count=summary.get("updatedContacts", len(result.updated)),
                    failed_count=failed,
                    checked_at=now,
                    finished_at=now,
                )
                .execution_options(synchronize_session=False)
            )

    # -- one run -------------------------------------------------------------------------

    def run(self) -> None:
        """Poll finished imports, then send the backlog the cheaper way.

        Single upserts reach Dotdigital sooner, so they are used while the budget can send the
        whole backlog now; a larger backlog (more than ``bulk_threshold``, or more than the
        calls left in the bucket) goes out as one bulk import, which costs two calls (start and
        one status read) however many contacts it carries.
        """
        self.poll_imports()
        if self.stopped or not self._time_left():
            return
        now = utcnow()
        threshold = self.options.bulk_threshold
        with self.session_factory() as session:
            backlog = _count_due(session, self.merchant_id, now, threshold + 1)
        if backlog == 0:
            return
        budget = take_calls(self.session_factory, self.settings, self.merchant_id, 0)
        if budget.stopped:
            return
        bulk = backlog > threshold or backlog > max(MIN_BULK_BACKLOG, budget.available)
        with self.session_factory() as session:
            in_flight = int(
                session.scalar(
                    select(func.count(SyncImport.id)).where(
                        SyncImport.merchant_id == self.merchant_id,
                        SyncImport.kind == ImportKind.AUTO,
                        SyncImport.status == IMPORT_NOT_FINISHED,
                    )
                )
                or 0
            )
            if bulk:
                if in_flight >= self.options.max_auto_imports:
                    return
                rows = _load_pending(session, self.merchant_id, now, self.options.import_batch_size)
            else:
                rows = _load_pending(session, self.merchant_id, now, self.options.contacts_per_run)
        if bulk:
            self.start_import(rows)
        else:
            self.send_single(rows)


def _claim_flush(
    session_factory: sessionmaker[Session], merchant_id: int, owner: str, options: SyncOptions
) -> bool:
    now = utcnow()
    with session_factory() as session, session.begin():
        claimed = session.execute(
            update(DotdigitalConnection)
            .where(
                DotdigitalConnection.merchant_id == merchant_id,
                DotdigitalConnection.enabled.is_(True),
                or_(
                    DotdigitalConnection.flush_locked_until.is_(None),
                    DotdigitalConnection.flush_locked_until < now,
                ),
            )
            .values(
                flush_locked_by=owner,
                flush_locked_until=now + timedelta(seconds=options.lease_seconds),
            )
            .execution_options(synchronize_session=False)
        )
        return _rowcount(claimed) == 1


def _release_flush(session_factory: sessionmaker[Session], merchant_id: int, owner: str) -> None:
    with session_factory() as session, session.begin():
        session.execute(
            update(DotdigitalConnection)
            .where(
                DotdigitalConnection.merchant_id == merchant_id,
                DotdigitalConnection.flush_locked_by == owner,
            )
            .values(flush_locked_by=None, flush_locked_until=None)
            .execution_options(synchronize_session=False)
        )


def _open_access(
    settings: Settings, session_factory: sessionmaker[Session], merchant_id: int
) -> tuple[ConnectionAccess, ValueBuilder] | None:
    with session_factory() as session:
        connection = session.scalar(
            select(DotdigitalConnection).where(DotdigitalConnection.merchant_id == merchant_id)
        )
        if connection is None:
            return None
        try:
            access = connection_access(settings, connection)
        except DomainError as error:
            reason = str(error)
        else:
            return access, value_builder(session, settings, merchant_id, access.mapping)
    _record_connection_error(session_factory, merchant_id, reason)
    return None


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
    owner = _owner()
    if not _claim_flush(session_factory, merchant_id, owner, options):
        report.skipped = True
        return report
    try:
        opened = _open_access(settings, session_factory, merchant_id)
        if opened is None:
            report.skipped = True
            return report
        access, builder = opened
        client = access.client(options.client_factory, options.client_timeout_seconds)
        try:
            _Flush(
                settings=settings,
                session_factory=session_factory,
                merchant_id=merchant_id,
                client=client,
                builder=builder,
                options=options,
                deadline=deadline or time.monotonic() + options.run_seconds,
                report=report,
            ).run()
        finally:
            close_client(client)
    finally:
        _release_flush(session_factory, merchant_id, owner)
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


# --------------------------------------------------------------------------- manual sync


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


def _claim_job(
    session_factory: sessionmaker[Session], job_id: int, owner: str, options: SyncOptions
) -> bool:
    now = utcnow()
    with session_factory() as session, session.begin():
        claimed = session.execute(
            update(SyncJob)
            .where(
                SyncJob.id == job_id,
                SyncJob.status == SyncJobStatus.RUNNING,
                or_(SyncJob.locked_until.is_(None), SyncJob.locked_until < now),
            )
            .values(locked_by=owner, locked_until=now + timedelta(seconds=options.lease_seconds))
            .execution_options(synchronize_session=False)
        )
        return _rowcount(claimed) == 1


def _release_job(session_factory: sessionmaker[Session], job_id: int, owner: str) -> None:
    with session_factory() as session, session.begin():
        session.execute(
            update(SyncJob)
            .where(SyncJob.id == job_id, SyncJob.locked_by == owner)
            .values(locked_by=None, locked_until=None)
            .execution_options(synchronize_session=False)
        )


def _fail_job(session_factory: sessionmaker[Session], job_id: int, reason: str) -> Step:
    with session_factory() as session, session.begin():
        session.execute(
            update(SyncJob)
            .where(SyncJob.id == job_id)
            .values(status=SyncJobStatus.FAILED, last_error=reason, finished_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    return Step(StepState.FAILED)


def _note_job_error(session_factory: sessionmaker[Session], job_id: int, reason: str) -> None:
    with session_factory() as session, session.begin():
        session.execute(
            update(SyncJob)
            .where(SyncJob.id == job_id)
            .values(last_error=reason)
            .execution_options(synchronize_session=False)
        )


@dataclass
class _Batch:
    """Customers read for one import: the entries to send and the refused ones."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    refused: list[tuple[CustomerRow, str]] = field(default_factory=list)
    # The cursor after this batch: the last customer id it covers.
    last_id: int = 0


class _ManualSync:
    """One slice of work on a manual sync job, under the job's lease."""

    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        job_id: int,
        merchant_id: int,
        owner: str,
        client: DotdigitalApi,
        builder: ValueBuilder,
        options: SyncOptions,
        deadline: float,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.job_id = job_id
        self.merchant_id = merchant_id
        self.owner = owner
        self.client = client
        self.builder = builder
        self.options = options
        self.deadline = deadline
        self.on_progress = on_progress
        self.imports_full = False

    def _progressed(self) -> None:
        if self.on_progress is not None:
            self.on_progress()

    def _lease_values(self) -> dict[str, Any]:
        return {"locked_until": utcnow() + timedelta(seconds=self.options.lease_seconds)}

    def _job_state(self) -> tuple[int, bool, list[RunningImport]]:
        with self.session_factory() as session:
            job = session.get(SyncJob, self.job_id)
            assert job is not None
            running = [
                RunningImport(*row)
                for row in session.execute(
                    select(
                        SyncImport.id,
                        SyncImport.import_id,
                        SyncImport.started_at,
                        SyncImport.checked_at,
                    )
                    .where(
                        SyncImport.job_id == self.job_id,
                        SyncImport.status == IMPORT_NOT_FINISHED,
                    )
                    .order_by(SyncImport.id)
                )
            ]
            return job.cursor_customer_id, job.all_sent, running

    def _read_batch(self, cursor: int) -> _Batch | None:
        with self.session_factory() as session:
            rows = [
                CustomerRow(*row)
                for row in session.execute(
                    select(*_CUSTOMER_COLUMNS)
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
                batch.last_id = last_included
            batch.ids = [row.id for row in valid[: len(batch.entries)]]
        return batch

    def _record_start(self, batch: _Batch, import_id: str | None) -> None:
        now = utcnow()
        with self.session_factory() as session, session.begin():
            if import_id is not None:
                session.add(
                    SyncImport(
                        merchant_id=self.merchant_id,
                        job_id=self.job_id,
                        kind=ImportKind.MANUAL,
                        import_id=import_id,
                        status=IMPORT_NOT_FINISHED,
                        contact_count=len(batch.entries),
                        first_customer_id=batch.ids[0],
                        last_customer_id=batch.ids[-1],
                        started_at=now,
                    )
                )
            for row, reason in batch.refused:
                _record_failure(
                    session,
                    merchant_id=self.merchant_id,
                    customer_id=row.id,
                    email=row.email,
                    code="invalidValue",
                    reason=reason,
                    job_id=self.job_id,
                    now=now,
                )
            session.execute(
                update(SyncJob)
                .where(SyncJob.id == self.job_id)
                .values(
                    cursor_customer_id=batch.last_id,
                    sent_count=SyncJob.sent_count + len(batch.entries),
                    failed_count=SyncJob.failed_count + len(batch.refused),
                    **self._lease_values(),
                )
                .execution_options(synchronize_session=False)
            )

    def _set_all_sent(self) -> None:
        with self.session_factory() as session, session.begin():
            session.execute(
                update(SyncJob)
                .where(SyncJob.id == self.job_id)
                .values(all_sent=True, **self._lease_values())
                .execution_options(synchronize_session=False)
            )

    def _fail(self, reason: str) -> Step:
        return _fail_job(self.session_factory, self.job_id, reason)

    def _note_error(self, reason: str) -> None:
        _note_job_error(self.session_factory, self.job_id, reason)

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
                session.execute(
                    update(DotdigitalConnection)
                    .where(DotdigitalConnection.merchant_id == self.merchant_id)
                    .values(last_successful_sync_at=now)
                    .execution_options(synchronize_session=False)
                )
        return Step(StepState.FINISHED)

    def _record_result(self, pk: int, result: ImportStatus) -> None:
        now = utcnow()
        with self.session_factory() as session, session.begin():
            record = session.get(SyncImport, pk)
            assert record is not None
            failed = 0
            if result.succeeded:
                ids = _customer_ids_by_email(
                    session, self.merchant_id, (f.email for f in result.failures if f.email)
                )
                for failure in result.failures:
                    code, reason = _failure_code_and_reason(failure)
                    _record_failure(
                        session,
                        merchant_id=self.merchant_id,
                        customer_id=ids.get((failure.email or "").lower()),
                        email=failure.email,
                        code=code,
                        reason=reason,
                        job_id=self.job_id,
                        now=now,
                    )
                failed = len(result.failures)
                created = int(result.summary.get("newContacts", len(result.created)))
                updated = int(result.summary.get("updatedContacts", len(result.updated)))
            else:
                created = updated = 0
                failed = record.contact_count
                _record_failure(
                    session,
                    merchant_id=self.merchant_id,
                    customer_id=None,
                    email=None,
                    code=f"import{result.status}",
                    reason=(
                        f"Dotdigital ended import {result.import_id} of {record.contact_count} "
                        f"contacts (customers {record.first_customer_id} to "
                        f"{record.last_customer_id}) with status {result.status}; run the "
                        "sync again to resend them"
                    ),
                    job_id=self.job_id,
                    now=now,
                )
            record.status = result.status
            record.created_count = created
            record.updated_count = updated
            record.failed_count = failed
            record.checked_at = now
            record.finished_at = now
            session.execute(
                update(SyncJob)
                .where(SyncJob.id == self.job_id)
                .values(
                    created_count=SyncJob.created_count + created,
                    updated_count=SyncJob.updated_count + updated,
                    failed_count=SyncJob.failed_count + failed,
                    **self._lease_values(),
                )
                .execution_options(synchronize_session=False)
            )

    def _touch(self, pk: int) -> None:
        with self.session_factory() as session, session.begin():
            session.execute(
                update(SyncImport)
                .where(SyncImport.id == pk)
                .values(checked_at=utcnow())
                .execution_options(synchronize_session=False)
            )

    def _wait_for_rate_limit(self, error: DotdigitalRateLimited) -> Step:
        seconds = _rate_limited(self.session_factory, self.merchant_id, error, self.options)
        return Step(StepState.WAITING, seconds)

    def poll(self, running: list[RunningImport]) -> Step | None:
        """Ask about due imports, oldest first; stops at the first one still running."""
        for item in running:
            pk, import_id, started_at, _checked_at = item
            now = utcnow()
            if next_check_at(item, self.options) > now or time.monotonic() >= self.deadline:
                return None
            grant = take_calls(self.session_factory, self.settings, self.merchant_id, 1)
            if grant.stopped:
                return self._fail(SWITCHED_OFF)
            if grant.calls < 1:
                return Step(StepState.WAITING, grant.wait_seconds)
            try:
                result = self.client.import_status(import_id)
            except DotdigitalRateLimited as error:
                return self._wait_for_rate_limit(error)
            except DotdigitalRetryable as error:
                self._note_error(f"checking import {import_id} failed: {error}")
                self._touch(pk)
                return None
            except DotdigitalRejected as error:
                if error.status != 404:
                    self._note_error(f"checking import {import_id} failed: {error}")
                    self._touch(pk)
                    return None
                result = ImportStatus(import_id, "NotFound")
            except (DotdigitalAuthError, DotdigitalWrongRegion) as error:
                _connection_refused(self.session_factory, self.merchant_id, error, self.options)
                return self._fail(f"Dotdigital refused the connection: {error}")
            if not result.finished:
                if now - started_at <= timedelta(seconds=self.options.import_give_up_seconds):
                    self._touch(pk)
                    return None
                result = ImportStatus(import_id, "GaveUp")
            self._record_result(pk, result)
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
            self._record_start(batch, None)
            return None
        grant = take_calls(self.session_factory, self.settings, self.merchant_id, 1)
        if grant.stopped:
            return self._fail(SWITCHED_OFF)
        if grant.calls < 1:
            return Step(StepState.WAITING, grant.wait_seconds)
        try:
            import_id = self.client.start_import(batch.entries)
        except DotdigitalRateLimited as error:
            if error.code == TOO_MANY_IMPORTS:
                self.imports_full = True
                return None
            return self._wait_for_rate_limit(error)
        except DotdigitalRetryable as error:
            self._note_error(f"starting an import failed, will retry: {error}")
            return Step(StepState.WAITING, self.options.import_poll_seconds)
        except (DotdigitalAuthError, DotdigitalWrongRegion) as error:
            _connection_refused(self.session_factory, self.merchant_id, error, self.options)
            return self._fail(f"Dotdigital refused the connection: {error}")
        except DotdigitalRejected as error:
            return self._fail(f"Dotdigital refused an import: {rejection_reason(error)}")
        self._record_start(batch, import_id)
        self._progressed()
        return None

    def advance(self) -> Step:
        """Work until the deadline, the end of the job, or a reason to wait."""
        while True:
            cursor, all_sent, running = self._job_state()
            if all_sent and not running:
                return self._finish()
            step = self.poll(running)
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
            if time.monotonic() >= self.deadline:
                return Step(StepState.WAITING, 0.0)
            if not started:
                return Step(StepState.WAITING, self._next_poll_in(running))

    def _may_start(self, all_sent: bool, running: Sequence[object]) -> bool:
        return (
            not all_sent
            and not self.imports_full
            and len(running) < self.options.max_active_imports
            and time.monotonic() < self.deadline
        )

    def _next_poll_in(self, running: list[RunningImport]) -> float:
        if not running:
            return self.options.import_poll_seconds
        return max(0.0, (next_check_at(running[0], self.options) - utcnow()).total_seconds())


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
    owner = _owner()
    if not _claim_job(session_factory, job_id, owner, options):
        return Step(StepState.BUSY, options.import_poll_seconds)
    try:
        with session_factory() as session:
            job = session.get(SyncJob, job_id)
            assert job is not None
            merchant_id = job.merchant_id
        opened = _open_access(settings, session_factory, merchant_id)
        with session_factory() as session:
            enabled = session.scalar(
                select(DotdigitalConnection.enabled).where(
                    DotdigitalConnection.merchant_id == merchant_id
                )
            )
        if opened is None or not enabled:
            return _fail_job(session_factory, job_id, SWITCHED_OFF)
        access, builder = opened
        client = access.client(options.client_factory, options.client_timeout_seconds)
        try:
            return _ManualSync(
                settings=settings,
                session_factory=session_factory,
                job_id=job_id,
                merchant_id=merchant_id,
                owner=owner,
                client=client,
                builder=builder,
                options=options,
                deadline=deadline or time.monotonic() + options.run_seconds,
                on_progress=on_progress,
            ).advance()
        finally:
            close_client(client)
    finally:
        _release_job(session_factory, job_id, owner)


def run_manual_syncs(context: JobContext, options: SyncOptions = DEFAULT_OPTIONS) -> None:
    """The scheduled job that moves every running manual sync along."""
    now = utcnow()
    with context.session_factory() as session:
        job_ids = list(
            session.scalars(
                select(SyncJob.id)
                .where(
                    SyncJob.status == SyncJobStatus.RUNNING,
                    or_(SyncJob.locked_until.is_(None), SyncJob.locked_until < now),
                )
                .order_by(SyncJob.id)
            )
        )
    deadline = time.monotonic() + options.run_seconds
    for job_id in job_ids:
        if time.monotonic() >= deadline:
            return
        try:
            advance_job(
                context.settings,
                context.session_factory,
                job_id,
                options=options,
                deadline=deadline,
            )
        except Exception as error:
            # The job stays running and resumes from its cursor on a later run.
            log.exception("Dotdigital manual sync %s failed", job_id)
            _note_job_error(context.session_factory, job_id, f"worker error: {error!r}")


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
