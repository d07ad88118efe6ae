"""Dotdigital use cases: connect, enable, disable, disconnect, map fields, start a manual sync,
report status, and mark customers for the automatic sync.

Calls to Dotdigital never happen inside a database transaction (on SQLite a transaction holds
the database's write lock): the functions that talk to Dotdigital take ``uow``, a callable that
opens one of the caller's units of work, and use one to read and another to write, with the
network call in between. The caller still decides what a unit of work is and commits it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.fernet import InvalidToken
from pydantic import ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from tally.config import Settings
from tally.crypto import decrypt_text, encrypt_text
from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.errors import Conflict, DomainError, FieldProblem, NotFound, ValidationFailed
from tally.integrations.dotdigital.client import (
    DotdigitalApi,
    DotdigitalAuthError,
    DotdigitalError,
    DotdigitalRetryable,
    DotdigitalWrongRegion,
    HttpDotdigitalClient,
)
from tally.integrations.dotdigital.consent import LEFT_OUT_CODES, left_out_counts
from tally.integrations.dotdigital.fields import DataFieldMapping, EnsureResult, ensure_fields
from tally.integrations.dotdigital.orm import (
    DotdigitalConnection,
    PendingContact,
    SyncFailure,
    SyncImport,
    SyncJob,
    SyncJobStatus,
)

# Marking lives with the rest of the pending-contact SQL; callers still reach it here.
from tally.integrations.dotdigital.pending import mark_dirty as mark_dirty
from tally.integrations.dotdigital.pending import mark_dirty_many as mark_dirty_many

UnitOfWork = Callable[[], AbstractContextManager[Session]]
# username, password, base URL, timeout in seconds -> a client (closed with ``close()`` if any).
ClientFactory = Callable[[str, str, str, float], DotdigitalApi]

# HKDF "info": binds the derived key to this one use, so the same application secret yields
# unrelated keys for other encrypted settings (SMTP passwords and the like).
_KEY_INFO = b"tally/dotdigital/api-user-password/v1"
AUTH_REFUSED = "Dotdigital refused the API user's username or password"
CONNECT_TIMEOUT_SECONDS = 20.0
MAX_USERNAME_LENGTH = 255
MAX_PASSWORD_LENGTH = 255
RECENT_FAILURES = 20
RECENT_JOBS = 5


class DotdigitalUnavailable(DomainError):
    """Dotdigital could not be reached or answered with an error; try again later."""

    status_code = 502
    title = "Dotdigital unavailable"


def default_client_factory(
    username: str, password: str, base_url: str, timeout: float
) -> DotdigitalApi:
    """The real HTTP client."""
    return HttpDotdigitalClient(username, password, base_url, timeout)


def close_client(client: DotdigitalApi) -> None:
    """Close a client's connections when it has any."""
    close = getattr(client, "close", None)
    if callable(close):
        close()


# --------------------------------------------------------------------------- secrets


def encrypt_password(settings: Settings, password: str) -> str:
    """The password as a Fernet token under a key derived from the application secret."""
    return encrypt_text(settings, _KEY_INFO, password)


def decrypt_password(settings: Settings, token: str) -> str:
    """The password back; a clear error when the application secret changed since."""
    try:
        return decrypt_text(settings, _KEY_INFO, token)
    except InvalidToken:
        raise Conflict(
            "the stored Dotdigital password cannot be decrypted (the application secret key "
            "changed); enter the API user's credentials again"
        ) from None


@dataclass(frozen=True)
class ConnectionAccess:
    """Everything needed to call Dotdigital for one merchant; the password stays out of repr."""

    merchant_id: int
    username: str
    password: str = field(repr=False)
    api_endpoint: str
    mapping: DataFieldMapping

    def client(self, factory: ClientFactory, timeout: float) -> DotdigitalApi:
        """A client for the merchant's regional endpoint."""
        return factory(self.username, self.password, self.api_endpoint, timeout)


def connection_access(settings: Settings, connection: DotdigitalConnection) -> ConnectionAccess:
    """Decrypted access details of a stored connection."""
    return ConnectionAccess(
        merchant_id=connection.merchant_id,
        username=connection.api_username,
        password=decrypt_password(settings, connection.password_encrypted),
        api_endpoint=connection.api_endpoint,
        mapping=stored_mapping(connection),
    )


def stored_mapping(connection: DotdigitalConnection) -> DataFieldMapping:
    """The connection's field mapping (the defaults when never changed)."""
    return DataFieldMapping.model_validate(connection.field_mapping or {})


# --------------------------------------------------------------------------- reading


