"""The merchant's program configuration: what earns points, what they buy, tiers and expiry.

One `ProgramSettings` document per merchant, stored as JSON (`model_dump(mode="json")`) and read
back with `ProgramSettings.model_validate(...)`. Every saved change gets the next `version`
(`revise`), and every award records the version that produced it, so the history of a balance
can be explained after the rules have moved on.

All models are frozen; money and rates are `Decimal` (serialised as strings, so nothing is lost
on the way through JSON), points are `int`, and timestamps must carry a timezone (kept as UTC).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from tally.ledger.bounds import MAX_POINTS

# Ids end up in ledger entries (`rule_id`) and on customers (`vip_tier`), so keep them short,
# lower-case and URL-safe.
IDENTIFIER_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Points = Annotated[int, Field(ge=0, le=MAX_POINTS)]
# A price or a rate in points: at least one, and within the bound every movement keeps.
PositivePoints = Annotated[int, Field(ge=1, le=MAX_POINTS)]
# Amounts and rates: a trillion is beyond any order, and bounds what a rate can multiply into.
Money = Annotated[Decimal, Field(ge=0, le=Decimal(10**12))]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


def _duplicates(values: Iterable[str]) -> list[str]:
    return sorted(value for value, count in Counter(values).items() if count > 1)


# --- earning actions ---------------------------------------------------------------------------


class ActionId(StrEnum):
    """The built-in actions; their ids are reserved and cannot be used by custom actions."""

    CREATE_ACCOUNT = "create_account"
    PLACE_ORDER = "place_order"
    BIRTHDAY = "birthday"
    REFERRAL = "referral"


class LimitPeriod(StrEnum):
    """The calendar period an action limit counts in (in the merchant's timezone)."""

    DAY = "day"
    WEEK = "week"  # ISO week, Monday to Sunday
    MONTH = "month"
    YEAR = "year"
    EVER = "ever"


class ActionLimit(_Frozen):
    """At most `max_count` awards of an action per customer in each `period`."""

    max_count: int = Field(ge=1)
    period: LimitPeriod


class _OneOffPointsAction(_Frozen):
    enabled: bool = False
    points: Points = 0
    send_email: bool = True
    limit: ActionLimit | None = None


class CreateAccountAction(_OneOffPointsAction):
    """Points for joining the program."""


class OrderPointsMode(StrEnum):
    """How an order's points are counted."""

    PER_CURRENCY_UNIT = "per_currency_unit"  # points_per_unit for each unit of the basis
    FIXED_PER_ORDER = "fixed_per_order"  # fixed_points for every qualifying order


class PlaceOrderAction(_Frozen):
    """Points for orders.

    The basis an order earns on is

        subtotal
        - discounts  if count_discounts (the default: points are earned on what was paid)
        + shipping   if include_shipping
        + taxes      if include_taxes

    never below zero. `minimum_order` is compared with that same basis, in both modes.
    """

    enabled: bool = False
    mode: OrderPointsMode = OrderPointsMode.PER_CURRENCY_UNIT
    points_per_unit: Money = Decimal(1)
    fixed_points: Points = 0
    count_discounts: bool = True
    include_shipping: bool = False
    include_taxes: bool = False
    minimum_order: Money | None = None
    # The order status (as the store integration reports it) at which points are awarded.
    award_on_status: str = Field(default="paid", pattern=r"^[a-z][a-z_]{0,31}$")
    send_email: bool = True
    limit: ActionLimit | None = None


class BirthdayAction(_OneOffPointsAction):
    """Points once a year on the customer's birthday."""


class MilestoneMode(StrEnum):
    """Whether a referral milestone repeats."""

    EVERY = "every"  # at count, 2 x count, 3 x count, ...
    AT = "at"  # once, when the count is reached


class ReferralMilestone(_Frozen):
    """Bonus points for the referrer after a number of successful referrals."""

    mode: MilestoneMode
    count: int = Field(ge=1)
    bonus_points: Points


class ReferralAction(_Frozen):
    """Points for the referrer (sender) and the referred friend (receiver)."""

    enabled: bool = False
    sender_points: Points = 0
    receiver_points: Points = 0
    # The friend's first order must reach this amount (None: any order qualifies).
    minimum_order: Money | None = None
    milestone: ReferralMilestone | None = None
    send_email: bool = True
    limit: ActionLimit | None = None


class CustomAction(_Frozen):
    """A merchant-defined action (follow us, write a review...), awarded through the API."""

    id: Identifier
    name: Name
    enabled: bool = True
    points: Points
    send_email: bool = False
    limit: ActionLimit | None = None
    # The shopper may claim it from the storefront widget (a "follow us" the store cannot
    # verify); its limit still applies. Off: only the merchant's API or admin awards it.
    storefront_claimable: bool = False

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in {action.value for action in ActionId}:
            raise ValueError(f"'{value}' is the id of a built-in action; choose another id")
        return value

    @model_validator(mode="after")
    def _claimable_needs_a_limit(self) -> CustomAction:
        # Nobody checks what a shopper claims, so without a limit a claim could be repeated
        # for points without end.
        if self.storefront_claimable and self.limit is None:
            raise ValueError(
                f"custom action '{self.id}' is claimable from the storefront: give it a limit"
            )
        return self


# --- rewards -----------------------------------------------------------------------------------


class _RewardBase(_Frozen):
    id: Identifier
    name: Name
    enabled: bool = True
    # The coupon only applies to orders of at least this amount (None: any order).
    minimum_order: Money | None = None
    # The coupon stops working this many days after it was issued (None: never).
    coupon_expiry_days: int | None = Field(default=None, ge=1)


class FixedAmountReward(_RewardBase):
    """A fixed amount off the order."""

    type: Literal["fixed_amount"] = "fixed_amount"
    points_cost: PositivePoints
    amount: Decimal = Field(gt=0)


class PercentageReward(_RewardBase):
    """A percentage off the order."""

    type: Literal["percentage"] = "percentage"
    points_cost: PositivePoints
    percent: Decimal = Field(gt=0, le=100)


class FreeShippingReward(_RewardBase):
    """Free shipping on the order."""

    type: Literal["free_shipping"] = "free_shipping"
    points_cost: PositivePoints


class FreeProductReward(_RewardBase):
    """One free unit of a product."""

    type: Literal["free_product"] = "free_product"
    points_cost: PositivePoints
    product_id: str = Field(min_length=1, max_length=200)


class VariableReward(_RewardBase):
    """An amount off chosen by the customer: every `points_per_unit` points buy 1 currency unit.

    The customer spends a multiple of `points_per_unit` between `min_points` and `max_points`.
    """

    type: Literal["variable"] = "variable"
    points_per_unit: PositivePoints
    min_points: PositivePoints
    max_points: PositivePoints | None = None

    @model_validator(mode="after")
    def _check_bounds(self) -> VariableReward:
        step = self.points_per_unit
        if self.min_points % step:
            raise ValueError(
                f"min_points ({self.min_points}) must be a multiple of points_per_unit ({step})"
            )
        if self.max_points is not None:
            if self.max_points % step:
                raise ValueError(
                    f"max_points ({self.max_points}) must be a multiple of points_per_unit ({step})"
                )
            if self.max_points < self.min_points:
                raise ValueError(
                    f"max_points ({self.max_points}) must not be less than "
                    f"min_points ({self.min_points})"
                )
        return self


Reward = Annotated[
    FixedAmountReward | PercentageReward | FreeShippingReward | FreeProductReward | VariableReward,
    Field(discriminator="type"),
]


# --- VIP tiers ---------------------------------------------------------------------------------


class VipMetric(StrEnum):
    """What a customer's tier is measured on."""

    AMOUNT_SPENT = "amount_spent"
    POINTS_EARNED = "points_earned"


class WindowKind(StrEnum):
    """Which stretch of time the metric is summed over."""

    LIFETIME = "lifetime"
    ROLLING = "rolling"  # the last `days` days
    CALENDAR_YEAR = "calendar_year"  # since 1 January, in the merchant's timezone


class TierWindow(_Frozen):
    """The window the VIP metric is summed over; `days` only (and always) for rolling."""

    kind: WindowKind = WindowKind.LIFETIME
    days: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _days_for_rolling_only(self) -> TierWindow:
        if self.kind is WindowKind.ROLLING and self.days is None:
            raise ValueError("a rolling window needs a number of days")
        if self.kind is not WindowKind.ROLLING and self.days is not None:
            raise ValueError(f"a {self.kind.value} window takes no number of days")
        return self


class Tier(_Frozen):
    """A VIP tier, reached when the metric is at least `threshold`."""

    id: Identifier
    name: Name
    threshold: Money
    multiplier: Decimal = Field(default=Decimal(1), ge=1)
    entry_reward_points: Points = 0
    entry_reward_id: Identifier | None = None
    send_email: bool = True


class VipProgram(_Frozen):
    """Tiers, lowest first, with strictly increasing thresholds."""

    enabled: bool = False
    metric: VipMetric = VipMetric.AMOUNT_SPENT
    window: TierWindow = TierWindow()
    tiers: tuple[Tier, ...] = ()

    @model_validator(mode="after")
    def _check_tiers(self) -> VipProgram:
        duplicated = _duplicates(tier.id for tier in self.tiers)
        if duplicated:
            raise ValueError(f"tier ids must be unique; repeated: {', '.join(duplicated)}")
        for lower, higher in zip(self.tiers, self.tiers[1:], strict=False):
            if higher.threshold <= lower.threshold:
                raise ValueError(
                    f"tier thresholds must increase strictly: '{higher.id}' ({higher.threshold}) "
                    f"must be above '{lower.id}' ({lower.threshold})"
                )
        if self.metric is VipMetric.POINTS_EARNED:
            for tier in self.tiers:
                if tier.threshold != tier.threshold.to_integral_value():
                    raise ValueError(
                        f"tier '{tier.id}' threshold ({tier.threshold}) must be a whole number "
                        "of points"
                    )
        if self.enabled and not self.tiers:
            raise ValueError("a VIP program needs at least one tier to be enabled")
        return self


# --- expiry ------------------------------------------------------------------------------------


class ExpiryMode(StrEnum):
    """How points expire."""

    OFF = "off"
    ROLLING = "rolling"  # the whole balance, `days` after the last balance change
    PER_GRANT = "per_grant"  # each credit, `days` after it was earned


class ExpiryPolicy(_Frozen):
    """When points expire and when customers are reminded.

    `enabled_at` is when expiry was last switched on (from off, or from the other mode); nothing
    expires within a day of it (see `expiry.effective_expiry`). The service that saves the
    settings sets it; it is required whenever the mode is not off.
    """

    mode: ExpiryMode = ExpiryMode.OFF
    days: int = Field(default=365, ge=1)
    reminder_days_before: int | None = Field(default=None, ge=1)
    last_chance_days_before: int | None = Field(default=None, ge=1)
    enabled_at: AwareDatetime | None = None

    @field_validator("enabled_at")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _check_policy(self) -> ExpiryPolicy:
        if self.mode is not ExpiryMode.OFF and self.enabled_at is None:
            raise ValueError("enabled_at is required when expiry is on")
        for name in ("reminder_days_before", "last_chance_days_before"):
            before = getattr(self, name)
            if before is not None and before >= self.days:
                raise ValueError(f"{name} ({before}) must be less than days ({self.days})")
        reminder, last_chance = self.reminder_days_before, self.last_chance_days_before
        if reminder is not None and last_chance is not None and last_chance >= reminder:
            raise ValueError(
                f"last_chance_days_before ({last_chance}) must be less than "
                f"reminder_days_before ({reminder})"
            )
        return self


# --- the whole program -------------------------------------------------------------------------


class ProgramSettings(_Frozen):
    """A merchant's whole program, as one versioned JSON document."""

    version: int = Field(default=1, ge=1)
    # Off for a new store until the merchant goes live: orders and sign-ups are recorded, but
    # nothing earns points (`service.award`, the importers). A document without it (every
    # store from before the flag) is live, as it was.
    live: bool = True
    create_account: CreateAccountAction = CreateAccountAction()
    place_order: PlaceOrderAction = PlaceOrderAction()
    birthday: BirthdayAction = BirthdayAction()
    referral: ReferralAction = ReferralAction()
    custom_actions: tuple[CustomAction, ...] = ()
    rewards: tuple[Reward, ...] = ()
    vip: VipProgram = VipProgram()
    expiry: ExpiryPolicy = ExpiryPolicy()

    @model_validator(mode="after")
    def _check_references(self) -> ProgramSettings:
        duplicated = _duplicates(action.id for action in self.custom_actions)
        if duplicated:
            raise ValueError(f"custom action ids must be unique; repeated: {', '.join(duplicated)}")
        duplicated = _duplicates(reward.id for reward in self.rewards)
        if duplicated:
            raise ValueError(f"reward ids must be unique; repeated: {', '.join(duplicated)}")
        reward_ids = {reward.id for reward in self.rewards}
        for tier in self.vip.tiers:
            if tier.entry_reward_id is not None and tier.entry_reward_id not in reward_ids:
                raise ValueError(
                    f"tier '{tier.id}' entry_reward_id '{tier.entry_reward_id}' is not a reward"
                )
        return self

    def revise(self, **changes: Any) -> ProgramSettings:
        """A validated copy with top-level sections replaced and the next version number."""
        if "version" in changes:
            raise ValueError("the version is set by revise, not passed to it")
        data = self.model_dump()
        data.update(changes)
        data["version"] = self.version + 1
        return ProgramSettings.model_validate(data)

    def reward(self, reward_id: str) -> Reward | None:
        """The reward with this id, if there is one."""
        return next((reward for reward in self.rewards if reward.id == reward_id), None)

    def custom_action(self, action_id: str) -> CustomAction | None:
        """The custom action with this id, if there is one."""
        return next((action for action in self.custom_actions if action.id == action_id), None)
