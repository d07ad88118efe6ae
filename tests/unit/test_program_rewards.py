"""Rewards: redemption quotes, coupon codes, code pools, and the reward settings."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from tally.errors import FieldProblem, ValidationFailed
from tally.program.rewards import (
    COUPON_ALPHABET,
    CodePoolInvalid,
    DiscountUnit,
    RedemptionQuote,
    RedemptionRefused,
    coupon_expires_at,
    generate_coupon_code,
    parse_code_pool,
    redemption_quote,
)
from tally.program.settings import (
    FixedAmountReward,
    FreeProductReward,
    FreeShippingReward,
    PercentageReward,
    ProgramSettings,
    Reward,
    Tier,
    VariableReward,
    VipProgram,
)

D = Decimal

FIVE_OFF = FixedAmountReward(id="five-off", name="$5 off", points_cost=500, amount=D("5.00"))
TEN_PERCENT = PercentageReward(id="ten-percent", name="10% off", points_cost=1000, percent=D(10))
SHIPPING = FreeShippingReward(id="shipping", name="Free shipping", points_cost=300)
MUG = FreeProductReward(id="mug", name="Free mug", points_cost=800, product_id="gid://mug/1")
VARIABLE = VariableReward(
    id="cash", name="Points for cash", points_per_unit=100, min_points=200, max_points=5000
)


# --- quotes --------------------------------------------------------------------------------------


def test_fixed_rewards_cost_their_points() -> None:
    assert redemption_quote(FIVE_OFF) == RedemptionQuote(500, D("5.00"), DiscountUnit.CURRENCY)
    assert redemption_quote(FIVE_OFF, 500) == RedemptionQuote(500, D("5.00"), DiscountUnit.CURRENCY)
    assert redemption_quote(TEN_PERCENT) == RedemptionQuote(1000, D(10), DiscountUnit.PERCENT)
    assert redemption_quote(SHIPPING) == RedemptionQuote(300, D(0), DiscountUnit.NONE)
    assert redemption_quote(MUG) == RedemptionQuote(800, D(0), DiscountUnit.NONE)


def test_fixed_reward_refuses_another_amount() -> None:
    with pytest.raises(RedemptionRefused, match="costs exactly 500 points") as caught:
        redemption_quote(FIVE_OFF, 400)
    assert caught.value.errors == [
        FieldProblem("points", "the reward '$5 off' costs exactly 500 points", 400)
    ]


def test_variable_reward_gives_a_unit_per_points_per_unit() -> None:
    assert redemption_quote(VARIABLE, 200) == RedemptionQuote(200, D(2), DiscountUnit.CURRENCY)
    assert redemption_quote(VARIABLE, 5000) == RedemptionQuote(5000, D(50), DiscountUnit.CURRENCY)


def test_variable_reward_bounds() -> None:
    with pytest.raises(RedemptionRefused, match="at least 200 points must be spent on"):
        redemption_quote(VARIABLE, 100)
    with pytest.raises(RedemptionRefused, match="at most 5000 points can be spent on"):
        redemption_quote(VARIABLE, 5100)
    with pytest.raises(RedemptionRefused, match="must be a multiple of 100"):
        redemption_quote(VARIABLE, 250)
    with pytest.raises(RedemptionRefused, match="choose how many points to spend"):
        redemption_quote(VARIABLE, None)


def test_variable_reward_without_a_maximum() -> None:
    open_ended = VariableReward(id="cash", name="Cash", points_per_unit=50, min_points=50)
    assert redemption_quote(open_ended, 1_000_000) == RedemptionQuote(
        1_000_000, D(20000), DiscountUnit.CURRENCY
    )


def test_disabled_reward_cannot_be_redeemed() -> None:
    disabled = FIVE_OFF.model_copy(update={"enabled": False})
    with pytest.raises(RedemptionRefused, match="is not available"):
        redemption_quote(disabled)


def test_refusals_are_validation_failures() -> None:
    assert issubclass(RedemptionRefused, ValidationFailed)
    assert issubclass(CodePoolInvalid, ValidationFailed)


def test_coupon_expiry() -> None:
    issued = datetime(2025, 1, 31, 9, tzinfo=UTC)
    assert coupon_expires_at(FIVE_OFF, issued) is None
    expiring = FIVE_OFF.model_copy(update={"coupon_expiry_days": 30})
    assert coupon_expires_at(expiring, issued) == datetime(2025, 3, 2, 9, tzinfo=UTC)


# --- coupon codes --------------------------------------------------------------------------------


def test_coupon_code_shape() -> None:
    code = generate_coupon_code("tally", random.Random(7))
    assert re.fullmatch(r"TALLY-[2-9A-HJKMNP-Z]{4}-[2-9A-HJKMNP-Z]{4}-[2-9A-HJKMNP-Z]{4}", code)


def test_coupon_code_is_repeatable_with_a_seeded_rng() -> None:
    assert generate_coupon_code("TALLY", random.Random(1)) == generate_coupon_code(
        "TALLY", random.Random(1)
    )
    assert generate_coupon_code("TALLY", random.Random(1)) != generate_coupon_code(
        "TALLY", random.Random(2)
    )


def test_coupon_code_without_prefix_and_other_lengths() -> None:
    assert re.fullmatch(
        r"[A-Z0-9]{4}-[A-Z0-9]{4}", generate_coupon_code("", random.Random(3), length=8)
    )
    assert re.fullmatch(
        r"VIP-[A-Z0-9]{4}-[A-Z0-9]{2}", generate_coupon_code("VIP", random.Random(3), length=6)
    )


def test_coupon_code_refuses_bad_prefix_or_length() -> None:
    with pytest.raises(ValueError, match="the prefix must be 1 to 20 letters or digits"):
        generate_coupon_code("TAL-LY", random.Random(1))
    with pytest.raises(ValueError, match="length must be at least 1"):
        generate_coupon_code("TALLY", random.Random(1), length=0)


def test_coupon_alphabet_has_no_lookalikes() -> None:
    assert not set("01OIL") & set(COUPON_ALPHABET)
    assert len(set(COUPON_ALPHABET)) == len(COUPON_ALPHABET) == 31


@given(seed=st.integers())
def test_coupon_codes_only_use_the_alphabet(seed: int) -> None:
    code = generate_coupon_code("TALLY", random.Random(seed))
    prefix, *groups = code.split("-")
    assert prefix == "TALLY"
    assert [len(group) for group in groups] == [4, 4, 4]
    assert set("".join(groups)) <= set(COUPON_ALPHABET)


# --- code pools ----------------------------------------------------------------------------------


def test_code_pool_with_header() -> None:
    assert parse_code_pool(["code", " SAVE-1 ", "SAVE-2"]) == ["SAVE-1", "SAVE-2"]


def test_code_pool_without_header() -> None:
    assert parse_code_pool(["SAVE-1\n", "SAVE-2\n"]) == ["SAVE-1", "SAVE-2"]


def test_code_pool_header_with_byte_order_mark_and_quotes() -> None:
    assert parse_code_pool(['\ufeff"Coupon Code"', '"A,1"', "B"]) == ["A,1", "B"]


def test_code_pool_ignores_trailing_blank_lines_and_empty_columns() -> None:
    assert parse_code_pool(["A,", "B", "", "  "]) == ["A", "B"]


def test_code_pool_reports_every_problem_by_row() -> None:
    lines = ["code", "A", "", "b", "a", "C,D", "B", "E"]
    with pytest.raises(CodePoolInvalid, match="the code pool has 4 problems") as caught:
        parse_code_pool(lines)
    assert caught.value.errors == [
        FieldProblem("row 3", "the row is blank"),
        FieldProblem("row 5", "duplicate of row 2", "a"),
        FieldProblem("row 6", "expected one code per row", "C,D"),
        FieldProblem("row 7", "duplicate of row 4", "B"),
    ]


def test_code_pool_refuses_long_codes() -> None:
    with pytest.raises(CodePoolInvalid) as caught:
        parse_code_pool(["X" * 256])
    assert caught.value.errors == [
        FieldProblem("row 1", "codes are at most 255 characters", "X" * 256)
    ]


def test_code_pool_needs_a_code() -> None:
    with pytest.raises(CodePoolInvalid, match="the code pool has no codes"):
        parse_code_pool(["code", ""])
    with pytest.raises(CodePoolInvalid, match="the code pool has no codes"):
        parse_code_pool([])


# --- reward settings -----------------------------------------------------------------------------


def test_rewards_parse_by_type() -> None:
    adapter: TypeAdapter[Reward] = TypeAdapter(Reward)
    reward = adapter.validate_python(
        {
            "type": "variable",
            "id": "cash",
            "name": "Cash",
            "points_per_unit": 100,
            "min_points": 100,
        }
    )
    assert reward == VariableReward(id="cash", name="Cash", points_per_unit=100, min_points=100)
    settings = ProgramSettings(rewards=(FIVE_OFF, TEN_PERCENT, SHIPPING, MUG, VARIABLE))
    stored = settings.model_dump(mode="json")
    assert [reward["type"] for reward in stored["rewards"]] == [
        "fixed_amount",
        "percentage",
        "free_shipping",
        "free_product",
        "variable",
    ]
    assert stored["rewards"][0]["amount"] == "5.00"
    assert ProgramSettings.model_validate(stored) == settings
    assert settings.reward("mug") == MUG
    assert settings.reward("nothing") is None


def test_variable_reward_settings_validation() -> None:
    with pytest.raises(ValidationError, match=r"min_points \(150\) must be a multiple of"):
        VariableReward(id="c", name="C", points_per_unit=100, min_points=150)
    with pytest.raises(ValidationError, match=r"max_points \(450\) must be a multiple of"):
        VariableReward(id="c", name="C", points_per_unit=100, min_points=100, max_points=450)
    with pytest.raises(ValidationError, match=r"max_points \(100\) must not be less than"):
        VariableReward(id="c", name="C", points_per_unit=100, min_points=200, max_points=100)


def test_reward_settings_validation() -> None:
    with pytest.raises(ValidationError, match="greater than 0"):
        FixedAmountReward(id="x", name="X", points_cost=100, amount=D(0))
    with pytest.raises(ValidationError, match="less than or equal to 100"):
        PercentageReward(id="x", name="X", points_cost=100, percent=D(101))
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        FreeShippingReward(id="x", name="X", points_cost=0)
    with pytest.raises(ValidationError, match="String should match pattern"):
        FreeShippingReward(id="Free Shipping", name="X", points_cost=10)


def test_reward_ids_are_unique_and_tier_rewards_exist() -> None:
    with pytest.raises(ValidationError, match="reward ids must be unique; repeated: five-off"):
        ProgramSettings(rewards=(FIVE_OFF, FIVE_OFF))
    vip = VipProgram(tiers=(Tier(id="gold", name="Gold", threshold=D(500), entry_reward_id="mug"),))
    with pytest.raises(ValidationError, match="tier 'gold' entry_reward_id 'mug' is not a reward"):
        ProgramSettings(vip=vip)
    assert ProgramSettings(vip=vip, rewards=(MUG,)).vip == vip
