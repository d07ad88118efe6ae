"""Notification tables: merchants' edited templates, the mail log, and per-merchant SMTP servers."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tally.audit.registry import audited
from tally.db.base import Base, CreatedAt, IdKey, TenantScoped, parent_key, utcnow


class EmailStatus(StrEnum):
    """Life cycle of one email in the mail log."""

    QUEUED = "queued"  # waiting for the worker (also after a temporary failure)
    SENDING = "sending"  # handed to the transport; stays here if the worker died mid-send
    SENT = "sent"
    FAILED = "failed"  # refused for good, or still failing after the last retry
    SUPPRESSED = "suppressed"  # not sent: customer unsubscribed or the type is switched off


@audited("email_template")
class StoredEmailTemplate(IdKey, TenantScoped, Base):
    """A merchant's choice for one email type; no row means the shipped default, enabled.

    The three parts are either all set (an edited template) or all empty (the shipped default),
    so a merchant can switch a type off without copying the default text into the database.
    """

    __tablename__ = "email_templates"
    __table_args__ = (
        UniqueConstraint("merchant_id", "email_type"),
        CheckConstraint(
            "(subject IS NULL AND html_body IS NULL AND text_body IS NULL)"
            " OR (subject IS NOT NULL AND html_body IS NOT NULL AND text_body IS NOT NULL)",
            name="all_parts_or_none",
        ),
    )

    email_type: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    subject: Mapped[str | None] = mapped_column(Text, default=None)
    html_body: Mapped[str | None] = mapped_column(Text, default=None)
    text_body: Mapped[str | None] = mapped_column(Text, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def customized(self) -> bool:
        """True when the merchant edited the template (rather than only switching it on/off)."""
        return self.subject is not None


class EmailMessage(IdKey, TenantScoped, CreatedAt, Base):
    """One email in the mail log, from queueing to its final status.

    `variables` holds the facts of the event that caused the email (points earned, reward name);
    everything about the customer and the store is read again when the email is rendered, at
    send time, so an edited template or a changed name is picked up by emails still queued.
    """

    __tablename__ = "email_messages"
    __table_args__ = (
        UniqueConstraint("merchant_id", "dedupe_key"),
        # The mail log lists a merchant's emails newest first, optionally by status.
        Index("ix_email_messages_merchant_status", "merchant_id", "status", "id"),
    )

    # None for emails to the merchant's team (invitations, password resets) and SMTP tests.
    customer_id: Mapped[int | None] = parent_key("customers.id", index=True)
    email_type: Mapped[str] = mapped_column(String(64))
    dedupe_key: Mapped[str] = mapped_column(String(200))
    recipient: Mapped[str] = mapped_column(String(320))
    # Filled when the email is rendered (at send time); empty for emails suppressed at queueing.
    subject: Mapped[str | None] = mapped_column(Text, default=None)
    status: Mapped[str] = mapped_column(String(16), default=EmailStatus.QUEUED)
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    message_id: Mapped[str | None] = mapped_column(String(255), default=None)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)


@audited("mail_settings", secrets=("password_encrypted",))
class MailSettings(IdKey, TenantScoped, Base):
    """A merchant's own SMTP server; without a row the global settings (or .eml files) are used."""

    __tablename__ = "mail_settings"
    __table_args__ = (UniqueConstraint("merchant_id"),)

    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    security: Mapped[str] = mapped_column(String(16))
    username: Mapped[str | None] = mapped_column(String(255), default=None)
    # A Fernet token under a key derived from the application secret; never the plain password.
    password_encrypted: Mapped[str | None] = mapped_column(Text, default=None)
    sender: Mapped[str] = mapped_column(String(320))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
