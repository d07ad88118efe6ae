"""Notification use cases: queue emails, manage templates, unsubscribe, merchant SMTP settings.

Callers own the transaction (services never commit). Queueing writes the mail-log row and an
`EmailQueued` outbox event in the caller's transaction, so an email goes out only if the change
that caused it commits, and the worker (see `handlers`) delivers it.

Decisions worth knowing:

- An email that must not go out (the customer unsubscribed, or the merchant switched the type
  off) is still written to the log with status `suppressed` and the reason in `last_error`, so a
  merchant can see why a customer got nothing; `queue_email` returns None for it. Its dedupe key
  is used up: the same event is not sent later after a resubscribe.
- Event facts (points, reward name, ...) are stored with the row; everything about the customer
  and the store is read again at send time, when the email is rendered.
- The same check runs again at send time, so emails still queued when a customer unsubscribes
  (or a type is switched off) are suppressed rather than sent.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import formataddr, parseaddr
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from cryptography.fernet import InvalidToken
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from tally.config import Settings, SmtpSecurity
from tally.crypto import decrypt_text, encrypt_text
from tally.customers.orm import Customer
from tally.customers.service import customers_after, get_customer
from tally.db.base import utcnow
from tally.db.pages import page
from tally.db.upsert import insert_or_find
from tally.errors import FieldProblem, NotFound, ValidationFailed
from tally.merchants.orm import Merchant
from tally.notifications import smtp_hosts
from tally.notifications import unsubscribe as tokens
from tally.notifications.orm import EmailMessage, EmailStatus, MailSettings, StoredEmailTemplate
from tally.notifications.templates import (
    COMMON_VARIABLES,
    TEMPLATE_VARIABLES,
    EmailTemplate,
    EmailType,
    RenderedEmail,
    TemplateError,
    TemplatePart,
    default_template,
    render,
    sample_variables,
    validate_template,
    variables_for,
)
from tally.notifications.transport import (
    FileTransport,
    MailTransport,
    SmtpTransport,
    transport_from_settings,
)
from tally.outbox.events import CustomerUpdated, DomainEvent
from tally.outbox.registry import Registry, default_registry
from tally.outbox.service import emit

# Variables Tally fills in from the customer and the store; callers supply the others.
COMPUTED_VARIABLES = COMMON_VARIABLES | {"referral_url"}
MAX_DEDUPE_KEY_LENGTH = 200
_PART_FIELDS = {
    TemplatePart.SUBJECT: "subject",
    TemplatePart.HTML: "html_body",
    TemplatePart.TEXT: "text_body",
}
_MESSAGE_ID_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_PASSWORD_KEY_INFO = b"tally/mail-settings/smtp-password/v1"


@dataclass(frozen=True)
class EmailQueued(DomainEvent):
    """A notification email was written to the mail log and waits for delivery."""

    event_type: ClassVar[str] = "EmailQueued"
    email_id: int
    customer_id: int


# -- email types and templates -------------------------------------------------------------


def parse_email_type(value: str) -> EmailType:
    """The email type with this name, or NotFound listing the known ones."""
    try:
        return EmailType(value)
    except ValueError:
        known = ", ".join(t.value for t in EmailType)
        raise NotFound(f"there is no email type {value!r}; known types: {known}") from None


@dataclass(frozen=True)
class TemplateView:
    """The template a merchant's emails of one type use, and whether they are sent at all."""

    email_type: EmailType
    enabled: bool
    customized: bool
    template: EmailTemplate
    updated_at: datetime | None


def template_refused(error: TemplateError, email_type: EmailType) -> ValidationFailed:
    """A template error as a domain error naming the field, line and reason of every problem."""
    problems = [
        FieldProblem(
            _PART_FIELDS[p.part], f"line {p.line}: {p.reason}" if p.line is not None else p.reason
        )
        for p in error.problems
    ]
    return ValidationFailed(f"the {email_type.value} template cannot be used: {error}", problems)


def _stored_template(
    session: Session, merchant_id: int, email_type: EmailType
) -> StoredEmailTemplate | None:
    return session.scalar(
        select(StoredEmailTemplate).where(
            StoredEmailTemplate.merchant_id == merchant_id,
            StoredEmailTemplate.email_type == email_type.value,
        )
    )


