"""Choosing a password from a set-password link, and asking for one ("Forgot password?").

Neither page needs a signed-in admin. The forgot-password form answers the same whether or not
the address has an account (no account enumeration) and is limited per address and per email
like sign-in, counted before anything is looked up.
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from tally.admin.security import LoginRateLimiter
from tally.admin.web import (
    LOGIN_PATH,
    AdminRoute,
    FormDep,
    app_limiter,
    app_state,
    client_address,
    problems_by_field,
    redirect,
    render,
    text,
)
from tally.db.engine import unit_of_work
from tally.errors import ValidationFailed
from tally.merchants import team

router = APIRouter(route_class=AdminRoute)


def reset_limiter(request: Request) -> LoginRateLimiter:
    """The application's limit on reset requests (one per app, in memory, like sign-in's)."""
    return app_limiter(
        request,
        "tally_admin_reset_limiter",
        lambda: LoginRateLimiter(max_per_address=10, max_per_email=3),
    )


def _raw(form: FormData, name: str) -> str:
    # Passwords are taken as typed: no stripping.
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _invalid(request: Request, detail: str) -> Response:
    return render(
        request,
        "team/set_password.html",
        {"title": "Link not valid", "invalid": detail},
        status_code=400,
    )


@router.get("/set-password", include_in_schema=False)
def set_password_form(request: Request, token: str = "") -> Response:
    """The form for a new password, when the link is still good."""
    state = app_state(request)
    try:
        with state.session_factory() as session:
            user = team.check_link(session, settings=state.settings, token=token)
            email = user.email
    except team.InvalidPasswordLink as error:
        return _invalid(request, error.detail)
    return render(
        request,
        "team/set_password.html",
        {"title": "Choose your password", "token": token, "email": email, "errors": {}},
    )


@router.post("/set-password", include_in_schema=False)
def set_password(request: Request, form: FormDep) -> Response:
    """Set the password (the link is used up), then send the person to sign in."""
    state = app_state(request)
    token = text(form, "token")
    try:
        with unit_of_work(state.session_factory) as session:
            team.set_password(
                session,
                settings=state.settings,
                token=token,
                password=_raw(form, "password"),
                confirmation=_raw(form, "confirmation"),
            )
    except team.InvalidPasswordLink as error:
        return _invalid(request, error.detail)
    except ValidationFailed as error:
        with state.session_factory() as session:
            email = team.check_link(session, settings=state.settings, token=token).email
        return render(
            request,
            "team/set_password.html",
            {
                "title": "Choose your password",
                "token": token,
                "email": email,
                "errors": problems_by_field(error.errors),
            },
            status_code=422,
        )
    return redirect(f"{LOGIN_PATH}?done=password-set")


@router.get("/forgot-password", include_in_schema=False)
def forgot_password_form(request: Request) -> Response:
    """Ask for a reset link by email."""
    return render(request, "team/forgot_password.html", {"title": "Forgot password"})


@router.post("/forgot-password", include_in_schema=False)
def forgot_password(request: Request, form: FormDep) -> Response:
    """Email a reset link when the address has an account; the same answer either way."""
    email = text(form, "email")[:320]
    wait = reset_limiter(request).try_attempt(email, client_address(request))
    if wait is not None:
        minutes = math.ceil(wait / 60)
        return render(
            request,
            "team/forgot_password.html",
            {
                "title": "Forgot password",
                "error": "Too many requests. "
                f"Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
            },
            status_code=429,
            headers={"Retry-After": str(math.ceil(wait))},
        )
    with unit_of_work(app_state(request).session_factory) as session:
        team.request_password_reset(session, email=email)
    return render(request, "team/forgot_password.html", {"title": "Forgot password", "sent": True})