def find_connection(session: Session, merchant_id: int) -> DotdigitalConnection | None:
    """The merchant's connection, if it has one."""
    return session.scalar(
        select(DotdigitalConnection).where(DotdigitalConnection.merchant_id == merchant_id)
    )


def get_connection(session: Session, merchant_id: int) -> DotdigitalConnection:
    """The merchant's connection, or a Conflict saying how to create one."""
    connection = find_connection(session, merchant_id)
    if connection is None:
        raise Conflict(
            "Dotdigital is not connected: save the API user's credentials first "
            "(PUT /api/v1/integrations/dotdigital/credentials or "
            "`tally integrations dotdigital connect`)"
        )
    return connection


def is_sync_enabled(session: Session, merchant_id: int) -> bool:
    """Whether changes of this merchant's customers are synced (one indexed lookup)."""
    found = session.scalar(
        select(DotdigitalConnection.id).where(
            DotdigitalConnection.merchant_id == merchant_id,
            DotdigitalConnection.enabled.is_(True),
        )
    )
    return found is not None


# --------------------------------------------------------------------------- connecting


def _check_credentials(username: str, password: str) -> tuple[str, str]:
    username = username.strip()
    problems = []
    if not username:
        problems.append(FieldProblem("username", "the API user's username is required"))
    elif len(username) > MAX_USERNAME_LENGTH:
        problems.append(
            FieldProblem("username", f"at most {MAX_USERNAME_LENGTH} characters", username)
        )
    if not password:
        problems.append(FieldProblem("password", "the API user's password is required"))
    elif len(password) > MAX_PASSWORD_LENGTH:
        # The value is deliberately not echoed.
        problems.append(FieldProblem("password", f"at most {MAX_PASSWORD_LENGTH} characters"))
    if problems:
        raise ValidationFailed("the Dotdigital credentials are not valid", problems)
    return username, password


def _unavailable(action: str, error: DotdigitalError) -> DotdigitalUnavailable:
    if isinstance(error, DotdigitalRetryable):
        return DotdigitalUnavailable(
            f"Dotdigital could not {action} right now ({error}); try again"
        )
    return DotdigitalUnavailable(f"Dotdigital refused to {action}: {error}")


@dataclass(frozen=True)
class SavedCredentials:
    """The outcome of saving credentials."""

    api_username: str
    api_endpoint: str
    account_id: int | None
    # True when this replaced another API user (syncing then waits for a new `enable`).
    replaced_user: bool
    enabled: bool


def save_credentials(
    uow: UnitOfWork,
    *,
    merchant_id: int,
    username: str,
    password: str,
    settings: Settings,
    client_factory: ClientFactory = default_client_factory,
) -> SavedCredentials:
    """Check the API user against Dotdigital, find its region, and store it (password encrypted).

    The check is ``GET /v2/account-info`` on the installation's Dotdigital URL (r1), which
    answers for every account and names the account's regional ``ApiEndpoint``; later calls go
    there. Replacing the API user with another one disables syncing until ``enable`` checks
    the data fields of the (possibly different) account.
    """
    username, password = _check_credentials(username, password)
    client = client_factory(
        username, password, settings.dotdigital_base_url, CONNECT_TIMEOUT_SECONDS
    )
    try:
        info = client.account_info()
    except DotdigitalAuthError:
        raise ValidationFailed(
            AUTH_REFUSED,
            [FieldProblem("password", "Dotdigital answered 401: check the username and password")],
        ) from None
    except DotdigitalError as error:
        raise _unavailable("check the credentials", error) from None
    finally:
        close_client(client)
    now = utcnow()
    with uow() as session:
        connection = find_connection(session, merchant_id)
        replaced = False
        if connection is None:
            connection = DotdigitalConnection(
                merchant_id=merchant_id,
                enabled=False,
                field_mapping=DataFieldMapping().model_dump(),
                created_at=now,
            )
            session.add(connection)
        else:
            replaced = (
                connection.api_username.lower() != username.lower()
                or connection.api_endpoint != info.api_endpoint
            )
            if replaced:
                connection.enabled = False
                connection.field_check = None
        connection.api_username = username
        connection.password_encrypted = encrypt_password(settings, password)
        connection.api_endpoint = info.api_endpoint
        connection.account_id = info.account_id
        connection.paused_until = None
        connection.last_error = None
        connection.last_error_at = None
        connection.updated_at = now
        session.flush()
        return SavedCredentials(
            api_username=username,
            api_endpoint=info.api_endpoint,
            account_id=info.account_id,
            replaced_user=replaced,
            enabled=connection.enabled,
        )


