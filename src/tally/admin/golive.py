"""The go-live checklist on the dashboard, and its "Go live" button (owners and managers).

A new store's program is not live (``program/starting.py``): the dashboard lists what to look
at first and, until the merchant goes live, that nothing is being awarded.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.responses import Response
from sqlalchemy.orm import Session

from tally.admin.permissions import Permission, requires
from tally.admin.web import Admin, AdminDep, AdminRoute, FormDep, redirect
from tally.integrations.dotdigital.service import find_connection
from tally.notifications.service import get_mail_settings
from tally.program.config_service import load_program
from tally.program.starting import go_live, program_reviewed

router = APIRouter(route_class=AdminRoute)


@dataclass(frozen=True)
class Step:
    """One thing to check before going live, whether it is done, and where to do it."""

    label: str
    done: bool
    href: str
    optional: bool = False


@dataclass(frozen=True)
class Checklist:
    """The steps of a store that is not live yet."""

    steps: list[Step]

    @property
    def remaining(self) -> int:
        """Required steps not done yet."""
        return sum(1 for step in self.steps if not step.done and not step.optional)


def checklist(session: Session, admin: Admin) -> Checklist | None:
    """The go-live checklist, or None once the program is live."""
    _, settings = load_program(session, admin.merchant_id)
    if settings.live:
        return None
    mail = get_mail_settings(session, merchant_id=admin.merchant_id) is not None
    dotdigital = find_connection(session, admin.merchant_id)
    return Checklist(
        [
            Step(
                "Review the program: what earns points and what they buy",
                program_reviewed(session, admin.merchant_id),
                "/admin/settings/earning",
            ),
            Step(
                "Set the email sender (your SMTP server, or the installation's)",
                mail or admin.state.settings.smtp_host is not None,
                "/admin/settings/emails",
            ),
            Step(
                "Offer at least one reward",
                any(reward.enabled for reward in settings.rewards),
                "/admin/settings/rewards",
            ),
            Step(
                "Connect Dotdigital",
                dotdigital is not None and dotdigital.enabled,
                "/admin/integrations/dotdigital",
                optional=True,
            ),
        ]
    )


@router.post("/go-live", include_in_schema=False, dependencies=[requires(Permission.PROGRAM)])
def go_live_now(admin: AdminDep, form: FormDep) -> Response:
    """Turn the program on: from now on orders, sign-ups and actions earn points."""
    del form
    with admin.unit_of_work() as session:
        go_live(session, merchant_id=admin.merchant_id, changed_by=admin.email)
    return redirect("/admin?done=live")
