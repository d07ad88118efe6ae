"""What every admin page shares: the route class that turns errors into HTML pages, the signed-in
admin and its merchant-bound units of work, CSRF-checked forms, templates and security headers.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import jinja2
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from tally.admin import permissions
from tally.admin.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    AdminSession,
    LoginRateLimiter,
    SessionSigner,
    csrf_matches,
)
from tally.audit.actor import Actor
from tally.db.engine import unit_of_work
from tally.errors import DomainError, FieldProblem
from tally.merchants.orm import AdminUser, Merchant
from tally.state import AppState

log = logging.getLogger("tally.admin")

STATIC_PREFIX = "/admin/static/"
LOGIN_PATH = "/admin/login"
HOME_PATH = "/admin"
MAX_FORM_FIELDS = 1000
MAX_UPLOAD_FILES = 1

# Everything a page loads comes from this server; the vendored scripts need no inline code,
# eval or inline styles (htmx's own indicator styles are switched off in base.html).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-src 'self'; frame-ancestors 'none'"
)
# An email preview shows the merchant's own HTML inside a sandboxed frame: its inline styles
# render, nothing else loads (remote images would be requests outside the host).
PREVIEW_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"
)


# Messages shown after a successful form (the redirect names one with ?done=...): fixed texts,
# so nothing from the URL is ever echoed into the page.
NOTICES = {
    "adjusted": "Points adjusted.",
    "profile-saved": "Profile saved.",
    "redeemed": "Reward redeemed; the coupon code is in the spending tab.",
    "codes-uploaded": "Coupon codes added to the pool.",
    "saved": "Settings saved.",
    "connected": "Dotdigital accepted the credentials; they are saved.",
    "enabled": "Dotdigital syncing is on.",
    "disabled": "Dotdigital syncing is off.",
    "disconnected": "Dotdigital is disconnected.",
    "mapping": "Field mapping saved.",
    "template-saved": "Email template saved.",
    "template-reset": "Email template reset to the default.",
    "key-revoked": "API key revoked.",
    "applied": "Import applied.",
    "reverted": "Import reverted.",
    "role-changed": "Role changed.",
    "member-removed": "Member removed; their sessions have ended.",
    "password-set": "Your password is set. Sign in with it.",
    "smtp-saved": "SMTP settings saved. Send a test email to check them.",
    "smtp-removed": "SMTP settings removed; emails go through the instance's default again.",
    "live": "Your program is live: orders, sign-ups and actions earn points from now on.",
}


class SignInRequired(Exception):
    """The request needs a signed-in admin user."""


class CsrfRejected(Exception):
    """A form arrived without the session's CSRF token."""


def app_state(request: Request) -> AppState:
    """The application's shared state."""
    state: AppState = request.app.state.tally
    return state


def _secure_cookies(state: AppState) -> bool:
    return state.settings.public_base_url.startswith("https://")


def signer(request: Request) -> SessionSigner:
    """The session signer for this application's secret."""
    state = app_state(request)
    return SessionSigner(state.settings.secret_key.get_secret_value())


_limiter_lock = threading.Lock()


def app_limiter(
    request: Request, name: str, make: Callable[[], LoginRateLimiter]
) -> LoginRateLimiter:
    """The application's limiter called ``name`` (one per app, in memory), made on first use."""
    with _limiter_lock:
        limiter: LoginRateLimiter | None = getattr(request.app.state, name, None)
        if limiter is None:
            limiter = make()
            setattr(request.app.state, name, limiter)
        return limiter


def login_limiter(request: Request) -> LoginRateLimiter:
    """The application's login rate limiter (one per app, in memory)."""
    return app_limiter(request, "tally_admin_login_limiter", LoginRateLimiter)


def client_address(request: Request) -> str:
    """The client's address as the ASGI server reports it.

    `tally serve` lets uvicorn take it from X-Forwarded-For only when the peer is one of
    ``TALLY_TRUSTED_PROXIES``; otherwise anyone could pick the address the login limit counts.
    """
    return request.client.host if request.client else "unknown"


# --------------------------------------------------------------------------- the session cookie


def cookie_session(request: Request) -> AdminSession:
    """The session of this request; a new anonymous one (set on the response) when none is valid."""
    found: AdminSession | None = getattr(request.state, "admin_session", None)
    if found is not None:
        return found
    session = signer(request).loads(request.cookies.get(SESSION_COOKIE))
    if session is None:
        session = signer(request).anonymous()
        request.state.admin_session_to_set = session
    request.state.admin_session = session
    return session


def start_session(request: Request, session: AdminSession) -> None:
    """Replace the request's session; the cookie is written on the response."""
    request.state.admin_session = session
    request.state.admin_session_to_set = session


def end_session(request: Request) -> None:
    """Clear the session cookie on the response."""
    request.state.admin_session_clear = True