def _field_check_json(result: EnsureResult) -> dict[str, Any]:
    return {
        "created": list(result.created),
        "existing": list(result.existing),
        "conflicts": [
            {
                "attribute": c.attribute,
                "name": c.name,
                "expected_type": c.expected_type,
                "actual_type": c.actual_type,
                "message": str(c),
            }
            for c in result.conflicts
        ],
        "failures": [
            {"attribute": f.attribute, "name": f.name, "code": f.code, "message": f.message}
            for f in result.failures
        ],
    }


def _field_problems(result: EnsureResult) -> list[FieldProblem]:
    problems = [FieldProblem(f"mapping.{c.attribute}", str(c), c.name) for c in result.conflicts]
    problems += [
        FieldProblem(
            f"mapping.{f.attribute}",
            f"Dotdigital refused to create data field {f.name}: {f.message}"
            + (f" ({f.code})" if f.code else ""),
            f.name,
        )
        for f in result.failures
    ]
    return problems


def _check_fields(
    access: ConnectionAccess, mapping: DataFieldMapping, client_factory: ClientFactory
) -> EnsureResult:
    client = access.client(client_factory, CONNECT_TIMEOUT_SECONDS)
    try:
        return ensure_fields(client, mapping)
    except DotdigitalAuthError:
        raise ValidationFailed(
            AUTH_REFUSED + "; save the credentials again",
            [FieldProblem("password", "Dotdigital answered 401")],
        ) from None
    except DotdigitalWrongRegion:
        raise Conflict(
            "Dotdigital says the account lives in another region; save the credentials again "
            "so Tally can find the account's API endpoint"
        ) from None
    except DotdigitalError as error:
        raise _unavailable("check the data fields", error) from None
    finally:
        close_client(client)


@dataclass(frozen=True)
class EnableResult:
    """Which mapped data fields were created and which already existed."""

    created: list[str]
    existing: list[str]


def enable(
    uow: UnitOfWork,
    *,
    merchant_id: int,
    settings: Settings,
    client_factory: ClientFactory = default_client_factory,
) -> EnableResult:
    """Create the mapped data fields that are missing, then switch the automatic sync on.

    A mapped field that exists with another type is reported (ValidationFailed, one problem per
    field) and syncing stays off: Tally never writes into a field of the wrong type, nor drops
    it from the sync quietly. Enabling does not send existing customers (that is what a manual
    sync is for); only changes from now on are synced.
    """
    with uow() as session:
        connection = get_connection(session, merchant_id)
        access = connection_access(settings, connection)
    result = _check_fields(access, access.mapping, client_factory)
    now = utcnow()
    with uow() as session:
        connection = get_connection(session, merchant_id)
        if connection_access(settings, connection) != access:
            raise Conflict("the Dotdigital connection changed meanwhile; try again")
        connection.field_check = _field_check_json(result)
        connection.updated_at = now
        if not result.ok:
            connection.enabled = False
            session.flush()
    if not result.ok:
        # Raised after the unit of work so the field check above is kept for the status page.
        raise ValidationFailed(
            "some mapped Dotdigital data fields cannot be used; syncing stays off until the "
            "mapping or the fields in Dotdigital are changed",
            _field_problems(result),
        )
    with uow() as session:
        connection = get_connection(session, merchant_id)
        connection.enabled = True
        connection.paused_until = None
        connection.last_error = None
        connection.last_error_at = None
        connection.updated_at = now
        session.flush()
    return EnableResult(created=list(result.created), existing=list(result.existing))


def disable(session: Session, *, merchant_id: int) -> DotdigitalConnection:
    """Stop syncing; credentials, mapping and waiting contacts are kept for a later `enable`."""
    connection = get_connection(session, merchant_id)
    connection.enabled = False
    connection.updated_at = utcnow()
    session.flush()
    return connection


def disconnect(session: Session, *, merchant_id: int) -> bool:
    """Forget the credentials and everything waiting to be synced; history (jobs, failures)
    stays. False when there was no connection."""
    session.execute(delete(PendingContact).where(PendingContact.merchant_id == merchant_id))
    deleted = session.execute(
        delete(DotdigitalConnection).where(DotdigitalConnection.merchant_id == merchant_id)
    )
    _fail_running_jobs(session, merchant_id, "Dotdigital was disconnected")
    return bool(deleted.rowcount)  # type: ignore[attr-defined]


