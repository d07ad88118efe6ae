"""The per-merchant budget of calls to Dotdigital, and the connection state the sync writes
(pauses after a limit or a refusal, the last error, the last success).

The budget is a token bucket kept on the connection row, so every worker sharing a merchant
spends from the same one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Update, select, update
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.db.base import utcnow
from tally.integrations.dotdigital.client import (
    DotdigitalAuthError,
    DotdigitalError,
    DotdigitalRateLimited,
)
from tally.integrations.dotdigital.options import SyncOptions
from tally.integrations.dotdigital.orm import DotdigitalConnection
from tally.integrations.dotdigital.statements import execute_alone


def update_connection(merchant_id: int, **values: Any) -> Update:
    """An UPDATE of the merchant's connection row."""
    return (
        update(DotdigitalConnection)
        .where(DotdigitalConnection.merchant_id == merchant_id)
        .values(**values)
    )


@dataclass(frozen=True)
class Grant:
    """Calls granted from the budget, and how long to wait for one more when none were."""

    calls: int
    wait_seconds: float = 0.0
    stopped: bool = False  # the connection is gone or switched off
    # Whole calls still in the bucket after this grant.
    available: int = 0


def calls_per_minute(settings: Settings, connection: DotdigitalConnection) -> int:
    """The merchant's budget, or the installation's."""
    return max(1, connection.calls_per_minute or settings.dotdigital_calls_per_minute)


def take_calls(
    session_factory: sessionmaker[Session],
    settings: Settings,
    merchant_id: int,
    wanted: int,
    *,
    require_enabled: bool = True,
) -> Grant:
    """Spend up to ``wanted`` tokens of the merchant's bucket (one short transaction).

    The row is locked (FOR UPDATE on PostgreSQL; SQLite serialises writers), so workers sharing
    a merchant never spend the same token twice.
    """
    now = utcnow()
    with session_factory() as session, session.begin():
        connection = session.scalar(
            select(DotdigitalConnection)
            .where(DotdigitalConnection.merchant_id == merchant_id)
            .with_for_update()
        )
        if connection is None or (require_enabled and not connection.enabled):
            return Grant(0, stopped=True)
        if connection.paused_until is not None and connection.paused_until > now:
            return Grant(0, (connection.paused_until - now).total_seconds())
        budget = calls_per_minute(settings, connection)
        rate = budget / 60.0
        capacity = max(1.0, budget / 6.0)
        if connection.budget_tokens is None or connection.budget_updated_at is None:
            tokens = capacity
        else:
            elapsed = max(0.0, (now - connection.budget_updated_at).total_seconds())
            tokens = min(capacity, connection.budget_tokens + elapsed * rate)
        granted = max(0, min(wanted, math.floor(tokens)))
        connection.budget_tokens = tokens - granted
        connection.budget_updated_at = now
        wait = 0.0 if granted or tokens >= 1.0 else (1.0 - tokens) / rate
        return Grant(granted, wait, available=math.floor(tokens - granted))


def pause_merchant(
    session_factory: sessionmaker[Session], merchant_id: int, seconds: float, reason: str
) -> datetime:
    """No calls for this merchant until ``seconds`` from now (a 429, or refused credentials)."""
    now = utcnow()
    until = now + timedelta(seconds=max(0.0, seconds))
    execute_alone(
        session_factory,
        update_connection(
            merchant_id,
            paused_until=until,
            budget_tokens=0.0,
            budget_updated_at=until,
            last_error=reason,
            last_error_at=now,
        ),
    )
    return until


def record_connection_error(
    session_factory: sessionmaker[Session], merchant_id: int, reason: str
) -> None:
    """Show the merchant why its connection cannot be used, without pausing it."""
    execute_alone(
        session_factory, update_connection(merchant_id, last_error=reason, last_error_at=utcnow())
    )


def rate_limited(
    session_factory: sessionmaker[Session],
    merchant_id: int,
    error: DotdigitalRateLimited,
    options: SyncOptions,
) -> float:
    """Pause the merchant until Dotdigital's limit resets; the pause in seconds."""
    seconds = (
        error.reset_seconds if error.reset_seconds is not None else options.rate_limit_pause_seconds
    )
    pause_merchant(
        session_factory,
        merchant_id,
        seconds,
        f"Dotdigital rate limit reached; paused for {seconds:g} s ({error})",
    )
    return seconds


def connection_refused(
    session_factory: sessionmaker[Session],
    merchant_id: int,
    error: DotdigitalError,
    options: SyncOptions,
) -> None:
    """Pause the merchant after Dotdigital refused its credentials or its region."""
    if isinstance(error, DotdigitalAuthError):
        reason = "Dotdigital refused the API user's username or password; save them again"
    else:
        reason = "Dotdigital says the account lives in another region; save the credentials again"
    pause_merchant(session_factory, merchant_id, options.auth_pause_seconds, reason)
