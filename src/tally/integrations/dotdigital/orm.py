"""Dotdigital tables: the merchant's connection, contacts waiting to be synced, manual sync jobs,
the bulk imports they started, and contacts Dotdigital refused.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tally.audit.registry import audited
from tally.db.base import Base, BigId, TenantScoped, utcnow


# The call budget, pauses, errors and sync lease are the sync's bookkeeping.
@audited(
    "dotdigital_connection",
    secrets=("password_encrypted",),
    ignore=("budget_tokens", "budget_updated_at", "paused_until", "last_error", "last_error_at",
            "last_successful_sync_at", "flush_locked_by", "flush_locked_until", "field_check"),
)  # fmt: skip
class DotdigitalConnection(TenantScoped, Base):
    """A merchant's Dotdigital API user, where its account lives, and how syncing is going.

    The password is kept only as a Fernet token under a key derived from the application secret
    (see ``service.encrypt_password``); nothing here ever holds it in plain text.
    """

    __tablename__ = "dotdigital_connections"
    __table_args__ = (UniqueConstraint("merchant_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    api_username: Mapped[str] = mapped_column(String(255))
    password_encrypted: Mapped[str] = mapped_column(Text)
    # The regional API host account-info reported, without a trailing slash.
    api_endpoint: Mapped[str] = mapped_column(String(255))
    account_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # DataFieldMapping as JSON: loyalty fact -> Dotdigital data field name (or null).
    field_mapping: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the last field check found (created, existing, conflicts, failures).
    field_check: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Calls per minute this merchant may make; None uses the installation's setting.
    calls_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    # Token bucket of the call budget; None tokens means a full bucket.
    budget_tokens: Mapped[float | None] = mapped_column(Float, default=None)
    budget_updated_at: Mapped[datetime | None] = mapped_column(default=None)
    # Set after a 429: no call is made for this merchant before this time.
    paused_until: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    last_error_at: Mapped[datetime | None] = mapped_column(default=None)
    last_successful_sync_at: Mapped[datetime | None] = mapped_column(default=None)
    # Lease of the automatic sync, so two workers never flush the same merchant at once.
    flush_locked_by: Mapped[str | None] = mapped_column(String(100), default=None)
    flush_locked_until: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return (
            f"DotdigitalConnection(merchant_id={self.merchant_id!r}, "
            f"api_username={self.api_username!r}, api_endpoint={self.api_endpoint!r}, "
            f"enabled={self.enabled!r})"
        )


class PendingContact(TenantScoped, Base):
    """A customer whose loyalty data changed since Dotdigital last received it.

    One row per customer however many changes happen (marking is an upsert that bumps
    ``version``); the sender removes the row only if ``version`` is still the one it read, so a
    change made while a send is under way is sent again rather than lost.
    """

    __tablename__ = "dotdigital_pending_contacts"
    __table_args__ = (
        UniqueConstraint("merchant_id", "customer_id"),
        Index("ix_dotdigital_pending_contacts_due", "merchant_id", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer, default=1)
    first_marked_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_marked_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # While the customer travels in a bulk import: that import, and the version it carries.
    import_pk: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("dotdigital_imports.id", ondelete="SET NULL"), index=True, default=None
    )
    sending_version: Mapped[int | None] = mapped_column(Integer, default=None)


class SyncJobStatus(StrEnum):
    """Life cycle of a manual sync."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