# The shipped templates never change while the process runs; a bulk send needs them per email.
_shipped_template = functools.lru_cache(maxsize=None)(default_template)


def _view(email_type: EmailType, row: StoredEmailTemplate | None) -> TemplateView:
    if row is None:
        return TemplateView(email_type, True, False, _shipped_template(email_type), None)
    if row.subject is not None and row.html_body is not None and row.text_body is not None:
        template = EmailTemplate(row.subject, row.html_body, row.text_body)
    else:
        template = _shipped_template(email_type)
    return TemplateView(email_type, row.enabled, row.customized, template, row.updated_at)


def get_template(session: Session, *, merchant_id: int, email_type: EmailType) -> TemplateView:
    """The merchant's template for this type (the shipped default until edited)."""
    return _view(email_type, _stored_template(session, merchant_id, email_type))


def list_templates(session: Session, *, merchant_id: int) -> list[TemplateView]:
    """Every email type with the merchant's template and switch, in a fixed order."""
    rows = {
        row.email_type: row
        for row in session.scalars(
            select(StoredEmailTemplate).where(StoredEmailTemplate.merchant_id == merchant_id)
        )
    }
    return [_view(email_type, rows.get(email_type.value)) for email_type in EmailType]


def _upsert_template(
    session: Session, merchant_id: int, email_type: EmailType
) -> StoredEmailTemplate:
    """The merchant's row for this type, created (enabled, default text) when missing."""
    row = _stored_template(session, merchant_id, email_type)
    if row is not None:
        return row
    row = StoredEmailTemplate(
        merchant_id=merchant_id, email_type=email_type.value, enabled=True, updated_at=utcnow()
    )
    # Another request may create the row first; then that one is changed.
    stored, _ = insert_or_find(
        session, row, lambda: _stored_template(session, merchant_id, email_type)
    )
    return stored


def save_template(
    session: Session,
    *,
    merchant_id: int,
    email_type: EmailType,
    template: EmailTemplate,
    enabled: bool | None = None,
) -> TemplateView:
    """Store an edited template after validating it; `enabled=None` leaves the switch alone."""
    try:
        validate_template(template, email_type)
    except TemplateError as error:
        raise template_refused(error, email_type) from error
    row = _upsert_template(session, merchant_id, email_type)
    row.subject = template.subject
    row.html_body = template.html_body
    row.text_body = template.text_body
    if enabled is not None:
        row.enabled = enabled
    row.updated_at = utcnow()
    session.flush()
    return _view(email_type, row)


def set_template_enabled(
    session: Session, *, merchant_id: int, email_type: EmailType, enabled: bool
) -> TemplateView:
    """Switch emails of this type on or off for the merchant."""
    row = _upsert_template(session, merchant_id, email_type)
    if row.enabled != enabled:
        row.enabled = enabled
        row.updated_at = utcnow()
        session.flush()
    return _view(email_type, row)


def reset_template(session: Session, *, merchant_id: int, email_type: EmailType) -> TemplateView:
    """Go back to the shipped template; the on/off switch is kept."""
    row = _stored_template(session, merchant_id, email_type)
    if row is None:
        return _view(email_type, None)
    if row.enabled:
        session.delete(row)
        session.flush()
        return _view(email_type, None)
    row.subject = row.html_body = row.text_body = None
    row.updated_at = utcnow()
    session.flush()
    return _view(email_type, row)


# -- variables and rendering ---------------------------------------------------------------


def referral_url(settings: Settings, customer: Customer) -> str:
    """The customer's personal referral link."""
    return f"{settings.public_base_url}/r/{customer.referral_code}"


def unsubscribe_link(settings: Settings, merchant_id: int, customer_id: int) -> str:
    """The signed one-click unsubscribe link for a customer."""
    token = tokens.make_token(settings.secret_key.get_secret_value(), merchant_id, customer_id)
    return tokens.unsubscribe_url(settings.public_base_url, token)


def customer_variables(
    settings: Settings, merchant: Merchant, customer: Customer
) -> dict[str, object]:
    """The variables Tally fills in from the customer and the store, as they are now."""
    return {
        "customer_first_name": customer.first_name or "",
        "customer_last_name": customer.last_name or "",
        "customer_name": customer.full_name,
        "customer_email": customer.email,
        "balance": customer.points_balance,
        "store_name": merchant.name,
        "store_url": merchant.store_url,
        "unsubscribe_url": unsubscribe_link(settings, merchant.id, customer.id),
        "referral_url": referral_url(settings, customer),
    }


