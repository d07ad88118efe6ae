"""`tally worker` as real processes: kill -9 loses nothing, two workers never share a row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.db.engine import unit_of_work
from tally.outbox.events import CustomerUpdated
from tally.outbox.orm import OutboxMessage
from tally.outbox.registry import default_registry
from tally.outbox.service import emit
from tests.support import probe_plugin
from tests.support.factories import make_merchant
from tests.support.processes import stop

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def probe_registered() -> Iterator[None]:
    probe_plugin.register(default_registry)
    yield
    default_registry.handlers["CustomerUpdated"].pop(probe_plugin.HANDLER_NAME)


def _emit(factory: sessionmaker[Session], merchant_id: int, n: int) -> list[int]:
    with unit_of_work(factory) as session:
        for i in range(n):
            emit(
                session,
                CustomerUpdated(merchant_id=merchant_id, customer_id=i, fields=("first_name",)),
            )
    with factory() as session:
        return list(
            session.scalars(
                select(OutboxMessage.id)
                .where(OutboxMessage.handler == probe_plugin.HANDLER_NAME)
                .order_by(OutboxMessage.id)
            )
        )


def _start_worker(
    database_url: str, log: Path, *, sleep: float, lease: float, batch: int
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TALLY_DATABASE_URL": database_url,
        "TALLY_ENVIRONMENT": "test",
        "TALLY_PLUGIN_MODULES": "tests.support.probe_plugin",
        "TALLY_WORKER_LEASE_SECONDS": str(lease),
        "TALLY_WORKER_BATCH_SIZE": str(batch),
        "TALLY_WORKER_POLL_SECONDS": "0.1",
        "TALLY_TEST_PROBE_LOG": str(log),
        "TALLY_TEST_PROBE_SLEEP": str(sleep),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        [sys.executable, "-c", "from tally.cli import app; app()", "worker"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _statuses(factory: sessionmaker[Session]) -> Counter[str]:
    # Only the probe's rows: other plugins (loaded by earlier tests) may subscribe too.
    with factory() as session:
        return Counter(
            session.scalars(
                select(OutboxMessage.status).where(
                    OutboxMessage.handler == probe_plugin.HANDLER_NAME
                )
            )
        )


def _lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.slow
def test_killed_worker_loses_no_message(
    session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
    probe_registered: None,
) -> None:
    m = make_merchant(session_factory)
    ids = _emit(session_factory, m.id, 4)
    log = tmp_path / "probe.log"
    first = _start_worker(database_url, log, sleep=60, lease=3, batch=50)
    try:
        _wait_for(
            lambda: any(parts[0] == "start" for parts in _lines(log)), 30, "the first handler call"
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    # Mid-dispatch: the killed worker had claimed the batch; nothing finished, nothing vanished.
    assert _statuses(session_factory) == Counter({"processing": 4})

    second = _start_worker(database_url, log, sleep=0, lease=3, batch=50)
    try:
        _wait_for(lambda: _statuses(session_factory) == Counter({"done": 4}), 60, "the takeover")
    finally:
        stop(second)
    done = [int(parts[1]) for parts in _lines(log) if parts[0] == "done"]
    assert sorted(done) == ids
    assert {int(p[2]) for p in _lines(log) if p[0] == "done"} == {second.pid}
    with session_factory() as session:
        attempts = list(
            session.scalars(
                select(OutboxMessage.attempts).where(
                    OutboxMessage.handler == probe_plugin.HANDLER_NAME
                )
            )
        )
    assert attempts == [2, 2, 2, 2]


@pytest.mark.slow
def test_two_workers_never_handle_the_same_row(
    session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
    probe_registered: None,
) -> None:
    # PostgreSQL claims with FOR UPDATE SKIP LOCKED; SQLite serialises the claiming transactions.
    m = make_merchant(session_factory)
    ids = _emit(session_factory, m.id, 300)
    log = tmp_path / "probe.log"
    workers = [_start_worker(database_url, log, sleep=0.005, lease=300, batch=10) for _ in range(2)]
    try:
        _wait_for(lambda: _statuses(session_factory) == Counter({"done": 300}), 90, "all messages")
    finally:
        # SIGTERM, then SIGKILL: a worker left running would take the next tests' messages.
        for w in workers:
            stop(w)
    started = Counter(int(parts[1]) for parts in _lines(log) if parts[0] == "start")
    assert sorted(started) == ids
    assert set(started.values()) == {1}
    by_worker = Counter(int(parts[2]) for parts in _lines(log) if parts[0] == "done")
    assert set(by_worker) == {w.pid for w in workers}
