"""Signed one-click unsubscribe tokens.

A token is `<merchant_id>.<customer_id>.<signature>`, where the signature is an HMAC-SHA256 of
the two ids under the application secret, base64url-encoded without padding. The ids are in
the clear (they are not secret, and seeing them helps support staff); the signature stops anyone
from unsubscribing a customer whose link they were not sent.

Tokens never expire: an unsubscribe link in an old email must keep working (RFC 8058 and the
mailbox providers' bulk-sender rules expect it). Rotating the secret key invalidates them all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

# Domain separation: a signature made for another purpose with the same secret never verifies here.
_PURPOSE = b"tally/unsubscribe/v1\x00"
_MAX_ID = 2**63 - 1  # BIGINT primary keys
# ids without leading zeros (one spelling per id) and the 43-character base64url signature.
_TOKEN = re.compile(r"(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})\.([A-Za-z0-9_-]{43})")


class InvalidToken(ValueError):
    """An unsubscribe token that is malformed or whose signature does not match."""


def _secret_bytes(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the secret key must not be empty")
    return key


def _signature(key: bytes, merchant_part: str, customer_part: str) -> str:
    message = _PURPOSE + f"{merchant_part}.{customer_part}".encode("ascii")
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def make_token(secret: str | bytes, merchant_id: int, customer_id: int) -> str:
    """A URL-safe token naming the customer, signed with the secret."""
    if not (0 <= merchant_id <= _MAX_ID and 0 <= customer_id <= _MAX_ID):
        raise ValueError("merchant and customer ids must be between 0 and 2**63 - 1")
    merchant_part, customer_part = str(merchant_id), str(customer_id)
    signature = _signature(_secret_bytes(secret), merchant_part, customer_part)
    return f"{merchant_part}.{customer_part}.{signature}"


def read_token(secret: str | bytes, token: str) -> tuple[int, int]:
    """The (merchant_id, customer_id) a token names; raise `InvalidToken` if it was altered."""
    key = _secret_bytes(secret)
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise InvalidToken("malformed unsubscribe token")
    merchant_part, customer_part, signature = match.groups()
    # Comparing the encoded form (not decoded bytes) also refuses non-canonical base64 spellings.
    expected = _signature(key, merchant_part, customer_part)
    if not hmac.compare_digest(expected, signature):
        raise InvalidToken("unsubscribe token signature does not match")
    return int(merchant_part), int(customer_part)


def unsubscribe_url(base_url: str, token: str) -> str:
    """The public one-click unsubscribe link for a token."""
    return f"{base_url.rstrip('/')}/u/{token}"
