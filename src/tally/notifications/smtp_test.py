""" "Send a test email": one message through the merchant's saved SMTP settings, at once.

The admin reads the settings and builds the message in one unit of work (`prepare_test`),
talks to the server outside any transaction with a short timeout (`run_test`), and logs the
outcome in another (`log_test`), so a slow server never holds a database lock. The answer is
the server's own reply to the message, or what went wrong in words a merchant can act on.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage as MimeMessage
from email.utils import format_datetime, formataddr, parseaddr

from sqlalchemy import update
from sqlalchemy.orm import Session

from tally.config import Settings
from tally.db.base import utcnow
from tally.errors import FieldProblem, ValidationFailed
from tally.notifications import service, smtp_hosts
from tally.notifications.mail_log import DirectEmailKind, record_attempt
from tally.notifications.message import POLICY, message_id
from tally.notifications.orm import EmailMessage, EmailStatus
from tally.notifications.transport import MailError, SmtpTransport

TEST_TIMEOUT_SECONDS = 10.0


class PreparedTest:
    """A test message, its mail-log row and the transport to the merchant's server."""

    def __init__(self, email_id: int, message: MimeMessage, transport: SmtpTransport) -> None:
        self.email_id = email_id
        self.message = message
        self.transport = transport


@dataclass(frozen=True)
class TestOutcome:
    """Whether the server took the message, and its answer or the reason it did not."""

    __test__ = False  # not a pytest class
    sent: bool
    answer: str


def prepare_test(
    session: Session, *, settings: Settings, merchant_id: int, recipient: str
) -> PreparedTest:
    """Build a test message to `recipient` over the merchant's saved settings, and log it."""
    own = service.get_mail_settings(session, merchant_id=merchant_id)
    if own is None:
        raise ValidationFailed(
            "save the SMTP settings first: the test uses the saved settings",
            [FieldProblem("host", "no SMTP server is saved")],
        )
    # DNS answers change: the host is checked again before Tally connects to it.
    reason = smtp_hosts.host_problem(own.host, own.port, development=settings.is_development)
    if reason is not None:
        raise ValidationFailed(f"the SMTP host {reason}", [FieldProblem("host", reason, own.host)])
    try:
        transport = service.own_transport(settings, own, timeout=TEST_TIMEOUT_SECONDS)
    except service.PasswordUnreadable as error:
        raise ValidationFailed(str(error), [FieldProblem("password", "type it again")]) from error
    name, address = parseaddr(own.sender)
    domain = address.rpartition("@")[2] or "localhost"
    message = MimeMessage(policy=POLICY)
    message["From"] = formataddr((name, address))
    message["To"] = recipient
    message["Subject"] = "Tally test email"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id(f"{merchant_id}:smtp-test:{uuid.uuid4().hex}", domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        "This is a test email from Tally, sent through the SMTP settings of your loyalty "
        f"program ({own.host}:{own.port}). If you can read it, the settings work.\n"
    )
    row = record_attempt(
        session,
        merchant_id=merchant_id,
        dedupe_key=f"smtp-test:{uuid.uuid4().hex}",
        kind=DirectEmailKind.SMTP_TEST,
        recipient=recipient,
        subject=str(message["Subject"]),
        message_id=str(message["Message-ID"]),
    )
    return PreparedTest(row.id, message, transport)


def _explain(error: MailError, transport: SmtpTransport) -> str:
    cause = error.__cause__
    where = f"{transport.host}:{transport.port}"
    if isinstance(cause, smtplib.SMTPAuthenticationError):
        return f"the server refused the user name or password: {error}"
    if isinstance(cause, ConnectionRefusedError):
        return f"connection refused: nothing accepts connections on {where}"
    if isinstance(cause, socket.timeout | TimeoutError):
        return f"no answer from {where} within {transport.timeout:g} seconds"
    if isinstance(cause, ssl.SSLError | ssl.CertificateError):
        return f"TLS failed with {where} (check the security setting and the port): {error}"
    if isinstance(cause, smtplib.SMTPNotSupportedError):
        return f"the server does not support what the settings ask for: {error}"
    if isinstance(cause, socket.gaierror):
        return f"{transport.host} does not resolve: {error}"
    return str(error)


def run_test(prepared: PreparedTest) -> TestOutcome:
    """Send the test message now and say what the server answered (no database work)."""
    try:
        answer = prepared.transport.send_with_reply(prepared.message)
    except MailError as error:
        return TestOutcome(False, _explain(error, prepared.transport))
    return TestOutcome(True, answer or "the server accepted the message")


def log_test(session: Session, *, merchant_id: int, email_id: int, outcome: TestOutcome) -> None:
    """Record the outcome of a test on its mail-log row."""
    session.execute(
        update(EmailMessage)
        .where(EmailMessage.merchant_id == merchant_id, EmailMessage.id == email_id)
        .values(
            status=EmailStatus.SENT if outcome.sent else EmailStatus.FAILED,
            sent_at=utcnow() if outcome.sent else None,
            last_error=None if outcome.sent else outcome.answer,
        )
    )
