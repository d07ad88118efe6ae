"""The events a webhook endpoint can subscribe to, and the domain events behind them."""

from __future__ import annotations

from tally.outbox.events import (
    CustomerEnrolled,
    CustomerUpdated,
    DomainEvent,
    ImportFinished,
    PointsBalanceChanged,
    ReferralRewarded,
    RewardRedeemed,
    VipTierChanged,
)

# Public names (what receivers see in `type`) -> the domain event each one announces.
WEBHOOK_EVENTS: dict[str, type[DomainEvent]] = {
    "customer.enrolled": CustomerEnrolled,
    "customer.updated": CustomerUpdated,
    "points.changed": PointsBalanceChanged,
    "tier.changed": VipTierChanged,
    "reward.redeemed": RewardRedeemed,
    "referral.rewarded": ReferralRewarded,
    "import.finished": ImportFinished,
}
DESCRIPTIONS = {
    "customer.enrolled": "A customer joined the program (new, or a guest who signed up).",
    "customer.updated": "A customer's name, email, birthday or referral link changed.",
    "points.changed": "A customer's points balance changed (earned, spent, expired, adjusted).",
    "tier.changed": "A customer moved to another VIP tier, or out of every tier.",
    "reward.redeemed": "A customer spent points on a reward and got a coupon code.",
    "referral.rewarded": "A completed referral rewarded its sender or its receiver.",
    "import.finished": "A customer or order import completed or failed.",
}
# Sent only by "send a test event", never subscribed to.
TEST_EVENT = "webhook.test"
