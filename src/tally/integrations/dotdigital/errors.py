"""Dotdigital's failures as exception types the sync can act on without reading status codes.

- ``DotdigitalRetryable`` (5xx, timeouts, connection errors) and its subclass
  ``DotdigitalRateLimited`` (429, or the flat-rate scheme's 400 ``ERROR_APIUSAGE_EXCEEDED``, with
  the seconds until the limit resets): try again later. Its subclass ``DotdigitalUnanswered``
  (timeout, dropped connection) means no answer came: a write may still have been applied.
- ``DotdigitalAuthError`` (401) and ``DotdigitalWrongRegion`` (403): the connection settings need
  attention; retrying will not help until they change.
- ``DotdigitalRejected`` (other 4xx, with Dotdigital's error code, message and details) and its
  subclass ``DotdigitalFieldExists``: terminal for this request.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

FIELD_EXISTS_CODE = "ERROR_NON_UNIQUE_DATAFIELD"
# The deprecated flat-rate scheme (about 2,000 calls an hour) throttles with a 400 and this
# code instead of a 429.
API_USAGE_EXCEEDED_CODE = "ERROR_APIUSAGE_EXCEEDED"
# No Dotdigital limit resets later than an hour from now (the flat scheme counts per hour, the
# tiered one per minute); a longer reset is a misread header and would pause a merchant for
# that long.
MAX_RESET_SECONDS = 3600.0
# A reset this large is an epoch time (one copy of the docs says so), not a number of seconds.
_EPOCH_THRESHOLD = 1_000_000_000.0

_V2_CODE_RE = re.compile(r"\b(ERROR_[A-Z0-9_]+)\b")


# --------------------------------------------------------------------------- errors


class DotdigitalError(Exception):
    """Any failure talking to Dotdigital."""

    retryable = False
    # The HTTP status Dotdigital answered; None when it never answered (timeout, connection).
    status: int | None = None

    @property
    def status_code(self) -> int | None:
        """The answer's HTTP status, under the name the outbox worker records with an attempt."""
        return self.status


class DotdigitalRetryable(DotdigitalError):
    """A temporary failure (5xx, timeout, connection error); the same call may succeed later."""

    retryable = True

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DotdigitalUnanswered(DotdigitalRetryable):
    """No answer came (timeout, dropped connection): the request may or may not have arrived."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=None)


class DotdigitalRateLimited(DotdigitalRetryable):
    """Over the rate limit, or too many imports running; wait ``reset_seconds`` if known."""

    def __init__(
        self,
        message: str,
        *,
        reset_seconds: float | None,
        limit: int | None = None,
        scope: str | None = None,
        code: str | None = None,
        status: int = 429,
    ) -> None:
        super().__init__(message, status=status)
        self.reset_seconds = reset_seconds
        self.limit = limit
        self.scope = scope
        self.code = code


class DotdigitalAuthError(DotdigitalError):
    """401: the API user's email or password is wrong."""

    status = 401


class DotdigitalWrongRegion(DotdigitalError):
    """403: the account lives in another region; ask account-info for its ApiEndpoint."""

    status = 403


class DotdigitalRejected(DotdigitalError):
    """A terminal 4xx: Dotdigital refused this request and repeating it will not help."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        details: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        prefix = f"{status} {code}" if code else str(status)
        super().__init__(f"{prefix}: {message}" if message else prefix)
        self.status = status
        self.code = code
        self.message = message
        self.details = [dict(detail) for detail in details]


class DotdigitalFieldExists(DotdigitalRejected):
    """Creating a data field that already exists (ERROR_NON_UNIQUE_DATAFIELD)."""


# --------------------------------------------------------------------------- parsing


def _error_parts(body: Any, text: str) -> tuple[str | None, str, list[dict[str, Any]]]:
    """Code, message and details of a v2 (``message``) or v3 (``errorCode``) error body."""
    if isinstance(body, dict):
        if isinstance(body.get("errorCode"), str):
            details = body.get("details")
            items = details if isinstance(details, list) else []
            parsed = [detail for detail in items if isinstance(detail, dict)]
            return body["errorCode"], str(body.get("description") or ""), parsed
        message = body.get("message") or body.get("Message")
        if isinstance(message, str):
            match = _V2_CODE_RE.search(message)
            if match is None:
                return None, message, []
            # "Field already exists. ERROR_X" → "Field already exists"; "Error: ERROR_X" → "Error"
            reason = (message[: match.start()] + message[match.end() :]).strip(" .:")
            return match.group(1), reason or match.group(1), []
    return None, text.strip()[:500], []


def _header_number(headers: httpx.Headers, name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def reset_seconds(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds until the limit resets, from ``x-ratelimit-reset``, within 0..MAX_RESET_SECONDS.

    The official SDK reads the header as seconds; a value that can only be an epoch time is
    turned into the seconds left until then.
    """
    number = _header_number(headers, "x-ratelimit-reset")
    if number is None:
        return None
    if number >= _EPOCH_THRESHOLD:
        number = max(0.0, number - (time.time() if now is None else now))
    return min(number, MAX_RESET_SECONDS)


def error_from_response(response: httpx.Response) -> DotdigitalError:
    """The exception that describes a non-success response."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    code, message, details = _error_parts(body, response.text)
    status = response.status_code
    if status == 401:
        return DotdigitalAuthError(message or "Dotdigital refused the API user's credentials")
    if status == 403:
        return DotdigitalWrongRegion(message or "the account is hosted in another region")
    if status == 429 or (status == 400 and code == API_USAGE_EXCEEDED_CODE):
        limit = _header_number(response.headers, "x-ratelimit-limit")
        return DotdigitalRateLimited(
            message or "rate limited",
            reset_seconds=reset_seconds(response.headers),
            limit=int(limit) if limit is not None else None,
            scope=response.headers.get("x-ratelimit-scope"),
            code=code,
            status=status,
        )
    if status >= 500 or status == 408:
        text = f"{status}: {message}" if message else str(status)
        return DotdigitalRetryable(text, status=status)
    if code == FIELD_EXISTS_CODE:
        return DotdigitalFieldExists(status, code, message, details)
    return DotdigitalRejected(status, code, message, details)