def _fail_running_jobs(session: Session, merchant_id: int, reason: str) -> None:
    now = utcnow()
    for job in session.scalars(
        select(SyncJob).where(
            SyncJob.merchant_id == merchant_id, SyncJob.status == SyncJobStatus.RUNNING
        )
    ):
        job.status = SyncJobStatus.FAILED
        job.last_error = reason
        job.finished_at = now
        job.locked_by = None
        job.locked_until = None
    session.flush()


def parse_mapping(values: dict[str, Any]) -> DataFieldMapping:
    """A mapping from request data; ValidationFailed naming each bad field."""
    try:
        return DataFieldMapping.model_validate(values)
    except ValidationError as error:
        problems = [
            FieldProblem(
                "mapping." + ".".join(str(p) for p in err["loc"]) if err["loc"] else "mapping",
                err["msg"].removeprefix("Value error, "),
                err.get("input") if isinstance(err.get("input"), str) else None,
            )
            for err in error.errors()
        ]
        raise ValidationFailed("the data field mapping is not valid", problems) from None


def update_mapping(
    uow: UnitOfWork,
    *,
    merchant_id: int,
    mapping: DataFieldMapping,
    settings: Settings,
    client_factory: ClientFactory = default_client_factory,
) -> DataFieldMapping:
    """Change which data fields the loyalty facts go to.

    While syncing is on, the new fields are checked (and created) first, and a mapping with a
    conflicting field is refused with nothing changed.
    """
    with uow() as session:
        connection = get_connection(session, merchant_id)
        access = connection_access(settings, connection)
        enabled = connection.enabled
    result = _check_fields(access, mapping, client_factory) if enabled else None
    if result is not None and not result.ok:
        raise ValidationFailed(
            "some Dotdigital data fields of the new mapping cannot be used; nothing changed",
            _field_problems(result),
        )
    with uow() as session:
        connection = get_connection(session, merchant_id)
        connection.field_mapping = mapping.model_dump()
        if result is not None:
            connection.field_check = _field_check_json(result)
        connection.updated_at = utcnow()
        session.flush()
    return mapping


# --------------------------------------------------------------------------- manual sync


def start_manual_sync(session: Session, *, merchant_id: int) -> SyncJob:
    """Queue a sync of every customer (by the worker, or `tally integrations dotdigital sync`).

    One manual sync runs at a time per merchant: a second request is a Conflict naming the
    running job.
    """
    connection = get_connection(session, merchant_id)
    if not connection.enabled:
        raise Conflict(
            "Dotdigital syncing is off: enable it first (which also checks the data fields)"
        )
    running = session.scalar(
        select(SyncJob.id).where(
            SyncJob.merchant_id == merchant_id, SyncJob.status == SyncJobStatus.RUNNING
        )
    )
    if running is not None:
        raise Conflict(
            f"manual sync {running} is still running", [FieldProblem("job", "running", running)]
        )
    total = session.scalar(
        select(func.count(Customer.id)).where(Customer.merchant_id == merchant_id)
    )
    now = utcnow()
    job = SyncJob(
        merchant_id=merchant_id,
        status=SyncJobStatus.RUNNING,
        total_count=int(total or 0),
        sent_count=0,
        created_count=0,
        updated_count=0,
        failed_count=0,
        cursor_customer_id=0,
        all_sent=False,
        created_at=now,
        started_at=now,
    )
    session.add(job)
    session.flush()
    return job


def get_sync_job(session: Session, *, merchant_id: int, job_id: int) -> SyncJob:
    """One of the merchant's manual syncs."""
    job = session.scalar(
        select(SyncJob).where(SyncJob.merchant_id == merchant_id, SyncJob.id == job_id)
    )
    if job is None:
        raise NotFound(f"Dotdigital sync job {job_id} does not exist")
    return job


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class FailureView:
    """A contact Dotdigital refused."""

    customer_id: int | None
    email: str | None
    code: str
    reason: str
    failed_at: datetime


@dataclass(frozen=True)
class JobView:
    """Progress and counts of a manual sync."""

    id: int
    status: str
    total: int
    sent: int
    created: int
    updated: int
    failed: int
    imports: int
    imports_running: int
    cursor_customer_id: int
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str | None

    @property
    def processed(self) -> int:
        """Contacts Dotdigital has finished with (created, updated or refused)."""
        return self.created + self.updated + self.failed


