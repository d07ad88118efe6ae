"""VIP tiers: the window a customer is measured over, their tier, and what changes with it."""

from __future__ import annotations

import math
from collections.abc import Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from tally.program.settings import Tier, TierWindow, WindowKind


def window_start(now: datetime, tz: tzinfo, window: TierWindow) -> datetime | None:
    """The UTC instant the VIP metric is summed from, up to `now` (None: since the beginning).

    Rolling windows reach back exactly `days` x 24 hours; a calendar year starts at midnight
    on 1 January in the merchant's timezone `tz`.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if window.kind is WindowKind.LIFETIME:
        return None
    if window.kind is WindowKind.ROLLING:
        assert window.days is not None  # guaranteed by TierWindow's validation
        return (now - timedelta(days=window.days)).astimezone(UTC)
    local_year = now.astimezone(tz).year
    return datetime(local_year, 1, 1, tzinfo=tz).astimezone(UTC)


def _ascending(tiers: Sequence[Tier]) -> list[Tier]:
    return sorted(tiers, key=lambda tier: tier.threshold)


def select_tier(tiers: Sequence[Tier], value: Decimal | int) -> Tier | None:
    """The highest tier whose threshold `value` reaches (None: below every tier)."""
    reached = [tier for tier in tiers if tier.threshold <= value]
    return max(reached, key=lambda tier: tier.threshold, default=None)


def with_kept_tier(
    tiers: Sequence[Tier],
    reached: Tier | None,
    kept_tier_id: str | None,
    kept_until: datetime | None,
    now: datetime,
) -> Tier | None:
    """The tier a customer holds: the one the metric reaches, or a kept tier if that is higher.

    A tier given outside the metric (imported from the previous loyalty provider) is kept until
    ``kept_until``: until then the customer does not drop below it, and moves above it as soon
    as the metric reaches a higher tier. A kept tier no longer configured is ignored.
    """
    if kept_tier_id is None or kept_until is None or now >= kept_until:
        return reached
    kept = next((tier for tier in tiers if tier.id == kept_tier_id), None)
    if kept is None or (reached is not None and reached.threshold >= kept.threshold):
        return reached
    return kept


def multiplier_for(tier: Tier | None) -> Decimal:
    """The earning multiplier of a tier (1 for customers without one)."""
    return Decimal(1) if tier is None else tier.multiplier


class TierDirection(StrEnum):
    """Which way a customer moved."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class TierChange:
    """A customer's move from one tier to another (None: no tier)."""

    old_tier_id: str | None
    new_tier_id: str | None
    direction: TierDirection


def tier_change(
    tiers: Sequence[Tier], old_tier_id: str | None, new_tier: Tier | None
) -> TierChange | None:
    """The change from the customer's stored tier to `new_tier`, or None if it is the same.

    Direction follows the tiers' thresholds. A stored tier that is no longer configured counts
    as no tier: moving from it to any tier is up, to no tier is down.
    """
    new_tier_id = None if new_tier is None else new_tier.id
    if new_tier_id == old_tier_id:
        return None
    rank = {tier.id: position for position, tier in enumerate(_ascending(tiers))}
    old_rank = -1 if old_tier_id is None else rank.get(old_tier_id, -1)
    if new_tier_id is not None and new_tier_id not in rank:
        raise ValueError(f"tier '{new_tier_id}' is not one of the configured tiers")
    new_rank = -1 if new_tier_id is None else rank[new_tier_id]
    direction = TierDirection.UP if new_rank > old_rank else TierDirection.DOWN
    return TierChange(old_tier_id=old_tier_id, new_tier_id=new_tier_id, direction=direction)


def entry_reward_due(tier_id: str, tiers_rewarded_before: Set[str]) -> bool:
    """Whether entering `tier_id` earns its entry reward: once per tier, ever.

    Only the tier actually entered is rewarded (a jump over a tier does not pay that tier's
    reward), and leaving and re-entering a tier pays nothing the second time. Whether the tier
    has an entry reward at all is the caller's check.
    """
    return tier_id not in tiers_rewarded_before


@dataclass(frozen=True, slots=True)
class TierProgress:
    """Where a customer stands between their tier and the next one."""

    current: Tier | None
    next: Tier | None
    # How much more of the metric reaches `next` (None at the top).
    remaining: Decimal | None
    # From the current tier's threshold (or 0) to the next one's, rounded down, 0 to 100.
    percent: int


def progress_to_next(
    tiers: Sequence[Tier], value: Decimal | int, held: Tier | None = None
) -> TierProgress:
    """The customer's tier, the next one up, what is left to reach it and how far along they are.

    `held` is the tier the customer holds when it is above what the metric reaches (a tier kept
    from an import): progress is then towards the tier above it, never towards a lower one.
    """
    ordered = _ascending(tiers)
    current = select_tier(ordered, value)
    if held is not None and (current is None or held.threshold > current.threshold):
        current = held
    floor = value if current is None else max(Decimal(value), current.threshold)
    upcoming = [tier for tier in ordered if tier.threshold > floor]
    following = upcoming[0] if upcoming else None
    if following is None:
        return TierProgress(
            current=current, next=None, remaining=None, percent=0 if current is None else 100
        )
    start = Decimal(0) if current is None else current.threshold
    span = Fraction(following.threshold - start)
    done = Fraction(Decimal(value) - start)
    percent = min(max(math.floor(100 * done / span), 0), 100) if span > 0 else 0
    return TierProgress(
        current=current,
        next=following,
        remaining=following.threshold - Decimal(value),
        percent=percent,
    )