class SyncJob(TenantScoped, Base):
    """A manual sync of every customer, processed in slices by the worker (or the CLI).

    ``cursor_customer_id`` is the last customer id included in a started import; with the
    imports recorded in ``dotdigital_imports`` it lets a restarted worker continue where the
    previous one stopped without sending a finished batch again.
    """

    __tablename__ = "dotdigital_sync_jobs"
    __table_args__ = (Index("ix_dotdigital_sync_jobs_merchant_status", "merchant_id", "status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=SyncJobStatus.RUNNING)
    total_count: Mapped[int] = mapped_column(Integer, default=0)
    sent_count: Mapped[int] = mapped_column(Integer, default=0)
    created_count: Mapped[int] = mapped_column(Integer, default=0)
    updated_count: Mapped[int] = mapped_column(Integer, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    cursor_customer_id: Mapped[int] = mapped_column(BigInteger, default=0)
    # True once every customer up to the end of the table is in a started import.
    all_sent: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    locked_by: Mapped[str | None] = mapped_column(String(100), default=None)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class ImportKind(StrEnum):
    """Who started a bulk import."""

    MANUAL = "manual"  # a manual sync job
    AUTO = "auto"  # the automatic sync, for a large backlog


class SyncImport(TenantScoped, Base):
    """One bulk import Tally started, and what Dotdigital made of it."""

    __tablename__ = "dotdigital_imports"
    __table_args__ = (
        UniqueConstraint("merchant_id", "import_id"),
        Index("ix_dotdigital_imports_merchant_status", "merchant_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("dotdigital_sync_jobs.id", ondelete="CASCADE"), index=True, default=None
    )
    kind: Mapped[str] = mapped_column(String(16))
    # Dotdigital's id of the import.
    import_id: Mapped[str] = mapped_column(String(64))
    # Dotdigital's status: NotFinished, Finished, Failed, RejectedByWatchdog, ...
    status: Mapped[str] = mapped_column(String(32))
    contact_count: Mapped[int] = mapped_column(Integer)
    first_customer_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_customer_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_count: Mapped[int] = mapped_column(Integer, default=0)
    updated_count: Mapped[int] = mapped_column(Integer, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    checked_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class SyncFailure(TenantScoped, Base):
    """A contact Dotdigital refused for good (for example an invalid email), with its reason."""

    __tablename__ = "dotdigital_failures"
    __table_args__ = (Index("ix_dotdigital_failures_merchant_failed", "merchant_id", "failed_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("customers.id", ondelete="SET NULL"), index=True, default=None
    )
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    code: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    sync_job_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("dotdigital_sync_jobs.id", ondelete="SET NULL"), index=True, default=None
    )
    failed_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReconcileStatus(StrEnum):
    """Life cycle of a drift check."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


class Reconcile(TenantScoped, Base):
    """A check of Dotdigital's contacts against Tally's values (see ``reconcile.py``).

    ``marker`` is Dotdigital's marker of the next page to read, so a check the call budget cut
    short continues there; the counts grow one page at a time.
    """

    __tablename__ = "dotdigital_reconciles"
    __table_args__ = (Index("ix_dotdigital_reconciles_merchant_status", "merchant_id", "status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=ReconcileStatus.RUNNING)
    marker: Mapped[str | None] = mapped_column(Text, default=None)
    pages_read: Mapped[int] = mapped_column(Integer, default=0)
    # Contacts Dotdigital listed, and those of them that are Tally customers compared.
    contacts_read: Mapped[int] = mapped_column(Integer, default=0)
    checked_count: Mapped[int] = mapped_column(Integer, default=0)
    # Compared customers whose values differ, and customers Dotdigital does not have.
    differ_count: Mapped[int] = mapped_column(Integer, default=0)
    missing_count: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    locked_by: Mapped[str | None] = mapped_column(String(100), default=None)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    # When "fix these" queued the drifted customers for the sync, and how many.
    fix_queued_at: Mapped[datetime | None] = mapped_column(default=None)
    fix_queued_count: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class ReconcileContact(TenantScoped, Base):
    """A customer a running check has compared (``same``), or a difference it found.

    The ``same`` rows only let the end of the check find customers Dotdigital never listed;
    they are deleted when the check finishes, so a finished check keeps its differences only.
    """

    __tablename__ = "dotdigital_reconcile_contacts"
    __table_args__ = (
        UniqueConstraint("reconcile_id", "customer_id"),
        Index("ix_dotdigital_reconcile_contacts_state", "reconcile_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # same | differs | missing
    state: Mapped[str] = mapped_column(String(16))
    reconcile_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("dotdigital_reconciles.id", ondelete="CASCADE")
    )
    email: Mapped[str] = mapped_column(String(320))
    customer_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    # [{"field", "tally", "dotdigital"}] for differences; empty otherwise.
    fields: Mapped[list[Any]] = mapped_column(JSON, default=list)
