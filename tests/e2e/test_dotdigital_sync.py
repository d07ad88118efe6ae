"""The automatic Dotdigital sync, driven through the outbox worker, against the emulator over HTTP."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers import service as customers
from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.devtools.dotdigital_emulator import DEMO_USERNAME, EmulatorServer
from tally.integrations.dotdigital import service
from tally.integrations.dotdigital.client import (
    ContactUpsert,
    DataFieldValue,
    DotdigitalApi,
    HttpDotdigitalClient,
)
from tally.integrations.dotdigital.orm import (
    DotdigitalConnection,
    PendingContact,
    SyncFailure,
    SyncImport,
)
from tally.ledger import service as ledger
from tally.merchants import service as merchants
from tally.merchants.orm import Merchant
from tally.outbox.events import VipTierChanged
from tally.outbox.service import emit
from tests.integration.test_admin_pages import PASSWORD, admin_app, sign_in
from tests.integration.test_dotdigital_service import (
    FAST,
    FIELDS,
    connect,
    dotdigital_settings,
    emulator_config,
    emulator_fields,
    expected_fields,
    make_customer,
    pending_rows,
    plugin_subscribed,
    set_tiers,
    sync_worker,
)
from tests.support.factories import make_merchant

PATCH = "PATCH /contacts/v3/email/{email}"
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


@pytest.fixture
def subscribed() -> Iterator[None]:
    with plugin_subscribed():
        yield


def _customer(factory: sessionmaker[Session], customer_id: int) -> Customer:
    with factory() as session:
        customer = session.get(Customer, customer_id)
        assert customer is not None
        return customer


def _adjust(
    factory: sessionmaker[Session], merchant_id: int, customer_id: int, points: int
) -> None:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        customer = customers.get_customer(session, merchant_id, customer_id)
        ledger.adjust(
            session,
            customer=customer,
            points=points,
            reason="test",
            idempotency_key=f"test:{time.monotonic_ns()}",
        )


def _calls(server: EmulatorServer, key: str) -> list[dict[str, Any]]:
    method, route = key.split(" ", 1)
    return [c for c in server.emulator.calls if c["method"] == method and c["route"] == route]


def _connection(factory: sessionmaker[Session], merchant_id: int) -> DotdigitalConnection:
    with factory() as session:
        connection = session.scalar(
            select(DotdigitalConnection).where(DotdigitalConnection.merchant_id == merchant_id)
        )
        assert connection is not None
        return connection


def _failures(factory: sessionmaker[Session]) -> list[tuple[int | None, str | None, str, str]]:
    with factory() as session:
        return [
            (f.customer_id, f.email, f.code, f.reason)
            for f in session.scalars(select(SyncFailure).order_by(SyncFailure.id))
        ]


def test_a_balance_change_sends_all_four_fields_in_dotdigital_formats(
    session_factory: sessionmaker[Session],
    dd_settings: Settings,
    emulator: EmulatorServer,
    subscribed: None,
) -> None:
    m = make_merchant(session_factory)
    set_tiers(session_factory, m.id)
    connect(session_factory, dd_settings, m.id)
    customer_id = make_customer(
        session_factory, m.id, email="ada@example.com", points=120, birthday=date(1990, 5, 1)
    )
    worker = sync_worker(dd_settings, session_factory)
    worker.drain()
    customer = _customer(session_factory, customer_id)
    assert emulator_fields(emulator) == {
        "ada@example.com": {
            "LOYALTY_POINTS": 120,
            "LOYALTY_REFERRAL_URL": f"http://tally.test/r/{customer.referral_code}",
            # Noon UTC: 1 May wherever the merchant's account is read, Los Angeles and Tokyo alike.
            "LOYALTY_BIRTHDAY": "1990-05-01T12:00:00+00:00",
        }
    }
    # The enrolment and the opening credit made one call.
    assert emulator.emulator.call_counts[PATCH] == 1
    assert _calls(emulator, PATCH)[0]["query"] == "merge-option=overwrite"

    # A tier change and a spend: the tier goes by its name, the balance is absolute.
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        session.execute(update(Customer).where(Customer.id == customer_id).values(vip_tier="gold"))
        emit(
            session,
            VipTierChanged(
                merchant_id=m.id, customer_id=customer_id, old_tier=None, new_tier="gold"
            ),
        )
    _adjust(session_factory, m.id, customer_id, -20)
    worker.drain()
    assert emulator_fields(emulator)["ada@example.com"] == {
        "LOYALTY_POINTS": 100,
        "LOYALTY_REFERRAL_URL": f"http://tally.test/r/{customer.referral_code}",
        "LOYALTY_BIRTHDAY": "1990-05-01T12:00:00+00:00",
        "LOYALTY_VIP_TIER": "Gold Circle",
    }
    assert emulator.emulator.call_counts[PATCH] == 2
    assert pending_rows(session_factory) == []

    # A birthday change through the customer service is synced too.
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        customers.update_customer(
            session, merchant_id=m.id, customer_id=customer_id, birthday=date(1991, 12, 31)
        )
    worker.drain()
    fields = emulator_fields(emulator)["ada@example.com"]
    assert fields["LOYALTY_BIRTHDAY"] == "1991-12-31T12:00:00+00:00"
    assert _connection(session_factory, m.id).last_successful_sync_at is not None


@pytest.mark.parametrize(
    ("time_zone", "sent"),
    [
        ("America/Los_Angeles", "2000-01-01T12:00:00+00:00"),  # 04:00 there
        ("Pacific/Auckland", "2000-01-01T05:30:00+00:00"),  # 18:30 there (noon UTC is 2 Jan)
    ],
)
def test_a_birthday_is_sent_for_the_merchants_time_zone(
    session_factory: sessionmaker[Session],
    dd_settings: Settings,
    emulator: EmulatorServer,
    subscribed: None,
    time_zone: str,
    sent: str,
) -> None:
    m = make_merchant(session_factory)
    with unit_of_work(session_factory) as session:
        session.execute(update(Merchant).where(Merchant.id == m.id).values(timezone=time_zone))
    connect(session_factory, dd_settings, m.id)
    make_customer(session_factory, m.id, email="ada@example.com", birthday=date(2000, 1, 1))

    sync_worker(dd_settings, session_factory).drain()

    stored = emulator_fields(emulator)["ada@example.com"]["LOYALTY_BIRTHDAY"]
    assert stored == sent
    assert datetime.fromisoformat(stored).astimezone(ZoneInfo(time_zone)).date() == date(2000, 1, 1)


def test_ten_changes_to_one_customer_make_one_call(
    session_factory: sessionmaker[Session],
    dd_settings: Settings,
    emulator: EmulatorServer,
    subscribed: None,
) -> None:
    m = make_merchant(session_factory)
    customer_id = make_customer(session_factory, m.id, email="bo@example.com", points=5)
    worker = sync_worker(dd_settings, session_factory)
    worker.drain()
    connect(session_factory, dd_settings, m.id)
    worker.drain()
    # Connecting does not backfill: the customer who existed before was not sent.
    assert emulator.emulator.call_counts.get(PATCH, 0) == 0
    for points in range(1, 11):
        _adjust(session_factory, m.id, customer_id, points)
    worker.drain()
    assert emulator.emulator.call_counts[PATCH] == 1
    assert emulator_fields(emulator)["bo@example.com"]["LOYALTY_POINTS"] == 5 + 55
    assert pending_rows(session_factory) == []


def test_a_429_pauses_the_merchant_until_the_reset(
    session_factory: sessionmaker[Session],
    dd_settings: Settings,
    emulator: EmulatorServer,
    subscribed: None,
) -> None:
    m = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id)
    emulator.emulator.set_faults(burst_429=1, burst_429_reset_seconds=1)
    make_customer(session_factory, m.id, email="cy@example.com", points=7)
    worker = sync_worker(dd_settings, session_factory)
    worker.drain()
    assert [c["status"] for c in _calls(emulator, PATCH)] == [429]
    paused_until = _connection(session_factory, m.id).paused_until
    assert paused_until is not None
    first_at = datetime.fromisoformat(_calls(emulator, PATCH)[0]["at"])
    assert timedelta(seconds=0.9) < paused_until - first_at < timedelta(seconds=1.5)
    # Before the reset nothing is sent, however often the job runs.
    worker.run_due_jobs()
    worker.run_due_jobs()
    assert emulator.emulator.call_counts[PATCH] == 1
    assert [row[2] for row in pending_rows(session_factory)] == [0]  # a pause is not an attempt

    time.sleep(max(0.0, (paused_until - datetime.now(UTC)).total_seconds()) + 0.05)
    worker.run_due_jobs()
    calls = _calls(emulator, PATCH)
    assert [c["status"] for c in calls] == [429, 201]
    second_at = datetime.fromisoformat(calls[1]["at"])
    assert second_at - first_at >= timedelta(seconds=1)
    assert second_at >= paused_until
    assert emulator_fields(emulator)["cy@example.com"]["LOYALTY_POINTS"] == 7
    assert pending_rows(session_factory) == []


def test_server_errors_and_timeouts_are_retried_then_succeed(
    session_factory: sessionmaker[Session],
    dd_settings: Settings,
    emulator: EmulatorServer,
    subscribed: None,
) -> None:
    m = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id)
    customer_id = make_customer(session_factory, m.id, email="di@example.com", points=3)
    worker = sync_worker(dd_settings, session_factory)
    emulator.emulator.set_faults(error_rate=1.0)
    worker.drain()
    assert pending_rows(session_factory) == [(customer_id, 2, 1)]
    worker.run_due_jobs()
    assert pending_rows(session_factory) == [(customer_id, 2, 2)]
    with session_factory() as session:
        last_error = session.scalar(select(PendingContact.last_error))
    assert last_error is not None
    assert last_error.startswith(("500: An error has occurred", "503: An error has occurred"))

    emulator.emulator.set_faults(error_rate=0.0, timeout_rate=1.0)
    worker.run_due_jobs()
    assert pending_rows(session_factory) == [(customer_id, 2, 3)]
    with session_factory() as session:
        last_error = session.scalar(select(PendingContact.last_error))
    assert last_error is not None
    assert "timed out" in last_error

    emulator.emulator.set_faults(timeout_rate=0.0)
    worker.run_due_jobs()
    assert pending_rows(session_factory) == []
    faults = [c["fault"] for c in _calls(emulator, PATCH)]
    assert set(faults[:2]) <= {"error-500", "error-503"}
    assert faults[2:] == ["timeout", None]
    assert emulator_fields(emulator)["di@example.com"]["LOYALTY_POINTS"] == 3
    assert _failures(session_factory) == []


def test_retries_back_off_exponentially(
    session_factory: sessionmaker[Session],
    settings: Settings,
    emulator: EmulatorServer,
    subscribed: None,
) -> None:
    slow = dotdigital_settings(settings, emulator).model_copy(
        update={"worker_backoff_base_seconds": 10.0}
    )
    m = make_merchant(session_factory)
    connect(session_factory, slow, m.id)
    make_customer(session_factory, m.id, email="ed@example.com")
    worker = sync_worker(slow, session_factory)
    emulator.emulator.set_faults(error_rate=1.0)
    before = utcnow()
    worker.drain()
    with session_factory() as session:
        first = session.scalar(select(PendingContact.next_attempt_at))
    assert first is not None
    assert before + timedelta(seconds=10) <= first <= utcnow() + timedelta(seconds=12)
    worker.run_due_jobs()
    assert emulator.emulator.call_counts[PATCH] == 1  # not due yet

    with unit_of_work(session_factory) as session:  # let the first delay pass
        session.execute(update(PendingContact).values(next_attempt_at=utcnow()))
    before = utcnow()
    worker.run_due_jobs()
    with session_factory() as session:
        second = session.scalar(select(PendingContact.next_attempt_at))
    assert second is not None
    assert before + timedelta(seconds=20) <= second <= utcnow() + timedelta(seconds=24)
    assert emulator.emulator.call_counts[PATCH] == 2


def test_an_invalid_email_is_recorded_as_a_terminal_failure(
    session_factory: sessionmaker[Session],
    dd_settings: Settings,
    emulator: EmulatorServer,
    subscribed: None,
) -> None:
    m = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id)
    bad = make_customer(session_factory, m.id, email="ada..lovelace@example.com", points=9)
    good = make_customer(session_factory, m.id, email="grace@example.com", points=4)
    worker = sync_worker(dd_settings, session_factory)
    worker.drain()
    assert _failures(session_factory) == [
        (
            bad,
            "ada..lovelace@example.com",
            "contacts:invalidContacts",
            "The contact identifier is not valid: "
            "'ada..lovelace@example.com' is not a valid email address",
        )
    ]
    assert pending_rows(session_factory) == []  # not retried
    assert list(emulator_fields(emulator)) == ["grace@example.com"]
    worker.run_due_jobs()
    assert emulator.emulator.call_counts[PATCH] == 2
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        view = service.status(session, merchant_id=m.id)
    assert [(f.customer_id, f.code) for f in view.recent_failures] == [
        (bad, "contacts:invalidContacts")
    ]
    assert good not in [f.customer_id for f in view.recent_failures]


class _ChangingClient:
    """Delegates to a real client; runs a hook before each upsert."""

    def __init__(self, inner: DotdigitalApi, before_upsert: Callable[[], None]) -> None:
        self.inner = inner
        self.before_upsert = before_upsert

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def upsert_contact(
        self, email: str, data_fields: Mapping[str, DataFieldValue], **kwargs: Any
    ) -> ContactUpsert:
        self.before_upsert()
        return self.inner.upsert_contact(email, data_fields, **kwargs)


def test_a_change_during_the_send_is_sent_afterwards(
    session_factory: sessionmaker[Session],
    dd_settings: Settings,
    emulator: EmulatorServer,
) -> None:
    m = make_merchant(session_factory)
    customer_id = make_customer(session_factory, m.id, email="fay@example.com", points=50)
    connect(session_factory, dd_settings, m.id)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        service.mark_dirty(session, merchant_id=m.id, customer_id=customer_id)

    upserts: list[int] = []

    def change() -> None:
        upserts.append(1)
        if len(upserts) > 1:
            return
        # The customer changes (and is marked again) while the first upsert is under way.
        _adjust(session_factory, m.id, customer_id, 25)
        with unit_of_work(session_factory, merchant_id=m.id) as session:
            service.mark_dirty(session, merchant_id=m.id, customer_id=customer_id)

    def factory(username: str, password: str, base_url: str, timeout: float) -> DotdigitalApi:
        inner = HttpDotdigitalClient(username, password, base_url, timeout)
        return _ChangingClient(inner, change)  # type: ignore[return-value]

    options = dataclasses.replace(FAST, client_factory=factory)
    worker = sync_worker(dd_settings, session_factory, options)
    worker.run_due_jobs()
    # The send carried 50; the row survived because it was marked again meanwhile.
    assert emulator_fields(emulator)["fay@example.com"]["LOYALTY_POINTS"] == 50
    assert pending_rows(session_factory) == [(customer_id, 2, 0)]
    worker.run_due_jobs()
    assert emulator_fields(emulator)["fay@example.com"]["LOYALTY_POINTS"] == 75
    assert pending_rows(session_factory) == []
    assert emulator.emulator.call_counts[PATCH] == 2


def test_a_large_backlog_goes_out_as_one_bulk_import(
    session_factory: sessionmaker[Session],
    dd_settings: Settings,
    emulator: EmulatorServer,
) -> None:
    m = make_merchant(session_factory)
    set_tiers(session_factory, m.id)
    emails = [f"bulk{i}@example.com" for i in range(7)] + ["bad..dots@example.com"]
    ids = [
        make_customer(session_factory, m.id, email=e, points=10 + i) for i, e in enumerate(emails)
    ]
    connect(session_factory, dd_settings, m.id)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        session.execute(update(Customer).where(Customer.id == ids[0]).values(vip_tier="silver"))
        for customer_id in ids:
            service.mark_dirty(session, merchant_id=m.id, customer_id=customer_id)
    options = dataclasses.replace(FAST, bulk_threshold=5)
    worker = sync_worker(dd_settings, session_factory, options)
    worker.run_due_jobs()
    assert emulator.emulator.call_counts == {
        "GET /v2/account-info": 1,
        "GET /v2/data-fields": 1,
        "POST /v2/data-fields": 4,
        IMPORT: 1,
    }
    with session_factory() as session:
        in_import = session.scalars(select(PendingContact.import_pk)).all()
    assert len(in_import) == 8
    assert len(set(in_import)) == 1
    assert None not in in_import

    # A change while the import runs: that customer is sent again afterwards.
    _adjust(session_factory, m.id, ids[1], 100)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        service.mark_dirty(session, merchant_id=m.id, customer_id=ids[1])
    time.sleep(0.1)
    worker.run_due_jobs()
    with session_factory() as session:
        record = session.scalar(select(SyncImport))
        assert record is not None
        assert (record.kind, record.status, record.contact_count) == ("auto", "Finished", 8)
        assert (record.created_count, record.updated_count, record.failed_count) == (7, 0, 1)
    assert _failures(session_factory) == [
        (ids[7], "bad..dots@example.com", "InvalidEmail", "The email is not valid")
    ]
    # The re-marked customer went out as a single upsert in the same run.
    assert emulator.emulator.call_counts[IMPORT_STATUS] == 1
    assert emulator.emulator.call_counts[PATCH] == 1
    assert pending_rows(session_factory) == []
    expected = {}
    for customer_id in ids[:7]:
        customer = _customer(session_factory, customer_id)
        expected[customer.email] = expected_fields(customer)
    assert emulator_fields(emulator) == expected
    assert expected["bulk0@example.com"]["LOYALTY_VIP_TIER"] == "Silver Circle"
    assert expected["bulk1@example.com"]["LOYALTY_POINTS"] == 111


def test_the_call_budget_spreads_calls_out(
    session_factory: sessionmaker[Session],
    settings: Settings,
    emulator: EmulatorServer,
) -> None:
    # 6 calls a minute: a burst of one, then one every ten seconds.
    tight = dotdigital_settings(settings, emulator).model_copy(
        update={"dotdigital_calls_per_minute": 6}
    )
    m = make_merchant(session_factory)
    ids = [make_customer(session_factory, m.id) for _ in range(2)]
    connect(session_factory, tight, m.id)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        for customer_id in ids:
            service.mark_dirty(session, merchant_id=m.id, customer_id=customer_id)
    worker = sync_worker(tight, session_factory)
    worker.run_due_jobs()
    worker.run_due_jobs()
    assert emulator.emulator.call_counts[PATCH] == 1
    assert len(pending_rows(session_factory)) == 1
    # Ten seconds later the bucket holds one more call.
    with unit_of_work(session_factory) as session:
        connection = session.scalar(select(DotdigitalConnection))
        assert connection is not None
        assert connection.budget_updated_at is not None
        connection.budget_updated_at -= timedelta(seconds=10)
    worker.run_due_jobs()
    assert emulator.emulator.call_counts[PATCH] == 2


def test_nothing_is_sent_while_syncing_is_off(
    session_factory: sessionmaker[Session],
    dd_settings: Settings,
    emulator: EmulatorServer,
) -> None:
    m = make_merchant(session_factory)
    customer_id = make_customer(session_factory, m.id)
    connect(session_factory, dd_settings, m.id)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        service.mark_dirty(session, merchant_id=m.id, customer_id=customer_id)
        service.disable(session, merchant_id=m.id)
    worker = sync_worker(dd_settings, session_factory)
    worker.run_due_jobs()
    assert emulator.emulator.call_counts.get(PATCH, 0) == 0
    assert pending_rows(session_factory) == [(customer_id, 1, 0)]
    service.enable(
        lambda: unit_of_work(session_factory, merchant_id=m.id),
        merchant_id=m.id,
        settings=dd_settings,
    )
    worker.run_due_jobs()
    assert emulator.emulator.call_counts[PATCH] == 1
    assert DEMO_USERNAME in {c["account"] for c in _calls(emulator, PATCH)}
    assert set(FIELDS) >= set(next(iter(emulator_fields(emulator).values())))


def test_a_backlog_larger_than_the_budget_goes_out_as_an_import(
    session_factory: sessionmaker[Session],
    settings: Settings,
    emulator: EmulatorServer,
) -> None:
    # One call in the bucket and three contacts waiting: one import (two calls in all) beats
    # three single upserts spread over twenty seconds.
    tight = dotdigital_settings(settings, emulator).model_copy(
        update={"dotdigital_calls_per_minute": 6}
    )
    m = make_merchant(session_factory)
    ids = [make_customer(session_factory, m.id) for _ in range(3)]
    connect(session_factory, tight, m.id)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        for customer_id in ids:
            service.mark_dirty(session, merchant_id=m.id, customer_id=customer_id)
    worker = sync_worker(tight, session_factory)
    worker.run_due_jobs()
    assert emulator.emulator.call_counts[IMPORT] == 1
    assert PATCH not in emulator.emulator.call_counts
    with unit_of_work(session_factory) as session:  # ten seconds pass: one more call
        connection = session.scalar(select(DotdigitalConnection))
        assert connection is not None
        assert connection.budget_updated_at is not None
        connection.budget_updated_at -= timedelta(seconds=10)
    time.sleep(0.1)
    worker.run_due_jobs()
    assert emulator.emulator.call_counts[IMPORT_STATUS] == 1
    assert pending_rows(session_factory) == []
    assert len(emulator_fields(emulator)) == 3


def test_the_flat_rate_schemes_400_pauses_the_merchant_like_a_429(
    session_factory: sessionmaker[Session],
    dd_settings: Settings,
    emulator: EmulatorServer,
    subscribed: None,
) -> None:
    m = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id)
    emulator.emulator.set_faults(burst_api_usage_exceeded=1)
    make_customer(session_factory, m.id, email="cy@example.com", points=7)
    worker = sync_worker(dd_settings, session_factory)
    worker.drain()
    worker.run_due_jobs()

    assert [c["status"] for c in _calls(emulator, PATCH)] == [400]
    connection = _connection(session_factory, m.id)
    assert connection.paused_until is not None
    # No reset header: the default pause, not a refusal of the contact.
    assert timedelta(seconds=55) < connection.paused_until - utcnow() <= timedelta(seconds=60)
    assert _failures(session_factory) == []
    assert [row[2] for row in pending_rows(session_factory)] == [0]


def _bulk_backlog(
    factory: sessionmaker[Session], settings: Settings, count: int
) -> tuple[int, list[int]]:
    m = make_merchant(factory)
    ids = [make_customer(factory, m.id, email=f"bulk{i}@example.com") for i in range(count)]
    connect(factory, settings, m.id)
    with unit_of_work(factory, merchant_id=m.id) as session:
        for customer_id in ids:
            service.mark_dirty(session, merchant_id=m.id, customer_id=customer_id)
    return m.id, ids


class _Unidentified:
    """Delegates to a real client but sends an import entry without identifiers (a Tally bug)."""

    def __init__(self, inner: DotdigitalApi) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def start_import(self, contacts: Any, **kwargs: Any) -> str:
        broken = [dict(c) for c in contacts]
        del broken[0]["identifiers"]
        return self.inner.start_import(broken, **kwargs)


def test_a_400_on_a_bulk_import_is_recorded_once_and_not_retried(
    session_factory: sessionmaker[Session],
    dd_settings: Settings,
    emulator: EmulatorServer,
) -> None:
    merchant_id, ids = _bulk_backlog(session_factory, dd_settings, 6)

    def factory(username: str, password: str, base_url: str, timeout: float) -> DotdigitalApi:
        inner = HttpDotdigitalClient(username, password, base_url, timeout)
        return _Unidentified(inner)  # type: ignore[return-value]

    options = dataclasses.replace(FAST, bulk_threshold=5, client_factory=factory)
    worker = sync_worker(dd_settings, session_factory, options)
    for _ in range(4):
        worker.run_due_jobs()
        time.sleep(0.05)

    assert [c["status"] for c in _calls(emulator, IMPORT)] == [400]
    reason = (
        f"Dotdigital refused a bulk import of 6 contacts (customers {ids[0]} to {ids[-1]}): "
        "The request is not valid: A contact needs identifiers and a matchIdentifier"
    )
    assert _failures(session_factory) == [(None, None, "contacts:badRequest", reason)]
    assert pending_rows(session_factory) == []
    with session_factory() as session:
        assert session.scalars(select(SyncImport)).all() == []
        shown = service.status(session, merchant_id=merchant_id)
    assert shown.last_error == reason
    assert [(f.code, f.reason) for f in shown.recent_failures] == [("contacts:badRequest", reason)]

    # The merchant sees it on the integration's admin page.
    with session_factory() as session:
        merchants.create_admin_user(
            session, merchant_id=merchant_id, email="owner@shop.example", password=PASSWORD
        )
        session.commit()
    with TestClient(admin_app(dd_settings, session_factory)) as browser:
        assert sign_in(browser, "owner@shop.example") == (303, "/admin")
        html = browser.get("/admin/integrations/dotdigital").text
    table = html[html.index('data-testid="recent-failures"') :]
    table = table[: table.index("</table>")]
    assert "A contact needs identifiers and a matchIdentifier" in table
    assert "(contacts:badRequest)" in table


@pytest.mark.parametrize("status", ["RejectedByWatchdog", "ExceedsAllowedContactLimit"])
def test_an_import_dotdigital_refuses_as_a_whole_is_recorded_and_not_retried(
    session_factory: sessionmaker[Session],
    dd_settings: Settings,
    emulator: EmulatorServer,
    status: str,
) -> None:
    merchant_id, _ids = _bulk_backlog(session_factory, dd_settings, 6)
    emulator.emulator.set_faults(import_statuses=[status])
    worker = sync_worker(dd_settings, session_factory, dataclasses.replace(FAST, bulk_threshold=5))
    for _ in range(6):
        worker.run_due_jobs()
        time.sleep(0.1)

    assert emulator.emulator.call_counts[IMPORT] == 1
    assert emulator.emulator.contacts == {}
    with session_factory() as session:
        record = session.scalar(select(SyncImport))
        assert record is not None
        shown = service.status(session, merchant_id=merchant_id)
    assert record.status == status
    failures = _failures(session_factory)
    assert [(f[0], f[1], f[2]) for f in failures] == [(None, None, f"import{status}")]
    assert failures[0][3].startswith(
        f"Dotdigital ended import {record.import_id} of 6 contacts with status {status}: "
    )
    assert shown.last_error == failures[0][3]
    assert pending_rows(session_factory) == []


def test_an_auto_import_accepted_after_the_timeout_is_not_started_twice(
    session_factory: sessionmaker[Session],
    dd_settings: Settings,
    emulator: EmulatorServer,
) -> None:
    _merchant_id, ids = _bulk_backlog(session_factory, dd_settings, 6)
    emulator.emulator.set_faults(import_answer_delay_seconds=1.0)

    def factory(username: str, password: str, base_url: str, timeout: float) -> DotdigitalApi:
        return HttpDotdigitalClient(username, password, base_url, timeout, import_timeout=0.3)

    options = dataclasses.replace(FAST, bulk_threshold=5, client_factory=factory)
    worker = sync_worker(dd_settings, session_factory, options)
    deadline = time.monotonic() + 20
    while pending_rows(session_factory) and time.monotonic() < deadline:
        worker.run_due_jobs()
        time.sleep(0.05)

    assert pending_rows(session_factory) == []
    assert emulator.emulator.call_counts[IMPORT] == 1
    assert [i["contactCount"] for i in emulator.emulator.imports.values()] == [6]
    with session_factory() as session:
        assert [r.status for r in session.scalars(select(SyncImport))] == ["Landed"]
    expected = {}
    for customer_id in ids:
        customer = _customer(session_factory, customer_id)
        expected[customer.email] = expected_fields(customer)
    assert emulator_fields(emulator) == expected
