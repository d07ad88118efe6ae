"""Referrals: refusing obvious abuse, qualifying orders and referrer milestones."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from tally.program.settings import MilestoneMode, ReferralMilestone

# Providers that ignore dots in the local part and serve the same mailbox under both domains.
_DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}

CustomerRef = int | str


def normalize_email_for_fraud(email: str) -> str:
    """The mailbox an address delivers to, for comparing addresses (never for sending).

    Lower-cased and trimmed; a `+tag` is dropped; for Gmail (and googlemail.com, which it
    becomes) dots in the local part are dropped too.
    """
    address = email.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an email address: {email!r}")
    domain = domain.rstrip(".")
    untagged = local.split("+", 1)[0]
    if untagged:
        local = untagged
    if domain in _DOTLESS_DOMAINS:
        domain = _DOTLESS_DOMAINS[domain]
        local = local.replace(".", "") or local
    return f"{local}@{domain}"


class RefusalReason(StrEnum):
    """Why a referral earns nothing."""

    SELF_REFERRAL = "self_referral"  # the same customer on both sides
    SAME_EMAIL = "same_email"  # the friend's address reaches the referrer's mailbox
    EXISTING_CUSTOMER = "existing_customer"  # the friend had ordered before being referred


def referral_refusal(
    referrer_email: str,
    referrer_id: CustomerRef,
    friend_email: str,
    friend_id: CustomerRef | None,
    friend_had_orders_before: bool,
) -> RefusalReason | None:
    """Why this referral must be refused, or None if it may go ahead (first reason found)."""
    if friend_id is not None and friend_id == referrer_id:
        return RefusalReason.SELF_REFERRAL
    if normalize_email_for_fraud(referrer_email) == normalize_email_for_fraud(friend_email):
        return RefusalReason.SAME_EMAIL
    if friend_had_orders_before:
        return RefusalReason.EXISTING_CUSTOMER
    return None


def qualifies(order_amount: Decimal, minimum: Decimal | None) -> bool:
    """Whether the friend's order reaches the referral's minimum (None: any order does)."""
    return minimum is None or order_amount >= minimum


def milestone_reached(successful_count: int, milestone: ReferralMilestone | None) -> bool:
    """Whether the referral that brought the referrer to `successful_count` hits the milestone.

    Call it once per successful referral with the new count: `every` N pays at N, 2N, 3N...,
    `at` N pays only at N.
    """
    if milestone is None or successful_count < 1:
        return False
    if milestone.mode is MilestoneMode.EVERY:
        return successful_count % milestone.count == 0
    return successful_count == milestone.count
