"""Build the MIME message for one rendered notification email."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime
from typing import Any

from tally.notifications.templates import RenderedEmail

_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")

_UNFOLDED_HEADERS = frozenset({"list-unsubscribe"})
_MAX_HEADER_LINE = 998  # RFC 5322 section 2.1.1


class _NotificationPolicy(EmailPolicy):
    """The SMTP policy, except that List-Unsubscribe is written on one line as given.

    The standard folder turns a URL longer than a line (78 characters) into an RFC 2047 encoded
    word, which mail clients do not decode in List-Unsubscribe, so the link would stop working.
    """

    def fold(self, name: str, value: Any) -> str:
        if name.lower() in _UNFOLDED_HEADERS:
            return f"{name}: {value}{self.linesep}"
        folded: str = super().fold(name, value)
        return folded

    def fold_binary(self, name: str, value: Any) -> bytes:
        if name.lower() in _UNFOLDED_HEADERS:
            return self.fold(name, value).encode("ascii")
        return super().fold_binary(name, value)


# 7bit makes non-ASCII bodies quoted-printable or base64, so no server needs 8BITMIME.
POLICY = _NotificationPolicy(linesep="\r\n", cte_type="7bit")


def message_id(message_key: str, domain: str) -> str:
    """A Message-ID that depends only on the key, so a retried send repeats the same one."""
    if not message_key:
        raise ValueError("message_key must not be empty")
    if not _DOMAIN.fullmatch(domain):
        raise ValueError(f"not a valid Message-ID domain: {domain!r}")
    digest = hashlib.sha256(message_key.encode("utf-8")).hexdigest()[:32]
    return f"<tally.{digest}@{domain}>"


def build_message(
    *,
    sender: str,
    recipient: str,
    rendered: RenderedEmail,
    unsubscribe_url: str,
    message_id_domain: str,
    message_key: str,
    sent_at: datetime | None = None,
) -> EmailMessage:
    """A multipart/alternative message (text, then HTML) with RFC 8058 one-click unsubscribe."""
    when = sent_at if sent_at is not None else datetime.now(UTC)
    if when.tzinfo is None:
        raise ValueError("sent_at must be timezone-aware")
    if not unsubscribe_url.isascii() or any(character.isspace() for character in unsubscribe_url):
        raise ValueError("unsubscribe_url must be ASCII without whitespace")
    if len("List-Unsubscribe: <>") + len(unsubscribe_url) > _MAX_HEADER_LINE:
        raise ValueError("unsubscribe_url is too long for a header line")
    message = EmailMessage(policy=POLICY)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(when.astimezone(UTC))
    message["Message-ID"] = message_id(message_key, message_id_domain)
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # Tells mail servers not to answer with out-of-office replies (RFC 3834).
    message["Auto-Submitted"] = "auto-generated"
    # Clients show the last alternative they can display, so the richer HTML part goes last.
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message
