"""Leases that keep two workers off one merchant's flush, or off one manual sync, at a time.

A lease is a pair of columns (who holds it, until when) on the row the work belongs to; a
worker that dies keeps it only until ``locked_until``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from tally.config import Settings
from tally.db.base import Base, utcnow
from tally.errors import DomainError
from tally.integrations.dotdigital.call_budget import (
    Grant,
    connection_refused,
    rate_limited,
    record_connection_error,
    take_calls,
)
from tally.integrations.dotdigital.client import (
    DotdigitalApi,
    DotdigitalError,
    DotdigitalRateLimited,
)
from tally.integrations.dotdigital.contact_values import ValueBuilder, value_builder
from tally.integrations.dotdigital.options import SyncOptions
from tally.integrations.dotdigital.orm import (
    DotdigitalConnection,
    Reconcile,
    ReconcileStatus,
    SyncJob,
    SyncJobStatus,
)
from tally.integrations.dotdigital.service import (
    ConnectionAccess,
    close_client,
    connection_access,
)
from tally.integrations.dotdigital.statements import execute_alone
from tally.outbox.registry import JobContext

log = logging.getLogger("tally.dotdigital")


@dataclass(frozen=True)
class Lease:
    """Where one kind of sync work keeps its lease."""

    model: type[Base]
    key: InstrumentedAttribute[int]
    locked_by: InstrumentedAttribute[str | None]
    locked_until: InstrumentedAttribute[datetime | None]
    # Work that has ended (a switched-off connection, a finished job) cannot be claimed.
    claimable: ColumnElement[bool]
    # None when the key is the merchant id itself.
    merchant_column: InstrumentedAttribute[int] | None
    # Whether the connection must be enabled; the flush's claim already requires it.
    check_enabled: bool

    def renewal(self, seconds: float) -> dict[str, datetime]:
        """Values that extend the lease to ``seconds`` from now."""
        return {self.locked_until.key: utcnow() + timedelta(seconds=seconds)}


FLUSH_LEASE = Lease(
    model=DotdigitalConnection,
    key=DotdigitalConnection.merchant_id,
    locked_by=DotdigitalConnection.flush_locked_by,
    locked_until=DotdigitalConnection.flush_locked_until,
    claimable=DotdigitalConnection.enabled.is_(True),
    merchant_column=None,
    check_enabled=False,
)


def job_lease(model: type[SyncJob] | type[Reconcile], running: str) -> Lease:
    """The lease of a job table (its own ``locked_by``/``locked_until``), claimable while
    its status is ``running``, on an enabled connection."""
    return Lease(
        model=model,
        key=model.id,
        locked_by=model.locked_by,
        locked_until=model.locked_until,
        claimable=model.status == running,
        merchant_column=model.merchant_id,
        check_enabled=True,
    )


MANUAL_SYNC_LEASE = job_lease(SyncJob, SyncJobStatus.RUNNING)
RECONCILE_LEASE = job_lease(Reconcile, ReconcileStatus.RUNNING)


@dataclass(frozen=True)
class Connected:
    """Held work with a client for the merchant's Dotdigital account."""

    settings: Settings
    session_factory: sessionmaker[Session]
    merchant_id: int
    client: DotdigitalApi
    builder: ValueBuilder
    options: SyncOptions


@dataclass(frozen=True)
class Held:
    """Sync work this worker holds the lease on."""

    merchant_id: int
    # None when the connection is gone, switched off or its password cannot be read.
    connection: Connected | None


