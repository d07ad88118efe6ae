"""Admin sign-in plumbing: the signed session cookie, CSRF tokens and the login rate limit.

The session is a cookie, not a server-side row: ``base64url(json payload) "." base64url(HMAC)``,
signed with HMAC-SHA256 under a key derived from ``settings.secret_key`` (so the same secret
yields unrelated keys for other uses). The payload names the admin user, its merchant, the
session's CSRF token, when it was issued, and a fingerprint of the user's password hash: a
password change ends every session of that user. Signing out clears the cookie in the browser;
a copied cookie stays valid until it expires (``SESSION_MAX_AGE``), which is why it is HttpOnly,
SameSite=Lax, Secure on https, and short-lived.

Before sign-in the cookie carries only a CSRF token (``user_id`` None), so the login form is
protected too; signing in issues a new cookie with a new token (no session fixation).

The login rate limit lives in the process's memory: with several web processes each counts on
its own, and a restart forgets it. That bounds online password guessing per process without a
table; a deployment that needs a global limit puts one in front (proxy or WAF).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

SESSION_COOKIE = "tally_admin"
SESSION_MAX_AGE = 12 * 60 * 60
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

_SESSION_KEY_INFO = b"tally/admin/session-cookie/v1"
_PASSWORD_FINGERPRINT_INFO = b"tally/admin/password-fingerprint/v1"
_PAYLOAD_VERSION = 1


def derive_key(secret: str, info: bytes) -> bytes:
    """A 32-byte key for one purpose, derived from the application secret."""
    return hmac.new(secret.encode(), info, hashlib.sha256).digest()


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_csrf_token() -> str:
    """A fresh random CSRF token."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class AdminSession:
    """What the session cookie says: who (if anyone) is signed in, and the CSRF token."""

    csrf_token: str
    issued_at: int
    user_id: int | None = None
    merchant_id: int | None = None
    password_fingerprint: str | None = None

    @property
    def signed_in(self) -> bool:
        """True when the cookie belongs to a signed-in admin user."""
        return self.user_id is not None and self.merchant_id is not None


class SessionSigner:
    """Signs and checks session cookies under a key derived from the application secret."""

    def __init__(
        self,
        secret: str,
        *,
        max_age: int = SESSION_MAX_AGE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = derive_key(secret, _SESSION_KEY_INFO)
        self._fingerprint_key = derive_key(secret, _PASSWORD_FINGERPRINT_INFO)
        self.max_age = max_age
        self._clock = clock

    def password_fingerprint(self, password_hash: str) -> str:
        """A short keyed digest of a password hash; it changes when the password does."""
        digest = hmac.new(self._fingerprint_key, password_hash.encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def anonymous(self) -> AdminSession:
        """A session before sign-in: only a CSRF token for the login form."""
        return AdminSession(csrf_token=new_csrf_token(), issued_at=int(self._clock()))

    def signed_in(self, *, user_id: int, merchant_id: int, password_hash: str) -> AdminSession:
        """A new session for an admin user who just proved its password (with a new token)."""
        return AdminSession(
            csrf_token=new_csrf_token(),
            issued_at=int(self._clock()),
            user_id=user_id,
            merchant_id=merchant_id,
            password_fingerprint=self.password_fingerprint(password_hash),
        )

    def _signature(self, body: str) -> str:
        return _b64encode(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())

    def dumps(self, session: AdminSession) -> str:
        """The cookie value for a session."""
        payload = {
            "v": _PAYLOAD_VERSION,
            "c": session.csrf_token,
            "t": session.issued_at,
            "u": session.user_id,
            "m": session.merchant_id,
            "p": session.password_fingerprint,
        }
        body = _b64encode(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._signature(body)}"

    def loads(self, value: str | None) -> AdminSession | None:
        """The session in a cookie value; None when missing, tampered with, or expired."""
        if not value or value.count(".") != 1:
            return None
        body, signature = value.split(".")
        if not hmac.compare_digest(signature, self._signature(body)):
            return None
        try:
            payload = json.loads(_b64decode(body))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(payload, dict) or payload.get("v") != _PAYLOAD_VERSION:
            return None
        issued_at, csrf = payload.get("t"), payload.get("c")
        if not isinstance(issued_at, int) or not isinstance(csrf, str) or not csrf:
            return None
        age = self._clock() - issued_at
        if age > self.max_age or age < -60:
            return None
        user_id, merchant_id, fingerprint = payload.get("u"), payload.get("m"), payload.get("p")
        if not all(isinstance(v, int | type(None)) for v in (user_id, merchant_id)):
            return None
        return AdminSession(
            csrf_token=csrf,
            issued_at=issued_at,
            user_id=user_id,
            merchant_id=merchant_id,
            password_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
        )


def csrf_matches(expected: str, given: str | None) -> bool:
    """Whether a submitted CSRF token is the session's (constant-time)."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


class LoginRateLimiter:
    """At most ``max_failures`` failed sign-ins per (email, client address) per ``window``.

    In memory, per process (see the module docstring). A successful sign-in clears the count.
    """

    def __init__(
        self,
        *,
        max_failures: int = 5,
        window_seconds: float = 15 * 60,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(email: str, address: str) -> tuple[str, str]:
        return email.strip().lower(), address

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and now - times[0] >= self.window_seconds:
            times.popleft()
        if not times:
            self._failures.pop(key, None)
        return times

    def retry_after(self, email: str, address: str) -> float | None:
        """Seconds until this pair may try again, or None when it may try now."""
        now = self._clock()
        with self._lock:
            times = self._recent(self._key(email, address), now)
            if len(times) < self.max_failures:
                return None
            return max(1.0, self.window_seconds - (now - times[0]))

    def record_failure(self, email: str, address: str) -> None:
        """Count one failed sign-in."""
        now = self._clock()
        key = self._key(email, address)
        with self._lock:
            times = self._recent(key, now)
            times.append(now)
            self._failures[key] = times
            if len(self._failures) > 100_000:
                # Bound the memory an attacker can make us hold: forget the stalest keys.
                for stale in list(self._failures)[:10_000]:
                    self._failures.pop(stale, None)

    def reset(self, email: str, address: str) -> None:
        """Forget the failures of this pair (after a successful sign-in)."""
        with self._lock:
            self._failures.pop(self._key(email, address), None)
