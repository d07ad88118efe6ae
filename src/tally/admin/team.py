"""The Team page (owners only): members and their roles, invitations, removals."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from tally.admin.web import (
    Admin,
    AdminDep,
    AdminRoute,
    FormDep,
    problems_by_field,
    redirect,
    render,
    text,
)
from tally.api.edge import Id
from tally.errors import DomainError
from tally.merchants import team
from tally.notifications import service as notifications

router = APIRouter(route_class=AdminRoute)

TEAM_PATH = "/admin/team"


def team_page(
    request: Request,
    admin: Admin,
    *,
    issued: team.IssuedLink | None = None,
    error: DomainError | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The team, the invitation form, and a new link (shown once) or what was refused."""
    with admin.unit_of_work() as session:
        members = team.list_members(session, merchant_id=admin.merchant_id)
        emails_to_files = (
            notifications.file_directory_for(
                session, settings=admin.state.settings, merchant_id=admin.merchant_id
            )
            is not None
        )
        rows = [
            {
                "id": member.id,
                "email": member.email,
                "role": member.role,
                "invited": team.is_invited(member),
                "last_login_at": member.last_login_at,
                "is_me": member.id == admin.user_id,
            }
            for member in members
        ]
    context: dict[str, Any] = {
        "title": "Team",
        "nav": "team",
        "members": rows,
        "roles": [(role.value, team.ROLE_DESCRIPTIONS[role]) for role in team.Role],
        "issued": issued,
        "issued_url": issued.url(admin.state.settings) if issued else None,
        "emails_to_files": emails_to_files,
        "error": error.detail if error else None,
        "errors": problems_by_field(error.errors) if error else {},
        "values": values or {},
    }
    return render(request, "team/team.html", context, status_code=status_code)


@router.get("/team", include_in_schema=False)
def team_home(request: Request, admin: AdminDep) -> Response:
    """The merchant's team."""
    return team_page(request, admin)


def _issue_link(
    request: Request,
    admin: Admin,
    issue: Callable[..., team.IssuedLink],
    *,
    values: dict[str, str] | None = None,
    not_found_is_404: bool = False,
) -> Response:
    """Email a set-password link made by ``issue`` (given the session, settings, merchant and
    actor) and show it once; a refusal shows the team page with the error."""
    try:
        with admin.unit_of_work() as session:
            issued = issue(
                session,
                settings=admin.state.settings,
                merchant_id=admin.merchant_id,
                actor=admin.email,
                send_email=True,
            )
    except DomainError as error:
        if not_found_is_404 and error.status_code == 404:
            raise
        return team_page(request, admin, error=error, values=values, status_code=error.status_code)
    return team_page(request, admin, issued=issued, status_code=201)


@router.post("/team/invitations", include_in_schema=False)
def invite(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Invite someone by email with a role; the link is emailed and shown here once."""
    values = {"email": text(form, "email"), "role": text(form, "role")}
    issue = partial(team.invite_member, email=values["email"], role=values["role"])
    return _issue_link(request, admin, issue, values=values)


@router.post("/team/{user_id}/invitation", include_in_schema=False)
def renew(request: Request, admin: AdminDep, form: FormDep, user_id: Id) -> Response:
    """Send an invited member a new link (the earlier ones stop working)."""
    del form  # checked for its CSRF token
    issue = partial(team.renew_invitation, user_id=user_id)
    return _issue_link(request, admin, issue, not_found_is_404=True)


@router.post("/team/{user_id}/role", include_in_schema=False)
def change_role(request: Request, admin: AdminDep, form: FormDep, user_id: Id) -> Response:
    """Give a member another role (the last owner stays an owner)."""
    try:
        with admin.unit_of_work() as session:
            team.change_role(
                session,
                merchant_id=admin.merchant_id,
                user_id=user_id,
                role=text(form, "role"),
                actor=admin.email,
            )
    except DomainError as error:
        if error.status_code == 404:
            raise
        return team_page(request, admin, error=error, status_code=error.status_code)
    return redirect(f"{TEAM_PATH}?done=role-changed")


@router.post("/team/{user_id}/remove", include_in_schema=False)
def remove(request: Request, admin: AdminDep, form: FormDep, user_id: Id) -> Response:
    """Remove a member; their sessions end at once (never the last owner)."""
    del form  # checked for its CSRF token
    try:
        with admin.unit_of_work() as session:
            team.remove_member(
                session, merchant_id=admin.merchant_id, user_id=user_id, actor=admin.email
            )
    except DomainError as error:
        if error.status_code == 404:
            raise
        return team_page(request, admin, error=error, status_code=error.status_code)
    return redirect(f"{TEAM_PATH}?done=member-removed")
