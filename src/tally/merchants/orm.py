"""Merchant, API key and admin user tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tally.audit.registry import audited
from tally.db.base import Base, CreatedAt, IdKey, MerchantOwned


# The program (rewards, tiers, earning, referral and expiry settings) is JSON on this row: a
# change to it alone is a `program` event with the changed sections before and after.
@audited("merchant", sections={"program_settings": "program"}, merchant_attribute="id")
class Merchant(IdKey, CreatedAt, Base):
    """A store running a loyalty program: the tenant every other row belongs to."""

    __tablename__ = "merchants"

    name: Mapped[str] = mapped_column(String(200))
    store_url: Mapped[str] = mapped_column(String(500))
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    program_settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


@audited("api_key", secrets=("key_hash",))
class ApiKey(IdKey, MerchantOwned, CreatedAt, Base):
    """A merchant's API key; only a hash of the secret is stored."""

    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


# Signing in and out only move bookkeeping columns, which are not recorded.
@audited("admin_user", secrets=("password_hash",), ignore=("last_login_at", "session_version"))
class AdminUser(IdKey, MerchantOwned, CreatedAt, Base):
    """A person who signs in to a merchant's admin UI."""

    __tablename__ = "admin_users"
    __table_args__ = (UniqueConstraint("email"),)

    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(200))
    last_login_at: Mapped[datetime | None] = mapped_column(default=None)
    # Carried in the session cookie and compared on every request; signing out increments it,
    # which ends every session of the user that was issued before (the cookie is stateless).
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # owner, manager or support (merchants/team.py says what each may do).
    role: Mapped[str] = mapped_column(String(16), default="owner", server_default="owner")
