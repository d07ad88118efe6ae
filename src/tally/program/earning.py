"""Earning rules: order points, refund clawbacks, action limits and birthdays.

Whether an action is enabled, whether the order reached `award_on_status`, and recording what
was awarded (with the settings version) are the caller's business; these functions only count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

from tally.program.settings import ActionLimit, LimitPeriod, OrderPointsMode, PlaceOrderAction

ZERO = Decimal(0)

# A birthday saved fewer days than this before it falls earns nothing that year, so nobody
# can set "my birthday is tomorrow" to collect points.
BIRTHDAY_NOTICE_DAYS = 30
# If the daily job was down on the birthday, the award is still made this many days later.
BIRTHDAY_GRACE_DAYS = 7


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def _require_decimal(value: Decimal, name: str) -> None:
    # A float here would carry binary rounding errors into money; refuse it outright.
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, not {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"{name} must be a finite number")


# --- orders ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderAmounts:
    """An order's money, each part non-negative: `discounts` is the total taken off `subtotal`."""

    subtotal: Decimal
    discounts: Decimal = ZERO
    shipping: Decimal = ZERO
    taxes: Decimal = ZERO

    def __post_init__(self) -> None:
        for name in ("subtotal", "discounts", "shipping", "taxes"):
            value = getattr(self, name)
            _require_decimal(value, name)
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")

    @property
    def paid_total(self) -> Decimal:
        """What the customer paid: subtotal less discounts, plus shipping and taxes (never < 0)."""
        return max(self.subtotal - self.discounts + self.shipping + self.taxes, ZERO)


def order_points_basis(amounts: OrderAmounts, rule: PlaceOrderAction) -> Decimal:
    """The amount an order earns points on, as `PlaceOrderAction` defines it (never below 0)."""
    basis = amounts.subtotal
    if rule.count_discounts:
        basis -= amounts.discounts
    if rule.include_shipping:
        basis += amounts.shipping
    if rule.include_taxes:
        basis += amounts.taxes
    return max(basis, ZERO)


def order_points(
    amounts: OrderAmounts, rule: PlaceOrderAction, multiplier: Decimal = Decimal(1)
) -> int:
    """Points for an order, times a VIP multiplier, rounded down; 0 below the minimum order."""
    _require_decimal(multiplier, "multiplier")
    if multiplier < 0:
        raise ValueError(f"multiplier must not be negative, got {multiplier}")
    basis = order_points_basis(amounts, rule)
    if rule.minimum_order is not None and basis < rule.minimum_order:
        return 0
    if rule.mode is OrderPointsMode.FIXED_PER_ORDER:
        return math.floor(rule.fixed_points * Fraction(multiplier))
    # Exact rational arithmetic, so 0.1 x 30 is 3 and never 2.9999...
    return math.floor(Fraction(basis) * Fraction(rule.points_per_unit) * Fraction(multiplier))


def net_of_refunds(amounts: OrderAmounts, refunded_amount: Decimal) -> OrderAmounts:
    """The order as if the refunded share of what was paid had never been bought.

    A refund is spread over the order proportionally: every part is scaled by the share of the
    paid total that was kept, and rounded (half to even) to the finest decimal place among the
    inputs. A refund of the whole paid total (or more) leaves nothing.
    """
    _require_decimal(refunded_amount, "refunded_amount")
    if refunded_amount < 0:
        raise ValueError(f"refunded_amount must not be negative, got {refunded_amount}")
    paid = amounts.paid_total
    if refunded_amount == 0:
        return amounts
    if refunded_amount >= paid:
        return OrderAmounts(subtotal=ZERO)
    kept = Fraction(paid - refunded_amount) / Fraction(paid)
    places = min(_exponent(value) for value in (*_parts(amounts), refunded_amount))
    quantum = Decimal(1).scaleb(places)

    def scaled(value: Decimal) -> Decimal:
        exact = Fraction(value) * kept
        rounded = Decimal(exact.numerator) / Decimal(exact.denominator)
        return rounded.quantize(quantum, rounding=ROUND_HALF_EVEN)

    return OrderAmounts(
        subtotal=scaled(amounts.subtotal),
        discounts=scaled(amounts.discounts),
        shipping=scaled(amounts.shipping),
        taxes=scaled(amounts.taxes),
    )


def _parts(amounts: OrderAmounts) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    return (amounts.subtotal, amounts.discounts, amounts.shipping, amounts.taxes)


def _exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite values only (checked on the way in)
    return min(exponent, 0)