class LeasedWork:
    """Base of one slice of a merchant's sync work, done under a lease until ``deadline``."""

    def __init__(self, connected: Connected, deadline: float) -> None:
        self.settings = connected.settings
        self.session_factory = connected.session_factory
        self.merchant_id = connected.merchant_id
        self.client = connected.client
        self.builder = connected.builder
        self.options = connected.options
        self.deadline = deadline

    def time_left(self) -> bool:
        """Whether the slice may start another call."""
        return time.monotonic() < self.deadline

    def take_one_call(self) -> Grant:
        """One call from the merchant's budget, if there is one."""
        return take_calls(self.session_factory, self.settings, self.merchant_id, 1)

    def pause_for_rate_limit(self, error: DotdigitalRateLimited) -> float:
        """Pause the merchant until the limit resets; the pause in seconds."""
        return rate_limited(self.session_factory, self.merchant_id, error, self.options)

    def pause_for_refusal(self, error: DotdigitalError) -> None:
        """Pause the merchant after Dotdigital refused its credentials or region."""
        connection_refused(self.session_factory, self.merchant_id, error, self.options)


@contextmanager
def hold(
    settings: Settings,
    session_factory: sessionmaker[Session],
    lease: Lease,
    key: int,
    options: SyncOptions,
) -> Iterator[Held | None]:
    """Claim the lease on row ``key`` and connect to its merchant's account for one slice.

    Yields None when another worker holds the lease. However the block ends, the client is
    closed and the lease released (only if it is still this worker's).
    """
    owner = uuid.uuid4().hex
    if not _claim(session_factory, lease, key, owner, options.lease_seconds):
        yield None
        return
    try:
        merchant_id = _merchant_id(session_factory, lease, key)
        opened = _open_access(settings, session_factory, merchant_id, lease.check_enabled)
        if opened is None:
            yield Held(merchant_id, None)
            return
        access, builder = opened
        client = access.client(options.client_factory, options.client_timeout_seconds)
        try:
            connected = Connected(settings, session_factory, merchant_id, client, builder, options)
            yield Held(merchant_id, connected)
        finally:
            close_client(client)
    finally:
        execute_alone(
            session_factory,
            update(lease.model)
            .where(lease.key == key, lease.locked_by == owner)
            .values({lease.locked_by.key: None, lease.locked_until.key: None}),
        )


def _claim(
    session_factory: sessionmaker[Session], lease: Lease, key: int, owner: str, seconds: float
) -> bool:
    now = utcnow()
    claimed = execute_alone(
        session_factory,
        update(lease.model)
        .where(
            lease.key == key,
            lease.claimable,
            or_(lease.locked_until.is_(None), lease.locked_until < now),
        )
        .values({lease.locked_by.key: owner, **lease.renewal(seconds)}),
    )
    return claimed == 1


def _merchant_id(session_factory: sessionmaker[Session], lease: Lease, key: int) -> int:
    if lease.merchant_column is None:
        return key
    with session_factory() as session:
        merchant_id = session.scalar(select(lease.merchant_column).where(lease.key == key))
    assert merchant_id is not None
    return merchant_id


def _open_access(
    settings: Settings,
    session_factory: sessionmaker[Session],
    merchant_id: int,
    check_enabled: bool,
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
            if check_enabled and not connection.enabled:
                return None
            return access, value_builder(session, settings, merchant_id, access.mapping)
    record_connection_error(session_factory, merchant_id, reason)
    return None


def run_each(
    context: JobContext,
    lease: Lease,
    options: SyncOptions,
    advance: Callable[[int, float], object],
    note_error: Callable[[int, str], None],
) -> None:
    """A scheduled job's run: ``advance(key, deadline)`` each claimable row whose lease is
    free, oldest first, until the run's time is up.

    An unexpected error is logged and noted on its row (``note_error``), which stays claimable
    and goes on from where it stopped on a later run; the other rows still get their turn.
    """
    now = utcnow()
    with context.session_factory() as session:
        keys = list(
            session.scalars(
                select(lease.key)
                .where(
                    lease.claimable,
                    or_(lease.locked_until.is_(None), lease.locked_until < now),
                )
                .order_by(lease.key)
            )
        )
    deadline = time.monotonic() + options.run_seconds
    for key in keys:
        if time.monotonic() >= deadline:
            return
        try:
            advance(key, deadline)
        except Exception as error:
            log.exception("Dotdigital %s %s failed", lease.model.__tablename__, key)
            note_error(key, f"worker error: {error!r}")
