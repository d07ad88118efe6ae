"""Webhook tables: a merchant's endpoints, the event types each receives, and the deliveries.

A delivery is one event for one endpoint. Its attempts live with the outbox message that
carries it (``outbox_delivery_attempts``); the row here ties the message to its endpoint and
holds the event id, which stays the same on every retry and replay.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tally.audit.registry import audited
from tally.db.base import Base, CreatedAt, IdKey, TenantScoped, Timestamps, parent_key


class EndpointState(StrEnum):
    """Whether an endpoint receives deliveries."""

    ENABLED = "enabled"
    DISABLED = "disabled"


# The delivery streak is the worker's bookkeeping, not a change anyone made.
@audited(
    "webhook_endpoint",
    secrets=("secret_encrypted", "previous_secret_encrypted"),
    ignore=("failed_deliveries", "failing_since", "last_error", "last_failure_at",
            "last_success_at"),
)  # fmt: skip
class WebhookEndpoint(IdKey, TenantScoped, Timestamps, Base):
    """A URL of the merchant's that receives signed events.

    The signing secret is stored only as a Fernet token (``tally.crypto``). After a rotation
    the previous secret keeps signing beside the new one until ``previous_secret_expires_at``,
    so a receiver can switch over without dropping deliveries.
    """

    __tablename__ = "webhook_endpoints"

    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    secret_encrypted: Mapped[str] = mapped_column(Text)
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text, default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    state: Mapped[str] = mapped_column(String(16), default=EndpointState.ENABLED)
    # Why and when Tally (or a person) disabled it: the notice on its admin page.
    disabled_reason: Mapped[str | None] = mapped_column(Text, default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    disabled_automatically: Mapped[bool] = mapped_column(Boolean, default=False)
    # The failure streak since the last delivered attempt: deliveries that failed for good,
    # and when the first failed attempt of the streak happened.
    failed_deliveries: Mapped[int] = mapped_column(Integer, default=0)
    failing_since: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    last_failure_at: Mapped[datetime | None] = mapped_column(default=None)
    last_success_at: Mapped[datetime | None] = mapped_column(default=None)

    @property
    def enabled(self) -> bool:
        """True while the endpoint receives deliveries."""
        return self.state == EndpointState.ENABLED

    def __repr__(self) -> str:
        # Never the secret, not even encrypted: reprs end up in logs and tracebacks.
        return (
            f"WebhookEndpoint(id={self.id!r}, merchant_id={self.merchant_id!r}, url={self.url!r})"
        )


class WebhookSubscription(IdKey, TenantScoped, Base):
    """One event type an endpoint receives."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_type"),
        # The fan-out's lookup: which endpoints of this merchant want this event type.
        Index("ix_webhook_subscriptions_lookup", "merchant_id", "event_type"),
    )

    endpoint_id: Mapped[int] = parent_key("webhook_endpoints.id")
    event_type: Mapped[str] = mapped_column(String(64))


class WebhookDelivery(IdKey, TenantScoped, CreatedAt, Base):
    """One event for one endpoint, carried by one outbox message.

    Unique per endpoint and event id, so a fan-out that runs twice (a worker that died before
    recording its success) queues nothing twice.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "id"),
    )

    endpoint_id: Mapped[int] = parent_key("webhook_endpoints.id")
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[int | None] = parent_key(
        "outbox_messages.id", ondelete="SET NULL", default=None, index=True
    )
    # The last HTTP status the endpoint answered (successes included, which attempts omit).
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
