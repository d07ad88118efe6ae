"""The audit log's table: one append-only row per recorded change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from tally.db.base import Base, BigId, TenantScoped, utcnow


class AuditEvent(TenantScoped, Base):
    """A change an actor made: the target, the action, and the changed values before and after.

    Rows are only ever inserted (``recorder.py``); nothing updates or deletes them.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_merchant_newest", "merchant_id", "id"),
        Index("ix_audit_events_target", "merchant_id", "target_type", "target_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(100), default=None)
    actor_label: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(100), default=None)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    request_id: Mapped[str | None] = mapped_column(String(100), default=None)
    address: Mapped[str | None] = mapped_column(String(100), default=None)

    @property
    def actor(self) -> str:
        """The actor as lists show it: ``admin:ana@shop.com``."""
        return f"{self.actor_kind}:{self.actor_label}"