def _merchant(session: Session, merchant_id: int) -> Merchant:
    merchant = session.get(Merchant, merchant_id)
    if merchant is None:
        raise NotFound(f"merchant {merchant_id} does not exist")
    return merchant


def _render(
    template: EmailTemplate, email_type: EmailType, values: Mapping[str, object]
) -> RenderedEmail:
    try:
        return render(template, values)
    except TemplateError as error:
        raise template_refused(error, email_type) from error


def render_for_customer(
    session: Session,
    *,
    settings: Settings,
    merchant_id: int,
    customer_id: int,
    email_type: EmailType,
    variables: Mapping[str, object] | None = None,
    template: EmailTemplate | None = None,
    fill_with_samples: bool = True,
) -> RenderedEmail:
    """Render an email for a real customer (previews and sending).

    `variables` are the event's facts and win over the computed ones (an email about an earning
    shows the balance right after it). For previews, facts not given are sample values;
    `template` renders an unsaved draft instead of the stored template.
    """
    customer = get_customer(session, merchant_id, customer_id)
    merchant = _merchant(session, merchant_id)
    values: dict[str, object] = sample_variables(email_type) if fill_with_samples else {}
    values.update(customer_variables(settings, merchant, customer))
    values.update(variables or {})
    chosen = (
        template or get_template(session, merchant_id=merchant_id, email_type=email_type).template
    )
    return _render(chosen, email_type, values)


def render_sample(
    session: Session,
    *,
    merchant_id: int,
    email_type: EmailType,
    template: EmailTemplate | None = None,
) -> RenderedEmail:
    """Render with sample values and the merchant's store name and address (no customer)."""
    merchant = _merchant(session, merchant_id)
    values = sample_variables(email_type) | {
        "store_name": merchant.name,
        "store_url": merchant.store_url,
    }
    chosen = (
        template or get_template(session, merchant_id=merchant_id, email_type=email_type).template
    )
    return _render(chosen, email_type, values)


# -- queueing ------------------------------------------------------------------------------


def _check_variables(email_type: EmailType, variables: Mapping[str, object]) -> None:
    """Programming errors, not user input: refuse them loudly where they are made."""
    unknown = set(variables) - variables_for(email_type)
    if unknown:
        raise ValueError(f"{email_type.value} emails have no variables {sorted(unknown)}")
    missing = variables_for(email_type) - COMPUTED_VARIABLES - set(variables)
    if missing:
        raise ValueError(f"{email_type.value} emails need the variables {sorted(missing)}")
    for name, value in variables.items():
        # None would render as the word "None"; "may be empty" variables take "".
        if not isinstance(value, str | int | float):
            raise ValueError(f"variable {name!r} must be a string or a number, not {value!r}")


def _find_email(session: Session, merchant_id: int, dedupe_key: str) -> EmailMessage | None:
    return session.scalar(
        select(EmailMessage).where(
            EmailMessage.merchant_id == merchant_id, EmailMessage.dedupe_key == dedupe_key
        )
    )


def template_enabled(session: Session, *, merchant_id: int, email_type: EmailType) -> bool:
    """Whether the merchant sends emails of this type (no row: yes)."""
    enabled = session.scalar(
        select(StoredEmailTemplate.enabled).where(
            StoredEmailTemplate.merchant_id == merchant_id,
            StoredEmailTemplate.email_type == email_type.value,
        )
    )
    return True if enabled is None else bool(enabled)


def suppression_reason(customer: Customer, email_type: EmailType, *, enabled: bool) -> str | None:
    """Why this customer must not get this email now, or None when it may be sent."""
    if customer.unsubscribed_at is not None:
        return "the customer unsubscribed"
    if not enabled:
        return f"{email_type.value} emails are switched off"
    return None


class QueueOutcome(StrEnum):
    """What queueing one email did."""

    QUEUED = "queued"
    SUPPRESSED = "suppressed"
    DUPLICATE = "duplicate"


