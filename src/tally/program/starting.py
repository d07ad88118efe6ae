"""The program a new store starts with, and going live.

A new store gets a clear, working program rather than everything off: points for creating an
account, points per currency unit on paid orders, and one reward. It is not live: nothing is
awarded until the merchant has looked it over and goes live (`go_live`), which is a program
change like any other (a new version, in the audit log).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from tally.program.config_service import update_program
from tally.program.orm import ProgramVersion
from tally.program.settings import ProgramSettings

# Who saved the starting version, as `program_versions` records it; any other version means
# someone has saved the program since (the checklist's "program reviewed").
STARTED_BY = "starting program"

STARTING_PROGRAM: dict[str, Any] = {
    "live": False,
    "create_account": {"enabled": True, "points": 100},
    "place_order": {
        "enabled": True,
        "mode": "per_currency_unit",
        "points_per_unit": "1",
        "award_on_status": "paid",
    },
    "rewards": [
        {
            "id": "five-off",
            "type": "fixed_amount",
            "name": "5 off your order",
            "points_cost": 500,
            "amount": "5",
        }
    ],
}


def start_program(session: Session, *, merchant_id: int, by: str) -> ProgramSettings:
    """Give a new store the starting program, not live yet; ``by`` names who created the store."""
    return update_program(
        session,
        merchant_id=merchant_id,
        changes=STARTING_PROGRAM,
        changed_by=f"{STARTED_BY} ({by})",
    )


def go_live(session: Session, *, merchant_id: int, changed_by: str) -> ProgramSettings:
    """Start awarding points: the program's ``live`` flag on (a no-op when it already is)."""
    return update_program(
        session, merchant_id=merchant_id, changes={"live": True}, changed_by=changed_by
    )


def program_reviewed(session: Session, merchant_id: int) -> bool:
    """Whether anyone has saved the program since the starting version."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    ProgramVersion.merchant_id == merchant_id,
                    ProgramVersion.changed_by.not_like(f"{STARTED_BY}%"),
                )
            )
        )
    )
