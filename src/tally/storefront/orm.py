"""The storefront settings table: one row per merchant, made on first need."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tally.audit.registry import audited
from tally.db.base import Base, IdKey, TenantScoped, Timestamps


@audited("storefront", secrets=("secret_encrypted", "previous_secret_encrypted"))
class StorefrontSettings(IdKey, TenantScoped, Timestamps, Base):
    """A merchant's widget: its public id, signing secret, store origins and appearance.

    The secret signs shoppers' identities (the store computes the HMAC or mints the JWT with
    it) and is stored only as a Fernet token (``tally.crypto``). After a rotation the previous
    secret still verifies until ``previous_secret_expires_at``, so a store can deploy the new
    one without signing everybody out.
    """

    __tablename__ = "storefront_settings"
    __table_args__ = (UniqueConstraint("merchant_id"), UniqueConstraint("widget_id"))

    widget_id: Mapped[str] = mapped_column(String(32))
    secret_encrypted: Mapped[str] = mapped_column(Text)
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text, default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    allowed_origins: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    appearance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    def __repr__(self) -> str:
        # Never the secret, not even encrypted: reprs end up in logs and tracebacks.
        return f"StorefrontSettings(merchant_id={self.merchant_id!r}, widget_id={self.widget_id!r})"
