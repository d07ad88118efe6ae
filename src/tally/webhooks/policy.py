"""How hard Tally tries to deliver a webhook, and when it gives up on an endpoint."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class DeliveryPolicy:
    """Timeouts, the retry schedule and the disabling thresholds (tests pass faster ones)."""

    connect_timeout_seconds: float = 5.0
    # Per read and write of an attempt: a receiver should answer at once and work afterwards.
    timeout_seconds: float = 10.0
    # Delay before retry 1, 2, ...: nine attempts over about two days. A retry after the last
    # one is not made; the delivery fails for good (and can be replayed).
    retry_delays: tuple[float, ...] = (30, 120, 600, 1800, 7200, 21600, 43200, 86400)
    # A 429's Retry-After is honoured up to this long.
    max_retry_after_seconds: float = 3600.0
    # An endpoint is disabled when this many deliveries in a row failed for good, or when it
    # has been failing, without one success, for this long.
    disable_after_failed_deliveries: int = 20
    disable_after_failing_for: timedelta = timedelta(days=3)
    # After a rotation the old secret keeps signing beside the new one for this long.
    previous_secret_valid_for: timedelta = timedelta(hours=24)
    # Enough of a response body to show why it failed; the rest is not read.
    response_excerpt_bytes: int = 1024

    @property
    def max_attempts(self) -> int:
        """Attempts of one delivery, the first included."""
        return len(self.retry_delays) + 1


DEFAULT_POLICY = DeliveryPolicy()
