"""The email templates pages: which emails are sent, editing one with a live preview, going back
to the template Tally ships."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup, escape
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from tally.admin.web import (
    PREVIEW_CONTENT_SECURITY_POLICY,
    Admin,
    AdminDep,
    AdminRoute,
    FormDep,
    checkbox,
    redirect,
    render,
    text,
)
from tally.errors import FieldProblem, ValidationFailed
from tally.notifications import service as notifications
from tally.notifications.templates import EmailTemplate, EmailType, RenderedEmail

router = APIRouter(route_class=AdminRoute)

EMAIL_TYPE_NAMES = {
    EmailType.POINTS_EARNED: "Points earned for an order",
    EmailType.SIGNUP_POINTS: "Points for creating an account",
    EmailType.BIRTHDAY_POINTS: "Birthday points",
    EmailType.CUSTOM_ACTION_POINTS: "Points for a custom action",
    EmailType.CREATE_ACCOUNT_POINTS: "Account created with points (imports)",
    EmailType.CLAIM_POINTS_INVITATION: "Invitation to claim points (imports)",
    EmailType.REWARD_REDEEMED: "Reward redeemed",
    EmailType.VIP_TIER_EARNED: "VIP tier reached",
    EmailType.EXPIRY_REMINDER: "Points expiry reminder",
    EmailType.EXPIRY_LAST_CHANCE: "Points expiry last chance",
    EmailType.REFERRAL_SENDER_REWARD: "Referral reward (referrer)",
    EmailType.REFERRAL_RECEIVER_REWARD: "Referral reward (friend)",
}

PREVIEW_STYLE = Markup(
    "body{font-family:system-ui,sans-serif;margin:0;color:#1f2430}"
    ".meta{padding:8px 12px;background:#f5f6f9;border-bottom:1px solid #d9dde5}"
    "iframe{width:100%;height:calc(100vh - 96px);border:0}"
    "details{padding:8px 12px}pre{white-space:pre-wrap}"
    ".error{color:#b42318;padding:12px}"
)


def _email_type(value: str) -> EmailType:
    return notifications.parse_email_type(value)


@router.get("/settings/emails", include_in_schema=False)
def email_list(request: Request, admin: AdminDep) -> HTMLResponse:
    """Every email type, whether it is sent, and whether it was edited."""
    with admin.unit_of_work() as session:
        views = notifications.list_templates(session, merchant_id=admin.merchant_id)
    return render(
        request,
        "settings/emails.html",
        {
            "title": "Email templates",
            "nav": "settings-emails",
            "views": views,
            "names": EMAIL_TYPE_NAMES,
        },
    )


def _email_page(
    request: Request,
    admin: Admin,
    email_type: EmailType,
    *,
    template: EmailTemplate | None = None,
    enabled: bool | None = None,
    problems: list[FieldProblem] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    with admin.unit_of_work() as session:
        view = notifications.get_template(
            session, merchant_id=admin.merchant_id, email_type=email_type
        )
    return render(
        request,
        "settings/email_edit.html",
        {
            "title": EMAIL_TYPE_NAMES.get(email_type, email_type.value),
            "nav": "settings-emails",
            "view": view,
            "template": template or view.template,
            "enabled": view.enabled if enabled is None else enabled,
            "variables": notifications.template_variable_docs(email_type),
            "problems": problems or [],
        },
        status_code=status_code,
    )


@router.get("/settings/emails/{email_type}", include_in_schema=False)
def email_edit(request: Request, admin: AdminDep, email_type: str) -> Response:
    """Edit one email template, with a preview."""
    return _email_page(request, admin, _email_type(email_type))


def _template_from(form: FormData) -> EmailTemplate:
    def part(name: str) -> str:
        value = form.get(name)
        return value.replace("\r\n", "\n") if isinstance(value, str) else ""

    return EmailTemplate(
        subject=part("subject").strip(), html_body=part("html_body"), text_body=part("text_body")
    )


@router.post("/settings/emails/{email_type}", include_in_schema=False)
def email_save(request: Request, admin: AdminDep, form: FormDep, email_type: str) -> Response:
    """Save an edited template (validated first: unknown variables, syntax errors)."""
    kind = _email_type(email_type)
    template = _template_from(form)
    enabled = checkbox(form, "enabled")
    try:
        with admin.unit_of_work() as session:
            notifications.save_template(
                session,
                merchant_id=admin.merchant_id,
                email_type=kind,
                template=template,
                enabled=enabled,
            )
    except ValidationFailed as error:
        return _email_page(
            request,
            admin,
            kind,
            template=template,
            enabled=enabled,
            problems=error.errors or [FieldProblem("template", error.detail)],
            status_code=422,
        )
    return redirect(f"/admin/settings/emails/{kind.value}?done=template-saved")


@router.post("/settings/emails/{email_type}/reset", include_in_schema=False)
def email_reset(admin: AdminDep, form: FormDep, email_type: str) -> Response:
    """Go back to the template Tally ships."""
    del form
    kind = _email_type(email_type)
    with admin.unit_of_work() as session:
        notifications.reset_template(session, merchant_id=admin.merchant_id, email_type=kind)
    return redirect(f"/admin/settings/emails/{kind.value}?done=template-reset")


@router.post("/settings/emails/{email_type}/enabled", include_in_schema=False)
def email_switch(admin: AdminDep, form: FormDep, email_type: str) -> Response:
    """Switch sending of one email type on or off."""
    kind = _email_type(email_type)
    with admin.unit_of_work() as session:
        notifications.set_template_enabled(
            session,
            merchant_id=admin.merchant_id,
            email_type=kind,
            enabled=text(form, "enabled") == "on",
        )
    return redirect("/admin/settings/emails?done=saved")


def preview_document(subject: str, rendered: RenderedEmail | None, error: str | None) -> str:
    """The preview frame's page: subject, the HTML email in a nested sandbox, the text part."""
    if rendered is None:
        body = Markup('<p class="error">{}</p>').format(error or "")
    else:
        body = Markup(
            '<div class="meta"><strong>Subject:</strong> {}</div>'
            '<iframe title="Email body" sandbox srcdoc="{}"></iframe>'
            "<details><summary>Plain-text version</summary><pre>{}</pre></details>"
        ).format(rendered.subject, rendered.html, rendered.text)
    return str(
        Markup(
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{}</title>'
            "<style>{}</style></head><body>{}</body></html>"
        ).format(subject, PREVIEW_STYLE, body)
    )


