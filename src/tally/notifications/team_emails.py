"""Emails to a merchant's team: invitations and password resets, each with a set-password link.

A `PasswordLinkRequested` event (written by `merchants.team` in the transaction that invited
the member or took the reset request) becomes one outbox message; this handler sends it the way
customer emails go (the merchant's SMTP server, else the global one, else `.eml` files), under
the same send rate limit. The link is minted here, at send time, so no token is ever stored in
the outbox or anywhere else. The worker writes each one to the mail log when it first tries
it (`mail_log.record_attempt`, keyed by the outbox message) and records the outcome there as
for customers' emails (`handlers.deliver`); the attempts are also kept with the outbox message.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from sqlalchemy import select

from tally.db.engine import unit_of_work
from tally.merchants import team
from tally.merchants.orm import AdminUser, Merchant
from tally.notifications import service
from tally.notifications.handlers import deliver
from tally.notifications.mail_log import DirectEmailKind, record_attempt
from tally.notifications.message import POLICY, message_id
from tally.outbox.registry import HandlerContext, Registry

HANDLER_NAME = "notifications.send_password_link"
_KINDS = {
    team.LinkPurpose.INVITE: DirectEmailKind.TEAM_INVITATION,
    team.LinkPurpose.RESET: DirectEmailKind.TEAM_PASSWORD_RESET,
}


def _texts(
    purpose: team.LinkPurpose, *, store: str, email: str, role: str, url: str, sign_in: str
) -> tuple[str, list[str]]:
    if purpose is team.LinkPurpose.INVITE:
        return f"You are invited to the loyalty admin of {store}", [
            f"You have been invited to the loyalty program admin (Tally) of {store} as {role}.",
            "Choose your password with this link. It works once, for 7 days:",
            url,
            f"Then sign in at {sign_in} as {email}.",
        ]
    return f"Reset your password for the loyalty admin of {store}", [
        f"Someone asked to reset the password of {email} for the loyalty program admin (Tally) "
        f"of {store}.",
        "Choose a new password with this link. It works once, for 1 hour:",
        url,
        "If you did not ask for this, ignore this email: your password stays as it is.",
    ]


def build_link_email(
    *,
    sender: str,
    recipient: str,
    subject: str,
    paragraphs: list[str],
    link: str,
    message_id_domain: str,
    message_key: str,
) -> EmailMessage:
    """A text and HTML message with the link (no unsubscribe: it is not a marketing email)."""
    message = EmailMessage(policy=POLICY)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id(message_key, message_id_domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content("\n\n".join(paragraphs) + "\n")
    parts = []
    for paragraph in paragraphs:
        escaped = html.escape(paragraph)
        if paragraph == link:
            escaped = f'<a href="{escaped}">Set your password</a>'
        parts.append(f"<p>{escaped}</p>")
    message.add_alternative(
        "<!doctype html><html><body>" + "".join(parts) + "</body></html>", subtype="html"
    )
    return message


def send_password_link(context: HandlerContext, payload: dict[str, Any]) -> None:
    """Email a member a fresh set-password link (nothing when the member is gone)."""
    merchant_id = int(payload["merchant_id"])
    user_id = int(payload["user_id"])
    purpose = team.LinkPurpose(payload["purpose"])
    settings = context.settings
    with unit_of_work(context.session_factory, merchant_id=merchant_id) as session:
        user = session.scalar(
            select(AdminUser).where(AdminUser.id == user_id, AdminUser.merchant_id == merchant_id)
        )
        merchant = session.get(Merchant, merchant_id)
        if user is None or merchant is None:
            return  # removed meanwhile
        if purpose is team.LinkPurpose.INVITE and not team.is_invited(user):
            return  # already set a password with the link shown on the Team page
        link = team.issue_link(settings, user, purpose)
        delivery = service.delivery_for(session, settings=settings, merchant_id=merchant_id)
        subject, paragraphs = _texts(
            purpose,
            store=merchant.name,
            email=user.email,
            role=user.role,
            url=link.url(settings),
            sign_in=f"{settings.public_base_url}/admin/login",
        )
        message = build_link_email(
            sender=delivery.sender,
            recipient=user.email,
            subject=subject,
            paragraphs=paragraphs,
            link=link.url(settings),
            message_id_domain=delivery.message_id_domain,
            message_key=f"{merchant_id}:password-link:{context.message_id}",
        )
        email_id = record_attempt(
            session,
            merchant_id=merchant_id,
            dedupe_key=f"password-link:{context.message_id}",
            kind=_KINDS[purpose],
            recipient=user.email,
            subject=subject,
            message_id=str(message["Message-ID"]),
        ).id
    deliver(context, email_id, delivery.transport, message, delivery.file_directory is None)


def register(registry: Registry) -> None:
    """Send team emails for `PasswordLinkRequested`."""
    registry.subscribe(team.PasswordLinkRequested.event_type, HANDLER_NAME, send_password_link)
