"""Rewards: what a redemption costs and gives, coupon codes, and merchant-uploaded code pools."""

from __future__ import annotations

import csv
import io
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from tally.errors import FieldProblem, ValidationFailed
from tally.program.settings import (
    FixedAmountReward,
    FreeProductReward,
    FreeShippingReward,
    PercentageReward,
    Reward,
    VariableReward,
)

# No 0/O, 1/I/L: codes are read off screens and typed in by hand.
COUPON_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
COUPON_CODE_LENGTH = 12
COUPON_GROUP_SIZE = 4
MAX_PREFIX_LENGTH = 20
MAX_POOL_CODE_LENGTH = 255

# A pool of 100,000 twelve-character codes is about 1.4 MB; this leaves room for long codes.
MAX_POOL_FILE_BYTES = 10 * 1024 * 1024

# First-row values taken as the header of a code pool rather than as a code.
POOL_HEADERS = frozenset({"code", "codes", "coupon", "coupon code", "coupon_code", "discount code"})


class RedemptionRefused(ValidationFailed, title="Redemption refused"):
    """A redemption that the reward's rules do not allow."""


class CodePoolInvalid(ValidationFailed, title="Invalid code pool"):
    """An uploaded code pool with blank, duplicate or malformed rows (all listed in `errors`)."""


class DiscountUnit(StrEnum):
    """What a quote's `discount_value` is measured in."""

    CURRENCY = "currency"  # fixed_amount and variable: an amount off
    PERCENT = "percent"  # percentage: e.g. 10 for 10% off
    NONE = "none"  # free_shipping and free_product: the store decides the value at checkout


@dataclass(frozen=True, slots=True)
class RedemptionQuote:
    """The points a redemption takes and the discount it gives."""

    points_to_spend: int
    discount_value: Decimal
    discount_unit: DiscountUnit


def _refuse(message: str, points_requested: int | None) -> RedemptionRefused:
    return RedemptionRefused(message, [FieldProblem("points", message, points_requested)])


def redemption_quote(reward: Reward, points_requested: int | None = None) -> RedemptionQuote:
    """What redeeming `reward` costs and gives.

    Fixed-cost rewards take their `points_cost`; `points_requested` may be left out or must
    equal it. A variable reward needs `points_requested`: a multiple of `points_per_unit`
    between `min_points` and `max_points`, each `points_per_unit` giving 1 currency unit off.
    The customer's balance is checked by the ledger, not here.
    """
    if not reward.enabled:
        raise _refuse(f"the reward '{reward.name}' is not available", points_requested)
    if isinstance(reward, VariableReward):
        return _variable_quote(reward, points_requested)
    if points_requested is not None and points_requested != reward.points_cost:
        raise _refuse(
            f"the reward '{reward.name}' costs exactly {reward.points_cost} points",
            points_requested,
        )
    if isinstance(reward, FixedAmountReward):
        return RedemptionQuote(reward.points_cost, reward.amount, DiscountUnit.CURRENCY)
    if isinstance(reward, PercentageReward):
        return RedemptionQuote(reward.points_cost, reward.percent, DiscountUnit.PERCENT)
    assert isinstance(reward, FreeShippingReward | FreeProductReward)
    return RedemptionQuote(reward.points_cost, Decimal(0), DiscountUnit.NONE)


