"""Value checks both readers share: amounts, whole numbers, dates, and what to expect instead."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, tzinfo

AMOUNT_PATTERN = re.compile(r"\d{1,12}(?:\.\d{1,4})?", re.ASCII)
_NEGATIVE_NUMBER = re.compile(r"-\s*[\d.,]+", re.ASCII)
# Digit groups of three split by one repeated separator: 1,200 / 1.200 / 1 200 / 1'200.
_GROUPED_DIGITS = re.compile(r"\d{1,3}([,.' \u00a0\u202f\u2019])\d{3}(?:\1\d{3})*")
_GROUPED_AMOUNT = re.compile(
    r"\d{1,3}(?:([,' \u00a0\u202f\u2019])\d{3}(?:\1\d{3})*(?:\.\d+)?"
    r"|(\.)\d{3}(?:\.\d{3})*,\d+)"
)
_DECIMAL_COMMA = re.compile(r"\d+,\d{1,2}", re.ASCII)
_TOO_PRECISE = re.compile(r"\d+\.\d{5,}", re.ASCII)
_DECIMAL_NUMBER = re.compile(r"\d*[.,]\d+", re.ASCII)
_CURRENCY_SIGNS = frozenset("$€£¥₹₩₽₺₪฿₫₦₱¢")
# A date written year first, not followed by another digit (a time may follow).
_DATE_SHAPE = re.compile(r"(\d{4})([-/])(\d{2})\2(\d{2})(?!\d)", re.ASCII)
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


# What a rejected value should have looked like, by the first pattern it fully matches.
_AMOUNT_HINTS = (
    (_NEGATIVE_NUMBER, "an amount that is not negative"),
    (_DECIMAL_COMMA, 'an amount with a "." decimal point, like 49.90'),
    (_GROUPED_AMOUNT, "an amount without thousands separators, like 1234.50"),
    (_TOO_PRECISE, "an amount with at most 4 decimal places"),
)
_WHOLE_NUMBER_HINTS = (
    (_NEGATIVE_NUMBER, "a whole number that is not negative"),
    (_GROUPED_DIGITS, "a whole number without thousands separators"),
    (_DECIMAL_NUMBER, "a whole number (no decimals)"),
)


def _hint(text: str, hints: tuple[tuple[re.Pattern[str], str], ...], otherwise: str) -> str:
    return next((hint for shape, hint in hints if shape.fullmatch(text)), otherwise)


def amount_expected(text: str) -> str:
    """What an invalid amount should have looked like."""
    if not text:
        return "an amount like 49.90 (required)"
    # Checked first; no negative number (a "-" then digits) starts or ends with a sign.
    if text[0] in _CURRENCY_SIGNS or text[-1] in _CURRENCY_SIGNS:
        return "an amount without a currency sign, like 49.90"
    return _hint(
        text, _AMOUNT_HINTS, 'an amount like 49.90 (digits and an optional "." decimal point)'
    )


def whole_number_expected(text: str) -> str:
    """What an invalid whole number (points) should have looked like."""
    return _hint(text, _WHOLE_NUMBER_HINTS, "a whole number like 250")


_DATE_ONLY_LENGTH = len("2025-01-05")


def parse_timestamp(text: str, zone: tzinfo = UTC) -> datetime | None:
    """An ISO 8601 date or date-time as aware UTC; naive values are taken as UTC. None if invalid.

    A date alone (``2025-01-05``) is the start of that day in ``zone`` (the merchant's time
    zone), so it shows as that day in the admin rather than, west of UTC, the day before.

    Also reads Shopify's ``2024-03-05 14:22:10 -0500`` (a space before the offset). A time so
    close to the ends of the calendar (year 1, year 9999) that it has no UTC equivalent reads
    as ``datetime.min`` or ``datetime.max`` (in UTC): outside any range a caller accepts.
    """
    if len(text) == 25 and text[19] == " " and text[20] in "+-":
        text = text[:19] + text[20:]
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        if len(text) == _DATE_ONLY_LENGTH:
            return value.replace(tzinfo=zone).astimezone(UTC)
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        if value.year > 1:
            return datetime.max.replace(tzinfo=UTC)
        return datetime.min.replace(tzinfo=UTC)


def impossible_date(text: str, *, slashes: bool = False) -> str | None:
    """What to expect instead of a date written YYYY-MM-DD that does not exist (``2023-02-30``).

    ``text`` may go on with a time. None when it does not start with such a date, or the date
    exists. ``slashes`` also reads YYYY/MM/DD.
    """
    match = _DATE_SHAPE.match(text)
    if match is None or (match[2] == "/" and not slashes):
        return None
    year, month, day = int(match[1]), int(match[3]), int(match[4])
    written = match[0]
    if year == 0:
        return f"a real date ({written} is not one: there is no year 0)"
    if not 1 <= month <= 12:
        return f"a real date ({written} is not one: there is no month {month})"
    days = calendar.monthrange(year, month)[1]
    if not 1 <= day <= days:
        return f"a real date ({written} is not one: {_MONTHS[month - 1]} {year} has {days} days)"
    return None
