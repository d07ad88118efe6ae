"""Domain events. Past tense; each carries only ids and the facts a handler needs to decide."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class DomainEvent:
    """Base class: something that happened to one merchant's data."""

    event_type: ClassVar[str] = "DomainEvent"
    merchant_id: int

    def payload(self) -> dict[str, Any]:
        """The event as JSON-ready data."""
        return asdict(self)


@dataclass(frozen=True)
class CustomerEnrolled(DomainEvent):
    """A customer got a loyalty account (new, or a guest who signed up)."""

    event_type: ClassVar[str] = "CustomerEnrolled"
    customer_id: int


@dataclass(frozen=True)
class CustomerUpdated(DomainEvent):
    """A customer's profile (name, birthday, email, referral URL) changed."""

    event_type: ClassVar[str] = "CustomerUpdated"
    customer_id: int
    fields: tuple[str, ...]


@dataclass(frozen=True)
class PointsBalanceChanged(DomainEvent):
    """A ledger entry changed a customer's balance."""

    event_type: ClassVar[str] = "PointsBalanceChanged"
    customer_id: int
    entry_id: int
    points: int
    kind: str
    balance: int


@dataclass(frozen=True)
class VipTierChanged(DomainEvent):
    """A customer moved to another VIP tier (or out of every tier).

    `earned` is set when the move is up into a tier whose merchant wants it announced: the
    tier's display name, for the "tier earned" email.
    """

    event_type: ClassVar[str] = "VipTierChanged"
    customer_id: int
    old_tier: str | None
    new_tier: str | None
    earned: str | None = None


@dataclass(frozen=True)
class VipTiersChanged(DomainEvent):
    """The program's VIP tiers (thresholds, tiers, metric, window, on/off) were changed.

    The tier review moves the customers the change concerns (``program/jobs.py``).
    """

    event_type: ClassVar[str] = "VipTiersChanged"
    version: int


@dataclass(frozen=True)
class PointsAwarded(DomainEvent):
    """An earning rule credited points (`notify`: the rule wants the customer told)."""

    event_type: ClassVar[str] = "PointsAwarded"
    customer_id: int
    entry_id: int
    points: int
    rule_id: str
    notify: bool


@dataclass(frozen=True)
class ReferralRewarded(DomainEvent):
    """A completed referral rewarded its sender or its receiver."""

    event_type: ClassVar[str] = "ReferralRewarded"
    customer_id: int
    referral_id: int
    role: str  # "sender" or "receiver"
    points: int
    notify: bool


@dataclass(frozen=True)
class RewardRedeemed(DomainEvent):
    """A customer spent points on a reward and got a coupon code."""

    event_type: ClassVar[str] = "RewardRedeemed"
    customer_id: int
    redemption_id: int
    points: int
    reward_name: str
    coupon_code: str


@dataclass(frozen=True)
class PointsExpiring(DomainEvent):
    """A customer's points expire soon (`last_chance`: the final reminder before they do)."""

    event_type: ClassVar[str] = "PointsExpiring"
    customer_id: int
    points: int
    expiry_date: str  # in the merchant's time zone, ISO
    last_chance: bool


@dataclass(frozen=True)
class CustomersImported(DomainEvent):
    """An import batch created these customers or changed their balance, tier or profile.

    Imports announce each committed batch with this one event instead of a per-customer event
    for every row: a million-row file then writes a few dozen outbox rows, and a receiver can
    handle a whole batch in one statement.
    """

    event_type: ClassVar[str] = "CustomersImported"
    import_id: int
    customer_ids: tuple[int, ...]

    def payload(self) -> dict[str, Any]:
        """As ``asdict`` gives it, without copying thousands of ids one by one."""
        return {
            "merchant_id": self.merchant_id,
            "import_id": self.import_id,
            "customer_ids": list(self.customer_ids),
        }


@dataclass(frozen=True)
class ImportFinished(DomainEvent):
    """An import job completed (every batch applied) or failed for good."""

    event_type: ClassVar[str] = "ImportFinished"
    import_id: int
    kind: str
    status: str
    total_rows: int
    new_count: int
    updated_count: int
    skipped_count: int
    invalid_count: int
    points_issued: int
