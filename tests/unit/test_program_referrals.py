"""Referrals: email normalisation, refusals, qualification and milestones."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from tally.program.referrals import (
    RefusalReason,
    milestone_reached,
    normalize_email_for_fraud,
    qualifies,
    referral_refusal,
)
from tally.program.settings import MilestoneMode, ReferralAction, ReferralMilestone

D = Decimal


@pytest.mark.parametrize(
    ("email", "normalized"),
    [
        ("Jane@Example.com", "jane@example.com"),
        ("  jane+shop@example.com ", "jane@example.com"),
        ("j.a.n.e@example.com", "j.a.n.e@example.com"),
        ("J.A.N.E+promo@GMail.com", "jane@gmail.com"),
        ("jane.doe@googlemail.com", "janedoe@gmail.com"),
        ("jane@gmail.com.", "jane@gmail.com"),
        ("+only@example.com", "+only@example.com"),
    ],
)
def test_normalize_email_for_fraud(email: str, normalized: str) -> None:
    assert normalize_email_for_fraud(email) == normalized


@pytest.mark.parametrize("email", ["", "jane", "@example.com", "jane@"])
def test_normalize_refuses_non_addresses(email: str) -> None:
    with pytest.raises(ValueError, match="not an email address"):
        normalize_email_for_fraud(email)


def test_self_referral() -> None:
    assert (
        referral_refusal("jane@example.com", 7, "other@example.com", 7, False)
        is RefusalReason.SELF_REFERRAL
    )


def test_same_or_near_same_email() -> None:
    assert (
        referral_refusal("jane.doe@gmail.com", 7, "JaneDoe+2@googlemail.com", None, False)
        is RefusalReason.SAME_EMAIL
    )
    assert (
        referral_refusal("jane@example.com", 7, "JANE@example.com", 8, False)
        is RefusalReason.SAME_EMAIL
    )


def test_friend_who_already_ordered() -> None:
    assert (
        referral_refusal("jane@example.com", 7, "john@example.com", 8, True)
        is RefusalReason.EXISTING_CUSTOMER
    )


def test_genuine_referral() -> None:
    assert referral_refusal("jane@example.com", 7, "john@example.com", None, False) is None
    # Dots only matter at Gmail: these are two different mailboxes.
    assert referral_refusal("jane.doe@example.com", 7, "janedoe@example.com", 8, False) is None


def test_qualifies() -> None:
    assert qualifies(D("0.01"), None) is True
    assert qualifies(D("49.99"), D("50.00")) is False
    assert qualifies(D("50.00"), D("50.00")) is True


def test_every_milestone_repeats() -> None:
    milestone = ReferralMilestone(mode=MilestoneMode.EVERY, count=3, bonus_points=500)
    assert [n for n in range(0, 10) if milestone_reached(n, milestone)] == [3, 6, 9]


def test_at_milestone_happens_once() -> None:
    milestone = ReferralMilestone(mode=MilestoneMode.AT, count=5, bonus_points=500)
    assert [n for n in range(0, 12) if milestone_reached(n, milestone)] == [5]


def test_no_milestone() -> None:
    assert milestone_reached(5, None) is False


def test_referral_settings_validation() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        ReferralMilestone(mode=MilestoneMode.EVERY, count=0, bonus_points=10)
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        ReferralAction(sender_points=-1)
    action = ReferralAction(
        enabled=True,
        sender_points=500,
        receiver_points=250,
        minimum_order=D("25.00"),
        milestone=ReferralMilestone(mode=MilestoneMode.AT, count=5, bonus_points=1000),
    )
    assert ReferralAction.model_validate(action.model_dump(mode="json")) == action
