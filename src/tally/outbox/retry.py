"""Retry delays shared by the outbox worker and the integrations that reschedule their own work."""

from __future__ import annotations

import random


def backoff_seconds(attempt: int, *, base: float, maximum: float, jitter: float = 0.2) -> float:
    """Exponential backoff for the given (1-based) attempt, with up to `jitter` random spread."""
    delay = min(maximum, base * (2 ** max(0, attempt - 1)))
    return float(delay * (1 + random.uniform(0, jitter)))