def refund_clawback(
    points_awarded: int,
    basis_total: Decimal,
    refunded_amount_total_so_far: Decimal,
    clawed_back_so_far: int,
) -> int:
    """Points to take back now, given every refund of the order so far (including this one).

    The clawback is proportional: in total, floor(points_awarded x refunded / basis_total),
    capped at the award. Because it is computed from running totals, partial refunds never
    add up to more than that, and refunding the whole basis takes back exactly
    `points_awarded`. `basis_total` is whatever refunds are measured against (normally the
    order's paid total); a refund of an order whose basis is zero takes everything back.
    """
    if points_awarded < 0:
        raise ValueError(f"points_awarded must not be negative, got {points_awarded}")
    if not 0 <= clawed_back_so_far <= points_awarded:
        raise ValueError(
            f"clawed_back_so_far must be between 0 and {points_awarded}, got {clawed_back_so_far}"
        )
    _require_decimal(basis_total, "basis_total")
    _require_decimal(refunded_amount_total_so_far, "refunded_amount_total_so_far")
    if basis_total < 0 or refunded_amount_total_so_far < 0:
        raise ValueError("basis_total and refunded_amount_total_so_far must not be negative")
    if basis_total == 0 or refunded_amount_total_so_far >= basis_total:
        owed = points_awarded
    else:
        share = Fraction(refunded_amount_total_so_far) / Fraction(basis_total)
        owed = math.floor(points_awarded * share)
    return max(owed - clawed_back_so_far, 0)


# --- limits ------------------------------------------------------------------------------------


def _period_key(moment: datetime, tz: tzinfo, period: LimitPeriod) -> tuple[int, ...]:
    local = moment.astimezone(tz).date()
    if period is LimitPeriod.DAY:
        return (local.year, local.month, local.day)
    if period is LimitPeriod.WEEK:
        iso = local.isocalendar()
        return (iso.year, iso.week)
    if period is LimitPeriod.MONTH:
        return (local.year, local.month)
    if period is LimitPeriod.YEAR:
        return (local.year,)
    return ()  # EVER: a single period


def limit_allows(
    limit: ActionLimit | None,
    previous_award_times: Iterable[datetime],
    now: datetime,
    tz: tzinfo,
) -> bool:
    """Whether one more award at `now` stays within `limit`.

    Periods are calendar periods in the merchant's timezone `tz`: the local day, the ISO week
    (Monday to Sunday, so 29 December 2025 and 1 January 2026 share week 1 of 2026), the local
    month or year; `ever` counts every previous award.
    """
    _require_aware(now, "now")
    if limit is None:
        return True
    current = _period_key(now, tz, limit.period)
    used = 0
    for awarded_at in previous_award_times:
        _require_aware(awarded_at, "previous_award_times")
        if _period_key(awarded_at, tz, limit.period) == current:
            used += 1
    return used < limit.max_count


# --- birthdays ---------------------------------------------------------------------------------


def birthday_in_year(birthday: date, year: int) -> date:
    """The day the birthday is celebrated in `year` (29 February falls on the 28th otherwise)."""
    if birthday.month == 2 and birthday.day == 29:
        try:
            return date(year, 2, 29)
        except ValueError:
            return date(year, 2, 28)
    return date(year, birthday.month, birthday.day)


def due_birthday(
    birthday: date,
    birthday_set_at: datetime,
    today_local: date,
    last_awarded_year: int | None,
    *,
    tz: tzinfo,
) -> date | None:
    """The birthday (this year's or, in early January, last year's) to award today, if any.

    A birthday is awarded on the day, in the merchant's timezone, or up to
    `BIRTHDAY_GRACE_DAYS` later if the daily job did not run. `last_awarded_year` is the year
    of the birthday last awarded (record `due_birthday(...).year`, not today's year, since a
    late award can cross New Year); no birthday of that year or earlier is awarded again, so
    it is at most once a year. A birthday saved (`birthday_set_at`, taken as a local date)
    fewer than `BIRTHDAY_NOTICE_DAYS` days before it falls, or after it, earns nothing that
    year.
    """
    _require_aware(birthday_set_at, "birthday_set_at")
    set_on = birthday_set_at.astimezone(tz).date()
    for year in (today_local.year - 1, today_local.year):
        if last_awarded_year is not None and year <= last_awarded_year:
            continue
        try:
            falls_on = birthday_in_year(birthday, year)
        except ValueError:  # year outside what `date` can hold
            continue
        late_by = (today_local - falls_on).days
        if not 0 <= late_by <= BIRTHDAY_GRACE_DAYS:
            continue
        if (falls_on - set_on).days < BIRTHDAY_NOTICE_DAYS:
            continue
        return falls_on
    return None


def birthday_award_due(
    birthday: date,
    birthday_set_at: datetime,
    today_local: date,
    last_awarded_year: int | None,
    *,
    tz: tzinfo,
) -> bool:
    """Whether a birthday award is due today (see `due_birthday` for the rules)."""
    return (
        due_birthday(birthday, birthday_set_at, today_local, last_awarded_year, tz=tz) is not None
    )


def local_today(now: datetime, tz: tzinfo) -> date:
    """Today's date in the merchant's timezone."""
    _require_aware(now, "now")
    return now.astimezone(tz).date()
