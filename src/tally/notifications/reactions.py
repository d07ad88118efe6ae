"""Which program events become which notification emails.

The program announces what happened (points awarded, a tier earned, a reward redeemed, points
about to expire) and knows nothing of emails; these reactions run in the same transaction and
queue the email with its mail-log row, at most once per dedupe key, so a replayed order or a
second expiry run still sends one email.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy.orm import Session

from tally.notifications.service import queue_email
from tally.notifications.templates import EmailType
from tally.outbox.events import (
    PointsAwarded,
    PointsExpiring,
    ReferralRewarded,
    RewardRedeemed,
    VipTierChanged,
)
from tally.outbox.registry import Registry


def _queue(
    session: Session,
    event: PointsAwarded | PointsExpiring | ReferralRewarded | RewardRedeemed | VipTierChanged,
    email_type: EmailType,
    variables: dict[str, object],
    dedupe_key: str,
) -> None:
    queue_email(
        session,
        merchant_id=event.merchant_id,
        customer_id=event.customer_id,
        email_type=email_type,
        variables=variables,
        dedupe_key=dedupe_key,
    )


# The earning rules with an email of their own; custom actions are `custom:<id>`. Referral
# rewards have theirs through `ReferralRewarded`.
_RULE_EMAILS = {
    "place_order": EmailType.POINTS_EARNED,
    "create_account": EmailType.SIGNUP_POINTS,
    "birthday": EmailType.BIRTHDAY_POINTS,
}


def email_type_for_rule(rule_id: str) -> EmailType:
    """Which email tells a customer about points from this earning rule."""
    if rule_id.startswith("custom:"):
        return EmailType.CUSTOM_ACTION_POINTS
    return _RULE_EMAILS.get(rule_id, EmailType.POINTS_EARNED)


def points_awarded(session: Session, event: PointsAwarded) -> None:
    """The email for the rule's kind of points (sign-up, birthday, order, custom action)."""
    if event.notify:
        # The key names the ledger entry, not the email type, so it stays what it always was
        # and an award whose email was queued before the per-kind emails is not sent twice.
        _queue(
            session,
            event,
            email_type_for_rule(event.rule_id),
            {"points": event.points},
            f"points-earned:{event.entry_id}",
        )


def tier_earned(session: Session, event: VipTierChanged) -> None:
    """The "tier earned" email, once per customer and tier ever."""
    if event.earned is not None:
        _queue(
            session,
            event,
            EmailType.VIP_TIER_EARNED,
            {"tier_name": event.earned},
            f"tier-earned:{event.customer_id}:{event.new_tier}",
        )


def referral_rewarded(session: Session, event: ReferralRewarded) -> None:
    """The referral reward emails, one to the sender and one to the friend."""
    if not event.notify:
        return
    email_type = (
        EmailType.REFERRAL_SENDER_REWARD
        if event.role == "sender"
        else EmailType.REFERRAL_RECEIVER_REWARD
    )
    _queue(
        session,
        event,
        email_type,
        {"reward_name": f"{event.points} points", "coupon_code": ""},
        f"{email_type.value}:{event.referral_id}",
    )


def reward_redeemed(session: Session, event: RewardRedeemed) -> None:
    """The email with the coupon code."""
    _queue(
        session,
        event,
        EmailType.REWARD_REDEEMED,
        {
            "points": event.points,
            "reward_name": event.reward_name,
            "coupon_code": event.coupon_code,
        },
        f"reward-redeemed:{event.redemption_id}",
    )


def points_expiring(session: Session, event: PointsExpiring) -> None:
    """The expiry reminder or last-chance email, once per expiry date."""
    kind = "last_chance" if event.last_chance else "reminder"
    email_type = EmailType.EXPIRY_LAST_CHANCE if event.last_chance else EmailType.EXPIRY_REMINDER
    on = date.fromisoformat(event.expiry_date)
    _queue(
        session,
        event,
        email_type,
        {"points": event.points, "expiry_date": on.strftime("%d %B %Y")},
        f"expiry-{kind}:{event.customer_id}:{on.isoformat()}",
    )


def register(registry: Registry) -> None:
    """Subscribe the reactions (called with the notification plugin's handlers)."""
    registry.react(PointsAwarded.event_type, "email.points_earned", points_awarded)
    registry.react(VipTierChanged.event_type, "email.tier_earned", tier_earned)
    registry.react(ReferralRewarded.event_type, "email.referral_rewarded", referral_rewarded)
    registry.react(RewardRedeemed.event_type, "email.reward_redeemed", reward_redeemed)
    registry.react(PointsExpiring.event_type, "email.points_expiring", points_expiring)
