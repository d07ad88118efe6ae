"""The outbox handler that delivers queued emails.

One `EmailQueued` event becomes one outbox message, handled in three steps:

1. In a short transaction: re-read the mail-log row; stop if it is already sent, failed or
   suppressed (so a redelivered event does nothing); suppress it if the customer unsubscribed or
   the type was switched off meanwhile; render it; mark it `sending` and commit.
2. Talk to the SMTP server (or write the .eml file) outside any transaction, after taking a
   token from the process-wide rate limiter (`settings.mail_send_per_second`).
3. Record the outcome: `sent` with its Message-ID; back to `queued` with the reason after a
   temporary failure (the exception goes back to the worker, which retries with back-off, and the
   last allowed attempt marks the email `failed`); `failed` after a permanent refusal.

Delivery is at least once. If the process dies after the server accepted the message but before
step 3 commits, the outbox lease runs out, another worker finds the row still `sending`, and
sends it again: the customer may get one duplicate. The Message-ID depends only on the merchant
and the dedupe key, so both copies carry the same Message-ID and receiving systems that dedupe
on it show one.

Throughput: a bulk send is just many outbox rows; workers claim them in batches
(`worker_batch_size`) and nothing loads all recipients at once. Keep
`worker_batch_size / mail_send_per_second` well under `worker_lease_seconds`, or a batch waiting
for the rate limiter can outlive its lease.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from email.message import EmailMessage as MimeMessage
from email.utils import formataddr
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.errors import DomainError
from tally.notifications import reactions, service
from tally.notifications.message import build_message
from tally.notifications.orm import EmailMessage, EmailStatus
from tally.notifications.templates import EmailType
from tally.notifications.transport import (
    MailTransport,
    PermanentMailError,
    RateLimiter,
    TemporaryMailError,
)
from tally.outbox.registry import HandlerContext, PermanentFailure, Registry

HANDLER_NAME = "notifications.send_email"
_FINAL = frozenset({EmailStatus.SENT, EmailStatus.FAILED, EmailStatus.SUPPRESSED})

_limiter_lock = threading.Lock()
_limiter: RateLimiter | None = None


def send_limiter(settings: Settings) -> RateLimiter:
    """The rate limiter every sending thread of this process shares."""
    global _limiter
    with _limiter_lock:
        if _limiter is None or _limiter.per_second != settings.mail_send_per_second:
            _limiter = RateLimiter(settings.mail_send_per_second)
        return _limiter


@dataclass(frozen=True)
class _Ready:
    """An email marked `sending`, built and ready for the transport."""

    message: MimeMessage
    transport: MailTransport
    rate_limited: bool


@dataclass(frozen=True)
class _Stop:
    """Nothing to send; `error` (if any) is raised after the outcome is committed."""

    error: Exception | None = None


def _prepare(
    session: Session, settings: Settings, merchant_id: int, email_id: int
) -> _Ready | _Stop:
    email = session.scalar(
        select(EmailMessage)
        .where(EmailMessage.merchant_id == merchant_id, EmailMessage.id == email_id)
        .with_for_update()
    )
    if email is None or email.status in _FINAL:
        # Gone with its customer, or already dealt with by an earlier delivery of the event.
        return _Stop()
    customer = session.get(Customer, email.customer_id) if email.customer_id else None
    if customer is None:  # pragma: no cover - the row is deleted with its customer
        return _Stop()
    email_type = EmailType(email.email_type)
    enabled = service.template_enabled(session, merchant_id=merchant_id, email_type=email_type)
    reason = service.suppression_reason(customer, email_type, enabled=enabled)
    if reason is not None:
        email.status = EmailStatus.SUPPRESSED
        email.last_error = reason
        return _Stop()
    try:
        rendered = service.render_for_customer(
            session,
            settings=settings,
            merchant_id=merchant_id,
            customer_id=customer.id,
            email_type=email_type,
            variables=email.variables,
            fill_with_samples=False,
        )
        delivery = service.delivery_for(session, settings=settings, merchant_id=merchant_id)
    except DomainError as error:
        # The template cannot render these values: retrying the same values cannot help.
        email.status = EmailStatus.FAILED
        email.last_error = error.detail
        return _Stop(PermanentFailure(error.detail))
    except service.PasswordUnreadable as error:
        # A settings problem the merchant can fix; keep the email and try again later.
        email.last_error = str(error)
        return _Stop(error)
    message = build_message(
        sender=delivery.sender,
        recipient=formataddr((customer.full_name, customer.email)),
        rendered=rendered,
        unsubscribe_url=service.unsubscribe_link(settings, merchant_id, customer.id),
        message_id_domain=delivery.message_id_domain,
        message_key=f"{merchant_id}:{email.dedupe_key}",
    )
    email.status = EmailStatus.SENDING
    email.attempts += 1
    email.subject = rendered.subject
    email.recipient = customer.email
    email.message_id = str(message["Message-ID"])
    return _Ready(message, delivery.transport, rate_limited=delivery.file_directory is None)


def _record(context: HandlerContext, email_id: int, **values: Any) -> None:
    with unit_of_work(context.session_factory) as session:
        session.execute(update(EmailMessage).where(EmailMessage.id == email_id).values(**values))


def send_email(context: HandlerContext, payload: dict[str, Any]) -> None:
    """Deliver the email an `EmailQueued` event names (idempotent: a sent email stays sent)."""
    merchant_id = int(payload["merchant_id"])
    email_id = int(payload["email_id"])
    settings = context.settings
    with unit_of_work(context.session_factory, merchant_id=merchant_id) as session:
        outcome = _prepare(session, settings, merchant_id, email_id)
    if isinstance(outcome, _Stop):
        if outcome.error is not None:
            raise outcome.error
        return
    deliver(context, email_id, outcome.transport, outcome.message, outcome.rate_limited)


def deliver(
    context: HandlerContext,
    email_id: int,
    transport: MailTransport,
    message: MimeMessage,
    rate_limited: bool,
) -> None:
    """Send a message whose mail-log row is `sending`, and record the outcome on that row.

    A temporary failure goes back to `queued` (the worker retries; the last allowed attempt
    marks it `failed`) and is raised again; a permanent one is `failed` and a `PermanentFailure`.
    """
    settings = context.settings
    if rate_limited:
        send_limiter(settings).acquire()
    try:
        transport.send(message)
    except TemporaryMailError as error:
        if context.attempt >= settings.worker_max_attempts:
            _record(
                context,
                email_id,
                status=EmailStatus.FAILED,
                last_error=f"gave up after {context.attempt} attempts: {error}",
            )
        else:
            _record(context, email_id, status=EmailStatus.QUEUED, last_error=str(error))
        raise
    except PermanentMailError as error:
        _record(context, email_id, status=EmailStatus.FAILED, last_error=str(error))
        raise PermanentFailure(f"the mail server refused the email: {error}") from error
    _record(context, email_id, status=EmailStatus.SENT, sent_at=utcnow(), last_error=None)


def register(registry: Registry) -> None:
    """Subscribe the email sender to `EmailQueued`, and the reactions that queue emails."""
    registry.subscribe(service.EmailQueued.event_type, HANDLER_NAME, send_email)
    reactions.register(registry)