def _replayed(existing: EmailMessage) -> tuple[EmailMessage | None, QueueOutcome]:
    kept = None if existing.status == EmailStatus.SUPPRESSED else existing
    return kept, QueueOutcome.DUPLICATE


def _queue(
    session: Session,
    *,
    customer: Customer,
    email_type: EmailType,
    variables: Mapping[str, object],
    dedupe_key: str,
    enabled: bool,
    registry: Registry,
) -> tuple[EmailMessage | None, QueueOutcome]:
    merchant_id = customer.merchant_id
    existing = _find_email(session, merchant_id, dedupe_key)
    if existing is not None:
        return _replayed(existing)
    reason = suppression_reason(customer, email_type, enabled=enabled)
    row = EmailMessage(
        merchant_id=merchant_id,
        customer_id=customer.id,
        email_type=email_type.value,
        dedupe_key=dedupe_key,
        recipient=customer.email,
        status=EmailStatus.SUPPRESSED if reason else EmailStatus.QUEUED,
        variables=dict(variables),
        attempts=0,
        last_error=reason,
        created_at=utcnow(),
    )
    row, inserted = insert_or_find(
        session, row, lambda: _find_email(session, merchant_id, dedupe_key)
    )
    if not inserted:
        return _replayed(row)
    if reason:
        return None, QueueOutcome.SUPPRESSED
    emit(
        session,
        EmailQueued(merchant_id=merchant_id, email_id=row.id, customer_id=customer.id),
        registry=registry,
    )
    return row, QueueOutcome.QUEUED


def _check_dedupe_key(dedupe_key: str) -> None:
    if not dedupe_key or len(dedupe_key) > MAX_DEDUPE_KEY_LENGTH:
        raise ValueError(f"dedupe_key must be 1 to {MAX_DEDUPE_KEY_LENGTH} characters")


def queue_email(
    session: Session,
    *,
    merchant_id: int,
    customer_id: int,
    email_type: EmailType | str,
    variables: Mapping[str, object],
    dedupe_key: str,
    registry: Registry = default_registry,
) -> EmailMessage | None:
    """Queue one email in the caller's transaction; at most one email per dedupe key.

    Returns the log row that will be (or was) sent for this key, or None when no email goes out
    for it: the customer unsubscribed or the type is switched off (a `suppressed` row records
    why). The same key again returns the first outcome and writes nothing.
    """
    kind = EmailType(email_type)
    _check_dedupe_key(dedupe_key)
    _check_variables(kind, variables)
    existing = _find_email(session, merchant_id, dedupe_key)
    if existing is not None:
        return _replayed(existing)[0]
    customer = get_customer(session, merchant_id, customer_id)
    row, _outcome = _queue(
        session,
        customer=customer,
        email_type=kind,
        variables=variables,
        dedupe_key=dedupe_key,
        enabled=template_enabled(session, merchant_id=merchant_id, email_type=kind),
        registry=registry,
    )
    return row


@dataclass
class BulkQueueResult:
    """What a bulk send queued."""

    queued: int = 0
    suppressed: int = 0
    duplicates: int = 0


def queue_bulk(
    session: Session,
    *,
    merchant_id: int,
    email_type: EmailType | str,
    dedupe_key_prefix: str,
    variables: Callable[[Customer], Mapping[str, object]],
    where: Sequence[ColumnElement[bool]] = (),
    batch_size: int = 500,
    registry: Registry = default_registry,
) -> BulkQueueResult:
    """Queue one email per matching customer, reading customers one page at a time.

    Customers are read in id order with keyset paging, so memory stays flat however many there
    are (rows already flushed are dropped from the session's weak identity map). Each customer's
    dedupe key is `<prefix>:<customer id>`, so re-running a bulk send queues nothing twice.
    Delivery then streams through the outbox like any other email.
    """
    kind = EmailType(email_type)
    result = BulkQueueResult()
    enabled = template_enabled(session, merchant_id=merchant_id, email_type=kind)
    last_id = 0
    while True:
        batch = customers_after(session, merchant_id, last_id, where=where, limit=batch_size)
        if not batch:
            return result
        for customer in batch:
            values = variables(customer)
            _check_variables(kind, values)
            dedupe_key = f"{dedupe_key_prefix}:{customer.id}"
            _check_dedupe_key(dedupe_key)
            _row, outcome = _queue(
                session,
                customer=customer,
                email_type=kind,
                variables=values,
                dedupe_key=dedupe_key,
                enabled=enabled,
                registry=registry,
            )
            if outcome is QueueOutcome.QUEUED:
                result.queued += 1
            elif outcome is QueueOutcome.SUPPRESSED:
                result.suppressed += 1
            else:
                result.duplicates += 1
        last_id = batch[-1].id
        session.flush()


