"""Outbox delivery: retries with backoff, terminal failures, leases, and the scheduler."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.outbox.events import CustomerUpdated
from tally.outbox.orm import OutboxMessage, ScheduledJob
from tally.outbox.registry import JobContext, PermanentFailure, Registry, RetryLater
from tally.outbox.retry import backoff_seconds
from tally.outbox.service import emit
from tally.outbox.worker import Worker
from tests.support.factories import make_merchant


def _emit(factory: sessionmaker[Session], registry: Registry, merchant_id: int, n: int = 1) -> None:
    with unit_of_work(factory) as session:
        for i in range(n):
            emit(
                session,
                CustomerUpdated(merchant_id=merchant_id, customer_id=i + 1, fields=("birthday",)),
                registry=registry,
            )


def _rows(factory: sessionmaker[Session]) -> list[OutboxMessage]:
    with factory() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_one_row_per_subscribed_handler_and_none_when_rolled_back(
    session_factory: sessionmaker[Session],
) -> None:
    registry = Registry()
    registry.subscribe("CustomerUpdated", "a", lambda _c, _p: None)
    registry.subscribe("CustomerUpdated", "b", lambda _c, _p: None)
    m = make_merchant(session_factory)
    _emit(session_factory, registry, m.id)
    with pytest.raises(RuntimeError), unit_of_work(session_factory) as session:
        emit(
            session, CustomerUpdated(merchant_id=m.id, customer_id=9, fields=()), registry=registry
        )
        raise RuntimeError("boom")
    rows = _rows(session_factory)
    assert [(r.handler, r.status, r.payload["customer_id"]) for r in rows] == [
        ("a", "pending", 1),
        ("b", "pending", 1),
    ]


def test_handler_failures_back_off_then_succeed(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    calls: list[int] = []

    def flaky(ctx: Any, payload: dict[str, Any]) -> None:
        calls.append(ctx.attempt)
        if len(calls) < 3:
            raise ConnectionError("remote down")

    registry = Registry()
    registry.subscribe("CustomerUpdated", "flaky", flaky)
    m = make_merchant(session_factory)
    _emit(session_factory, registry, m.id)
    settings.worker_backoff_base_seconds = 30
    worker = Worker(settings=settings, session_factory=session_factory, registry=registry)

    assert worker.run_once().retried == 1
    row = _rows(session_factory)[0]
    assert row.status == "pending"
    assert row.attempts == 1
    assert row.last_error == "ConnectionError: remote down"
    assert timedelta(seconds=29) < row.available_at - utcnow() <= timedelta(seconds=37)
    # Not due yet: a second pass does nothing.
    assert worker.run_once().claimed == 0

    for _ in range(2):
        with unit_of_work(session_factory) as session:
            session.execute(update(OutboxMessage).values(available_at=utcnow()))
        worker.run_once()
    row = _rows(session_factory)[0]
    assert calls == [1, 2, 3]
    assert (row.status, row.attempts, row.last_error) == ("done", 3, None)
    assert row.finished_at is not None


def test_permanent_failure_is_not_retried(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    calls = []

    def refuse(_ctx: Any, _payload: dict[str, Any]) -> None:
        calls.append(1)
        raise PermanentFailure("invalid email: contacts:invalidEmail")

    registry = Registry()
    registry.subscribe("CustomerUpdated", "refuse", refuse)
    m = make_merchant(session_factory)
    _emit(session_factory, registry, m.id)
    worker = Worker(settings=settings, session_factory=session_factory, registry=registry)
    stats = worker.drain()
    assert (stats.failed, len(calls)) == (1, 1)
    row = _rows(session_factory)[0]
    assert (row.status, row.last_error) == ("failed", "invalid email: contacts:invalidEmail")


def test_message_fails_after_max_attempts(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    registry = Registry()
    registry.subscribe("CustomerUpdated", "broken", lambda _c, _p: 1 / 0)
    m = make_merchant(session_factory)
    _emit(session_factory, registry, m.id)
    settings.worker_max_attempts = 3
    settings.worker_backoff_base_seconds = 0
    worker = Worker(settings=settings, session_factory=session_factory, registry=registry)
    outcomes = [worker.run_once() for _ in range(4)]
    assert [o.retried for o in outcomes] == [1, 1, 0, 0]
    assert [o.failed for o in outcomes] == [0, 0, 1, 0]
    row = _rows(session_factory)[0]
    assert (row.status, row.attempts) == ("failed", 3)
    assert "ZeroDivisionError" in (row.last_error or "")


def test_retry_later_honours_the_requested_delay(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    def limited(_ctx: Any, _payload: dict[str, Any]) -> None:
        raise RetryLater("rate limited", delay_seconds=42)

    registry = Registry()
    registry.subscribe("CustomerUpdated", "limited", limited)
    m = make_merchant(session_factory)
    _emit(session_factory, registry, m.id)
    Worker(settings=settings, session_factory=session_factory, registry=registry).run_once()
    row = _rows(session_factory)[0]
    assert row.status == "pending"
    assert timedelta(seconds=41) < row.available_at - utcnow() <= timedelta(seconds=42)


def test_expired_lease_is_taken_over_and_the_old_worker_cannot_overwrite(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    handled: list[str] = []
    registry = Registry()
    registry.subscribe("CustomerUpdated", "h", lambda _c, _p: handled.append("x"))
    m = make_merchant(session_factory)
    _emit(session_factory, registry, m.id)
    first = Worker(
        settings=settings, session_factory=session_factory, registry=registry, worker_id="w1"
    )
    second = Worker(
        settings=settings, session_factory=session_factory, registry=registry, worker_id="w2"
    )
    claimed = first.claim()
    assert len(claimed) == 1
    # While w1 holds the lease, nobody else gets the row.
    assert second.claim() == []
    with unit_of_work(session_factory) as session:
        session.execute(update(OutboxMessage).values(locked_until=utcnow() - timedelta(seconds=1)))
    assert second.run_once().done == 1
    # w1 wakes up late and reports a failure: fenced out, the row stays done.
    first._finish(claimed[0], error="late")
    row = _rows(session_factory)[0]
    assert (row.status, row.attempts, row.locked_by) == ("done", 2, None)
    assert handled == ["x"]


def test_scheduled_job_runs_once_per_interval_across_workers(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    runs: list[int] = []
    registry = Registry()
    registry.schedule("tick", timedelta(hours=1), lambda _ctx: runs.append(1))
    w1 = Worker(
        settings=settings, session_factory=session_factory, registry=registry, worker_id="a"
    )
    w2 = Worker(
        settings=settings, session_factory=session_factory, registry=registry, worker_id="b"
    )
    now = utcnow()
    assert w1.run_due_jobs(now) == 1
    assert w2.run_due_jobs(now) == 0
    assert w2.run_due_jobs(now + timedelta(minutes=59)) == 0
    assert w2.run_due_jobs(now + timedelta(minutes=61)) == 1
    assert runs == [1, 1]
    with session_factory() as session:
        job = session.get_one(ScheduledJob, "tick")
        assert job.runs == 2
        assert job.last_error is None


def test_failing_job_records_its_error(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    def broken(_ctx: JobContext) -> None:
        raise ValueError("no such tier")

    registry = Registry()
    registry.schedule("broken", timedelta(minutes=5), broken)
    Worker(settings=settings, session_factory=session_factory, registry=registry).run_due_jobs()
    with session_factory() as session:
        assert session.get_one(ScheduledJob, "broken").last_error == "ValueError: no such tier"


def test_backoff_grows_exponentially_and_is_capped() -> None:
    delays = [backoff_seconds(n, base=2, maximum=60, jitter=0) for n in range(1, 8)]
    assert delays == [2, 4, 8, 16, 32, 60, 60]
