"""Ledger entry table."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tally.db.base import Base, CreatedAt, IdKey, TenantScoped, parent_key


class EntryKind(StrEnum):
    """Why points moved."""

    EARN = "earn"
    SPEND = "spend"
    EXPIRE = "expire"
    ADJUST = "adjust"
    IMPORT = "import"
    REFUND = "refund"


class LedgerEntry(IdKey, TenantScoped, CreatedAt, Base):
    """One immutable movement of points. Only `remaining` changes, as spends consume credits."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        UniqueConstraint("merchant_id", "idempotency_key"),
        CheckConstraint("points <> 0", name="points_not_zero"),
        CheckConstraint("remaining IS NULL OR remaining >= 0", name="remaining_not_negative"),
        Index("ix_ledger_entries_customer_created", "customer_id", "id"),
        Index("ix_ledger_entries_open_credits", "customer_id", "remaining", "expires_at"),
    )

    customer_id: Mapped[int] = parent_key("customers.id")
    points: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(500), default="")
    source_ref: Mapped[str | None] = mapped_column(String(200), default=None)
    rule_id: Mapped[str | None] = mapped_column(String(100), default=None)
    rule_version: Mapped[int | None] = mapped_column(Integer, default=None)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    # For credits: how much of it has not been spent or expired yet, and when that part expires.
    remaining: Mapped[int | None] = mapped_column(BigInteger, default=None)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
