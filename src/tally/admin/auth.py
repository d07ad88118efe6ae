"""Signing in and out, and the static files the pages load."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import update

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
    signed_in_user,
    signer,
    start_session,
    static_root,
    text,
)
from tally.db.engine import unit_of_work
from tally.errors import NotFound
from tally.merchants.orm import AdminUser
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
    if signed_in_user(request, session) is not None:
        return redirect(safe_next(next))
    if session.signed_in:
        # A session that was ended elsewhere: replace the dead cookie, or the pages and this
        # form would send the browser back and forth between them.
        start_session(request, signer(request).anonymous())
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
    # Counted before argon2 runs, so refused attempts (and floods) cost no hashing.
    wait = limiter.try_attempt(email, address)
    if wait is not None:
        minutes = math.ceil(wait / 60)
        return render(
            request,
            "login.html",
            context
            | {
                "error": "Too many failed sign-ins. "
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
                user = (found.id, found.merchant_id, found.password_hash, found.session_version)
    if user is None:
        return render(
            request,
            "login.html",
            context | {"error": "The email or password is not right."},
            status_code=401,
        )
    limiter.succeeded(email, address)
    user_id, merchant_id, password_hash, session_version = user
    start_session(
        request,
        signer(request).signed_in(
            user_id=user_id,
            merchant_id=merchant_id,
            password_hash=password_hash,
            session_version=session_version,
        ),
    )
    return redirect(target)


@router.post("/logout", include_in_schema=False)
def logout(request: Request, form: FormDep, session: SessionDep) -> Response:
    """Sign out: clear the cookie and end every session of this user, on every device."""
    del form  # checked for its CSRF token
    end_session(request)
    # Clearing the cookie only reaches this browser; moving the user's session version on
    # makes every cookie issued before (copied ones too) fail the check on each request. That
    # signs the user out everywhere, which a stateless cookie cannot avoid and a sign-out on a
    # shared computer wants. Only a still-valid session may do it, so an old cookie cannot be
    # replayed to sign the user out of newer sessions.
    if signed_in_user(request, session) is not None:
        with unit_of_work(app_state(request).session_factory) as db:
            db.execute(
                update(AdminUser)
                .where(
                    AdminUser.id == session.user_id,
                    AdminUser.session_version == session.session_version,
                )
                .values(session_version=AdminUser.session_version + 1)
            )
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
