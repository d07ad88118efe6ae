"""Notification endpoints: templates, previews, the mail log, subscriptions, SMTP settings.

`router` holds the authenticated /api/v1 routes; `public_router` the unsubscribe page that
customers reach from the link (and the List-Unsubscribe header) in every email.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tally.api.deps import Caller, CallerDep, app_state
from tally.api.edge import MAX_ID, EmailTypeName, Id, OptionalQueryId, PagingDep
from tally.api.idempotency import IdempotencyKey, change_post
from tally.api.schemas import Page, view_of
from tally.customers.orm import Customer
from tally.db.engine import bind_merchant, unit_of_work
from tally.merchants.orm import Merchant
from tally.notifications import service
from tally.notifications.orm import EmailMessage, MailSettings
from tally.notifications.templates import EmailTemplate, RenderedEmail
from tally.state import AppState

router = APIRouter(prefix="/api/v1", tags=["notifications"])
public_router = APIRouter(tags=["unsubscribe"])


# -- shapes --------------------------------------------------------------------------------


class TemplateSummaryOut(BaseModel):
    """One email type: whether it is sent and whether the merchant edited it."""

    email_type: str
    enabled: bool
    customized: bool
    updated_at: datetime | None


class TemplateOut(TemplateSummaryOut):
    """An email type's template, with the variables it may use."""

    subject: str
    html_body: str
    text_body: str
    variables: dict[str, str]


class TemplateIn(BaseModel):
    """An edited template; `enabled` left out keeps the current on/off switch."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=1000)
    html_body: str = Field(min_length=1, max_length=200_000)
    text_body: str = Field(min_length=1, max_length=100_000)
    enabled: bool | None = None


class TemplateSwitch(BaseModel):
    """Switch an email type on or off."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool


class PreviewIn(BaseModel):
    """What to preview: a customer (else sample values) and optionally an unsaved draft.

    Draft parts left out are taken from the stored template.
    """

    model_config = ConfigDict(extra="forbid")

    customer_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    subject: str | None = Field(default=None, max_length=1000)
    html_body: str | None = Field(default=None, max_length=200_000)
    text_body: str | None = Field(default=None, max_length=100_000)


class PreviewOut(BaseModel):
    """A rendered email."""

    subject: str
    html: str
    text: str


class EmailOut(BaseModel):
    """One entry of the mail log."""

    id: int
    customer_id: int | None  # None for team emails and SMTP tests
    email_type: str
    recipient: str
    subject: str | None
    status: str
    attempts: int
    last_error: str | None
    message_id: str | None
    created_at: datetime
    sent_at: datetime | None


class SubscriptionOut(BaseModel):
    """Whether a customer receives notification emails."""

    customer_id: int
    subscribed: bool
    unsubscribed_at: datetime | None


class MailSettingsIn(BaseModel):
    """The merchant's own SMTP server; `password` left out keeps the stored one."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=255)
    port: int = Field(default=587, ge=1, le=65535)
    security: str = "starttls"
    username: str | None = Field(default=None, max_length=255)
    password: str | None = Field(default=None, max_length=500)
    sender: str = Field(min_length=3, max_length=320, description="e.g. Store <hi@store.com>")


class MailSettingsOut(BaseModel):
    """The merchant's SMTP server (the password is never shown)."""

    configured: bool
    host: str | None = None
    port: int | None = None
    security: str | None = None
    username: str | None = None
    password_set: bool = False
    sender: str | None = None
    updated_at: datetime | None = None


def _template_out(view: service.TemplateView) -> TemplateOut:
    return view_of(
        TemplateOut,
        view.template,
        email_type=view.email_type.value,
        enabled=view.enabled,
        customized=view.customized,
        updated_at=view.updated_at,
        variables=service.template_variable_docs(view.email_type),
    )


def _template_summary_out(view: service.TemplateView) -> TemplateSummaryOut:
    return view_of(TemplateSummaryOut, view, email_type=view.email_type.value)


def _email_out(email: EmailMessage) -> EmailOut:
    return view_of(EmailOut, email)


def _subscription_out(customer: Customer) -> SubscriptionOut:
    return SubscriptionOut(
        customer_id=customer.id,
        subscribed=customer.unsubscribed_at is None,
        unsubscribed_at=customer.unsubscribed_at,
    )


def _mail_settings_out(row: MailSettings | None) -> MailSettingsOut:
    if row is None:
        return MailSettingsOut(configured=False)
    return view_of(
        MailSettingsOut,
        row,
        configured=True,
        password_set=row.password_encrypted is not None,
    )


