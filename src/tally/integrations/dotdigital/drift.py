"""Whether a contact's data fields in Dotdigital hold what Tally would send now (no I/O).

Values are compared as Dotdigital means them, not as text: a number read back as ``120.0`` is
the ``120`` Tally sent, a Date field is its calendar day in UTC whatever the notation
(``2024-05-01T00:00:00Z`` or ``...+00:00``), an empty text is no value, and field names match
without regard to letter case (as Dotdigital matches them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tally.integrations.dotdigital.fields import DataFieldMapping


@dataclass(frozen=True)
class FieldDifference:
    """One data field whose value in Dotdigital is not Tally's."""

    field: str
    tally: Any
    dotdigital: Any

    def as_json(self) -> dict[str, Any]:
        """The difference as stored with a check's result."""
        return {"field": self.field, "tally": self.tally, "dotdigital": self.dotdigital}


def _blank(value: Any) -> bool:
    return value is None or value == ""


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _day(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    # A date without a zone is Dotdigital's UTC.
    return (parsed if parsed.tzinfo is None else parsed.astimezone(UTC)).date()


def same_value(field_type: str, tally: Any, dotdigital: Any) -> bool:
    """Whether Dotdigital's value is the one Tally sends, for a field of this type."""
    if _blank(tally) or _blank(dotdigital):
        return _blank(tally) and _blank(dotdigital)
    kind = field_type.lower()
    if kind == "numeric":
        expected = _number(tally)
        return expected is not None and expected == _number(dotdigital)
    if kind == "date":
        expected_day = _day(tally)
        return expected_day is not None and expected_day == _day(dotdigital)
    if kind == "boolean":
        return str(tally).lower() == str(dotdigital).lower()
    return str(tally) == str(dotdigital)


def differences(
    mapping: DataFieldMapping,
    expected: Mapping[str, Any],
    held: Mapping[str, Any],
) -> list[FieldDifference]:
    """The mapped fields whose value in Dotdigital (``held``) differs from Tally's (``expected``).

    A field Dotdigital did not return at all counts as empty.
    """
    held_by_name = {str(name).upper(): value for name, value in held.items()}
    found: list[FieldDifference] = []
    for spec in mapping.specs():
        tally = expected.get(spec.name)
        dotdigital = held_by_name.get(spec.name.upper())
        if not same_value(spec.type, tally, dotdigital):
            found.append(FieldDifference(spec.name, tally, dotdigital))
    return found