def _write_cookie(request: Request, response: Response) -> None:
    state = app_state(request)
    if getattr(request.state, "admin_session_clear", False):
        response.delete_cookie(
            SESSION_COOKIE,
            path="/admin",
            secure=_secure_cookies(state),
            httponly=True,
            samesite="lax",
        )
        return
    to_set: AdminSession | None = getattr(request.state, "admin_session_to_set", None)
    if to_set is None:
        return
    sign = signer(request)
    response.set_cookie(
        SESSION_COOKIE,
        sign.dumps(to_set),
        max_age=sign.max_age,
        path="/admin",
        secure=_secure_cookies(state),
        httponly=True,
        samesite="lax",
    )


# --------------------------------------------------------------------------- the signed-in admin


@dataclass(frozen=True)
class Admin:
    """The signed-in admin user, its merchant, and how to open units of work bound to it."""

    user_id: int
    email: str
    merchant_id: int
    merchant_name: str
    timezone: str
    currency: str
    csrf_token: str
    state: AppState
    role: str = "owner"
    address: str | None = None

    @property
    def actor(self) -> Actor:
        """This admin as the audit log names them: ``admin:<email>``."""
        return Actor("admin", self.email, id=str(self.user_id), address=self.address)

    def can(self, permission: str) -> bool:
        """Whether this admin's role holds a permission (`merchants.team.Permission`)."""
        return permissions.can(self.role, permission)

    def unit_of_work(self) -> AbstractContextManager[Session]:
        """A session bound to this admin's merchant, acting as them; commits when it succeeds."""
        return unit_of_work(
            self.state.session_factory, merchant_id=self.merchant_id, actor=self.actor
        )

    def uow(self) -> AbstractContextManager[Session]:
        """A unit of work, as the callable that services talking to other systems take."""
        return self.unit_of_work()


def signed_in_user(request: Request, session: AdminSession) -> tuple[AdminUser, Merchant] | None:
    """The admin user and merchant a signed-in session still belongs to, or None.

    None when the user was removed, moved to another merchant, changed its password, or signed
    out anywhere since the session began (``session_version`` moved on).
    """
    if not session.signed_in:
        return None
    state = app_state(request)
    with state.session_factory() as db:
        row = db.execute(
            select(AdminUser, Merchant)
            .join(Merchant, Merchant.id == AdminUser.merchant_id)
            .where(AdminUser.id == session.user_id)
        ).first()
    if row is None:
        return None
    user, merchant = row
    if not signer(request).matches_user(
        session,
        user_id=user.id,
        merchant_id=user.merchant_id,
        password_hash=user.password_hash,
        session_version=user.session_version,
    ):
        return None
    return user, merchant


def current_admin(
    request: Request, session: Annotated[AdminSession, Depends(cookie_session)]
) -> Admin:
    """The signed-in admin user, or SignInRequired."""
    found = signed_in_user(request, session)
    if found is None:
        raise SignInRequired
    user, merchant = found
    state = app_state(request)
    admin = Admin(
        user_id=user.id,
        email=user.email,
        merchant_id=merchant.id,
        merchant_name=merchant.name,
        timezone=merchant.timezone,
        currency=merchant.currency,
        csrf_token=session.csrf_token,
        state=state,
        role=user.role,
        address=client_address(request),
    )
    request.state.admin = admin
    # The one place roles are checked: against what the matched route declares.
    permissions.enforce(request, admin.role)
    return admin


AdminDep = Annotated[Admin, Depends(current_admin)]


async def checked_form(
    request: Request, session: Annotated[AdminSession, Depends(cookie_session)]
) -> FormData:
    """The submitted form, once its CSRF token (field or HTMX header) matches the session's."""
    form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=MAX_FORM_FIELDS)
    given = request.headers.get(CSRF_HEADER)
    if given is None:
        field = form.get(CSRF_FIELD)
        given = field if isinstance(field, str) else None
    if not csrf_matches(session.csrf_token, given):
        raise CsrfRejected
    return form


FormDep = Annotated[FormData, Depends(checked_form)]


def text(form: FormData, name: str, default: str = "") -> str:
    """A text field of a form (stripped); files and missing fields give the default."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else default


def checkbox(form: FormData, name: str) -> bool:
    """Whether a checkbox was ticked."""
    return form.get(name) is not None


# --------------------------------------------------------------------------- templates


def static_root() -> Any:
    return resources.files("tally.admin").joinpath("static")


@cache
def static_version(path: str) -> str:
    """A short content hash of a static file, for cache-busting URLs."""
    try:
        data = static_root().joinpath(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return "0"
    return hashlib.sha256(data).hexdigest()[:10]


def static_url(path: str) -> str:
    """The URL of a static file, with its content hash."""
    return f"{STATIC_PREFIX}{path}?v={static_version(path)}"


def format_number(value: int | Decimal | float | None) -> str:
    """Thousands separators; Decimals without trailing zeros."""
    if value is None:
        return "—"
    if isinstance(value, Decimal):
        normalized = (
            value.quantize(Decimal(1)) if value == value.to_integral() else value.normalize()
        )
        return f"{normalized:,}"
    return f"{value:,}"


def format_signed(value: int) -> str:
    """A points movement with its sign (+50, -20)."""
    return f"{value:+,}"


def _make_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tally.admin", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["static"] = static_url
    env.globals["csrf_field_name"] = CSRF_FIELD
    env.filters["num"] = format_number
    env.filters["signed"] = format_signed
    return env


@cache
def environment() -> jinja2.Environment:
    """The admin's Jinja2 environment (autoescaping, strict about undefined names)."""
    return _make_environment()


