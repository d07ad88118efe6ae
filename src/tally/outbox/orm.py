"""Outbox messages (one per event and subscribed handler), their delivery attempts, and
scheduled job bookkeeping."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tally.db.base import Base, CreatedAt, IdKey, parent_key, utcnow


class MessageStatus(StrEnum):
    """Life cycle of an outbox message."""

    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"


class OutboxMessage(IdKey, CreatedAt, Base):
    """One delivery of one event to one handler, written in the event's own transaction."""

    __tablename__ = "outbox_messages"
    __table_args__ = (Index("ix_outbox_messages_claim", "status", "available_at"),)

    merchant_id: Mapped[int | None] = parent_key("merchants.id", index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    handler: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_by: Mapped[str | None] = mapped_column(String(100), default=None)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class AttemptOutcome(StrEnum):
    """How one delivery attempt ended."""

    SUCCEEDED = "succeeded"
    RETRY_SCHEDULED = "retry_scheduled"
    FAILED = "failed"


class OutboxDeliveryAttempt(IdKey, Base):
    """One run of a message's handler: when, how long, how it ended (Saleor's EventDeliveryAttempt).

    Written in the transaction that applies the attempt's outcome to the message, so the history
    never shows an outcome the message did not get. Deleting a message deletes its attempts.
    """

    __tablename__ = "outbox_delivery_attempts"
    __table_args__ = (
        # Also the lookup index for a message's history (and for the cascading delete).
        UniqueConstraint("message_id", "attempt"),
        # Recent failures are read newest first, and failures are the rare outcome.
        Index("ix_outbox_delivery_attempts_outcome_started", "outcome", "started_at"),
    )

    message_id: Mapped[int] = parent_key("outbox_messages.id")
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column()
    duration_ms: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)


class ScheduledJob(Base):
    """When a periodic job last ran and is next due; workers claim a run with one UPDATE."""

    __tablename__ = "scheduled_jobs"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    next_run_at: Mapped[datetime] = mapped_column()
    last_started_at: Mapped[datetime | None] = mapped_column(default=None)
    last_finished_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    runs: Mapped[int] = mapped_column(Integer, default=0)
