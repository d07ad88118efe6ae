"""Comparing Dotdigital's values with Tally's: same meaning, any notation."""

from __future__ import annotations

import pytest

from tally.integrations.dotdigital.drift import FieldDifference, differences, same_value
from tally.integrations.dotdigital.fields import DataFieldMapping


@pytest.mark.parametrize(
    ("field_type", "tally", "dotdigital", "same"),
    [
        ("Numeric", 120, 120.0, True),
        ("Numeric", 120, "120", True),
        ("Numeric", 120, 121, False),
        ("Numeric", 0, None, False),
        ("Numeric", 5, True, False),
        ("Date", "1990-05-01T00:00:00+00:00", "1990-05-01T00:00:00Z", True),
        ("Date", "1990-05-01T00:00:00+00:00", "1990-05-01T00:00:00", True),
        ("Date", "1990-05-01T00:00:00+00:00", "1990-05-02T00:00:00+00:00", False),
        ("Date", "1990-05-01T00:00:00+00:00", "not a date", False),
        ("String", "Gold", "Gold", True),
        ("String", "Gold", "gold", False),
        ("String", None, "", True),
        ("String", None, "Gold", False),
        ("Boolean", True, "true", True),
    ],
)
def test_values_are_compared_by_meaning(
    field_type: str, tally: object, dotdigital: object, same: bool
) -> None:
    assert same_value(field_type, tally, dotdigital) is same


def test_only_mapped_fields_count_and_names_ignore_case() -> None:
    mapping = DataFieldMapping(birthday=None, referral_url=None)
    expected = {"LOYALTY_POINTS": 10, "LOYALTY_VIP_TIER": "Gold"}
    held = {"loyalty_points": 10, "LOYALTY_BIRTHDAY": "2000-01-01T00:00:00Z", "FIRSTNAME": "Ann"}
    assert differences(mapping, expected, held) == [
        FieldDifference("LOYALTY_VIP_TIER", "Gold", None)
    ]