class Page:
    """Helpers a template gets about the request: dates in the merchant's zone, query URLs."""

    def __init__(self, request: Request, admin: Admin | None) -> None:
        self.request = request
        self.admin = admin
        self.zone = ZoneInfo(admin.timezone) if admin else ZoneInfo("UTC")

    def timestamp(self, value: datetime | None) -> str:
        """A timestamp in the merchant's zone."""
        if value is None:
            return "—"
        return value.astimezone(self.zone).strftime("%Y-%m-%d %H:%M")

    def day(self, value: datetime | date | None) -> str:
        """A date (timestamps in the merchant's zone)."""
        if value is None:
            return "—"
        if isinstance(value, datetime):
            value = value.astimezone(self.zone).date()
        return value.isoformat()

    def with_query(self, **changes: object) -> str:
        """This page's URL with some query parameters changed (None removes one)."""
        params = dict(self.request.query_params)
        for name, value in changes.items():
            if value is None or value == "":
                params.pop(name, None)
            else:
                params[name] = str(value)
        query = urlencode(params)
        return f"{self.request.url.path}?{query}" if query else self.request.url.path

    def csrf_input(self) -> Markup:
        """The hidden CSRF field every form carries."""
        token = cookie_session(self.request).csrf_token
        return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, token)


def is_htmx(request: Request) -> bool:
    """Whether htmx sent the request (and wants a fragment)."""
    return request.headers.get("HX-Request") == "true"


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """Render a template with the page helpers, the admin and the CSRF token."""
    admin: Admin | None = getattr(request.state, "admin", None)
    values: dict[str, Any] = {
        "page": Page(request, admin),
        "admin": admin,
        "csrf_token": cookie_session(request).csrf_token,
        "nav": "",
        "title": "Tally",
        "notice": NOTICES.get(request.query_params.get("done", "")),
    }
    values.update(context or {})
    body = environment().get_template(template).render(values)
    return HTMLResponse(body, status_code=status_code, headers=dict(headers or {}))


def redirect(url: str) -> RedirectResponse:
    """A see-other redirect (the answer to a successful form)."""
    return RedirectResponse(url, status_code=303)


def problems_by_field(errors: list[FieldProblem]) -> dict[str, str]:
    """Field problems keyed by field name, for showing next to inputs."""
    out: dict[str, str] = {}
    for problem in errors:
        out.setdefault(problem.field, problem.message)
    return out


# --------------------------------------------------------------------------- the route class


def _security_headers(request: Request, response: Response) -> None:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    if (
        "Content-Security-Policy" in headers
        and "frame-ancestors 'none'" in (headers["Content-Security-Policy"])
    ):
        headers.setdefault("X-Frame-Options", "DENY")
    if not request.url.path.startswith(STATIC_PREFIX):
        headers.setdefault("Cache-Control", "no-store")


def _sign_in_response(request: Request) -> Response:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    location = LOGIN_PATH
    if request.method == "GET" and target != HOME_PATH:
        location += "?" + urlencode({"next": target})
    if is_htmx(request):
        # htmx follows redirects inside the XHR; ask it to navigate the whole page instead.
        return Response(status_code=204, headers={"HX-Redirect": location})
    return redirect(location)


def error_page(request: Request, status_code: int, title: str, detail: str) -> HTMLResponse:
    """An error page (or fragment for htmx) with the right status."""
    template = "_error_fragment.html" if is_htmx(request) else "error.html"
    return render(
        request,
        template,
        {"title": title, "status_code": status_code, "detail": detail},
        status_code=status_code,
    )


class AdminRoute(APIRoute):
    """Admin routes answer in HTML: sign-in redirects, 403 for a bad CSRF token, error pages
    for refused actions, and security headers and the session cookie on every response."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler (dependencies included) with the admin's error handling."""
        handler = super().get_route_handler()

        async def admin_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                response = _sign_in_response(request)
            except permissions.SeeOther as exc:
                response = redirect(exc.location)
            except CsrfRejected:
                response = error_page(
                    request,
                    403,
                    "Form refused",
                    "The form was missing its security token or the token was out of date. "
                    "Reload the page and try again.",
                )
            except RequestValidationError as exc:
                detail = "; ".join(
                    f"{'.'.join(str(p) for p in err.get('loc', ())[1:])}: {err.get('msg')}"
                    for err in exc.errors()
                )
                response = error_page(request, 422, "Bad request", detail)
            except DomainError as exc:
                response = error_page(request, exc.status_code, exc.title, exc.detail)
            _write_cookie(request, response)
            _security_headers(request, response)
            return response

        return admin_handler
