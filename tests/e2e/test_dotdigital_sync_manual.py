"""Manual Dotdigital syncs: every customer in bulk imports, resumable after a crash; and the CLI."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tally.cli.dotdigital import dotdigital_app
from tally.config import Settings
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.devtools.dotdigital_emulator import DEMO_PASSWORD, DEMO_USERNAME, EmulatorServer
from tally.integrations.dotdigital import service
from tally.integrations.dotdigital.client import (
    DotdigitalApi,
    DotdigitalUnanswered,
    HttpDotdigitalClient,
)
from tally.integrations.dotdigital.orm import (
    DotdigitalConnection,
    SyncFailure,
    SyncImport,
    SyncJob,
)
from tally.integrations.dotdigital.service import JobView
from tally.integrations.dotdigital.sync import SyncOptions, read_job, run_manual_sync
from tally.outbox.worker import Worker
from tests.integration.test_dotdigital_service import (
    FAST,
    all_expected,
    clean_sqlite_quickly,
    connect,
    dotdigital_settings,
    emulator_config,
    emulator_fields,
    insert_customers,
    set_tiers,
    sync_worker,
)
from tests.support.factories import make_merchant

IMPORT = "PUT /contacts/v3/import"
IMPORT_STATUS = "GET /contacts/v3/import/{import_id}"


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(emulator_config()) as running:
        yield running


@pytest.fixture
def emulator(server: EmulatorServer) -> EmulatorServer:
    server.emulator.reset()
    return server


@pytest.fixture
def dd_settings(settings: Settings, emulator: EmulatorServer) -> Settings:
    return dotdigital_settings(settings, emulator)


@pytest.fixture(autouse=True)
def _quick_cleanup(engine: Engine, session_factory: sessionmaker[Session]) -> Iterator[None]:
    yield
    clean_sqlite_quickly(engine)


def _start(factory: sessionmaker[Session], merchant_id: int) -> int:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        return service.start_manual_sync(session, merchant_id=merchant_id).id


def _run_worker(worker: Worker, factory: sessionmaker[Session], job_id: int) -> JobView:
    # A safety net against a hung sync, not a speed test: two busy cores may be shared.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        worker.run_due_jobs()
        view = read_job(factory, job_id)
        if view.status != "running":
            return view
        time.sleep(0.02)
    raise AssertionError("the manual sync did not finish")


def _counts(view: JobView) -> tuple[str, int, int, int, int, int, int, int]:
    return (
        view.status,
        view.total,
        view.sent,
        view.created,
        view.updated,
        view.failed,
        view.imports,
        view.imports_running,
    )


def _bad_email(i: int) -> str:
    return f"bad..{i}@example.com" if i in (17, 4242) else f"c{i}@example.com"


def test_a_manual_sync_of_10000_customers_matches_tally(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    m = make_merchant(session_factory)
    set_tiers(session_factory, m.id)
    connect(session_factory, dd_settings, m.id)
    ids = insert_customers(session_factory, m.id, 10_000, email=_bad_email)
    job_id = _start(session_factory, m.id)
    view = _run_worker(sync_worker(dd_settings, session_factory), session_factory, job_id)
    # 10,000 customers in imports of DEFAULT_IMPORT_CONTACTS (5,000) each.
    assert _counts(view) == ("finished", 10_000, 10_000, 9_998, 0, 2, 2, 0)
    assert view.last_error is None

    expected = all_expected(session_factory, m.id)
    del expected["bad..17@example.com"], expected["bad..4242@example.com"]
    assert emulator_fields(emulator) == expected
    counts = emulator.emulator.call_counts
    assert counts[IMPORT] == 2
    assert counts[IMPORT_STATUS] >= 2
    assert "PATCH /contacts/v3/email/{email}" not in counts
    assert sorted(i["contactCount"] for i in emulator.emulator.imports.values()) == [5000] * 2

    with session_factory() as session:
        failures = [
            (f.customer_id, f.email, f.code, f.reason, f.sync_job_id)
            for f in session.scalars(select(SyncFailure).order_by(SyncFailure.customer_id))
        ]
        imports = session.scalars(select(SyncImport).order_by(SyncImport.id)).all()
        connection = session.scalar(select(DotdigitalConnection))
    assert failures == [
        (ids[17], "bad..17@example.com", "InvalidEmail", "The email is not valid", job_id),
        (ids[4242], "bad..4242@example.com", "InvalidEmail", "The email is not valid", job_id),
    ]
    assert [(i.first_customer_id, i.last_customer_id) for i in imports] == [
        (ids[k], ids[k + 4999]) for k in range(0, 10_000, 5000)
    ]
    assert {(i.kind, i.status, i.job_id) for i in imports} == {("manual", "Finished", job_id)}
    assert connection is not None
    assert connection.last_successful_sync_at is not None


class _RecordingClient:
    """Delegates to a real client, records every email it imports, can crash on an import."""

    def __init__(self, inner: DotdigitalApi, log: list[str], crash_on: int | None) -> None:
        self.inner = inner
        self.log = log
        self.crash_on = crash_on

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def start_import(self, contacts: Sequence[Mapping[str, Any]], **kwargs: Any) -> str:
        starts = sum(1 for entry in self.log if entry == "--start--")
        if self.crash_on is not None and starts + 1 == self.crash_on:
            raise RuntimeError("the worker process died")
        import_id = self.inner.start_import(contacts, **kwargs)
        self.log.append("--start--")
        self.log.extend(c["identifiers"]["email"] for c in contacts)
        return import_id


def _recording(log: list[str], crash_on: int | None, batch: int) -> SyncOptions:
    def factory(username: str, password: str, base_url: str, timeout: float) -> DotdigitalApi:
        inner = HttpDotdigitalClient(username, password, base_url, timeout)
        return _RecordingClient(inner, log, crash_on)  # type: ignore[return-value]

    return dataclasses.replace(FAST, client_factory=factory, import_batch_size=batch)


def test_a_crashed_sync_resumes_without_losing_or_resending_a_batch(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    m = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id)
    ids = insert_customers(session_factory, m.id, 3000)
    job_id = _start(session_factory, m.id)
    sent: list[str] = []

    # The third import never leaves: the worker dies just before it.
    crashing = sync_worker(dd_settings, session_factory, _recording(sent, 3, 500))
    crashing.run_due_jobs()
    view = read_job(session_factory, job_id)
    assert (view.status, view.sent, view.imports) == ("running", 1000, 2)
    assert view.cursor_customer_id == ids[999]
    assert view.last_error == "worker error: RuntimeError('the worker process died')"

    # A worker killed outright leaves its lease behind; nobody touches the job until it expires.
    with unit_of_work(session_factory) as session:
        session.execute(
            update(SyncJob).values(locked_by="dead", locked_until=utcnow() + timedelta(minutes=1))
        )
    survivor = sync_worker(dd_settings, session_factory, _recording(sent, None, 500))
    survivor.run_due_jobs()
    assert emulator.emulator.call_counts[IMPORT] == 2
    with unit_of_work(session_factory) as session:
        session.execute(update(SyncJob).values(locked_until=utcnow() - timedelta(seconds=1)))

    view = _run_worker(survivor, session_factory, job_id)
    assert _counts(view) == ("finished", 3000, 3000, 3000, 0, 0, 6, 0)
    emails = [entry for entry in sent if entry != "--start--"]
    assert len(emails) == 3000
    assert set(Counter(emails).values()) == {1}  # nothing sent twice
    imports = emulator.emulator.imports
    assert len(imports) == 6
    assert sum(i["contactCount"] for i in imports.values()) == 3000
    assert emulator_fields(emulator) == all_expected(session_factory, m.id)


def test_too_many_active_imports_makes_the_sync_wait(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    m = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id)
    insert_customers(session_factory, m.id, 500)
    # The account allows two imports at a time (someone else may be importing too). Each runs
    # for a second: on a busy machine a shorter one can end before the third start is sent.
    emulator.emulator.set_faults(max_active_imports=2, import_delay_seconds=1.0)
    job_id = _start(session_factory, m.id)
    view = run_manual_sync(
        dd_settings,
        session_factory,
        job_id,
        options=dataclasses.replace(FAST, import_batch_size=100),
    )
    assert _counts(view) == ("finished", 500, 500, 500, 0, 0, 5, 0)
    statuses = Counter(c["status"] for c in emulator.emulator.calls if c["route"] == IMPORT[4:])
    assert statuses[202] == 5
    assert statuses[429] >= 1
    assert emulator_fields(emulator) == all_expected(session_factory, m.id)


def test_a_rate_limit_during_a_manual_sync_is_waited_out(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    m = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id)
    insert_customers(session_factory, m.id, 300)
    emulator.emulator.set_faults(burst_429=1, burst_429_reset_seconds=1)
    job_id = _start(session_factory, m.id)
    progress: list[tuple[int, int]] = []
    started = time.monotonic()
    view = run_manual_sync(
        dd_settings,
        session_factory,
        job_id,
        options=dataclasses.replace(FAST, import_batch_size=100),
        progress=lambda v: progress.append((v.sent, v.processed)),
    )
    assert time.monotonic() - started >= 1.0
    assert _counts(view) == ("finished", 300, 300, 300, 0, 0, 3, 0)
    assert progress[-1] == (300, 300)
    assert progress == sorted(progress)
    assert emulator_fields(emulator) == all_expected(session_factory, m.id)


def test_the_cli_connects_enables_and_syncs_everyone(
    session_factory: sessionmaker[Session],
    dd_settings: Settings,
    emulator: EmulatorServer,
    database_url: str,
) -> None:
    m = make_merchant(session_factory)
    set_tiers(session_factory, m.id)
    insert_customers(session_factory, m.id, 250)
    env = {
        "TALLY_DATABASE_URL": database_url,
        "TALLY_ENVIRONMENT": "test",
        "TALLY_PUBLIC_BASE_URL": "http://tally.test",
        "TALLY_DOTDIGITAL_BASE_URL": emulator.base_url,
        "TALLY_DOTDIGITAL_CALLS_PER_MINUTE": "60000",
    }
    runner = CliRunner(env=env)

    refused = runner.invoke(
        dotdigital_app, ["connect", "-u", DEMO_USERNAME, "--password-stdin"], input="nope\n"
    )
    assert refused.exit_code == 2
    assert "Dotdigital refused the API user's username or password" in refused.output

    done = runner.invoke(
        dotdigital_app,
        ["connect", "--username", DEMO_USERNAME, "--password-stdin"],
        input=f"{DEMO_PASSWORD}\n",
    )
    assert done.exit_code == 0, done.output
    assert f"API endpoint {emulator.base_url}" in done.output
    assert DEMO_PASSWORD not in done.output

    done = runner.invoke(dotdigital_app, ["enable", "--merchant", str(m.id)])
    assert done.exit_code == 0, done.output
    assert "created data fields: LOYALTY_POINTS, LOYALTY_REFERRAL_URL" in done.output

    done = runner.invoke(dotdigital_app, ["sync"])
    assert done.exit_code == 2
    done = runner.invoke(dotdigital_app, ["sync", "--all"])
    assert done.exit_code == 0, done.output
    assert "created 250, updated 0, failed 0 (1 import)" in " ".join(done.output.split())
    assert emulator_fields(emulator) == all_expected(session_factory, m.id)

    done = runner.invoke(dotdigital_app, ["status"])
    assert done.exit_code == 0, done.output
    assert f"connected as {DEMO_USERNAME}, syncing on" in done.output
    assert "waiting contacts: 0 (0 being retried)" in " ".join(done.output.split())
    assert DEMO_PASSWORD not in done.output

    done = runner.invoke(dotdigital_app, ["disable"])
    assert done.exit_code == 0, done.output
    # Messages name the command as it is typed.
    assert "`tally integrations dotdigital enable` starts it again" in " ".join(done.output.split())
    done = runner.invoke(dotdigital_app, ["disconnect", "--yes"])
    assert done.exit_code == 0, done.output
    with session_factory() as session:
        assert session.scalar(select(DotdigitalConnection)) is None
    done = runner.invoke(dotdigital_app, ["status"])
    assert "not connected (`tally integrations dotdigital connect`)" in " ".join(
        done.output.split()
    )


def test_no_message_names_the_command_without_its_group() -> None:
    src = Path(__file__).resolve().parents[2] / "src" / "tally"
    offenders = [
        str(path.relative_to(src))
        for path in src.rglob("*.py")
        if "tally dotdigital " in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def _import_timeout(seconds: float, batch: int) -> SyncOptions:
    def factory(username: str, password: str, base_url: str, timeout: float) -> DotdigitalApi:
        return HttpDotdigitalClient(username, password, base_url, timeout, import_timeout=seconds)

    return dataclasses.replace(FAST, client_factory=factory, import_batch_size=batch)


def _job_imports(factory: sessionmaker[Session]) -> list[tuple[str, int]]:
    with factory() as session:
        return [
            (i.status, i.contact_count)
            for i in session.scalars(select(SyncImport).order_by(SyncImport.id))
        ]


def test_an_import_accepted_after_the_timeout_is_not_started_twice(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    m = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id)
    insert_customers(session_factory, m.id, 150)
    # Dotdigital accepts each import at once but answers only after the client gave up.
    emulator.emulator.set_faults(import_answer_delay_seconds=1.0)
    job_id = _start(session_factory, m.id)
    worker = sync_worker(dd_settings, session_factory, _import_timeout(0.3, 100))

    view = _run_worker(worker, session_factory, job_id)

    assert _counts(view) == ("finished", 150, 150, 0, 0, 0, 2, 0)
    # Both starts timed out; the contacts read back showed Dotdigital had them.
    assert emulator.emulator.call_counts[IMPORT] == 2
    assert sorted(i["contactCount"] for i in emulator.emulator.imports.values()) == [50, 100]
    assert _job_imports(session_factory) == [("Landed", 100), ("Landed", 50)]
    assert emulator_fields(emulator) == all_expected(session_factory, m.id)


class _LostStart:
    """Delegates to a real client; the first import start times out without reaching it."""

    def __init__(self, inner: DotdigitalApi) -> None:
        self.inner = inner
        self.lost = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def start_import(self, contacts: Sequence[Mapping[str, Any]], **kwargs: Any) -> str:
        if not self.lost:
            self.lost = True
            raise DotdigitalUnanswered("PUT /contacts/v3/import timed out: timed out")
        return self.inner.start_import(contacts, **kwargs)


def test_an_unanswered_import_that_never_arrived_is_sent_again_once(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    m = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id)
    insert_customers(session_factory, m.id, 100)
    clients: list[_LostStart] = []

    def factory(username: str, password: str, base_url: str, timeout: float) -> DotdigitalApi:
        if not clients:
            clients.append(_LostStart(HttpDotdigitalClient(username, password, base_url, timeout)))
            return clients[0]  # type: ignore[return-value]
        return HttpDotdigitalClient(username, password, base_url, timeout)

    job_id = _start(session_factory, m.id)
    options = dataclasses.replace(FAST, client_factory=factory)
    view = _run_worker(sync_worker(dd_settings, session_factory, options), session_factory, job_id)

    assert _counts(view) == ("finished", 100, 100, 100, 0, 0, 1, 0)
    assert emulator.emulator.call_counts[IMPORT] == 1
    assert _job_imports(session_factory) == [("Lost", 100), ("Finished", 100)]
    assert emulator_fields(emulator) == all_expected(session_factory, m.id)
