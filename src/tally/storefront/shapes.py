"""What the storefront API answers, as pydantic models (the routes' response models).

Small on purpose: a shopper's widget reads these on every page of the store. Amounts are
decimal strings, points integers, times ISO 8601 in UTC.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from pydantic import BaseModel

from tally.storefront.appearance import Appearance


class StoreOut(BaseModel):
    """The store as a shopper sees it."""

    name: str
    currency: str


class WayToEarnOut(BaseModel):
    """One way to earn points; `claimable` ones the shopper claims from the widget."""

    id: str
    kind: str
    title: str
    points: int | None
    description: str
    claimable: bool


class RewardOut(BaseModel):
    """A reward and its price; `points_cost` is the least a variable reward takes."""

    id: str
    title: str
    type: str
    points_cost: int
    value: Decimal | None
    min_order: Decimal | None
    description: str


class TierOut(BaseModel):
    """A VIP tier, reached at `threshold` of the program's metric."""

    id: str
    name: str
    threshold: Decimal
    benefits: list[str]


class VipOut(BaseModel):
    """The VIP program."""

    enabled: bool
    metric: str
    tiers: list[TierOut]


class ReferralOfferOut(BaseModel):
    """What referring a friend gives."""

    enabled: bool
    sender_points: int
    friend_reward: str


class ProgramOut(BaseModel):
    """The program as a guest sees it (`GET /program`)."""

    store: StoreOut
    appearance: Appearance
    ways_to_earn: list[WayToEarnOut]
    rewards: list[RewardOut]
    vip: VipOut
    referrals: ReferralOfferOut


class ExpiryOut(BaseModel):
    """The next points to expire."""

    date: datetime
    points: int


class TierRefOut(BaseModel):
    """The shopper's tier."""

    id: str
    name: str


class NextTierOut(BaseModel):
    """The next tier up and how far the shopper is from it (`progress` 0 to 100)."""

    id: str
    name: str
    threshold: Decimal
    remaining: Decimal
    progress: int


class ShareOut(BaseModel):
    """Ready-made share links for the referral link."""

    email: str
    facebook: str
    x: str
    whatsapp: str


class ReferralOut(BaseModel):
    """The shopper's referral code, link and share targets."""

    code: str
    link: str
    share: ShareOut


class ShopperOut(BaseModel):
    """The signed-in shopper's loyalty standing."""

    first_name: str | None
    email: str
    points_balance: int
    birthday: date | None
    birthday_editable: bool
    next_expiry: ExpiryOut | None
    tier: TierRefOut | None
    next_tier: NextTierOut | None
    referral: ReferralOut | None


class CouponOut(BaseModel):
    """A coupon code the shopper got for points (`used` is not tracked yet: always false)."""

    code: str
    reward_id: str
    reward_title: str
    used: bool
    issued_at: datetime
    expires_at: datetime | None


class MeOut(BaseModel):
    """`GET /me`: the shopper, the rewards they can afford now, their coupons."""

    customer: ShopperOut
    affordable_reward_ids: list[str]
    coupons: list[CouponOut]


class ActivityOut(BaseModel):
    """One movement of the shopper's points."""

    id: int
    kind: str
    points: int
    reason: str
    created_at: datetime


class RedeemedOut(BaseModel):
    """A redemption made from the storefront."""

    code: str
    reward_id: str
    points_spent: int
    points_balance: int


class ClaimedOut(BaseModel):
    """Points a claimed action gave."""

    points_awarded: int
    points_balance: int
