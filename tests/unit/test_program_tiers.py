"""VIP tiers: windows, selection, changes, entry rewards, progress, and the VIP settings."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from tally.program.settings import Tier, TierWindow, VipMetric, VipProgram, WindowKind
from tally.program.tiers import (
    TierChange,
    TierDirection,
    TierProgress,
    entry_reward_due,
    multiplier_for,
    progress_to_next,
    select_tier,
    tier_change,
    window_start,
    with_kept_tier,
)

AUCKLAND = ZoneInfo("Pacific/Auckland")
NEW_YORK = ZoneInfo("America/New_York")
D = Decimal

BRONZE = Tier(id="bronze", name="Bronze", threshold=D(0))
SILVER = Tier(id="silver", name="Silver", threshold=D(200), multiplier=D("1.25"))
GOLD = Tier(id="gold", name="Gold", threshold=D(500), multiplier=D(2), entry_reward_points=100)
TIERS = (BRONZE, SILVER, GOLD)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- windows -------------------------------------------------------------------------------------


def test_lifetime_window_has_no_start() -> None:
    assert window_start(utc(2025, 6, 1), UTC, TierWindow()) is None


def test_rolling_window_reaches_back_exactly() -> None:
    window = TierWindow(kind=WindowKind.ROLLING, days=365)
    assert window_start(utc(2025, 6, 1, 15, 30), NEW_YORK, window) == utc(2024, 6, 1, 15, 30)


def test_calendar_year_starts_on_1_january_in_the_merchants_timezone() -> None:
    window = TierWindow(kind=WindowKind.CALENDAR_YEAR)
    new_years_eve = utc(2025, 12, 31, 23, 30)
    # Already 2026 in Auckland (UTC+13 in summer): the year began at 11:00 UTC on 31 December.
    assert window_start(new_years_eve, AUCKLAND, window) == utc(2025, 12, 31, 11)
    # Still 2025 in New York (UTC-5): the year began at 05:00 UTC on 1 January 2025.
    assert window_start(new_years_eve, NEW_YORK, window) == utc(2025, 1, 1, 5)
    assert window_start(new_years_eve, UTC, window) == utc(2025, 1, 1)


def test_an_order_at_new_years_eve_counts_in_the_local_year() -> None:
    window = TierWindow(kind=WindowKind.CALENDAR_YEAR)
    order_at = utc(2025, 12, 31, 23, 30)
    review_at = utc(2026, 1, 1, 12)  # 2026 in both zones
    auckland_start = window_start(review_at, AUCKLAND, window)
    new_york_start = window_start(review_at, NEW_YORK, window)
    assert auckland_start is not None
    assert new_york_start is not None
    assert order_at >= auckland_start  # counts towards 2026 in Auckland
    assert order_at < new_york_start  # belonged to 2025 in New York


def test_window_refuses_naive_now() -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        window_start(datetime(2025, 1, 1), UTC, TierWindow())  # noqa: DTZ001


def test_window_settings_validation() -> None:
    with pytest.raises(ValidationError, match="a rolling window needs a number of days"):
        TierWindow(kind=WindowKind.ROLLING)
    with pytest.raises(ValidationError, match="a calendar_year window takes no number of days"):
        TierWindow(kind=WindowKind.CALENDAR_YEAR, days=30)


# --- selection -----------------------------------------------------------------------------------


def test_select_tier_picks_the_highest_reached() -> None:
    assert select_tier(TIERS, D(0)) == BRONZE
    assert select_tier(TIERS, D("199.99")) == BRONZE
    assert select_tier(TIERS, D(200)) == SILVER
    assert select_tier(TIERS, 10_000) == GOLD


def test_select_tier_below_every_threshold() -> None:
    assert select_tier((SILVER, GOLD), D("199.99")) is None
    assert select_tier((), D(1000)) is None


def test_multiplier_for() -> None:
    assert multiplier_for(None) == D(1)
    assert multiplier_for(SILVER) == D("1.25")


# --- changes -------------------------------------------------------------------------------------


def test_upgrade() -> None:
    assert tier_change(TIERS, "bronze", GOLD) == TierChange("bronze", "gold", TierDirection.UP)
    assert tier_change(TIERS, None, BRONZE) == TierChange(None, "bronze", TierDirection.UP)


def test_downgrade() -> None:
    assert tier_change(TIERS, "gold", SILVER) == TierChange("gold", "silver", TierDirection.DOWN)
    assert tier_change((SILVER, GOLD), "silver", None) == TierChange(
        "silver", None, TierDirection.DOWN
    )


def test_no_change() -> None:
    assert tier_change(TIERS, "silver", SILVER) is None
    assert tier_change(TIERS, None, None) is None


def test_change_from_a_tier_that_no_longer_exists() -> None:
    assert tier_change(TIERS, "platinum", BRONZE) == TierChange(
        "platinum", "bronze", TierDirection.UP
    )
    assert tier_change(TIERS, "platinum", None) == TierChange("platinum", None, TierDirection.DOWN)


def test_change_to_an_unknown_tier_is_refused() -> None:
    stranger = Tier(id="stranger", name="Stranger", threshold=D(1))
    with pytest.raises(ValueError, match="tier 'stranger' is not one of the configured tiers"):
        tier_change(TIERS, "gold", stranger)


def test_entry_reward_once_per_tier_ever() -> None:
    rewarded: set[str] = set()
    # Up to gold: its reward is due.
    assert entry_reward_due("gold", rewarded) is True
    rewarded.add("gold")
    # Down to silver (first time): due. Back up to gold: not again.
    assert entry_reward_due("silver", rewarded) is True
    rewarded.add("silver")
    assert entry_reward_due("gold", rewarded) is False
    assert rewarded == {"gold", "silver"}


# --- progress ------------------------------------------------------------------------------------


def test_progress_between_tiers() -> None:
    assert progress_to_next(TIERS, D(350)) == TierProgress(
        current=SILVER, next=GOLD, remaining=D(150), percent=50
    )
    assert progress_to_next(TIERS, D("199.99")) == TierProgress(
        current=BRONZE, next=SILVER, remaining=D("0.01"), percent=99
    )


def test_progress_below_the_first_tier() -> None:
    assert progress_to_next((SILVER, GOLD), D(50)) == TierProgress(
        current=None, next=SILVER, remaining=D(150), percent=25
    )


def test_progress_at_the_top() -> None:
    assert progress_to_next(TIERS, D(900)) == TierProgress(
        current=GOLD, next=None, remaining=None, percent=100
    )
    assert progress_to_next((), D(900)) == TierProgress(
        current=None, next=None, remaining=None, percent=0
    )


def test_progress_with_a_negative_value() -> None:
    assert progress_to_next(TIERS, D(-10)) == TierProgress(
        current=None, next=BRONZE, remaining=D(10), percent=0
    )


# --- VIP settings --------------------------------------------------------------------------------


def test_thresholds_must_increase_strictly() -> None:
    twin = Tier(id="twin", name="Twin", threshold=D(200))
    with pytest.raises(ValidationError, match=r"'twin' \(200\) must be above 'silver' \(200\)"):
        VipProgram(tiers=(BRONZE, SILVER, twin))
    with pytest.raises(ValidationError, match=r"'silver' \(200\) must be above 'gold' \(500\)"):
        VipProgram(tiers=(GOLD, SILVER))


def test_tier_ids_must_be_unique() -> None:
    again = Tier(id="silver", name="Silver again", threshold=D(300))
    with pytest.raises(ValidationError, match="tier ids must be unique; repeated: silver"):
        VipProgram(tiers=(SILVER, again))


def test_multiplier_must_be_at_least_one() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Tier(id="x", name="X", threshold=D(0), multiplier=D("0.9"))


def test_points_thresholds_are_whole_numbers() -> None:
    half = Tier(id="half", name="Half", threshold=D("10.5"))
    with pytest.raises(ValidationError, match=r"'half' threshold \(10.5\) must be a whole number"):
        VipProgram(metric=VipMetric.POINTS_EARNED, tiers=(half,))
    assert VipProgram(metric=VipMetric.AMOUNT_SPENT, tiers=(half,)).tiers == (half,)


def test_an_enabled_program_needs_tiers() -> None:
    with pytest.raises(ValidationError, match="needs at least one tier"):
        VipProgram(enabled=True)


# --- kept tiers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reached", "kept", "until", "held"),
    [
        (None, "silver", utc(2026, 6, 1), SILVER),  # kept: no tier reached yet
        (BRONZE, "gold", utc(2026, 6, 1), GOLD),  # kept above what is reached
        (GOLD, "silver", utc(2026, 6, 1), GOLD),  # reached above the kept tier
        (SILVER, "silver", utc(2026, 6, 1), SILVER),
        (BRONZE, "gold", utc(2026, 1, 1), BRONZE),  # no longer kept (until is now)
        (BRONZE, "gold", utc(2025, 12, 1), BRONZE),
        (BRONZE, "platinum", utc(2026, 6, 1), BRONZE),  # a tier no longer configured
        (BRONZE, None, utc(2026, 6, 1), BRONZE),
        (BRONZE, "gold", None, BRONZE),
    ],
)
def test_a_kept_tier_is_a_minimum_until_its_date(
    reached: Tier | None, kept: str | None, until: datetime | None, held: Tier | None
) -> None:
    assert with_kept_tier(TIERS, reached, kept, until, utc(2026, 1, 1)) == held


def test_progress_from_a_kept_tier_above_the_metric_goes_to_the_tier_above_it() -> None:
    # An imported customer kept at Silver with nothing spent yet: the next tier is Gold, not
    # Bronze or Silver itself.
    assert progress_to_next(TIERS, D(0), held=SILVER) == TierProgress(
        current=SILVER, next=GOLD, remaining=D(500), percent=0
    )
    assert progress_to_next(TIERS, D(0), held=GOLD) == TierProgress(
        current=GOLD, next=None, remaining=None, percent=100
    )
    # A held tier below what the metric reaches changes nothing.
    assert progress_to_next(TIERS, D(350), held=BRONZE) == progress_to_next(TIERS, D(350))