def _preview_out(rendered: RenderedEmail) -> PreviewOut:
    return PreviewOut(subject=rendered.subject, html=rendered.html, text=rendered.text)


# -- templates -----------------------------------------------------------------------------


@router.get("/email-templates", response_model=list[TemplateSummaryOut])
def list_templates(caller: CallerDep) -> list[TemplateSummaryOut]:
    """Every email type, whether it is sent, and whether it was edited."""
    with caller.unit_of_work() as session:
        views = service.list_templates(session, merchant_id=caller.merchant_id)
    return [_template_summary_out(v) for v in views]


def _on_template(
    caller: Caller,
    email_type: str,
    action: Callable[..., service.TemplateView],
    **changes: Any,
) -> TemplateOut:
    """Run a template service call on the named email type in one unit of work."""
    kind = service.parse_email_type(email_type)
    with caller.unit_of_work() as session:
        view = action(session, merchant_id=caller.merchant_id, email_type=kind, **changes)
        return _template_out(view)


@router.get("/email-templates/{email_type}", response_model=TemplateOut)
def get_template(email_type: EmailTypeName, caller: CallerDep) -> TemplateOut:
    """The template one email type uses (the shipped default until edited)."""
    return _on_template(caller, email_type, service.get_template)


@router.put("/email-templates/{email_type}", response_model=TemplateOut)
def put_template(email_type: EmailTypeName, body: TemplateIn, caller: CallerDep) -> TemplateOut:
    """Replace the template; refused with the part, line and reason when it cannot render."""
    return _on_template(
        caller,
        email_type,
        service.save_template,
        template=EmailTemplate(body.subject, body.html_body, body.text_body),
        enabled=body.enabled,
    )


@router.patch("/email-templates/{email_type}", response_model=TemplateOut)
def switch_template(
    email_type: EmailTypeName, body: TemplateSwitch, caller: CallerDep
) -> TemplateOut:
    """Switch emails of this type on or off."""
    return _on_template(caller, email_type, service.set_template_enabled, enabled=body.enabled)


@router.delete("/email-templates/{email_type}", response_model=TemplateOut)
def reset_template(email_type: EmailTypeName, caller: CallerDep) -> TemplateOut:
    """Go back to the shipped template (the on/off switch is kept)."""
    return _on_template(caller, email_type, service.reset_template)


@router.post("/email-templates/{email_type}/preview", response_model=PreviewOut)
def preview_template(email_type: EmailTypeName, body: PreviewIn, caller: CallerDep) -> PreviewOut:
    """Render the stored template, or a draft, for a customer or with sample values."""
    kind = service.parse_email_type(email_type)
    with caller.unit_of_work() as session:
        draft = None
        if any(part is not None for part in (body.subject, body.html_body, body.text_body)):
            # Parts left out of the draft come from the stored template.
            stored = service.get_template(
                session, merchant_id=caller.merchant_id, email_type=kind
            ).template
            draft = EmailTemplate(
                subject=stored.subject if body.subject is None else body.subject,
                html_body=stored.html_body if body.html_body is None else body.html_body,
                text_body=stored.text_body if body.text_body is None else body.text_body,
            )
        if body.customer_id is None:
            rendered = service.render_sample(
                session, merchant_id=caller.merchant_id, email_type=kind, template=draft
            )
        else:
            rendered = service.render_for_customer(
                session,
                settings=caller.state.settings,
                merchant_id=caller.merchant_id,
                customer_id=body.customer_id,
                email_type=kind,
                template=draft,
            )
    return _preview_out(rendered)


# -- the mail log and subscriptions --------------------------------------------------------


@router.get("/emails", response_model=Page[EmailOut])
def list_emails(
    caller: CallerDep,
    paging: PagingDep,
    status: Annotated[
        str | None, Query(description="queued, sending, sent, failed or suppressed")
    ] = None,
    customer_id: OptionalQueryId = None,
) -> Page[EmailOut]:
    """The mail log, newest first."""
    with caller.unit_of_work() as session:
        return Page[EmailOut].listed(
            service.list_emails,
            _email_out,
            paging,
            session,
            merchant_id=caller.merchant_id,
            status=status,
            customer_id=customer_id,
        )


