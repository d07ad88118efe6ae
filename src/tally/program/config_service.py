"""Reading and changing a merchant's program settings (versioned JSON on the merchant row)."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy.orm import Session

from tally.errors import FieldProblem, ValidationFailed
from tally.merchants.orm import Merchant
from tally.merchants.service import get_merchant
from tally.program.settings import ProgramSettings


def program_settings(merchant: Merchant) -> ProgramSettings:
    """The merchant's program settings (defaults when never configured)."""
    return ProgramSettings.model_validate(merchant.program_settings or {})


def load_program(session: Session, merchant_id: int) -> tuple[Merchant, ProgramSettings]:
    """The merchant and its program settings."""
    merchant = get_merchant(session, merchant_id)
    return merchant, program_settings(merchant)


def merchant_zone(merchant: Merchant) -> ZoneInfo:
    """The merchant's time zone, for calendar rules."""
    return ZoneInfo(merchant.timezone)


def _problems(exc: ValidationError) -> list[FieldProblem]:
    return [
        FieldProblem(".".join(str(p) for p in err["loc"]) or "settings", err["msg"])
        for err in exc.errors()
    ]


def update_program(
    session: Session, *, merchant_id: int, changes: dict[str, Any]
) -> ProgramSettings:
    """Replace the given top-level sections, validate the whole, and bump the version."""
    merchant, current = load_program(session, merchant_id)
    unknown = set(changes) - set(ProgramSettings.model_fields) | ({"version"} & set(changes))
    if unknown:
        raise ValidationFailed(
            "unknown program settings sections",
            [FieldProblem(name, "not a settings section") for name in sorted(unknown)],
        )
    merged = current.model_dump(mode="json")
    merged.update(changes)
    merged["version"] = current.version + 1
    try:
        updated = ProgramSettings.model_validate(merged)
    except ValidationError as exc:
        raise ValidationFailed("the program settings are not valid", _problems(exc)) from exc
    merchant.program_settings = updated.model_dump(mode="json")
    session.flush()
    return updated
