"""Earning rules: order points, refunds, limits, birthdays, and the earning settings."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tally.program.earning import (
    BIRTHDAY_GRACE_DAYS,
    OrderAmounts,
    birthday_award_due,
    birthday_in_year,
    due_birthday,
    limit_allows,
    local_today,
    net_of_refunds,
    order_points,
    order_points_basis,
    refund_clawback,
)
from tally.program.settings import (
    ActionLimit,
    CustomAction,
    LimitPeriod,
    OrderPointsMode,
    PlaceOrderAction,
    ProgramSettings,
)

AUCKLAND = ZoneInfo("Pacific/Auckland")
NEW_YORK = ZoneInfo("America/New_York")
D = Decimal


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


ORDER = OrderAmounts(
    subtotal=D("100.00"), discounts=D("10.00"), shipping=D("5.00"), taxes=D("8.00")
)


# --- basis ---------------------------------------------------------------------------------------


def test_basis_by_default_is_subtotal_less_discounts() -> None:
    assert order_points_basis(ORDER, PlaceOrderAction()) == D("90.00")


def test_basis_adds_shipping_and_taxes_when_included() -> None:
    rule = PlaceOrderAction(include_shipping=True, include_taxes=True)
    assert order_points_basis(ORDER, rule) == D("103.00")


def test_basis_ignores_discounts_when_they_do_not_count() -> None:
    assert order_points_basis(ORDER, PlaceOrderAction(count_discounts=False)) == D("100.00")


def test_basis_is_never_negative() -> None:
    amounts = OrderAmounts(subtotal=D("20"), discounts=D("25"), shipping=D("4"))
    assert order_points_basis(amounts, PlaceOrderAction()) == D(0)
    assert order_points_basis(amounts, PlaceOrderAction(include_shipping=True)) == D(0)


def test_order_amounts_refuse_floats_and_negatives() -> None:
    with pytest.raises(TypeError, match="subtotal must be a Decimal"):
        OrderAmounts(subtotal=10.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shipping must not be negative"):
        OrderAmounts(subtotal=D(10), shipping=D("-1"))
    with pytest.raises(ValueError, match="finite"):
        OrderAmounts(subtotal=D("NaN"))


def test_paid_total() -> None:
    assert ORDER.paid_total == D("103.00")


# --- order points --------------------------------------------------------------------------------


def test_points_round_down() -> None:
    amounts = OrderAmounts(subtotal=D("19.99"))
    assert order_points(amounts, PlaceOrderAction()) == 19


def test_points_per_unit_is_exact_decimal_arithmetic() -> None:
    rule = PlaceOrderAction(points_per_unit=D("0.1"))
    assert order_points(OrderAmounts(subtotal=D("30")), rule) == 3
    assert order_points(OrderAmounts(subtotal=D("29.99")), rule) == 2


def test_points_apply_the_multiplier_before_rounding() -> None:
    amounts = OrderAmounts(subtotal=D("99.99"))
    assert order_points(amounts, PlaceOrderAction(), D("1.25")) == 124
    assert order_points(amounts, PlaceOrderAction(points_per_unit=D(2)), D("1.5")) == 299


def test_points_below_minimum_order_are_zero() -> None:
    rule = PlaceOrderAction(minimum_order=D("50.00"))
    assert order_points(OrderAmounts(subtotal=D("59.99"), discounts=D("10")), rule) == 0
    assert order_points(OrderAmounts(subtotal=D("60.00"), discounts=D("10")), rule) == 50


def test_fixed_points_per_order() -> None:
    rule = PlaceOrderAction(
        mode=OrderPointsMode.FIXED_PER_ORDER, fixed_points=25, minimum_order=D(20)
    )
    assert order_points(OrderAmounts(subtotal=D(500)), rule) == 25
    assert order_points(OrderAmounts(subtotal=D(500)), rule, D("1.5")) == 37
    assert order_points(OrderAmounts(subtotal=D("19.99")), rule) == 0


def test_points_refuse_a_bad_multiplier() -> None:
    with pytest.raises(ValueError, match="multiplier must not be negative"):
        order_points(ORDER, PlaceOrderAction(), D("-1"))
    with pytest.raises(TypeError, match="multiplier must be a Decimal"):
        order_points(ORDER, PlaceOrderAction(), 1.5)  # type: ignore[arg-type]


# --- refunds -------------------------------------------------------------------------------------


def test_net_of_refunds_scales_every_part_by_the_share_kept() -> None:
    amounts = OrderAmounts(
        subtotal=D("100.00"), discounts=D("10.00"), shipping=D("10.00"), taxes=D("0.00")
    )
    net = net_of_refunds(amounts, D("25.00"))
    assert net == OrderAmounts(
        subtotal=D("75.00"), discounts=D("7.50"), shipping=D("7.50"), taxes=D("0.00")
    )
    assert order_points(net, PlaceOrderAction()) == 67


def test_net_of_refunds_rounds_to_the_orders_decimal_places() -> None:
    net = net_of_refunds(OrderAmounts(subtotal=D("30.00")), D("10.00"))
    assert net.subtotal == D("20.00")
    net = net_of_refunds(OrderAmounts(subtotal=D("10.00"), taxes=D("0.50")), D("3.50"))
    assert net == OrderAmounts(subtotal=D("6.67"), taxes=D("0.33"))


def test_net_of_refunds_edges() -> None:
    assert net_of_refunds(ORDER, D(0)) is ORDER
    assert net_of_refunds(ORDER, D("103.00")) == OrderAmounts(subtotal=D(0))
    assert net_of_refunds(ORDER, D("500")) == OrderAmounts(subtotal=D(0))
    with pytest.raises(ValueError, match="refunded_amount must not be negative"):
        net_of_refunds(ORDER, D("-1"))


def test_partial_refunds_claw_back_exactly_the_award() -> None:
    first = refund_clawback(100, D("90.00"), D("30.00"), 0)
    second = refund_clawback(100, D("90.00"), D("60.00"), first)
    third = refund_clawback(100, D("90.00"), D("90.00"), first + second)
    assert (first, second, third) == (33, 33, 34)
    assert first + second + third == 100


def test_clawback_never_exceeds_the_award() -> None:
    assert refund_clawback(100, D("90"), D("120"), 0) == 100
    assert refund_clawback(100, D("90"), D("120"), 100) == 0
    # Clawed back more than the share so far (e.g. after a manual correction): nothing more now.
    assert refund_clawback(100, D("90"), D("30"), 50) == 0


def test_clawback_of_a_zero_basis_order_takes_everything() -> None:
    assert refund_clawback(25, D(0), D(0), 0) == 25


def test_clawback_rounds_down_until_the_refund_is_complete() -> None:
    assert refund_clawback(10, D("3"), D("1"), 0) == 3
    assert refund_clawback(10, D("3"), D("2"), 3) == 3
    assert refund_clawback(10, D("3"), D("3"), 6) == 4


def test_clawback_refuses_inconsistent_inputs() -> None:
    with pytest.raises(ValueError, match="clawed_back_so_far must be between 0 and 10"):
        refund_clawback(10, D(5), D(1), 11)
    with pytest.raises(ValueError, match="points_awarded must not be negative"):
        refund_clawback(-1, D(5), D(1), 0)
    with pytest.raises(ValueError, match="must not be negative"):
        refund_clawback(10, D(5), D(-1), 0)


@given(
    points=st.integers(min_value=0, max_value=10**7),
    parts=st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=12),
)
def test_clawbacks_over_any_split_of_a_full_refund_sum_to_the_award(
    points: int, parts: list[int]
) -> None:
    basis = D(sum(parts)) / 100
    refunded = D(0)
    clawed = 0
    for part in parts:
        refunded += D(part) / 100
        taken = refund_clawback(points, basis, refunded, clawed)
        assert taken >= 0
        clawed += taken
        assert clawed <= points
    assert clawed == points


# --- limits --------------------------------------------------------------------------------------


def test_no_limit_always_allows() -> None:
    assert limit_allows(None, [utc(2025, 1, 1)] * 50, utc(2025, 1, 1), UTC) is True


def test_daily_limit_uses_the_merchants_day() -> None:
    limit = ActionLimit(max_count=1, period=LimitPeriod.DAY)
    earlier = utc(2025, 3, 10, 3, 30)  # 9 March, 23:30 in New York
    now = utc(2025, 3, 10, 5, 0)  # 10 March, 01:00 in New York
    assert limit_allows(limit, [earlier], now, NEW_YORK) is True
    assert limit_allows(limit, [earlier], now, UTC) is False


def test_weekly_limit_follows_iso_weeks_across_new_year() -> None:
    limit = ActionLimit(max_count=1, period=LimitPeriod.WEEK)
    friday = utc(2026, 1, 2, 12)  # ISO week 1 of 2026 starts on Monday 29 December 2025
    assert limit_allows(limit, [utc(2025, 12, 29, 10)], friday, UTC) is False
    assert limit_allows(limit, [utc(2025, 12, 28, 23, 59)], friday, UTC) is True
    assert limit_allows(limit, [utc(2026, 1, 5, 0)], friday, UTC) is True


def test_monthly_limit_counts_up_to_max_count() -> None:
    limit = ActionLimit(max_count=2, period=LimitPeriod.MONTH)
    now = utc(2025, 6, 30, 12)
    assert limit_allows(limit, [utc(2025, 6, 1)], now, UTC) is True
    assert limit_allows(limit, [utc(2025, 6, 1), utc(2025, 6, 2)], now, UTC) is False
    assert limit_allows(limit, [utc(2025, 5, 31), utc(2025, 6, 2)], now, UTC) is True


def test_yearly_limit_uses_the_merchants_calendar_year() -> None:
    limit = ActionLimit(max_count=1, period=LimitPeriod.YEAR)
    new_years_eve = utc(2025, 12, 31, 23, 30)  # already 2026 in Auckland, still 2025 in New York
    later = utc(2026, 6, 1)
    assert limit_allows(limit, [new_years_eve], later, AUCKLAND) is False
    assert limit_allows(limit, [new_years_eve], later, NEW_YORK) is True


def test_ever_limit_counts_every_award() -> None:
    limit = ActionLimit(max_count=2, period=LimitPeriod.EVER)
    assert limit_allows(limit, [utc(2019, 1, 1)], utc(2025, 1, 1), UTC) is True
    assert limit_allows(limit, [utc(2019, 1, 1), utc(2021, 1, 1)], utc(2025, 1, 1), UTC) is False


def test_limit_refuses_naive_times() -> None:
    limit = ActionLimit(max_count=1, period=LimitPeriod.DAY)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        limit_allows(limit, [], datetime(2025, 1, 1), UTC)  # noqa: DTZ001
    with pytest.raises(ValueError, match="previous_award_times must be timezone-aware"):
        limit_allows(limit, [datetime(2025, 1, 1)], utc(2025, 1, 1), UTC)  # noqa: DTZ001


# --- birthdays -----------------------------------------------------------------------------------


def test_leap_day_birthday_falls_on_28_february_in_other_years() -> None:
    assert birthday_in_year(date(2000, 2, 29), 2025) == date(2025, 2, 28)
    assert birthday_in_year(date(2000, 2, 29), 2028) == date(2028, 2, 29)
    assert birthday_in_year(date(1990, 7, 14), 2025) == date(2025, 7, 14)


LONG_AGO = utc(2020, 1, 1)


def test_birthday_is_due_on_the_day_and_up_to_a_week_late() -> None:
    birthday = date(1990, 7, 14)
    assert BIRTHDAY_GRACE_DAYS == 7
    assert birthday_award_due(birthday, LONG_AGO, date(2025, 7, 13), 2024, tz=UTC) is False
    assert birthday_award_due(birthday, LONG_AGO, date(2025, 7, 14), 2024, tz=UTC) is True
    assert birthday_award_due(birthday, LONG_AGO, date(2025, 7, 21), 2024, tz=UTC) is True
    assert birthday_award_due(birthday, LONG_AGO, date(2025, 7, 22), 2024, tz=UTC) is False


def test_birthday_is_awarded_once_a_year() -> None:
    birthday = date(1990, 7, 14)
    assert due_birthday(birthday, LONG_AGO, date(2025, 7, 15), None, tz=UTC) == date(2025, 7, 14)
    assert due_birthday(birthday, LONG_AGO, date(2025, 7, 15), 2025, tz=UTC) is None


def test_leap_day_birthday_in_a_non_leap_year() -> None:
    birthday = date(2000, 2, 29)
    assert due_birthday(birthday, LONG_AGO, date(2025, 2, 27), 2024, tz=UTC) is None
    assert due_birthday(birthday, LONG_AGO, date(2025, 2, 28), 2024, tz=UTC) == date(2025, 2, 28)


def test_leap_day_birthday_in_a_leap_year() -> None:
    birthday = date(2000, 2, 29)
    assert due_birthday(birthday, LONG_AGO, date(2028, 2, 28), 2027, tz=UTC) is None
    assert due_birthday(birthday, LONG_AGO, date(2028, 2, 29), 2027, tz=UTC) == date(2028, 2, 29)


def test_birthday_entered_29_days_before_waits_a_year() -> None:
    birthday = date(1990, 5, 31)
    set_at = utc(2025, 5, 2, 12)  # 29 days before
    assert birthday_award_due(birthday, set_at, date(2025, 5, 31), None, tz=UTC) is False
    assert birthday_award_due(birthday, set_at, date(2026, 5, 31), None, tz=UTC) is True


def test_birthday_entered_30_days_before_is_awarded() -> None:
    birthday = date(1990, 5, 31)
    set_at = utc(2025, 5, 1, 12)
    assert birthday_award_due(birthday, set_at, date(2025, 5, 31), None, tz=UTC) is True


def test_birthday_notice_counts_in_the_merchants_timezone() -> None:
    birthday = date(1990, 5, 31)
    set_at = utc(2025, 5, 2, 2)  # still 1 May in New York: 30 days' notice there, 29 in UTC
    assert birthday_award_due(birthday, set_at, date(2025, 5, 31), None, tz=NEW_YORK) is True
    assert birthday_award_due(birthday, set_at, date(2025, 5, 31), None, tz=UTC) is False


def test_birthday_entered_during_the_grace_week_earns_nothing() -> None:
    birthday = date(1990, 7, 14)
    set_at = utc(2025, 7, 16)
    assert birthday_award_due(birthday, set_at, date(2025, 7, 17), None, tz=UTC) is False


def test_late_award_crosses_new_year_and_is_not_repeated() -> None:
    birthday = date(1990, 12, 28)
    today = date(2026, 1, 2)
    assert due_birthday(birthday, LONG_AGO, today, 2024, tz=UTC) == date(2025, 12, 28)
    assert due_birthday(birthday, LONG_AGO, today, 2025, tz=UTC) is None
    # A caller that wrongly recorded today's year still cannot award the same birthday twice.
    assert due_birthday(birthday, LONG_AGO, today, 2026, tz=UTC) is None
    assert due_birthday(birthday, LONG_AGO, date(2026, 12, 28), 2025, tz=UTC) == date(2026, 12, 28)


def test_local_today() -> None:
    assert local_today(utc(2025, 12, 31, 23, 30), AUCKLAND) == date(2026, 1, 1)
    assert local_today(utc(2025, 12, 31, 23, 30), NEW_YORK) == date(2025, 12, 31)


def test_birthday_refuses_a_naive_set_at() -> None:
    with pytest.raises(ValueError, match="birthday_set_at must be timezone-aware"):
        birthday_award_due(
            date(1990, 1, 1),
            datetime(2020, 1, 1),  # noqa: DTZ001
            date(2025, 1, 1),
            None,
            tz=UTC,
        )


# --- earning settings ----------------------------------------------------------------------------


def test_place_order_defaults() -> None:
    rule = PlaceOrderAction()
    assert rule.enabled is False
    assert rule.mode is OrderPointsMode.PER_CURRENCY_UNIT
    assert rule.points_per_unit == D(1)
    assert (rule.count_discounts, rule.include_shipping, rule.include_taxes) == (True, False, False)
    assert rule.award_on_status == "paid"
    assert rule.minimum_order is None


def test_earning_settings_refuse_negative_points_and_empty_limits() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        PlaceOrderAction(fixed_points=-1)
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        PlaceOrderAction(points_per_unit=D("-0.5"))
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        ActionLimit(max_count=0, period=LimitPeriod.DAY)


def test_custom_actions_need_unique_unreserved_ids() -> None:
    with pytest.raises(ValidationError, match="'birthday' is the id of a built-in action"):
        CustomAction(id="birthday", name="Birthday again", points=5)
    follow = CustomAction(id="follow", name="Follow us", points=5)
    with pytest.raises(ValidationError, match="custom action ids must be unique; repeated: follow"):
        ProgramSettings(custom_actions=(follow, follow))


def test_settings_round_trip_through_json() -> None:
    settings = ProgramSettings(
        place_order=PlaceOrderAction(
            enabled=True,
            points_per_unit=D("1.5"),
            minimum_order=D("20.00"),
            limit=ActionLimit(max_count=3, period=LimitPeriod.DAY),
        ),
        custom_actions=(CustomAction(id="follow", name="Follow us", points=5),),
    )
    stored = settings.model_dump(mode="json")
    assert stored["place_order"]["points_per_unit"] == "1.5"
    assert stored["place_order"]["limit"] == {"max_count": 3, "period": "day"}
    assert ProgramSettings.model_validate(stored) == settings
    assert ProgramSettings.model_validate_json(settings.model_dump_json()) == settings


def test_revise_bumps_the_version_and_validates() -> None:
    settings = ProgramSettings()
    revised = settings.revise(place_order=PlaceOrderAction(enabled=True))
    assert (settings.version, revised.version) == (1, 2)
    assert revised.place_order.enabled is True
    assert settings.place_order.enabled is False
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        revised.revise(place_order={"fixed_points": -5})
    with pytest.raises(ValueError, match="the version is set by revise"):
        settings.revise(version=7)


def test_settings_are_frozen() -> None:
    settings = ProgramSettings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.version = 2  # type: ignore[misc]


def test_settings_refuse_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ProgramSettings.model_validate({"place_order": {"points_per_dollar": 1}})
