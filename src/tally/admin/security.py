"""Admin sign-in plumbing: the signed session cookie, CSRF tokens and the login rate limit.

The session is a cookie, not a server-side row: ``base64url(json payload) "." base64url(HMAC)``,
signed with HMAC-SHA256 under a key derived from ``settings.secret_key`` (so the same secret
yields unrelated keys for other uses). The payload names the admin user, its merchant, the
session's CSRF token, when it was issued, a fingerprint of the user's password hash and the
user's ``session_version``. Every request compares the last two with the user's row, so a
password change, a sign-out (which increments ``session_version``) or removing the user ends
every session of that user, copied cookies included, without a table of sessions. The cookie is
still HttpOnly, SameSite=Lax, Secure on https, and short-lived (``SESSION_MAX_AGE``).

Before sign-in the cookie carries only a CSRF token (``user_id`` None), so the login form is
protected too; signing in issues a new cookie with a new token (no session fixation).

The login rate limit counts failures per client address and per account (email), each on its
own: the address limit stops one client spraying many emails, the email limit stops many
addresses guessing one account. It lives in the process's memory: with several web processes
each counts on its own, and a restart forgets it. That bounds online password guessing per
process without a table; a deployment that needs a global limit puts one in front (proxy or WAF).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
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
# 2 added the session version; older cookies are refused (their holders sign in again).
_PAYLOAD_VERSION = 2


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
    session_version: int | None = None

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

    def signed_in(
        self, *, user_id: int, merchant_id: int, password_hash: str, session_version: int
    ) -> AdminSession:
        """A new session for an admin user who just proved its password (with a new token)."""
        return AdminSession(
            csrf_token=new_csrf_token(),
            issued_at=int(self._clock()),
            user_id=user_id,
            merchant_id=merchant_id,
            password_fingerprint=self.password_fingerprint(password_hash),
            session_version=session_version,
        )

    def matches_user(
        self,
        session: AdminSession,
        *,
        user_id: int,
        merchant_id: int,
        password_hash: str,
        session_version: int,
    ) -> bool:
        """Whether a signed-in session still belongs to this user row as it is now."""
        fingerprint = self.password_fingerprint(password_hash)
        return (
            session.user_id == user_id
            and session.merchant_id == merchant_id
            and session.session_version == session_version
            and session.password_fingerprint is not None
            and hmac.compare_digest(session.password_fingerprint, fingerprint)
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
            "s": session.session_version,
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
        version = payload.get("s")
        if not all(isinstance(v, int | type(None)) for v in (user_id, merchant_id, version)):
            return None
        return AdminSession(
            csrf_token=csrf,
            issued_at=issued_at,
            user_id=user_id,
            merchant_id=merchant_id,
            password_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
            session_version=version,
        )


def csrf_matches(expected: str, given: str | None) -> bool:
    """Whether a submitted CSRF token is the session's (constant-time)."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


def limit_key_for_address(address: str) -> str:
    """The key an address is counted under: itself, or its /64 network for IPv6.

    One IPv6 host usually holds a whole /64, so counting single addresses would let it rotate
    through billions of them.
    """
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


class LoginRateLimiter:
    """Failed sign-ins counted per client address and per email, each against its own limit.

    ``max_per_address`` failures per ``window_seconds`` from one address, whatever the emails
    (password spraying), and ``max_per_email`` failures for one email, whatever the addresses
    (guessing one account from many addresses). The email limit lets anyone lock an account out
    of password sign-in for one window by failing on purpose; that is the price of a bound on
    guesses that address rotation cannot lift, and the window is short.

    ``try_attempt`` is called before the password hash is checked and counts the attempt as a
    failure at once, so a flood of concurrent requests is refused before any of them spends
    argon2 time; ``succeeded`` takes the count back for a right password. In memory, per
    process (see the module docstring).
    """

    def __init__(
        self,
        *,
        max_per_address: int = 10,
        max_per_email: int = 5,
        window_seconds: float = 15 * 60,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_per_address = max_per_address
        self.max_per_email = max_per_email
        self.window_seconds = window_seconds
        self._clock = clock
        self._by_address: dict[str, deque[float]] = {}
        self._by_email: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _email_key(email: str) -> str:
        return email.strip().lower()

    def _recent(self, table: dict[str, deque[float]], key: str, now: float) -> deque[float]:
        times = table.get(key, deque())
        while times and now - times[0] >= self.window_seconds:
            times.popleft()
        if not times:
            table.pop(key, None)
        return times

    def _wait(self, times: deque[float], limit: int, now: float) -> float | None:
        if len(times) < limit:
            return None
        # The attempt may go once enough of the oldest failures have left the window.
        freed_at = times[len(times) - limit] + self.window_seconds
        return max(1.0, freed_at - now)

    def _waits(self, email: str, address: str, now: float) -> tuple[float | None, float | None]:
        by_address = self._recent(self._by_address, limit_key_for_address(address), now)
        by_email = self._recent(self._by_email, self._email_key(email), now)
        return (
            self._wait(by_address, self.max_per_address, now),
            self._wait(by_email, self.max_per_email, now),
        )

    def retry_after(self, email: str, address: str) -> float | None:
        """Seconds until this email may be tried from this address, or None when it may now."""
        now = self._clock()
        with self._lock:
            waits = [w for w in self._waits(email, address, now) if w is not None]
        return max(waits) if waits else None

    def try_attempt(self, email: str, address: str) -> float | None:
        """Count a sign-in attempt as failed, unless a limit is reached: then the seconds to wait.

        Call it before checking the password; call ``succeeded`` when the password was right.
        """
        now = self._clock()
        with self._lock:
            waits = [w for w in self._waits(email, address, now) if w is not None]
            if waits:
                return max(waits)
            self._append(self._by_address, limit_key_for_address(address), now)
            self._append(self._by_email, self._email_key(email), now)
        return None

    def _append(self, table: dict[str, deque[float]], key: str, now: float) -> None:
        times = table.setdefault(key, deque())
        times.append(now)
        if len(table) > 100_000:
            # Bound the memory an attacker can make us hold: forget the stalest keys.
            for stale in list(table)[:10_000]:
                table.pop(stale, None)

    def succeeded(self, email: str, address: str) -> None:
        """Take back the attempt ``try_attempt`` counted, and clear the email's failures.

        The address keeps its earlier failures: otherwise anyone with one working account could
        sign in between guesses at other accounts and never reach the address limit.
        """
        now = self._clock()
        with self._lock:
            self._by_email.pop(self._email_key(email), None)
            times = self._recent(self._by_address, limit_key_for_address(address), now)
            if times:
                times.pop()