def _preview(
    session: Session, admin: Admin, kind: EmailType, template: EmailTemplate | None
) -> HTMLResponse:
    rendered: RenderedEmail | None = None
    error = None
    try:
        rendered = notifications.render_sample(
            session, merchant_id=admin.merchant_id, email_type=kind, template=template
        )
    except ValidationFailed as failure:
        error = "; ".join(f"{p.field}: {p.message}" for p in failure.errors) or failure.detail
    html = preview_document(f"Preview: {escape(kind.value)}", rendered, error)
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": PREVIEW_CONTENT_SECURITY_POLICY,
            "X-Frame-Options": "SAMEORIGIN",
        },
    )


@router.get("/settings/emails/{email_type}/preview", include_in_schema=False)
def email_preview(admin: AdminDep, email_type: str) -> Response:
    """The saved template rendered with sample values (shown in a frame)."""
    kind = _email_type(email_type)
    with admin.unit_of_work() as session:
        return _preview(session, admin, kind, None)


@router.post("/settings/emails/{email_type}/preview", include_in_schema=False)
def email_preview_draft(admin: AdminDep, form: FormDep, email_type: str) -> Response:
    """An unsaved draft rendered with sample values (the form targets the preview frame)."""
    kind = _email_type(email_type)
    with admin.unit_of_work() as session:
        return _preview(session, admin, kind, _template_from(form))
