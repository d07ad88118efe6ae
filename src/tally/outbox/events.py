"""Domain events. Past tense; each carries only ids and the facts a handler needs to decide."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class DomainEvent:
    """Base class: something that happened to one merchant's data."""

    event_type: ClassVar[str] = "DomainEvent"
    merchant_id: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The class name is the event's stored type name (outbox rows, subscriptions): an event
        # class is never renamed.
        super().__init_subclass__(**kwargs)
        cls.event_type = cls.__name__

    def payload(self) -> dict[str, Any]:
        """The event as JSON-ready data."""
        return asdict(self)


@dataclass(frozen=True)
class CustomerEvent(DomainEvent):
    """Base class: something that happened to one customer."""

    customer_id: int


@dataclass(frozen=True)
class CustomerEnrolled(CustomerEvent):
    """A customer got a loyalty account (new, or a guest who signed up)."""


@dataclass(frozen=True)
class CustomerUpdated(CustomerEvent):
    """A customer's profile (name, birthday, email, referral URL) changed."""

    fields: tuple[str, ...]


@dataclass(frozen=True)
class PointsBalanceChanged(CustomerEvent):
    """A ledger entry changed a customer's balance."""

    entry_id: int
    points: int
    kind: str
    balance: int


@dataclass(frozen=True)
class VipTierChanged(CustomerEvent):
    """A customer moved to another VIP tier (or out of every tier).

    `earned` is set when the move is up into a tier whose merchant wants it announced: the
    tier's display name, for the "tier earned" email.
    """

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
class PointsAwarded(CustomerEvent):
    """An earning rule credited points (`notify`: the rule wants the customer told)."""

    entry_id: int
    points: int
    rule_id: str
    notify: bool


@dataclass(frozen=True)
class ReferralRewarded(CustomerEvent):
    """A completed referral rewarded its sender or its receiver."""

    referral_id: int
    role: str  # "sender" or "receiver"
    points: int
    notify: bool


@dataclass(frozen=True)
class RewardRedeemed(CustomerEvent):
    """A customer spent points on a reward and got a coupon code."""

    redemption_id: int
    points: int
    reward_name: str
    coupon_code: str


@dataclass(frozen=True)
class PointsExpiring(CustomerEvent):
    """A customer's points expire soon (`last_chance`: the final reminder before they do)."""

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

    import_id: int
    kind: str
    status: str
    total_rows: int
    new_count: int
    updated_count: int
    skipped_count: int
    invalid_count: int
    points_issued: int
