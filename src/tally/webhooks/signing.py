"""Webhook signatures: `Tally-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">`.

The timestamp is part of what is signed, so a receiver that refuses old timestamps (five
minutes by default, ``REPLAY_WINDOW_SECONDS``) cannot be fed a captured delivery later. While a
rotated secret is still valid the header carries one ``v1`` per secret; a receiver accepts the
delivery when any of them matches its secret.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

SIGNATURE_HEADER = "Tally-Signature"
REPLAY_WINDOW_SECONDS = 300


class SignatureError(ValueError):
    """A signature header that is missing, malformed, stale, or signed with another secret."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"{timestamp}.{body}"`` under the secret."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(secrets: Sequence[str], body: bytes, *, timestamp: int | None = None) -> str:
    """The header value for a body, signed with each of the secrets (newest first)."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    moment = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={moment}", *(f"v1={signature(s, moment, body)}" for s in secrets)])


def parse(header: str) -> tuple[int, list[str]]:
    """The timestamp and the v1 signatures of a header (other schemes are ignored)."""
    timestamp: int | None = None
    found: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1" and value:
            found.append(value)
    if timestamp is None or not found:
        raise SignatureError("the signature header has no t= timestamp or no v1= signature")
    return timestamp, found


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance_seconds: int = REPLAY_WINDOW_SECONDS,
    now: float | None = None,
) -> int:
    """Check a delivery as a receiver would; returns its timestamp or raises SignatureError."""
    timestamp, candidates = parse(header)
    moment = time.time() if now is None else now
    if abs(moment - timestamp) > tolerance_seconds:
        raise SignatureError("the signature timestamp is outside the replay window")
    expected = signature(secret, timestamp, body)
    # Every candidate is compared, in constant time, so timing tells nothing about the secret.
    matches = [hmac.compare_digest(expected, candidate) for candidate in candidates]
    if not any(matches):
        raise SignatureError("no signature matches the secret")
    return timestamp