# -- the mail log --------------------------------------------------------------------------


def list_emails(
    session: Session,
    *,
    merchant_id: int,
    limit: int = 50,
    offset: int = 0,
    status: str | None = None,
    customer_id: int | None = None,
    email_type: str | None = None,
) -> tuple[list[EmailMessage], int]:
    """One page of the mail log, newest first, and the total matching."""
    stmt = select(EmailMessage).where(EmailMessage.merchant_id == merchant_id)
    if email_type is not None:
        stmt = stmt.where(EmailMessage.email_type == email_type)
    if status is not None:
        if status not in set(EmailStatus):
            known = ", ".join(s.value for s in EmailStatus)
            raise ValidationFailed(
                f"unknown status {status!r}",
                [FieldProblem("status", f"must be one of {known}", status)],
            )
        stmt = stmt.where(EmailMessage.status == status)
    if customer_id is not None:
        stmt = stmt.where(EmailMessage.customer_id == customer_id)
    return page(session, stmt, order_by=EmailMessage.id.desc(), limit=limit, offset=offset)


# -- unsubscribe ---------------------------------------------------------------------------


def unsubscribe(session: Session, *, merchant_id: int, customer_id: int) -> Customer:
    """Stop notification emails to the customer (again is a no-op that keeps the first time)."""
    customer = get_customer(session, merchant_id, customer_id)
    if customer.unsubscribed_at is None:
        now = utcnow()
        customer.unsubscribed_at = now
        customer.updated_at = now
        session.flush()
        _emit_subscription_change(session, customer)
    return customer


def resubscribe(session: Session, *, merchant_id: int, customer_id: int) -> Customer:
    """Send notification emails to the customer again."""
    customer = get_customer(session, merchant_id, customer_id)
    if customer.unsubscribed_at is not None:
        customer.unsubscribed_at = None
        customer.updated_at = utcnow()
        session.flush()
        _emit_subscription_change(session, customer)
    return customer


def _emit_subscription_change(session: Session, customer: Customer) -> None:
    # Integrations that mirror the customer (e.g. marketing consent in Dotdigital) hear of it.
    emit(
        session,
        CustomerUpdated(
            merchant_id=customer.merchant_id, customer_id=customer.id, fields=("unsubscribed_at",)
        ),
    )


def customer_for_token(session: Session, *, settings: Settings, token: str) -> Customer:
    """The customer an unsubscribe token names; NotFound for altered tokens or unknown ids."""
    try:
        merchant_id, customer_id = tokens.read_token(settings.secret_key.get_secret_value(), token)
    except tokens.InvalidToken as error:
        raise NotFound("this unsubscribe link is not valid") from error
    try:
        return get_customer(session, merchant_id, customer_id)
    except NotFound:
        raise NotFound("this unsubscribe link is not valid") from None


# -- merchant SMTP settings ----------------------------------------------------------------


def encrypt_password(settings: Settings, password: str) -> str:
    """The password as a Fernet token under the application secret."""
    return encrypt_text(settings, _PASSWORD_KEY_INFO, password)


class PasswordUnreadable(RuntimeError):
    """A stored SMTP password that the current secret key cannot decrypt."""


def decrypt_password(settings: Settings, token: str) -> str:
    """The stored password; PasswordUnreadable when the secret key changed since it was saved."""
    try:
        return decrypt_text(settings, _PASSWORD_KEY_INFO, token)
    except InvalidToken as error:
        raise PasswordUnreadable(
            "the stored SMTP password cannot be decrypted (was TALLY_SECRET_KEY changed?); "
            "save the merchant's mail settings again"
        ) from error


def get_mail_settings(session: Session, *, merchant_id: int) -> MailSettings | None:
    """The merchant's own SMTP server, if it configured one."""
    return session.scalar(select(MailSettings).where(MailSettings.merchant_id == merchant_id))


