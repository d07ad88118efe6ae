"""The points liability: points customers hold, what they are worth, and what expires soon.

Worth: a point has a money value only through a reward that takes an amount off (a fixed
amount for a points cost, or a variable reward's 1 currency unit per `points_per_unit`).
Percentage, free-shipping and free-product rewards have no value Tally can know (it depends on
the order), so they are listed without one. The headline figure uses the best rate among the
enabled rewards that have one, which is the most the outstanding points could cost the store
if every point were spent on that reward; each reward's own figure is shown beside it.

Expiring: the points a run of the expiry job 30, 60 and 90 days from now would expire if no
customer earned or spent meanwhile (`program.expiry_due`, the job's own definition), so the
figures are cumulative and include points already due that the job has not reached yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.program import expiry_due
from tally.program import service as program_service
from tally.program.settings import FixedAmountReward, Reward, VariableReward

HORIZONS_DAYS = (30, 60, 90)
_CENT = Decimal("0.01")


@dataclass(frozen=True)
class RewardRate:
    """One enabled reward and what the outstanding points are worth at its rate."""

    reward_id: str
    name: str
    reward_type: str
    # Money per point, and the outstanding points at that rate; None: no money value.
    rate: Decimal | None
    value: Decimal | None
    explanation: str


@dataclass(frozen=True)
class Liability:
    """The whole report for one merchant at one moment."""

    at: datetime
    currency: str
    outstanding_points: int
    customers_with_points: int
    rewards: list[RewardRate]
    best: RewardRate | None
    expiry_mode: str
    # Days from now (HORIZONS_DAYS) -> the points the expiry job would have expired by then.
    expiring: dict[int, int]

    def horizon(self, days: int) -> datetime:
        """The moment `days` from the report's."""
        return self.at + timedelta(days=days)

    @property
    def value(self) -> Decimal | None:
        """The outstanding points at the best rate; None when no reward has a money value."""
        return self.best.value if self.best else None


def money(amount: Decimal) -> Decimal:
    """An amount rounded to cents, half up."""
    return amount.quantize(_CENT, rounding=ROUND_HALF_UP)


def _rate(reward: Reward, outstanding: int, currency: str) -> RewardRate:
    rate: Decimal | None
    if isinstance(reward, FixedAmountReward):
        rate = reward.amount / reward.points_cost
        explanation = f"{reward.points_cost} points for {reward.amount} {currency} off"
    elif isinstance(reward, VariableReward):
        rate = Decimal(1) / reward.points_per_unit
        explanation = f"{reward.points_per_unit} points for each 1 {currency} off"
    else:
        rate = None
        explanation = f"a {reward.type.replace('_', ' ')} reward has no fixed money value"
    value = money(rate * outstanding) if rate is not None else None
    return RewardRate(reward.id, reward.name, reward.type, rate, value, explanation)


def points_liability(
    session: Session, *, merchant_id: int, now: datetime | None = None
) -> Liability:
    """The merchant's points liability now."""
    now = now or utcnow()
    program = program_service.load(session, merchant_id)
    outstanding, holders = session.execute(
        select(func.coalesce(func.sum(Customer.points_balance), 0), func.count()).where(
            Customer.merchant_id == merchant_id, Customer.points_balance > 0
        )
    ).one()
    outstanding = int(outstanding)
    currency = program.merchant.currency
    rates = [
        _rate(reward, outstanding, currency)
        for reward in program.settings.rewards
        if reward.enabled
    ]
    valued = [rate for rate in rates if rate.rate is not None]
    best = max(valued, key=lambda rate: rate.rate or 0, default=None)
    policy = program.settings.expiry
    expiring = {
        days: expiry_due.points_due(
            session, merchant_id=merchant_id, policy=policy, at=now + timedelta(days=days)
        )
        for days in HORIZONS_DAYS
    }
    return Liability(
        at=now,
        currency=currency,
        outstanding_points=outstanding,
        customers_with_points=int(holders),
        rewards=rates,
        best=best,
        expiry_mode=policy.mode.value,
        expiring=expiring,
    )
