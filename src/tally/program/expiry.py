"""Points expiry: when points expire, which credits a spend consumes, and when to remind.

Two policies (see `settings.ExpiryPolicy`). *Rolling*: the whole balance expires `days` after
the customer's last balance change. *Per grant*: each credit expires `days` after it was earned,
and spending consumes the soonest-expiring credit first. Durations are exact (`days` x 24 hours
from the instant), so they do not depend on the merchant's timezone.

Switching expiry on is never retroactive on the day: whatever the computed date, nothing expires
until a full day after `enabled_at` (`effective_expiry`). Credits earned while expiry was off get
their dates from the same functions (`grant_expires_at(credit.created_at, policy)`), so they are
clamped the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from tally.ledger.errors import InsufficientPoints
from tally.program.settings import ExpiryMode, ExpiryPolicy

# Nothing expires sooner than this after expiry is switched on.
ENABLE_GRACE = timedelta(days=1)


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def effective_expiry(computed: datetime, enabled_at: datetime | None) -> datetime:
    """`computed`, but never earlier than `ENABLE_GRACE` after expiry was switched on."""
    _require_aware(computed, "computed")
    if enabled_at is None:
        return computed
    _require_aware(enabled_at, "enabled_at")
    return max(computed, enabled_at + ENABLE_GRACE)


def rolling_expires_at(last_balance_change_at: datetime, policy: ExpiryPolicy) -> datetime | None:
    """When a whole balance expires under a rolling policy (None under any other mode)."""
    return _expires_after(
        last_balance_change_at, "last_balance_change_at", policy, ExpiryMode.ROLLING
    )


def grant_expires_at(earned_at: datetime, policy: ExpiryPolicy) -> datetime | None:
    """When a credit earned at `earned_at` expires under a per-grant policy (None otherwise)."""
    return _expires_after(earned_at, "earned_at", policy, ExpiryMode.PER_GRANT)


def _expires_after(
    start: datetime, name: str, policy: ExpiryPolicy, mode: ExpiryMode
) -> datetime | None:
    _require_aware(start, name)
    if policy.mode is not mode:
        return None
    return effective_expiry(start + timedelta(days=policy.days), policy.enabled_at)


def has_expired(expires_at: datetime | None, now: datetime) -> bool:
    """Whether an expiry date has been reached (points expire at the instant itself)."""
    _require_aware(now, "now")
    return expires_at is not None and expires_at <= now


@dataclass(frozen=True, slots=True)
class OpenCredit:
    """A credit with points left to spend (a ledger entry's id and `remaining`)."""

    id: int
    remaining: int
    expires_at: datetime | None
    created_at: datetime

    def __post_init__(self) -> None:
        if self.remaining < 0:
            raise ValueError(f"credit {self.id} has a negative remaining amount ({self.remaining})")


class Allocation(NamedTuple):
    """Points taken from one credit by a spend."""

    credit_id: int
    taken: int


def spending_order(credits: Iterable[OpenCredit]) -> list[OpenCredit]:
    """Credits in the order a spend consumes them.

    Soonest-expiring first; credits that never expire last; ties by age (oldest first), then id.
    """
    return sorted(
        credits,
        key=lambda credit: (
            credit.expires_at is None,
            credit.expires_at or credit.created_at,
            credit.created_at,
            credit.id,
        ),
    )


def allocate_spend(credits: Sequence[OpenCredit], amount: int) -> list[Allocation]:
    """Which credits a spend of `amount` points consumes, and how much of each.

    Takes exactly `amount` in `spending_order`, never more than a credit has left, and lists
    only credits it touches. Refuses (`InsufficientPoints`) when the credits hold too little.
    Expired credits should have been expired before calling; any passed in are spent first.
    """
    if amount < 0:
        raise ValueError(f"amount must not be negative, got {amount}")
    available = sum(credit.remaining for credit in credits)
    if available < amount:
        raise InsufficientPoints(balance=available, requested=amount)
    allocations: list[Allocation] = []
    left = amount
    for credit in spending_order(credits):
        if left == 0:
            break
        taken = min(credit.remaining, left)
        if taken:
            allocations.append(Allocation(credit.id, taken))
            left -= taken
    return allocations


def expired_amount(credits: Iterable[OpenCredit], now: datetime) -> int:
    """Points left on credits whose expiry has been reached by `now` (per-grant expiry)."""
    return sum(credit.remaining for credit in credits if has_expired(credit.expires_at, now))


class ReminderKind(StrEnum):
    """Which expiry warning to send."""

    REMINDER = "reminder"  # reminder_days_before the expiry
    LAST_CHANCE = "last_chance"  # last_chance_days_before the expiry


def reminder_due(
    expires_at: datetime | None, now: datetime, policy: ExpiryPolicy
) -> ReminderKind | None:
    """The most urgent warning whose window `now` is in, for points expiring at `expires_at`.

    The last-chance window runs from `last_chance_days_before` the expiry until it; the
    reminder window from `reminder_days_before` until the last-chance window opens. A job that
    missed a window sends only the more urgent one; sending each kind once per expiry date is
    the caller's record to keep.
    """
    _require_aware(now, "now")
    if policy.mode is ExpiryMode.OFF or expires_at is None or has_expired(expires_at, now):
        return None
    left = expires_at - now
    last_chance = policy.last_chance_days_before
    if last_chance is not None and left <= timedelta(days=last_chance):
        return ReminderKind.LAST_CHANCE
    reminder = policy.reminder_days_before
    if reminder is not None and left <= timedelta(days=reminder):
        return ReminderKind.REMINDER
    return None
