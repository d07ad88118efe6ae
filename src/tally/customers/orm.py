"""Customer table."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Date, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tally.audit.registry import audited
from tally.db.base import Base, IdKey, TenantScoped, Timestamps, parent_key


class CustomerState(StrEnum):
    """Whether the customer has a loyalty account."""

    MEMBER = "member"
    GUEST = "guest"


# Only a profile edit is recorded: enrolments, balances and tiers change through the program
# and the ledger (which keep their own history), imports in bulk.
@audited(
    "customer",
    only=("email", "first_name", "last_name", "birthday", "external_id", "accepts_marketing"),
    on=("updated",),
)
class Customer(IdKey, TenantScoped, Timestamps, Base):
    """A merchant's customer with a cached points balance (always the sum of ledger entries)."""

    __tablename__ = "customers"
    __table_args__ = (
        UniqueConstraint("merchant_id", "email"),
        UniqueConstraint("merchant_id", "external_id"),
        UniqueConstraint("referral_code"),
        CheckConstraint("points_balance >= 0", name="balance_not_negative"),
    )

    # Stored trimmed and lower-cased, which makes the unique constraint case-insensitive.
    email: Mapped[str] = mapped_column(String(320))
    first_name: Mapped[str | None] = mapped_column(String(100), default=None)
    last_name: Mapped[str | None] = mapped_column(String(100), default=None)
    birthday: Mapped[date | None] = mapped_column(Date, default=None)
    birthday_set_at: Mapped[datetime | None] = mapped_column(default=None)
    external_id: Mapped[str | None] = mapped_column(String(100), default=None)
    state: Mapped[str] = mapped_column(String(16), default=CustomerState.MEMBER)
    referral_code: Mapped[str] = mapped_column(String(16))
    # Indexed: deleting a customer (or a merchant's thousands) must find its referees by key,
    # not by scanning the table once per deleted row.
    referred_by_id: Mapped[int | None] = parent_key(
        "customers.id", ondelete="SET NULL", default=None, index=True
    )
    points_balance: Mapped[int] = mapped_column(BigInteger, default=0)
    vip_tier: Mapped[str | None] = mapped_column(String(64), default=None)
    # A tier given outside the VIP metric (imported from the previous provider), held as a
    # minimum until `vip_tier_kept_until` (see program.tiers.with_kept_tier).
    vip_tier_kept: Mapped[str | None] = mapped_column(String(64), default=None)
    vip_tier_kept_until: Mapped[datetime | None] = mapped_column(default=None)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(default=None)
    # Email marketing consent as recorded (None: never stated), where it was stated (`api`,
    # `admin`, `store`, `import:<job id>`) and when. The Dotdigital sync creates a contact only
    # for a customer who gave it (see integrations/dotdigital/consent.py).
    accepts_marketing: Mapped[bool | None] = mapped_column(Boolean, default=None)
    marketing_consent_source: Mapped[str | None] = mapped_column(String(100), default=None)
    marketing_consent_at: Mapped[datetime | None] = mapped_column(default=None)
    enrolled_at: Mapped[datetime | None] = mapped_column(default=None)
    last_activity_at: Mapped[datetime | None] = mapped_column(default=None)

    @property
    def full_name(self) -> str:
        """First and last name, as much as is known."""
        return " ".join(p for p in (self.first_name, self.last_name) if p)
