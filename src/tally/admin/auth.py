"""Signing in and out, and the static files the pages load."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from tally.admin.security import AdminSession
from tally.admin.web import (
    HOME_PATH,
    LOGIN_PATH,
    AdminRoute,
    FormDep,
    app_state,
    client_address,
    cookie_session,
    end_session,
    login_limiter,
    redirect,
    render,
    signer,
    start_session,
    static_root,
    text,
)
from tally.db.engine import unit_of_work
from tally.errors import NotFound
from tally.merchants.service import authenticate_admin

router = APIRouter(route_class=AdminRoute)

SessionDep = Annotated[AdminSession, Depends(cookie_session)]

_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
_STATIC_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a path inside the admin, never another site."""
    if (
        not target
        or not (target == HOME_PATH or target.startswith((HOME_PATH + "/", HOME_PATH + "?")))
        or "//" in target
        or "\\" in target
        or "/.." in target
        or target.startswith(LOGIN_PATH)
    ):
        return HOME_PATH
    return target


@router.get("/login", include_in_schema=False)
def login_form(request: Request, session: SessionDep, next: str | None = None) -> Response:
    """The sign-in form."""
    if session.signed_in:
        return redirect(safe_next(next))
    return render(request, "login.html", {"title": "Sign in", "next": safe_next(next)})


@router.post("/login", include_in_schema=False)
def login(request: Request, form: FormDep) -> Response:
    """Check the email and password (argon2), within the rate limit, and start a session."""
    email = text(form, "email")
    password = form.get("password")
    password = password if isinstance(password, str) else ""
    target = safe_next(text(form, "next"))
    limiter = login_limiter(request)
    address = client_address(request)
    context = {"title": "Sign in", "next": target, "email": email}
    wait = limiter.retry_after(email, address)
    if wait is not None:
        minutes = math.ceil(wait / 60)
        return render(
            request,
            "login.html",
            context
            | {
                "error": "Too many failed sign-ins for this email. "
                f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
            },
            status_code=429,
            headers={"Retry-After": str(math.ceil(wait))},
        )
    state = app_state(request)
    user = None
    if email and password:
        with unit_of_work(state.session_factory) as session:
            found = authenticate_admin(session, email=email, password=password)
            if found is not None:
                user = (found.id, found.merchant_id, found.password_hash)
    if user is None:
        limiter.record_failure(email, address)
        return render(
            request,
            "login.html",
            context | {"error": "The email or password is not right."},
            status_code=401,
        )
    limiter.reset(email, address)
    user_id, merchant_id, password_hash = user
    start_session(
        request,
        signer(request).signed_in(
            user_id=user_id, merchant_id=merchant_id, password_hash=password_hash
        ),
    )
    return redirect(target)


@router.post("/logout", include_in_schema=False)
def logout(request: Request, form: FormDep) -> Response:
    """End the session (the cookie is cleared)."""
    del form  # checked for its CSRF token
    end_session(request)
    return redirect(LOGIN_PATH)


@router.get("/static/{path:path}", include_in_schema=False)
def static_file(path: str) -> Response:
    """A file shipped in the package's static directory (the vendored libraries, CSS, JS)."""
    if (
        not path
        or not set(path) <= _STATIC_CHARACTERS
        or ".." in path
        or path.startswith("/")
        or "." not in path.rsplit("/", 1)[-1]
    ):
        raise NotFound(f"no static file {path!r}")
    resource = static_root().joinpath(path)
    suffix = "." + path.rsplit(".", 1)[-1]
    try:
        data = resource.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotFound(f"no static file {path!r}") from None
    media_type = _MEDIA_TYPES.get(suffix, "application/octet-stream")
    return Response(
        data,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400"},
    )
