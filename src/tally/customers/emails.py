"""One canonical form of an email address, for every way an address enters Tally.

The API, the admin, CSV imports and store webhooks all key customers by email, so they must
agree on when two spellings are one person. A zero-width space pasted from a spreadsheet, or
fullwidth letters typed on a phone, would otherwise make a second customer and a second
sign-up bonus. The canonical form is: invisible format characters removed, Unicode NFKC
(fullwidth and compatibility forms folded to their plain letters), trimmed, lower-cased, with
a domain of well-formed labels.
"""

from __future__ import annotations

import re
import unicodedata

MAX_EMAIL_LENGTH = 254

# RFC 5322's dot-atom characters before the @, then host-name labels and a non-numeric TLD.
_ASCII_EMAIL = re.compile(
    r"[!#-'*+\-./-9=?^-~]+@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]",
    re.ASCII,
)
_LOCAL_FORBIDDEN = frozenset('@ "(),:;<>[\\]')
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.ASCII)


def _domain_is_valid(domain: str) -> bool:
    labels = domain.split(".")
    if len(labels) < 2:
        return False
    try:
        ascii_labels = domain.encode("idna").decode("ascii").split(".")
    except UnicodeError:
        return False
    if not all(_LABEL.fullmatch(label) for label in ascii_labels):
        return False
    return not ascii_labels[-1].isdigit()


def _clean(raw: str) -> str:
    # Cf is the category of zero-width spaces and joiners, soft hyphens and byte-order marks:
    # characters nobody can see, so nobody can mean them as part of an address.
    text = "".join(c for c in raw if unicodedata.category(c) != "Cf")
    return unicodedata.normalize("NFKC", text).strip().lower()


def canonical_email(raw: str) -> str | None:
    """The canonical form of `raw`, or None when it is not an email address."""
    # Nearly every address is ASCII already: that is the fast path an import takes per row.
    email = raw.strip().lower() if raw.isascii() else _clean(raw)
    if len(email) > MAX_EMAIL_LENGTH:
        return None
    if email.isascii():
        return email if _ASCII_EMAIL.fullmatch(email) is not None else None
    local, sep, domain = email.rpartition("@")
    if not sep or not local:
        return None
    if any(c in _LOCAL_FORBIDDEN or c.isspace() or not c.isprintable() for c in local):
        return None
    return email if _domain_is_valid(domain) else None


def email_problem(raw: str) -> str:
    """What an invalid email should have looked like (for error messages)."""
    if not raw.strip():
        return "an email address (required)"
    if len(raw.strip()) > MAX_EMAIL_LENGTH:
        return f"an email address of at most {MAX_EMAIL_LENGTH} characters"
    return "an email address like name@example.com (one @, a dot in the domain, no spaces)"
