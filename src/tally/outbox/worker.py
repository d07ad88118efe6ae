"""The worker: claims outbox messages, runs handlers, retries with backoff, runs periodic jobs.

Claiming takes a lease (`locked_until`): a worker killed mid-dispatch leaves its rows claimed only
until the lease runs out, and then any worker takes them again. On PostgreSQL the claim query uses
`FOR UPDATE SKIP LOCKED`, so concurrent workers never claim the same row; SQLite serialises
writers, so the same UPDATE is safe there too. Completion is fenced on `locked_by`, so a worker
whose lease expired cannot overwrite the outcome of the worker that took over. Every attempt is
recorded (`outbox_delivery_attempts`) in the transaction that applies its outcome.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import traceback
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import insert, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.db.base import utcnow
from tally.errors import DomainError
from tally.outbox.orm import (
    AttemptOutcome,
    MessageStatus,
    OutboxDeliveryAttempt,
    OutboxMessage,
    ScheduledJob,
)
from tally.outbox.registry import (
    HandlerContext,
    JobContext,
    PermanentFailure,
    Registry,
    RetryLater,
    Runner,
    RunnerContext,
    default_registry,
)
from tally.outbox.retry import backoff_seconds

log = logging.getLogger("tally.worker")

RUNNER_STOP_SECONDS = 30.0
"""How long a stopping worker waits for its runners to reach a point where they can stop."""

# Room for a traceback's last line and a remote's error body, not for whole response pages.
MAX_ERROR_CHARS = 2000
_REDACTED = "[redacted]"
_SECRET_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Credentials inside a URL (scheme://user:password@host), as database and proxy URLs carry.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@:]+:[^\s/@]+@"), r"\1***@"),
    # A header or setting that holds a secret, in `name: value`, `name=value` or a dict's repr.
    (
        re.compile(
            r"(?i)\b((?:proxy-)?authorization|cookie|set-cookie|x-api-key|api[_-]?key"
            r"|(?:access|refresh|auth)[_-]?token|client[_-]?secret|secret(?:[_-]?key)?"
            r"|passw(?:or)?d|pwd)(['\"]?\s*[:=]\s*['\"]?)"
            r"(?:(?:basic|bearer|digest|token)\s+)?[^\s'\",;&}]+"
        ),
        rf"\1\2{_REDACTED}",
    ),
    # A bare credential after its scheme, wherever a library quoted a header without its name.
    (re.compile(r"(?i)\b(basic|bearer)\s+[a-z0-9._~+/-]{8,}=*"), rf"\1 {_REDACTED}"),
    # SQLAlchemy appends a statement's parameters to its errors: customer data, hashes.
    (
        re.compile(r"\[parameters: .*?(?=\n\(Background on this error|\Z)", re.DOTALL),
        f"[parameters: {_REDACTED}]",
    ),
]


def safe_error_text(text: str) -> str:
    """An error message fit to store and show: secrets masked, then cut to MAX_ERROR_CHARS."""
    # Masking comes first so that a cut cannot leave half a secret the patterns miss.
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text


def response_status(error: BaseException) -> int | None:
    """The HTTP status a remote answered, when the handler's error (or its cause) carries one."""
    for candidate in (error, error.__cause__):
        # A DomainError's status_code is how Tally would answer, not what a remote answered.
        if candidate is None or isinstance(candidate, DomainError):
            continue
        value = getattr(candidate, "status_code", None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None


@dataclass(frozen=True)
class _Attempt:
    """One run of a handler, measured: what the worker records next to the outcome."""

    started_at: datetime
    clock: float
    duration_ms: int = 0
    error: str | None = None
    status_code: int | None = None

    def succeeded(self) -> _Attempt:
        return replace(self, duration_ms=self._elapsed_ms())

    def failed(self, error: BaseException, text: str) -> _Attempt:
        return replace(
            self,
            duration_ms=self._elapsed_ms(),
            error=safe_error_text(text),
            status_code=response_status(error),
        )

    def _elapsed_ms(self) -> int:
        return max(0, round((time.perf_counter() - self.clock) * 1000))


@dataclass
class DispatchStats:
    """What one pass of the worker did."""

    claimed: int = 0
    done: int = 0
    retried: int = 0
    failed: int = 0
    jobs_run: int = 0
    runs: int = 0
    """Pieces of long work (imports) done by the runners (``drain`` only)."""


class Worker:
    """Delivers outbox messages to handlers and runs due periodic jobs."""

    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        registry: Registry = default_registry,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.registry = registry
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._stop = threading.Event()

    # -- outbox ----------------------------------------------------------------------------

    def claim(self, limit: int | None = None) -> list[OutboxMessage]:
        """Lease up to `limit` due messages to this worker (committed before handling starts)."""
        limit = limit or self.settings.worker_batch_size
        known = [
            (event_type, name)
            for event_type, handlers in self.registry.handlers.items()
            for name in handlers
        ]
        if not known:
            return []
        now = utcnow()
        with self.session_factory() as session, session.begin():
            due = or_(
                (OutboxMessage.status == MessageStatus.PENDING)
                & (OutboxMessage.available_at <= now),
                (OutboxMessage.status == MessageStatus.PROCESSING)
                & (OutboxMessage.locked_until < now),
            )
            # Only messages this worker can deliver: a worker started without some plugin
            # leaves that plugin's messages to the workers that have it.
            mine = tuple_(OutboxMessage.event_type, OutboxMessage.handler).in_(known)
            stmt = select(OutboxMessage.id).where(due, mine).order_by(OutboxMessage.id).limit(limit)
            if session.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            ids = list(session.scalars(stmt))
            if not ids:
                return []
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(ids))
                .values(
                    status=MessageStatus.PROCESSING,
                    locked_by=self.worker_id,
                    locked_until=now + timedelta(seconds=self.settings.worker_lease_seconds),
                    attempts=OutboxMessage.attempts + 1,
                )
            )
            messages = list(
                session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.id.in_(ids))
                    .order_by(OutboxMessage.id)
                    .execution_options(populate_existing=True)
                )
            )
            session.expunge_all()
            return messages

    def handle(self, message: OutboxMessage) -> str:
        """Run one claimed message's handler and record the outcome; returns the new status."""
        handler = self.registry.handler(message.event_type, message.handler)
        context = HandlerContext(
            settings=self.settings,
            session_factory=self.session_factory,
            message_id=message.id,
            attempt=message.attempts,
            merchant_id=message.merchant_id,
        )
        attempt = _Attempt(started_at=utcnow(), clock=time.perf_counter())
        try:
            if handler is None:
                raise PermanentFailure(
                    f"no handler named {message.handler!r} for {message.event_type}"
                )
            handler(context, message.payload)
        except RetryLater as exc:
            return self._finish(message, attempt.failed(exc, str(exc)), retry_in=exc.delay_seconds)
        except PermanentFailure as exc:
            return self._finish(message, attempt.failed(exc, str(exc)), permanent=True)
        except Exception as exc:
            attempt = attempt.failed(exc, "".join(traceback.format_exception_only(exc)).strip())
            log.warning(
                "handler %s failed for message %s: %s", message.handler, message.id, attempt.error
            )
            return self._finish(message, attempt)
        return self._finish(message, attempt.succeeded())

    def _finish(
        self,
        message: OutboxMessage,
        attempt: _Attempt | None = None,
        *,
        error: str | None = None,
        retry_in: float | None = None,
        permanent: bool = False,
    ) -> str:
        now = utcnow()
        if attempt is None:
            # An outcome given without a measured run (a bare error text): nothing was timed.
            attempt = _Attempt(started_at=now, clock=time.perf_counter())
            if error is not None:
                attempt = replace(attempt, error=safe_error_text(error))
        error = attempt.error
        values: dict[str, object]
        if error is None:
            outcome = AttemptOutcome.SUCCEEDED
            values = {"status": MessageStatus.DONE, "finished_at": now, "last_error": None}
        elif permanent or (
            retry_in is None and message.attempts >= self.settings.worker_max_attempts
        ):
            outcome = AttemptOutcome.FAILED
            values = {"status": MessageStatus.FAILED, "finished_at": now, "last_error": error}
        else:
            outcome = AttemptOutcome.RETRY_SCHEDULED
            delay = (
                retry_in
                if retry_in is not None
                else backoff_seconds(
                    message.attempts,
                    base=self.settings.worker_backoff_base_seconds,
                    maximum=self.settings.worker_backoff_max_seconds,
                )
            )
            values = {
                "status": MessageStatus.PENDING,
                "available_at": now + timedelta(seconds=delay),
                "last_error": error,
            }
        values.update(locked_by=None, locked_until=None)
        with self.session_factory() as session, session.begin():
            # Fenced on the lease holder and the attempt number: a worker whose lease ran out
            # applies nothing, and then records nothing either, so the history holds only
            # outcomes the message really got.
            applied = session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == message.id,
                    OutboxMessage.locked_by == self.worker_id,
                    OutboxMessage.attempts == message.attempts,
                )
                .values(**values)
            )
            if applied.rowcount:  # type: ignore[attr-defined]
                session.execute(
                    insert(OutboxDeliveryAttempt).values(
                        message_id=message.id,
                        attempt=message.attempts,
                        started_at=attempt.started_at,
                        duration_ms=attempt.duration_ms,
                        outcome=outcome,
                        status_code=attempt.status_code,
                        error=error,
                    )
                )
        return str(values["status"])

    # -- scheduled jobs --------------------------------------------------------------------

    def run_due_jobs(self, now: datetime | None = None) -> int:
        """Run every periodic job that is due and that no other worker claimed first."""
        ran = 0
        for name, (every, job) in sorted(self.registry.jobs.items()):
            current = now or utcnow()
            if not self._claim_job(name, every, current):
                continue
            error = None
            try:
                job(JobContext(settings=self.settings, session_factory=self.session_factory))
            except Exception as exc:
                log.exception("scheduled job %s failed", name)
                error = "".join(traceback.format_exception_only(exc)).strip()
            with self.session_factory() as session, session.begin():
                session.execute(
                    update(ScheduledJob)
                    .where(ScheduledJob.name == name)
                    .values(last_finished_at=utcnow(), last_error=error)
                )
            ran += 1
        return ran

    def _claim_job(self, name: str, every: timedelta, now: datetime) -> bool:
        with self.session_factory() as session, session.begin():
            dialect = session.get_bind().dialect.name
            upsert = pg_insert if dialect == "postgresql" else sqlite_insert
            session.execute(
                upsert(ScheduledJob)
                .values(name=name, next_run_at=now, runs=0)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            claimed = session.execute(
                update(ScheduledJob)
                .where(ScheduledJob.name == name, ScheduledJob.next_run_at <= now)
                .values(next_run_at=now + every, last_started_at=now, runs=ScheduledJob.runs + 1)
            )
            return bool(claimed.rowcount)  # type: ignore[attr-defined]

    # -- loop ------------------------------------------------------------------------------

    def run_once(self) -> DispatchStats:
        """One pass: due jobs, then one batch of messages."""
        stats = DispatchStats(jobs_run=self.run_due_jobs())
        messages = self.claim()
        stats.claimed = len(messages)
        for message in messages:
            outcome = self.handle(message)
            if outcome == MessageStatus.DONE:
                stats.done += 1
            elif outcome == MessageStatus.FAILED:
                stats.failed += 1
            else:
                stats.retried += 1
        return stats

    def drain(self, *, max_passes: int = 1000) -> DispatchStats:
        """Process until nothing is due (for tests and the CLI); retries scheduled later wait.

        Runners' work (queued imports) comes first in each pass, in this thread, so the
        messages it emits are delivered in the same drain.
        """
        total = DispatchStats()
        for _ in range(max_passes):
            runs = self.run_runners_once()
            stats = self.run_once()
            total.claimed += stats.claimed
            total.done += stats.done
            total.retried += stats.retried
            total.failed += stats.failed
            total.jobs_run += stats.jobs_run
            total.runs += runs
            if stats.claimed == 0 and runs == 0:
                break
        return total

    def _runner_context(self) -> RunnerContext:
        return RunnerContext(
            settings=self.settings,
            session_factory=self.session_factory,
            worker_id=self.worker_id,
            stopping=self._stop,
        )

    def run_runners_once(self) -> int:
        """Call each registered runner once; how many found work."""
        context = self._runner_context()
        return sum(1 for _name, runner in sorted(self.registry.runners.items()) if runner(context))

    def _run_runner(self, name: str, runner: Runner) -> None:
        context = self._runner_context()
        while not self._stop.is_set():
            try:
                busy = runner(context)
            except Exception:
                log.exception("runner %s failed", name)
                busy = False
            if not busy:
                self._stop.wait(self.settings.worker_poll_seconds)

    def run_forever(self) -> None:
        """Poll until stop() is called; a pass that found work is followed by another at once.

        Each registered runner (imports) loops in a thread of its own meanwhile, so a long
        import never holds up deliveries; they are waited for (briefly) when the worker stops.
        """
        log.info("worker %s started", self.worker_id)
        runners = [
            threading.Thread(
                target=self._run_runner, args=(name, runner), name=f"tally-{name}", daemon=True
            )
            for name, runner in sorted(self.registry.runners.items())
        ]
        for thread in runners:
            thread.start()
        while not self._stop.is_set():
            try:
                stats = self.run_once()
            except Exception:
                log.exception("worker pass failed")
                stats = DispatchStats()
            if stats.claimed == 0:
                self._stop.wait(self.settings.worker_poll_seconds)
        for thread in runners:
            # A runner stops at its next step (an import between two batches, and hands the
            # job back to the queue); one that does not is left to its lease.
            thread.join(timeout=RUNNER_STOP_SECONDS)
        log.info("worker %s stopped", self.worker_id)

    def stop(self) -> None:
        """Ask run_forever to return after the current pass."""
        self._stop.set()

    def start_thread(self) -> threading.Thread:
        """Run the worker in a daemon thread (the embedded, in-process mode)."""
        thread = threading.Thread(target=self.run_forever, name="tally-worker", daemon=True)
        thread.start()
        return thread
