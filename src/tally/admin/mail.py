"""The mail log (owners and managers) and the store's own SMTP server (owners), with a test."""

from __future__ import annotations

import math
from email.utils import formataddr, parseaddr
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from tally.admin.permissions import Permission, requires
from tally.admin.web import (
    Admin,
    AdminDep,
    AdminRoute,
    FormDep,
    checkbox,
    problems_by_field,
    redirect,
    render,
    text,
)
from tally.config import SmtpSecurity
from tally.errors import DomainError
from tally.notifications import service, smtp_test
from tally.notifications.mail_log import known_kinds
from tally.notifications.orm import EmailStatus

router = APIRouter(route_class=AdminRoute)

LOG_PAGE_SIZE = 50
SMTP_PATH = "/admin/mail/smtp"
SECURITY_LABELS = {
    SmtpSecurity.STARTTLS.value: "STARTTLS (usually port 587)",
    SmtpSecurity.TLS.value: "TLS from the start (usually port 465)",
    SmtpSecurity.NONE.value: "None (only on a trusted network)",
}


@router.get("/mail/log", include_in_schema=False, dependencies=[requires(Permission.REPORTS)])
def mail_log(
    request: Request,
    admin: AdminDep,
    status: Annotated[str, Query(max_length=16)] = "",
    kind: Annotated[str, Query(max_length=64)] = "",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    """Every email Tally sent or tried: customers' notifications, team emails, SMTP tests."""
    statuses = [s.value for s in EmailStatus]
    kinds = known_kinds()
    status = status if status in statuses else ""
    kind = kind if kind in kinds else ""
    with admin.unit_of_work() as session:
        rows, total = service.list_emails(
            session,
            merchant_id=admin.merchant_id,
            status=status or None,
            email_type=kind or None,
            limit=LOG_PAGE_SIZE,
            offset=(page - 1) * LOG_PAGE_SIZE,
        )
    context = {
        "title": "Mail log",
        "nav": "mail-log",
        "emails": rows,
        "total": total,
        "page_number": page,
        "pages": max(1, math.ceil(total / LOG_PAGE_SIZE)),
        "status": status,
        "kind": kind,
        "statuses": statuses,
        "kinds": kinds,
    }
    return render(request, "mail/log.html", context)


def smtp_page(
    request: Request,
    admin: Admin,
    *,
    error: DomainError | None = None,
    values: dict[str, str] | None = None,
    test: smtp_test.TestOutcome | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The saved settings (never the password: only whether one is set) and the forms."""
    with admin.unit_of_work() as session:
        own = service.get_mail_settings(session, merchant_id=admin.merchant_id)
        stored: dict[str, str] = {}
        if own is not None:
            name, address = parseaddr(own.sender)
            stored = {
                "host": own.host,
                "port": str(own.port),
                "security": own.security,
                "username": own.username or "",
                "from_name": name,
                "from_address": address,
            }
        password_set = own is not None and own.password_encrypted is not None
    context: dict[str, Any] = {
        "title": "SMTP server",
        "nav": "mail-smtp",
        "saved": own is not None,
        "values": values if values is not None else stored,
        "password_set": password_set,
        "security_labels": SECURITY_LABELS,
        "instance_default": admin.state.settings.smtp_host or None,
        "me": admin.email,
        "test": test,
        "error": error.detail if error else None,
        "errors": problems_by_field(error.errors) if error else {},
    }
    return render(request, "mail/smtp.html", context, status_code=status_code)


_owner_only = [requires(Permission.MAIL_SETTINGS)]


@router.get("/mail/smtp", include_in_schema=False, dependencies=_owner_only)
def smtp_settings(request: Request, admin: AdminDep) -> Response:
    """The store's own SMTP server, or a note that the instance's default is used."""
    return smtp_page(request, admin)


@router.post("/mail/smtp", include_in_schema=False, dependencies=_owner_only)
def save_smtp(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Save the settings; an empty password field keeps the stored password."""
    fields = ("host", "port", "security", "username", "from_name", "from_address")
    values = {name: text(form, name) for name in fields}
    password = form.get("password")
    new_password = password if isinstance(password, str) and password else None
    choices: dict[str, Any] = {
        "host": values["host"],
        "port": int(values["port"]) if values["port"].isdigit() else 0,
        "security": values["security"],
        "sender": formataddr((values["from_name"], values["from_address"])),
        "username": values["username"] or None,
        "password": new_password,
        "keep_password": new_password is None and not checkbox(form, "clear_password"),
    }
    try:
        with admin.unit_of_work() as session:
            service.save_mail_settings(
                session, settings=admin.state.settings, merchant_id=admin.merchant_id, **choices
            )
    except DomainError as error:
        return smtp_page(request, admin, error=error, values=values, status_code=422)
    return redirect(f"{SMTP_PATH}?done=smtp-saved")


@router.post("/mail/smtp/remove", include_in_schema=False, dependencies=_owner_only)
def remove_smtp(admin: AdminDep, form: FormDep) -> Response:
    """Go back to the instance's default SMTP server."""
    del form  # checked for its CSRF token
    with admin.unit_of_work() as session:
        service.delete_mail_settings(session, merchant_id=admin.merchant_id)
    return redirect(f"{SMTP_PATH}?done=smtp-removed")


@router.post("/mail/smtp/test", include_in_schema=False, dependencies=_owner_only)
def test_smtp(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Send a test email to the signed-in user through the saved settings; show the answer."""
    del form  # checked for its CSRF token
    settings, merchant_id = admin.state.settings, admin.merchant_id
    try:
        with admin.unit_of_work() as session:
            prepared = smtp_test.prepare_test(
                session, settings=settings, merchant_id=merchant_id, recipient=admin.email
            )
    except DomainError as error:
        return smtp_page(request, admin, error=error, status_code=error.status_code)
    outcome = smtp_test.run_test(prepared)  # outside any transaction: the server may be slow
    with admin.unit_of_work() as session:
        smtp_test.log_test(
            session, merchant_id=merchant_id, email_id=prepared.email_id, outcome=outcome
        )
    return smtp_page(request, admin, test=outcome)
