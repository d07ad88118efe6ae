"""Expiry: dates under each policy, switching expiry on, spend allocation and reminders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tally.ledger.errors import InsufficientPoints
from tally.program.expiry import (
    ENABLE_GRACE,
    Allocation,
    OpenCredit,
    ReminderKind,
    allocate_spend,
    effective_expiry,
    expired_amount,
    grant_expires_at,
    has_expired,
    reminder_due,
    rolling_expires_at,
    spending_order,
)
from tally.program.settings import ExpiryMode, ExpiryPolicy


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


ENABLED_AT = utc(2025, 3, 1, 9)
ROLLING = ExpiryPolicy(mode=ExpiryMode.ROLLING, days=365, enabled_at=ENABLED_AT)
PER_GRANT = ExpiryPolicy(
    mode=ExpiryMode.PER_GRANT,
    days=90,
    reminder_days_before=30,
    last_chance_days_before=7,
    enabled_at=ENABLED_AT,
)


# --- dates ---------------------------------------------------------------------------------------


def test_effective_expiry_never_falls_within_a_day_of_switching_on() -> None:
    assert ENABLE_GRACE.total_seconds() == 24 * 60 * 60
    assert effective_expiry(utc(2024, 6, 1), ENABLED_AT) == utc(2025, 3, 2, 9)
    assert effective_expiry(ENABLED_AT, ENABLED_AT) == utc(2025, 3, 2, 9)
    assert effective_expiry(utc(2025, 3, 1, 21), ENABLED_AT) == utc(2025, 3, 2, 9)
    assert effective_expiry(utc(2025, 3, 2, 10), ENABLED_AT) == utc(2025, 3, 2, 10)
    assert effective_expiry(utc(2024, 6, 1), None) == utc(2024, 6, 1)


def test_rolling_expiry_follows_the_last_balance_change() -> None:
    assert rolling_expires_at(utc(2025, 4, 10, 8), ROLLING) == utc(2026, 4, 10, 8)


def test_rolling_expiry_is_not_retroactive() -> None:
    # Last active two years before expiry was switched on: expires a day after, not in the past.
    assert rolling_expires_at(utc(2023, 1, 1), ROLLING) == utc(2025, 3, 2, 9)


def test_grant_expiry() -> None:
    assert grant_expires_at(utc(2025, 4, 1, 12), PER_GRANT) == utc(2025, 6, 30, 12)
    # A credit earned while expiry was off gets a clamped date too.
    assert grant_expires_at(utc(2024, 1, 1), PER_GRANT) == utc(2025, 3, 2, 9)


def test_each_policy_only_dates_its_own_kind() -> None:
    assert rolling_expires_at(utc(2025, 4, 1), PER_GRANT) is None
    assert grant_expires_at(utc(2025, 4, 1), ROLLING) is None
    assert rolling_expires_at(utc(2025, 4, 1), ExpiryPolicy()) is None
    assert grant_expires_at(utc(2025, 4, 1), ExpiryPolicy()) is None


def test_dates_refuse_naive_times() -> None:
    with pytest.raises(ValueError, match="earned_at must be timezone-aware"):
        grant_expires_at(datetime(2025, 4, 1), PER_GRANT)  # noqa: DTZ001


def test_has_expired_at_the_instant() -> None:
    expires_at = utc(2025, 6, 1)
    assert has_expired(expires_at, expires_at - timedelta(microseconds=1)) is False
    assert has_expired(expires_at, expires_at) is True
    assert has_expired(None, utc(2100, 1, 1)) is False


# --- policy settings -----------------------------------------------------------------------------


def test_policy_needs_enabled_at_when_on() -> None:
    with pytest.raises(ValidationError, match="enabled_at is required when expiry is on"):
        ExpiryPolicy(mode=ExpiryMode.ROLLING)
    assert ExpiryPolicy().mode is ExpiryMode.OFF


def test_policy_keeps_enabled_at_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    policy = ExpiryPolicy(
        mode=ExpiryMode.ROLLING, enabled_at=datetime(2025, 3, 1, 11, tzinfo=plus_two)
    )
    assert policy.enabled_at == ENABLED_AT
    assert policy.enabled_at is not None
    assert policy.enabled_at.tzinfo is UTC
    with pytest.raises(ValidationError, match="timezone"):
        ExpiryPolicy(mode=ExpiryMode.ROLLING, enabled_at=datetime(2025, 3, 1))  # noqa: DTZ001


def test_policy_reminders_come_before_expiry_and_in_order() -> None:
    with pytest.raises(
        ValidationError, match=r"reminder_days_before \(90\) must be less than days"
    ):
        ExpiryPolicy(days=90, reminder_days_before=90)
    with pytest.raises(
        ValidationError,
        match=r"last_chance_days_before \(30\) must be less than reminder_days_before \(30\)",
    ):
        ExpiryPolicy(days=90, reminder_days_before=30, last_chance_days_before=30)


def test_policy_round_trips_through_json() -> None:
    stored = PER_GRANT.model_dump(mode="json")
    assert stored["enabled_at"] == "2025-03-01T09:00:00Z"
    assert ExpiryPolicy.model_validate(stored) == PER_GRANT


# --- allocation ----------------------------------------------------------------------------------


def credit(
    credit_id: int, remaining: int, expires_at: datetime | None, created_at: datetime
) -> OpenCredit:
    return OpenCredit(
        id=credit_id, remaining=remaining, expires_at=expires_at, created_at=created_at
    )


CREDITS = [
    credit(1, 100, utc(2025, 3, 1), utc(2025, 1, 1)),
    credit(2, 50, utc(2025, 2, 1), utc(2025, 1, 5)),
    credit(3, 70, None, utc(2024, 1, 1)),
    credit(4, 30, None, utc(2023, 1, 1)),
    credit(5, 20, utc(2025, 2, 1), utc(2025, 1, 2)),
    credit(6, 0, utc(2025, 1, 1), utc(2024, 12, 1)),
]


def test_spending_order_soonest_expiry_first_then_never_expiring_oldest_first() -> None:
    assert [c.id for c in spending_order(CREDITS)] == [6, 5, 2, 1, 4, 3]


def test_allocation_takes_the_soonest_expiring_first() -> None:
    assert allocate_spend(CREDITS, 100) == [Allocation(5, 20), Allocation(2, 50), Allocation(1, 30)]


def test_allocation_reaches_never_expiring_credits_last() -> None:
    assert allocate_spend(CREDITS, 250) == [
        Allocation(5, 20),
        Allocation(2, 50),
        Allocation(1, 100),
        Allocation(4, 30),
        Allocation(3, 50),
    ]


def test_allocation_of_everything_and_of_nothing() -> None:
    assert sum(a.taken for a in allocate_spend(CREDITS, 270)) == 270
    assert allocate_spend(CREDITS, 0) == []


def test_allocation_refuses_more_than_the_credits_hold() -> None:
    before = list(CREDITS)
    with pytest.raises(InsufficientPoints) as caught:
        allocate_spend(CREDITS, 271)
    assert (caught.value.balance, caught.value.requested) == (270, 271)
    assert before == CREDITS


def test_allocation_refuses_negative_amounts_and_credits() -> None:
    with pytest.raises(ValueError, match="amount must not be negative"):
        allocate_spend(CREDITS, -1)
    with pytest.raises(ValueError, match="credit 9 has a negative remaining amount"):
        credit(9, -1, None, utc(2025, 1, 1))


BASE = utc(2025, 1, 1)
credits_strategy = st.lists(
    st.builds(
        OpenCredit,
        id=st.integers(min_value=1, max_value=10**9),
        remaining=st.integers(min_value=0, max_value=10_000),
        expires_at=st.none() | st.integers(0, 1000).map(lambda d: BASE + timedelta(days=d)),
        created_at=st.integers(0, 1000).map(lambda d: BASE - timedelta(days=d)),
    ),
    max_size=20,
    unique_by=lambda c: c.id,
)


@given(credits=credits_strategy, data=st.data())
def test_allocation_takes_exactly_the_amount_and_never_more_than_remaining(
    credits: list[OpenCredit], data: st.DataObject
) -> None:
    total = sum(c.remaining for c in credits)
    amount = data.draw(st.integers(min_value=0, max_value=total))
    allocations = allocate_spend(credits, amount)
    remaining = {c.id: c.remaining for c in credits}
    assert sum(a.taken for a in allocations) == amount
    assert len({a.credit_id for a in allocations}) == len(allocations)
    assert all(0 < a.taken <= remaining[a.credit_id] for a in allocations)
    # Every credit but the last one touched is used up: nothing later is taken before it.
    assert all(a.taken == remaining[a.credit_id] for a in allocations[:-1])
    order = [c.id for c in spending_order(credits) if c.remaining]
    assert [a.credit_id for a in allocations] == order[: len(allocations)]


@given(credits=credits_strategy, extra=st.integers(min_value=1, max_value=1000))
def test_allocation_beyond_the_total_is_refused(credits: list[OpenCredit], extra: int) -> None:
    total = sum(c.remaining for c in credits)
    with pytest.raises(InsufficientPoints):
        allocate_spend(credits, total + extra)


def test_expired_amount() -> None:
    assert expired_amount(CREDITS, utc(2025, 1, 31)) == 0
    assert expired_amount(CREDITS, utc(2025, 2, 1)) == 70
    assert expired_amount(CREDITS, utc(2025, 3, 1)) == 170
    assert expired_amount(CREDITS, utc(2100, 1, 1)) == 170


# --- reminders -----------------------------------------------------------------------------------


def test_reminder_windows() -> None:
    expires_at = utc(2025, 9, 1, 12)
    days = timedelta(days=1)
    assert reminder_due(expires_at, expires_at - 31 * days, PER_GRANT) is None
    assert reminder_due(expires_at, expires_at - 30 * days, PER_GRANT) is ReminderKind.REMINDER
    assert reminder_due(expires_at, expires_at - 8 * days, PER_GRANT) is ReminderKind.REMINDER
    assert reminder_due(expires_at, expires_at - 7 * days, PER_GRANT) is ReminderKind.LAST_CHANCE
    assert reminder_due(expires_at, expires_at - timedelta(seconds=1), PER_GRANT) is (
        ReminderKind.LAST_CHANCE
    )
    assert reminder_due(expires_at, expires_at, PER_GRANT) is None


def test_reminders_only_when_configured_and_on() -> None:
    expires_at = utc(2025, 9, 1)
    only_reminder = ExpiryPolicy(
        mode=ExpiryMode.ROLLING, days=365, reminder_days_before=14, enabled_at=ENABLED_AT
    )
    assert reminder_due(expires_at, utc(2025, 8, 31), only_reminder) is ReminderKind.REMINDER
    assert reminder_due(expires_at, utc(2025, 8, 31), ROLLING) is None
    assert reminder_due(expires_at, utc(2025, 8, 31), ExpiryPolicy(reminder_days_before=14)) is None
    assert reminder_due(None, utc(2025, 8, 31), PER_GRANT) is None