@router.post("/customers/{customer_id}/unsubscribe", response_model=SubscriptionOut)
def unsubscribe_customer(
    customer_id: Id, caller: CallerDep, request: Request, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Stop notification emails to the customer (emails still queued are suppressed)."""
    change = partial(service.unsubscribe, customer_id=customer_id)
    return change_post(caller, request, idempotency_key, change, _subscription_out)


@router.post("/customers/{customer_id}/resubscribe", response_model=SubscriptionOut)
def resubscribe_customer(
    customer_id: Id, caller: CallerDep, request: Request, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Send notification emails to the customer again."""
    change = partial(service.resubscribe, customer_id=customer_id)
    return change_post(caller, request, idempotency_key, change, _subscription_out)


# -- SMTP settings -------------------------------------------------------------------------


@router.get("/mail-settings", response_model=MailSettingsOut)
def get_mail_settings(caller: CallerDep) -> MailSettingsOut:
    """The merchant's own SMTP server, if any (else the global one or .eml files are used)."""
    with caller.unit_of_work() as session:
        return _mail_settings_out(
            service.get_mail_settings(session, merchant_id=caller.merchant_id)
        )


@router.put("/mail-settings", response_model=MailSettingsOut)
def put_mail_settings(body: MailSettingsIn, caller: CallerDep) -> MailSettingsOut:
    """Send the merchant's emails through its own SMTP server (the password is encrypted)."""
    with caller.unit_of_work() as session:
        row = service.save_mail_settings(
            session,
            settings=caller.state.settings,
            merchant_id=caller.merchant_id,
            host=body.host,
            port=body.port,
            security=body.security,
            sender=body.sender,
            username=body.username,
            password=body.password,
            keep_password="password" not in body.model_fields_set,
        )
        return _mail_settings_out(row)


@router.delete("/mail-settings", status_code=204)
def delete_mail_settings(caller: CallerDep) -> Response:
    """Go back to the global SMTP settings."""
    with caller.unit_of_work() as session:
        service.delete_mail_settings(session, merchant_id=caller.merchant_id)
    return Response(status_code=204)


# -- public unsubscribe page ---------------------------------------------------------------

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
</head>
<body style="margin:0;padding:48px 16px;background:#f4f4f5;
font-family:Helvetica,Arial,sans-serif;color:#27272a;">
<main style="max-width:480px;margin:0 auto;padding:32px;background:#fff;border-radius:8px;">
<h1 style="margin:0 0 16px;font-size:22px;">{title}</h1>
{body}
</main>
</body>
</html>
"""


def _masked(email: str) -> str:
    """`a***@example.com`: enough to recognise, not enough to harvest from a forwarded link."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), body=body),
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _load(state: AppState, token: str) -> tuple[Merchant, Customer]:
    """The store and customer a token names (NotFound, so a 404 problem, when it is invalid)."""
    with state.session_factory() as session:
        customer = service.customer_for_token(session, settings=state.settings, token=token)
        merchant = session.get(Merchant, customer.merchant_id)
        assert merchant is not None
        return merchant, customer


@public_router.get("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
    """Ask for confirmation; a GET changes nothing (mail scanners follow links)."""
    state = app_state(request)
    merchant, customer = _load(state, token)
    store = html.escape(merchant.name)
    if customer.unsubscribed_at is not None:
        return _page(
            "You're unsubscribed",
            f"<p>{html.escape(_masked(customer.email))} no longer receives emails about the "
            f"{store} rewards program.</p>",
        )
    action = html.escape(f"/u/{token}")
    return _page(
        f"Unsubscribe from {merchant.name}?",
        f"<p>Stop emails about the {store} rewards program to "
        f"{html.escape(_masked(customer.email))}? Your points stay yours.</p>"
        f'<form method="post" action="{action}">'
        '<button type="submit" style="padding:12px 20px;background:#18181b;color:#fff;'
        'border:0;border-radius:6px;font-size:16px;cursor:pointer;">Unsubscribe</button>'
        "</form>",
    )


@public_router.post("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
def unsubscribe_now(token: str, request: Request) -> HTMLResponse:
    """Unsubscribe: the page's button, and RFC 8058 one-click POSTs from mail clients.

    The body (`List-Unsubscribe=One-Click` from mail clients, empty from the page) is not
    needed: the signed token alone names the customer, and no cookie or redirect is involved.
    """
    state = app_state(request)
    with unit_of_work(state.session_factory) as session:
        customer = service.customer_for_token(session, settings=state.settings, token=token)
        bind_merchant(session, customer.merchant_id)
        service.unsubscribe(session, merchant_id=customer.merchant_id, customer_id=customer.id)
        merchant = session.get(Merchant, customer.merchant_id)
        assert merchant is not None
        store = html.escape(merchant.name)
        email = html.escape(_masked(customer.email))
    return _page(
        "You're unsubscribed",
        f"<p>{email} will no longer receive emails about the {store} rewards program.</p>",
    )
