"""Integrations → Storefront: the widget's id and script tag, the store origins allowed to call
the storefront API, the widget's texts and colours with a live preview, and the signing secret
(shown on request, rotated with a day's overlap)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

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
from tally.api.storefront_pages import static_url
from tally.errors import DomainError, FieldProblem, ValidationFailed
from tally.storefront import service
from tally.storefront.appearance import MAX_ORIGINS, MAX_TEXT, Appearance

router = APIRouter(route_class=AdminRoute)

PAGE = "/admin/integrations/storefront"
APPEARANCE_FIELDS = (
    "primary_colour",
    "text_colour",
    "launcher_label",
    "title",
    "guest_message",
    "position",
)
# This page's own notices (after a redirect with ?done=...): fixed texts, nothing echoed.
NOTICES = {
    "origins": "Allowed origins saved.",
    "appearance": "Widget look saved; stores show it within a minute.",
}


def _page(
    request: Request,
    admin: Admin,
    *,
    secret: str | None = None,
    rotated: bool = False,
    origins_draft: str | None = None,
    appearance_draft: dict[str, str] | None = None,
    error: DomainError | None = None,
) -> HTMLResponse:
    config = admin.state.settings
    with admin.unit_of_work() as session:
        row = service.settings_for(session, config=config, merchant_id=admin.merchant_id)
        widget_id, origins = row.widget_id, list(row.allowed_origins or [])
        appearance = service.appearance_of(row).model_dump(mode="json")
        enabled = row.enabled
    base = config.public_base_url
    found = NOTICES.get(request.query_params.get("done", ""))
    return render(
        request,
        "integrations/storefront.html",
        {
            **({"notice": found} if found else {}),
            "title": "Storefront",
            "nav": "storefront",
            "widget_id": widget_id,
            "enabled": enabled,
            "script_url": f"{base}/storefront/widget.js",
            "hosted_url": f"{base}/p/{widget_id}",
            "snippet_url": "/storefront/tally-loyalty.liquid",
            "widget_script": static_url("widget.js"),
            "origins_text": origins_draft if origins_draft is not None else "\n".join(origins),
            "max_origins": MAX_ORIGINS,
            "max_text": MAX_TEXT,
            "look": appearance_draft or appearance,
            "saved_look": appearance,
            "secret": secret,
            "rotated": rotated,
            "error": error.detail if error else None,
            "problems": problems_by_field(error.errors) if error else {},
        },
        status_code=error.status_code if error else 200,
    )


@router.get("/integrations/storefront", include_in_schema=False)
def storefront_page(request: Request, admin: AdminDep) -> Response:
    """The widget's install snippet, origins, look and secret."""
    return _page(request, admin)


@router.post("/integrations/storefront/origins", include_in_schema=False)
def save_origins(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Replace the allowed store origins (one a line)."""
    typed = text(form, "origins")
    origins = [line.strip() for line in typed.splitlines() if line.strip()]
    try:
        with admin.unit_of_work() as session:
            service.set_origins(
                session, config=admin.state.settings, merchant_id=admin.merchant_id, origins=origins
            )
    except DomainError as error:
        return _page(request, admin, origins_draft=typed, error=error)
    return redirect(f"{PAGE}?done=origins")


def _appearance_from(
    form: FormData,
) -> tuple[dict[str, str], Appearance | None, DomainError | None]:
    """The typed look, the `Appearance` it makes, or the problems that stop it."""
    typed = {name: text(form, name) for name in APPEARANCE_FIELDS}
    try:
        return typed, Appearance.model_validate(typed), None
    except ValidationError as exc:
        problems = [
            FieldProblem(".".join(str(part) for part in err["loc"]), err["msg"])
            for err in exc.errors()
        ]
        return typed, None, ValidationFailed("the widget's look was not saved", problems)


@router.post("/integrations/storefront/appearance", include_in_schema=False)
def save_appearance(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Save the widget's colours and texts."""
    typed, appearance, error = _appearance_from(form)
    if appearance is None:
        return _page(request, admin, appearance_draft=typed, error=error)
    with admin.unit_of_work() as session:
        service.update_appearance(
            session,
            config=admin.state.settings,
            merchant_id=admin.merchant_id,
            appearance=appearance,
        )
    return redirect(f"{PAGE}?done=appearance#look")


def _secret_page(request: Request, admin: Admin, *, rotate: bool) -> HTMLResponse:
    config = admin.state.settings
    with admin.unit_of_work() as session:
        if rotate:
            secret = service.rotate_secret(session, config=config, merchant_id=admin.merchant_id)
        else:
            row = service.settings_for(session, config=config, merchant_id=admin.merchant_id)
            secret = service.reveal_secret(config, row)
    return _page(request, admin, secret=secret, rotated=rotate)


@router.post("/integrations/storefront/secret", include_in_schema=False)
def show_secret(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Show the signing secret (a POST, so it is never in a URL, a history or a cache)."""
    del form
    return _secret_page(request, admin, rotate=False)


@router.post("/integrations/storefront/rotate-secret", include_in_schema=False)
def rotate_secret(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """A new signing secret; signatures made with the old one still verify for 24 hours."""
    del form
    return _secret_page(request, admin, rotate=True)
