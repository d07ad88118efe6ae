"""Tables of the loyalty program: orders and refunds, redemptions and code pools, VIP history,
referrals and referral clicks. The program's settings live on the merchant as versioned JSON;
`program_versions` keeps every saved version."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tally.db.base import (
    Base,
    BigId,
    CreatedAt,
    IdKey,
    TenantScoped,
    Timestamps,
    parent_key,
    utcnow,
)

MONEY = Numeric(18, 4)


class Order(IdKey, TenantScoped, Timestamps, Base):
    """A store order as reported by the store (API) or imported from a previous provider."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("merchant_id", "order_id"),
        Index("ix_orders_customer_placed", "customer_id", "placed_at"),
    )

    customer_id: Mapped[int] = parent_key("customers.id")
    order_id: Mapped[str] = mapped_column(String(100))
    subtotal: Mapped[Decimal] = mapped_column(MONEY)
    discounts: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    shipping: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    tax: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    total: Mapped[Decimal] = mapped_column(MONEY)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32))
    placed_at: Mapped[datetime] = mapped_column()
    refunded_amount: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    points_awarded: Mapped[int] = mapped_column(BigInteger, default=0)
    points_clawed_back: Mapped[int] = mapped_column(BigInteger, default=0)
    # The points basis the award was computed on (refunds are measured against it).
    points_basis: Mapped[Decimal | None] = mapped_column(MONEY, default=None)
    source: Mapped[str] = mapped_column(String(16), default="api")
    import_id: Mapped[int | None] = mapped_column(BigId, default=None)


class Refund(IdKey, TenantScoped, CreatedAt, Base):
    """One refund of an order and the points it took back."""

    __tablename__ = "refunds"
    __table_args__ = (UniqueConstraint("merchant_id", "order_pk", "refund_id"),)

    order_pk: Mapped[int] = parent_key("orders.id")
    refund_id: Mapped[str] = mapped_column(String(100))
    amount: Mapped[Decimal] = mapped_column(MONEY)
    points_clawed_back: Mapped[int] = mapped_column(BigInteger, default=0)
    # Points owed back that the balance could not cover (already spent).
    shortfall: Mapped[int] = mapped_column(BigInteger, default=0)


class Redemption(IdKey, TenantScoped, CreatedAt, Base):
    """Points spent on a reward, and the coupon code given for them."""

    __tablename__ = "redemptions"
    __table_args__ = (UniqueConstraint("merchant_id", "coupon_code"),)

    customer_id: Mapped[int] = parent_key("customers.id")
    reward_id: Mapped[str] = mapped_column(String(64))
    reward_name: Mapped[str] = mapped_column(String(200))
    points_spent: Mapped[int] = mapped_column(BigInteger)
    discount_value: Mapped[Decimal] = mapped_column(MONEY)
    discount_unit: Mapped[str] = mapped_column(String(16))
    coupon_code: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    ledger_entry_id: Mapped[int] = mapped_column(BigId, ForeignKey("ledger_entries.id"))


class PoolCode(IdKey, TenantScoped, CreatedAt, Base):
    """A coupon code the merchant uploaded for a reward, handed out once."""

    __tablename__ = "pool_codes"
    __table_args__ = (
        UniqueConstraint("merchant_id", "reward_id", "code"),
        Index("ix_pool_codes_available", "merchant_id", "reward_id", "redemption_id"),
    )

    reward_id: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(255))
    redemption_id: Mapped[int | None] = mapped_column(BigId, default=None)


class TierChangeRecord(IdKey, TenantScoped, Base):
    """A customer's move between VIP tiers (the VIP activity tab)."""

    __tablename__ = "tier_changes"
    __table_args__ = (Index("ix_tier_changes_customer", "customer_id", "id"),)

    customer_id: Mapped[int] = parent_key("customers.id")
    old_tier: Mapped[str | None] = mapped_column(String(64), default=None)
    new_tier: Mapped[str | None] = mapped_column(String(64), default=None)
    value: Mapped[Decimal] = mapped_column(MONEY)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Referral(IdKey, TenantScoped, CreatedAt, Base):
    """A friend who signed up with a referral code, and what became of it."""

    __tablename__ = "referrals"
    __table_args__ = (UniqueConstraint("merchant_id", "friend_id"),)

    referrer_id: Mapped[int] = parent_key("customers.id")
    friend_id: Mapped[int] = parent_key("customers.id")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    refusal_reason: Mapped[str | None] = mapped_column(String(64), default=None)
    order_id: Mapped[str | None] = mapped_column(String(100), default=None)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)


class ReferralClick(IdKey, TenantScoped, Base):
    """A visit to a customer's referral URL."""

    __tablename__ = "referral_clicks"

    referrer_id: Mapped[int] = parent_key("customers.id", index=True)
    clicked_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProgramVersion(IdKey, TenantScoped, Base):
    """One version of a merchant's program settings as it was saved, and who saved it."""

    __tablename__ = "program_versions"
    __table_args__ = (UniqueConstraint("merchant_id", "version"),)

    version: Mapped[int]
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    changed_by: Mapped[str] = mapped_column(String(200))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