def _variable_quote(reward: VariableReward, points_requested: int | None) -> RedemptionQuote:
    step = reward.points_per_unit
    if points_requested is None:
        raise _refuse(
            f"choose how many points to spend on '{reward.name}' "
            f"(at least {reward.min_points}, in steps of {step})",
            None,
        )
    if points_requested < reward.min_points:
        raise _refuse(
            f"at least {reward.min_points} points must be spent on '{reward.name}'",
            points_requested,
        )
    if reward.max_points is not None and points_requested > reward.max_points:
        raise _refuse(
            f"at most {reward.max_points} points can be spent on '{reward.name}'",
            points_requested,
        )
    if points_requested % step:
        raise _refuse(
            f"points spent on '{reward.name}' must be a multiple of {step}", points_requested
        )
    return RedemptionQuote(
        points_requested, Decimal(points_requested // step), DiscountUnit.CURRENCY
    )


def coupon_expires_at(reward: Reward, issued_at: datetime) -> datetime | None:
    """When a coupon issued at `issued_at` for `reward` stops working (None: never)."""
    if issued_at.tzinfo is None:
        raise ValueError("issued_at must be timezone-aware")
    if reward.coupon_expiry_days is None:
        return None
    return issued_at + timedelta(days=reward.coupon_expiry_days)


def generate_coupon_code(
    prefix: str, rng: random.Random, *, length: int = COUPON_CODE_LENGTH
) -> str:
    """A code like `TALLY-7KQM-R2XD-9HFA`: the prefix, then `length` random characters in fours.

    Pass `secrets.SystemRandom()` in production (codes are worth money); a seeded
    `random.Random` makes tests repeatable. An empty prefix gives just the groups.
    """
    if length < 1:
        raise ValueError(f"length must be at least 1, got {length}")
    prefix = prefix.strip().upper()
    if prefix and not re.fullmatch(rf"[A-Z0-9]{{1,{MAX_PREFIX_LENGTH}}}", prefix):
        raise ValueError(f"the prefix must be 1 to {MAX_PREFIX_LENGTH} letters or digits")
    characters = "".join(rng.choice(COUPON_ALPHABET) for _ in range(length))
    groups = [
        characters[start : start + COUPON_GROUP_SIZE]
        for start in range(0, length, COUPON_GROUP_SIZE)
    ]
    return "-".join([prefix, *groups] if prefix else groups)


def _without_byte_order_mark(lines: Iterable[str]) -> Iterator[str]:
    # Spreadsheets often save UTF-8 with a BOM, which would otherwise stick to the first cell.
    for number, line in enumerate(lines):
        yield line.removeprefix("\ufeff") if number == 0 else line


def pool_lines(content: bytes) -> Iterator[str]:
    """The lines of an uploaded code pool file (UTF-8, BOM or not), for ``parse_code_pool``.

    Pass at most ``MAX_POOL_FILE_BYTES + 1`` bytes: more is refused as too large.
    """
    if len(content) > MAX_POOL_FILE_BYTES:
        raise CodePoolInvalid(
            f"the file is larger than {MAX_POOL_FILE_BYTES // (1024 * 1024)} MB",
            [FieldProblem("file", "too large; split it into several uploads")],
        )
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CodePoolInvalid(
            "the file is not UTF-8 text",
            [FieldProblem("file", f"byte {exc.start} is not valid UTF-8; save the file as UTF-8")],
        ) from exc
    # newline="" hands line endings to the csv module untouched, as it expects.
    yield from io.StringIO(text, newline="")


def parse_code_pool(lines: Iterable[str]) -> list[str]:
    """The codes of a one-column CSV file, in file order, trimmed.

    A first row reading `code` (or `codes`, `coupon`, `coupon_code`, `coupon code`,
    `discount code`, in any case) is a header and skipped. Blank rows, rows with more than one
    value, over-long codes and duplicates (compared case-insensitively, as stores do) are all
    reported together, by row number counted from 1 including the header; blank rows at the
    very end of the file are ignored.
    """
    rows: list[tuple[int, list[str]]] = []
    reader = csv.reader(_without_byte_order_mark(lines))
    for row in reader:
        rows.append((reader.line_num, [cell.strip() for cell in row]))
    while rows and not any(rows[-1][1]):
        rows.pop()
    if rows:
        first_values = [cell.casefold() for cell in rows[0][1] if cell]
        if len(first_values) == 1 and first_values[0] in POOL_HEADERS:
            rows.pop(0)

    problems: list[FieldProblem] = []
    codes: list[str] = []
    first_row_of: dict[str, int] = {}
    for number, cells in rows:
        values = [cell for cell in cells if cell]
        if not values:
            problems.append(FieldProblem(f"row {number}", "the row is blank"))
            continue
        if len(values) > 1:
            problems.append(
                FieldProblem(f"row {number}", "expected one code per row", ",".join(values))
            )
            continue
        code = values[0]
        if len(code) > MAX_POOL_CODE_LENGTH:
            problems.append(
                FieldProblem(
                    f"row {number}", f"codes are at most {MAX_POOL_CODE_LENGTH} characters", code
                )
            )
            continue
        key = code.casefold()
        if key in first_row_of:
            problems.append(
                FieldProblem(f"row {number}", f"duplicate of row {first_row_of[key]}", code)
            )
            continue
        first_row_of[key] = number
        codes.append(code)
    if problems:
        raise CodePoolInvalid(
            f"the code pool has {len(problems)} problem{'s' if len(problems) != 1 else ''}",
            problems,
        )
    if not codes:
        raise CodePoolInvalid("the code pool has no codes", [FieldProblem("file", "no codes")])
    return codes
