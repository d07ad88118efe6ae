"""The program as a guest on the store sees it: ways to earn, rewards, VIP tiers, referrals.

The texts are English, written from the settings (the program has no per-language texts yet);
the widget's own texts come from the merchant's appearance settings.
"""

from __future__ import annotations

from decimal import Decimal

from tally.program.service import Program
from tally.program.settings import (
    FixedAmountReward,
    OrderPointsMode,
    PercentageReward,
    Reward,
    Tier,
    VariableReward,
)
from tally.storefront.appearance import Appearance
from tally.storefront.shapes import (
    ProgramOut,
    ReferralOfferOut,
    RewardOut,
    StoreOut,
    TierOut,
    VipOut,
    WayToEarnOut,
)


def _number(value: Decimal) -> str:
    """A decimal without trailing zeros (1.50 -> 1.5, 10.00 -> 10)."""
    return format(value.normalize(), "f")


def _order_way(program: Program) -> WayToEarnOut:
    rule, currency = program.settings.place_order, program.merchant.currency
    if rule.mode == OrderPointsMode.FIXED_PER_ORDER:
        points: int | None = rule.fixed_points
        description = f"Earn {rule.fixed_points} points on every order."
    else:
        rate = rule.points_per_unit
        points = int(rate) if rate == rate.to_integral_value() else None
        description = f"Earn {_number(rate)} points for every 1 {currency} you spend."
    if rule.minimum_order is not None:
        description += f" Orders from {_number(rule.minimum_order)} {currency}."
    return WayToEarnOut(
        id="place_order",
        kind="place_order",
        title="Place an order",
        points=points,
        description=description,
        claimable=False,
    )


def _built_in(kind: str, title: str, points: int, description: str) -> WayToEarnOut:
    return WayToEarnOut(
        id=kind,
        kind=kind,
        title=title,
        points=points,
        description=description.format(points=points),
        claimable=False,
    )


def ways_to_earn(program: Program) -> list[WayToEarnOut]:
    """Every enabled way to earn, built-in actions first, then the merchant's own."""
    settings = program.settings
    found = []
    if settings.create_account.enabled:
        found.append(
            _built_in(
                "create_account",
                "Create an account",
                settings.create_account.points,
                "Get {points} points when you join.",
            )
        )
    if settings.place_order.enabled:
        found.append(_order_way(program))
    for enabled, kind, title, points, description in (
        (
            settings.birthday.enabled,
            "birthday",
            "Celebrate your birthday",
            settings.birthday.points,
            "Get {points} points on your birthday every year.",
        ),
        (
            settings.referral.enabled,
            "referral",
            "Refer a friend",
            settings.referral.sender_points,
            "Get {points} points when a friend you refer places an order.",
        ),
    ):
        if enabled:
            found.append(_built_in(kind, title, points, description))
    found.extend(
        WayToEarnOut(
            id=action.id,
            kind="custom",
            title=action.name,
            points=action.points,
            description=f"Get {action.points} points.",
            claimable=action.storefront_claimable,
        )
        for action in settings.custom_actions
        if action.enabled
    )
    return found


def least_cost(reward: Reward) -> int:
    """The fewest points the reward takes (a variable reward's minimum)."""
    return reward.min_points if isinstance(reward, VariableReward) else reward.points_cost


def _reward_out(reward: Reward, currency: str) -> RewardOut:
    value: Decimal | None = None
    if isinstance(reward, FixedAmountReward):
        value = reward.amount
        description = f"{_number(reward.amount)} {currency} off your order."
    elif isinstance(reward, PercentageReward):
        value = reward.percent
        description = f"{_number(reward.percent)}% off your order."
    elif isinstance(reward, VariableReward):
        description = f"1 {currency} off for every {reward.points_per_unit} points you spend."
    elif reward.type == "free_shipping":
        description = "Free shipping on your order."
    else:
        description = "A free product with your order."
    if reward.minimum_order is not None:
        description += f" Orders from {_number(reward.minimum_order)} {currency}."
    return RewardOut(
        id=reward.id,
        title=reward.name,
        type=reward.type,
        points_cost=least_cost(reward),
        value=value,
        min_order=reward.minimum_order,
        description=description,
    )


def _benefits(tier: Tier) -> list[str]:
    found = []
    if tier.multiplier > 1:
        found.append(f"{_number(tier.multiplier)}x points on orders")
    if tier.entry_reward_points:
        found.append(f"{tier.entry_reward_points} bonus points when you reach it")
    return found


def program_view(program: Program, appearance: Appearance) -> ProgramOut:
    """`GET /program`'s body."""
    settings, merchant = program.settings, program.merchant
    vip, referral = settings.vip, settings.referral
    return ProgramOut(
        store=StoreOut(name=merchant.name, currency=merchant.currency),
        appearance=appearance,
        ways_to_earn=ways_to_earn(program),
        rewards=[_reward_out(r, merchant.currency) for r in settings.rewards if r.enabled],
        vip=VipOut(
            enabled=vip.enabled,
            metric=vip.metric.value,
            tiers=[
                TierOut(id=t.id, name=t.name, threshold=t.threshold, benefits=_benefits(t))
                for t in vip.tiers
            ]
            if vip.enabled
            else [],
        ),
        referrals=ReferralOfferOut(
            enabled=referral.enabled,
            sender_points=referral.sender_points,
            friend_reward=f"{referral.receiver_points} points" if referral.enabled else "",
        ),
    )