def _sender_address(sender: str) -> str:
    return parseaddr(sender)[1]


def save_mail_settings(
    session: Session,
    *,
    settings: Settings,
    merchant_id: int,
    host: str,
    port: int,
    security: str,
    sender: str,
    username: str | None = None,
    password: str | None = None,
    keep_password: bool = False,
) -> MailSettings:
    """Use the merchant's own SMTP server; `keep_password` keeps the stored password."""
    problems: list[FieldProblem] = []
    host = host.strip()
    if not host or any(c.isspace() for c in host):
        problems.append(FieldProblem("host", "must be a host name or address", host))
    if not 1 <= port <= 65535:
        problems.append(FieldProblem("port", "must be between 1 and 65535", port))
    if security not in set(SmtpSecurity):
        known = ", ".join(s.value for s in SmtpSecurity)
        problems.append(FieldProblem("security", f"must be one of {known}", security))
    address = _sender_address(sender)
    if "@" not in address or any(c.isspace() for c in address):
        problems.append(FieldProblem("sender", "must be an email address", sender))
    if not problems:
        reason = smtp_hosts.host_problem(host, port, development=settings.is_development)
        if reason is not None:
            problems.append(FieldProblem("host", reason, host))
    if problems:
        raise ValidationFailed("the mail settings are not valid", problems)
    row = get_mail_settings(session, merchant_id=merchant_id)
    if row is None:
        row = MailSettings(merchant_id=merchant_id)
        session.add(row)
    row.host = host
    row.port = port
    row.security = security
    row.username = (username or "").strip() or None
    row.sender = sender.strip()
    if not keep_password:
        row.password_encrypted = encrypt_password(settings, password) if password else None
    row.updated_at = utcnow()
    session.flush()
    return row


def delete_mail_settings(session: Session, *, merchant_id: int) -> bool:
    """Go back to the global SMTP settings; False when there was nothing to delete."""
    row = get_mail_settings(session, merchant_id=merchant_id)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


@dataclass(frozen=True)
class Delivery:
    """How a merchant's emails leave: the transport, the From address and the Message-ID domain."""

    transport: MailTransport
    sender: str
    message_id_domain: str
    # Where .eml files go when there is no SMTP server at all (development), else None.
    file_directory: Path | None


def _message_id_domain(address: str) -> str:
    domain = address.rpartition("@")[2]
    return domain if _MESSAGE_ID_DOMAIN.fullmatch(domain) else "localhost"


def own_transport(settings: Settings, own: MailSettings, *, timeout: float = 30.0) -> SmtpTransport:
    """A transport for the merchant's own SMTP server (its password decrypted)."""
    transport = SmtpTransport(own.host, own.port, security=own.security, timeout=timeout)
    # A host the merchant typed: outside development it is checked again at every connection.
    transport.public_only = not settings.is_development
    transport.username = own.username
    if own.password_encrypted:
        transport.password = decrypt_password(settings, own.password_encrypted)
    return transport


def delivery_for(session: Session, *, settings: Settings, merchant_id: int) -> Delivery:
    """The merchant's SMTP server, else the global one, else .eml files under mail_dir."""
    merchant = _merchant(session, merchant_id)
    own = get_mail_settings(session, merchant_id=merchant_id)
    transport: MailTransport
    if own is not None:
        transport = own_transport(settings, own)
        configured_sender = own.sender
    else:
        transport = transport_from_settings(settings)
        configured_sender = settings.smtp_sender
    name, address = parseaddr(configured_sender)
    sender = formataddr((name or merchant.name, address))
    directory = transport.directory if isinstance(transport, FileTransport) else None
    return Delivery(transport, sender, _message_id_domain(address), directory)


def file_directory_for(session: Session, *, settings: Settings, merchant_id: int) -> Path | None:
    """Where the merchant's emails are written as .eml files, or None when they go by SMTP."""
    if settings.smtp_host or get_mail_settings(session, merchant_id=merchant_id) is not None:
        return None
    return settings.mail_dir


def template_variable_docs(email_type: EmailType) -> dict[str, str]:
    """The variables a template of this type may use, with what they mean."""
    return {name: TEMPLATE_VARIABLES[name] for name in sorted(variables_for(email_type))}