def job_view(session: Session, job: SyncJob) -> JobView:
    """A job with its import counts."""
    rows = session.execute(
        select(SyncImport.status, func.count())
        .where(SyncImport.merchant_id == job.merchant_id, SyncImport.job_id == job.id)
        .group_by(SyncImport.status)
    ).all()
    # An attempt Dotdigital never started (Lost) or that has not left yet is no import; one
    # whose start got no answer is running until Tally learns what became of it.
    imports = sum(int(count) for status, count in rows if status not in ("Lost", "Starting"))
    running = sum(int(count) for status, count in rows if status in ("NotFinished", "Unanswered"))
    return JobView(
        id=job.id,
        status=job.status,
        total=job.total_count,
        sent=job.sent_count,
        created=job.created_count,
        updated=job.updated_count,
        failed=job.failed_count,
        imports=imports,
        imports_running=running,
        cursor_customer_id=job.cursor_customer_id,
        started_at=job.started_at,
        finished_at=job.finished_at,
        last_error=job.last_error,
    )


@dataclass(frozen=True)
class StatusView:
    """What a merchant sees about its Dotdigital integration."""

    connected: bool
    enabled: bool
    api_username: str | None = None
    api_endpoint: str | None = None
    mapping: dict[str, str | None] = field(default_factory=dict)
    field_check: dict[str, Any] | None = None
    calls_per_minute: int | None = None
    last_successful_sync_at: datetime | None = None
    paused_until: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    backlog: int = 0
    backlog_retrying: int = 0
    failures_total: int = 0
    recent_failures: Sequence[FailureView] = ()
    recent_jobs: Sequence[JobView] = ()
    # (reason, customers) for customers not sent for lack of marketing consent (consent.py).
    left_out: Sequence[tuple[str, int]] = ()


def status(session: Session, *, merchant_id: int, settings: Settings | None = None) -> StatusView:
    """Connection, sync health, backlog, recent failures and recent manual syncs."""
    connection = find_connection(session, merchant_id)
    # Customers left out for lack of consent are counted apart: Dotdigital refused nothing.
    refusals = (SyncFailure.merchant_id == merchant_id, SyncFailure.code.not_in(LEFT_OUT_CODES))
    failures = [
        FailureView(f.customer_id, f.email, f.code, f.reason, f.failed_at)
        for f in session.scalars(
            select(SyncFailure)
            .where(*refusals)
            .order_by(SyncFailure.failed_at.desc(), SyncFailure.id.desc())
            .limit(RECENT_FAILURES)
        )
    ]
    failures_total = session.scalar(select(func.count(SyncFailure.id)).where(*refusals))
    left_out = left_out_counts(session, merchant_id)
    jobs = [
        job_view(session, job)
        for job in session.scalars(
            select(SyncJob)
            .where(SyncJob.merchant_id == merchant_id)
            .order_by(SyncJob.id.desc())
            .limit(RECENT_JOBS)
        )
    ]
    if connection is None:
        return StatusView(
            connected=False,
            enabled=False,
            failures_total=int(failures_total or 0),
            recent_failures=failures,
            recent_jobs=jobs,
            left_out=left_out,
        )
    backlog = session.scalar(
        select(func.count(PendingContact.id)).where(PendingContact.merchant_id == merchant_id)
    )
    retrying = session.scalar(
        select(func.count(PendingContact.id)).where(
            PendingContact.merchant_id == merchant_id, PendingContact.attempts > 0
        )
    )
    budget = connection.calls_per_minute
    if budget is None and settings is not None:
        budget = settings.dotdigital_calls_per_minute
    return StatusView(
        connected=True,
        enabled=connection.enabled,
        api_username=connection.api_username,
        api_endpoint=connection.api_endpoint,
        mapping=stored_mapping(connection).model_dump(),
        field_check=connection.field_check,
        calls_per_minute=budget,
        last_successful_sync_at=connection.last_successful_sync_at,
        paused_until=connection.paused_until,
        last_error=connection.last_error,
        last_error_at=connection.last_error_at,
        backlog=int(backlog or 0),
        backlog_retrying=int(retrying or 0),
        failures_total=int(failures_total or 0),
        recent_failures=failures,
        recent_jobs=jobs,
        left_out=left_out,
    )


def set_calls_per_minute(
    session: Session, *, merchant_id: int, calls_per_minute: int | None
) -> None:
    """Give this merchant its own call budget (None: the installation's setting)."""
    if calls_per_minute is not None and calls_per_minute < 1:
        raise ValidationFailed(
            "the call budget must be at least one call per minute",
            [FieldProblem("calls_per_minute", "must be 1 or more", calls_per_minute)],
        )
    connection = get_connection(session, merchant_id)
    connection.calls_per_minute = calls_per_minute
    connection.budget_tokens = None
    connection.budget_updated_at = None
    connection.updated_at = utcnow()
    session.flush()
