"""Reading and changing a merchant's program settings (versioned JSON on the merchant row)
and the history of its saved versions."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.errors import FieldProblem, NotFound, PreconditionFailed, ValidationFailed
from tally.merchants.orm import Merchant
from tally.merchants.service import get_merchant
from tally.outbox.events import VipTiersChanged
from tally.outbox.service import emit
from tally.program.orm import ProgramVersion
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


def changed_settings(current: ProgramSettings, changes: dict[str, Any]) -> ProgramSettings:
    """The settings with the given top-level sections replaced, validated as a whole, as the
    next version (nothing saved: ``update_program`` saves it, a preview only looks)."""
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
        return ProgramSettings.model_validate(merged)
    except ValidationError as exc:
        raise ValidationFailed("the program settings are not valid", _problems(exc)) from exc


def update_program(
    session: Session,
    *,
    merchant_id: int,
    changes: dict[str, Any],
    expected_version: int | None = None,
    changed_by: str = "unknown",
) -> ProgramSettings:
    """Replace the given top-level sections, validate the whole, and bump the version.

    Every saved version is kept with `changed_by` (who saved it: a user's email, an API key's
    name, `cli`), for `tally program history` and to see what a program was on a given day.

    With `expected_version` (the version the client read), the change is refused when the
    settings have moved on since, so two editors cannot silently overwrite each other.
    """
    # The merchant row is locked before the settings are read: concurrent changes queue up
    # and each one merges into its predecessor's result, so versions go up one at a time and
    # no accepted change is lost (SQLite's BEGIN IMMEDIATE already serialises writers).
    merchant = session.scalar(
        select(Merchant)
        .where(Merchant.id == merchant_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    if merchant is None:
        raise NotFound(f"merchant {merchant_id} does not exist")
    current = program_settings(merchant)
    if expected_version is not None and expected_version != current.version:
        raise PreconditionFailed(
            f"the program settings are at version {current.version}, not {expected_version}: "
            "reload them and apply your change again"
        )
    updated = changed_settings(current, changes)
    merchant.program_settings = updated.model_dump(mode="json")
    session.add(
        ProgramVersion(
            merchant_id=merchant_id,
            version=updated.version,
            settings=merchant.program_settings,
            changed_by=changed_by[:200],
        )
    )
    session.flush()
    if updated.vip != current.vip:
        # Customers move through the tier engine (events, emails), in the tier review.
        emit(session, VipTiersChanged(merchant_id=merchant_id, version=updated.version))
    return updated


def program_history(session: Session, merchant_id: int) -> list[ProgramVersion]:
    """The saved versions of a merchant's program, newest first."""
    return list(
        session.scalars(
            select(ProgramVersion)
            .where(ProgramVersion.merchant_id == merchant_id)
            .order_by(ProgramVersion.version.desc())
        )
    )
