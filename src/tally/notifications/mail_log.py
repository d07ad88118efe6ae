"""The mail log's rows for emails that are not about a customer: team emails and SMTP tests.

Customer notifications get their row when they are queued (`service.queue_email`). A team email
(invitation, password reset) is an outbox message until the worker sends it; its row is written
when the worker first tries it, keyed by the outbox message, so a retry updates the same row
(`record_attempt`), and `handlers.deliver` records the outcome as for any email. An SMTP test
is sent at once by the admin and logged with its outcome.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.db.base import utcnow
from tally.db.upsert import insert_or_find
from tally.notifications.orm import EmailMessage, EmailStatus
from tally.notifications.templates import EmailType


class DirectEmailKind(StrEnum):
    """Mail-log kinds beside the customer notification types (`EmailType`)."""

    TEAM_INVITATION = "team_invitation"
    TEAM_PASSWORD_RESET = "team_password_reset"  # noqa: S105 - a kind, not a password
    SMTP_TEST = "smtp_test"


def known_kinds() -> list[str]:
    """Every kind an email in the mail log can have, for filters."""
    return [kind.value for kind in EmailType] + [kind.value for kind in DirectEmailKind]


def _find(session: Session, merchant_id: int, dedupe_key: str) -> EmailMessage | None:
    return session.scalar(
        select(EmailMessage).where(
            EmailMessage.merchant_id == merchant_id, EmailMessage.dedupe_key == dedupe_key
        )
    )


def record_attempt(
    session: Session,
    *,
    merchant_id: int,
    dedupe_key: str,
    kind: DirectEmailKind,
    recipient: str,
    subject: str,
    message_id: str,
) -> EmailMessage:
    """The row of an email about to be sent (created on the first try), marked `sending`."""
    row = EmailMessage(
        merchant_id=merchant_id,
        customer_id=None,
        email_type=kind.value,
        dedupe_key=dedupe_key,
        recipient=recipient,
        subject=subject,
        status=EmailStatus.SENDING,
        variables={},
        attempts=0,
        message_id=message_id,
        created_at=utcnow(),
    )
    row, _inserted = insert_or_find(session, row, lambda: _find(session, merchant_id, dedupe_key))
    row.status = EmailStatus.SENDING
    row.recipient = recipient
    row.subject = subject
    row.attempts += 1
    session.flush()
    return row
