"""Who the shopper is: a signature the store computed, checked without any I/O.

Two forms, both made with the widget's secret:

- headers: the store's customer id, the email, and hex HMAC-SHA256(secret, customer id + email),
  exactly what Shopify's Liquid `{{ customer.id | append: customer.email | hmac_sha256: secret }}`
  gives, so no Tally code has to run on the store;
- a bearer token: an HS256 JWT minted by a headless store's backend, `sub` the customer id,
  an `email` claim, and `exp` at most 15 minutes after `iat`.

Every failure is the same `None`: the caller answers one 401 whatever went wrong, so a prober
learns nothing about which part (or which customer) was wrong.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import jwt

MAX_TOKEN_LIFETIME_SECONDS = 15 * 60
# Clocks of the store and of Tally drift a little; a token "issued" slightly in the future or
# just expired by that much is still the store's.
CLOCK_SKEW_SECONDS = 30
MAX_CUSTOMER_ID = 100
MAX_EMAIL = 320


@dataclass(frozen=True)
class ShopperClaim:
    """What a valid signature vouches for: the store's customer id and, usually, the email."""

    customer_id: str
    email: str | None


def hmac_signature(secret: str, customer_id: str, email: str) -> str:
    """The hex HMAC-SHA256 a store sends for this customer (the Liquid filter's output)."""
    message = (customer_id + email).encode("utf-8")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _plausible(customer_id: str, email: str | None) -> bool:
    return 0 < len(customer_id) <= MAX_CUSTOMER_ID and (email is None or len(email) <= MAX_EMAIL)


def verify_hmac(
    secrets: Sequence[str], customer_id: str, email: str, signature: str
) -> ShopperClaim | None:
    """The claim when `signature` is the HMAC of customer id + email under one of the secrets."""
    if not _plausible(customer_id, email) or not email:
        return None
    given = signature.strip().lower().encode("ascii", "replace")
    # Every secret is compared, so the time taken does not tell which one matched.
    matched = False
    for secret in secrets:
        expected = hmac_signature(secret, customer_id, email).encode("ascii")
        matched |= hmac.compare_digest(expected, given)
    return ShopperClaim(customer_id, email) if matched else None


def _decode(token: str, secret: str, now: datetime) -> dict[str, object] | None:
    try:
        claims: dict[str, object] = jwt.decode(
            token,
            secret,
            # Only HS256: never "none", never an algorithm the token itself picks.
            algorithms=["HS256"],
            options={"require": ["exp", "iat", "sub"], "verify_iat": False},
            leeway=CLOCK_SKEW_SECONDS,
        )
    except jwt.PyJWTError:
        return None
    exp, iat = claims["exp"], claims["iat"]
    if not isinstance(exp, int | float) or not isinstance(iat, int | float):
        return None
    if exp - iat > MAX_TOKEN_LIFETIME_SECONDS or iat > now.timestamp() + CLOCK_SKEW_SECONDS:
        return None
    return claims


def verify_token(secrets: Sequence[str], token: str, *, now: datetime) -> ShopperClaim | None:
    """The claim of a valid HS256 JWT under one of the secrets, else None."""
    if len(token) > 4096:
        return None
    for secret in secrets:
        claims = _decode(token, secret, now)
        if claims is None:
            continue
        subject, email = claims.get("sub"), claims.get("email")
        if not isinstance(subject, str) or not (email is None or isinstance(email, str)):
            return None
        return ShopperClaim(subject, email) if _plausible(subject, email) else None
    return None
