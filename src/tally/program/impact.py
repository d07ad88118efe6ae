"""What a program change would do to existing customers, worked out before it is saved.

A VIP tier change moves customers between tiers; a reward's new cost changes who can afford
it. The admin shows both before saving, and the tier review after a tier change
(``program/jobs.py``) moves exactly the customers ``tier_moves`` names, through
``recompute_tier`` (the tier engine, its events and emails), never by writing tiers here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tally.customers.orm import Customer, CustomerState
from tally.program import tiers
from tally.program.service import Program, metric_value, tier_values_query
from tally.program.settings import ProgramSettings, Reward, VariableReward

# Rows fetched at a time while streaming every customer.
STREAM_BATCH = 5000


@dataclass(frozen=True, slots=True)
class TierMove:
    """One customer whose stored tier differs from the one the settings give them."""

    customer_id: int
    old_tier: str | None
    new_tier: str | None
    direction: tiers.TierDirection


@dataclass(frozen=True, slots=True)
class MoveCount:
    """How many customers move from one tier to another."""

    old_tier: str | None
    new_tier: str | None
    direction: tiers.TierDirection
    customers: int


@dataclass(frozen=True, slots=True)
class TierImpact:
    """Customers that move when the tier review runs under the new settings."""

    moves: list[MoveCount]

    @property
    def up(self) -> int:
        """Customers moving to a higher tier."""
        return sum(m.customers for m in self.moves if m.direction is tiers.TierDirection.UP)

    @property
    def down(self) -> int:
        """Customers moving to a lower tier, or out of every tier."""
        return sum(m.customers for m in self.moves if m.direction is tiers.TierDirection.DOWN)


def tier_moves(session: Session, program: Program, *, now: datetime) -> Iterator[TierMove]:
    """Every customer whose tier ``recompute_tier`` would change under ``program`` now.

    The same rules as the engine, for all customers in one streamed query: the metric in the
    window (``tier_values_query``), the highest tier it reaches, a kept tier as a minimum.
    With VIP tiers off the engine moves nobody, so neither does this.
    """
    vip = program.settings.vip
    if not vip.enabled:
        return
    values = tier_values_query(program, now=now).subquery()
    stmt = (
        select(
            Customer.id,
            Customer.vip_tier,
            Customer.vip_tier_kept,
            Customer.vip_tier_kept_until,
            values.c.value,
        )
        .outerjoin(values, values.c.customer_id == Customer.id)
        .where(Customer.merchant_id == program.merchant.id)
        .order_by(Customer.id)
        .execution_options(yield_per=STREAM_BATCH)
    )
    for customer_id, stored, kept, kept_until, raw in session.execute(stmt):
        reached = tiers.select_tier(vip.tiers, metric_value(raw))
        held = tiers.with_kept_tier(vip.tiers, reached, kept, kept_until, now)
        change = tiers.tier_change(vip.tiers, stored, held)
        if change is not None:
            yield TierMove(customer_id, stored, change.new_tier_id, change.direction)


def tier_impact(session: Session, program: Program, *, now: datetime) -> TierImpact:
    """How many customers move between which tiers under ``program`` (largest groups first)."""
    counts: Counter[tuple[str | None, str | None, tiers.TierDirection]] = Counter(
        (move.old_tier, move.new_tier, move.direction)
        for move in tier_moves(session, program, now=now)
    )
    moves = [MoveCount(old, new, direction, n) for (old, new, direction), n in counts.items()]
    moves.sort(key=lambda m: (-m.customers, str(m.old_tier), str(m.new_tier)))
    return TierImpact(moves)


def with_settings(program: Program, settings: ProgramSettings) -> Program:
    """The same merchant under other (unsaved) settings, for a preview."""
    return Program(program.merchant, settings)


@dataclass(frozen=True, slots=True)
class AffordImpact:
    """Members whose balance reaches a reward's cost now and under the new cost."""

    can_afford_before: int
    can_afford_after: int
    newly_affordable: int
    no_longer_affordable: int


def lowest_cost(reward: Reward) -> int:
    """The fewest points a redemption of the reward takes."""
    return reward.min_points if isinstance(reward, VariableReward) else reward.points_cost


def afford_impact(
    session: Session, *, merchant_id: int, before: Reward | None, after: Reward
) -> AffordImpact:
    """Who can afford the reward at its current and at its new cost (members only)."""
    new_cost = lowest_cost(after)
    old_cost = lowest_cost(before) if before is not None else None
    balance = Customer.points_balance

    def members(*conditions: object) -> int:
        return int(
            session.scalar(
                select(func.count(Customer.id)).where(
                    Customer.merchant_id == merchant_id,
                    Customer.state == CustomerState.MEMBER,
                    *conditions,  # type: ignore[arg-type]
                )
            )
            or 0
        )

    after_count = members(balance >= new_cost)
    if old_cost is None:
        return AffordImpact(0, after_count, after_count, 0)
    low, high = sorted((old_cost, new_cost))
    between = members(balance >= low, balance < high) if low != high else 0
    return AffordImpact(
        can_afford_before=members(balance >= old_cost),
        can_afford_after=after_count,
        newly_affordable=between if new_cost < old_cost else 0,
        no_longer_affordable=between if new_cost > old_cost else 0,
    )
