"""Connecting Dotdigital (service level, over real HTTP against the emulator), plus the helpers
the other Dotdigital test modules share."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import date, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.db.models import Base
from tally.devtools.dotdigital_emulator import (
    DEMO_PASSWORD,
    DEMO_USERNAME,
    EmulatorAccount,
    EmulatorConfig,
    EmulatorServer,
)
from tally.errors import Conflict, ValidationFailed
from tally.integrations.dotdigital import service
from tally.integrations.dotdigital.client import HttpDotdigitalClient
from tally.integrations.dotdigital.fields import DataFieldMapping
from tally.integrations.dotdigital.handlers import register
from tally.integrations.dotdigital.orm import DotdigitalConnection, PendingContact
from tally.integrations.dotdigital.sync import SyncOptions
from tally.ledger.orm import EntryKind, LedgerEntry
from tally.outbox.events import CustomersImported, CustomerUpdated
from tally.outbox.registry import Registry, default_registry
from tally.outbox.service import emit
from tally.outbox.worker import Worker
from tally.program.config_service import load_program, update_program
from tests.support import factories
from tests.support.factories import make_merchant

US_USERNAME = "apiuser-us@apiconnector.com"
US_PASSWORD = "us-password"
FIELDS = ["LOYALTY_POINTS", "LOYALTY_REFERRAL_URL", "LOYALTY_BIRTHDAY", "LOYALTY_VIP_TIER"]
BUILT_INS = ["FIRSTNAME", "LASTNAME", "FULLNAME", "GENDER", "POSTCODE"]
TIERS = {"silver": "Silver Circle", "gold": "Gold Circle"}

# Quick pacing for tests: jobs due on every pass, imports polled almost at once, short timeouts.
FAST = SyncOptions(
    flush_every=timedelta(0),
    manual_every=timedelta(0),
    import_poll_seconds=0.05,
    client_timeout_seconds=0.5,
    run_seconds=10.0,
    unanswered_wait_seconds=0.1,
)

# The sync creates contacts only for customers whose marketing consent is recorded; these tests
# are about other things, so their customers consented (test_dotdigital_consent.py: the rest).
make_customer = functools.partial(factories.make_customer, accepts_marketing=True)


# --------------------------------------------------------------------------- shared helpers


def emulator_config(**changes: Any) -> EmulatorConfig:
    """A region-1 demo account and a region-2 account; imports finish after 50 ms."""
    return EmulatorConfig(
        accounts=[
            EmulatorAccount(DEMO_USERNAME, DEMO_PASSWORD, 1),
            EmulatorAccount(US_USERNAME, US_PASSWORD, 2),
        ],
        import_delay_seconds=0.05,
        hang_seconds=1.0,
        **changes,
    )


def dotdigital_settings(settings: Settings, server: EmulatorServer) -> Settings:
    """Test settings pointing at the emulator, with a budget that never gets in the way."""
    return settings.model_copy(
        update={"dotdigital_base_url": server.base_url, "dotdigital_calls_per_minute": 60_000}
    )


def uow(
    factory: sessionmaker[Session], merchant_id: int
) -> Callable[[], AbstractContextManager[Session]]:
    """A unit-of-work opener bound to a merchant (what the API passes as caller.unit_of_work)."""
    return lambda: unit_of_work(factory, merchant_id=merchant_id)


def connect(
    factory: sessionmaker[Session],
    settings: Settings,
    merchant_id: int,
    *,
    username: str = DEMO_USERNAME,
    password: str = DEMO_PASSWORD,
    enable: bool = True,
) -> None:
    """Save credentials and (by default) enable syncing."""
    service.save_credentials(
        uow(factory, merchant_id),
        merchant_id=merchant_id,
        username=username,
        password=password,
        settings=settings,
    )
    if enable:
        service.enable(uow(factory, merchant_id), merchant_id=merchant_id, settings=settings)


def sync_worker(
    settings: Settings, factory: sessionmaker[Session], options: SyncOptions = FAST
) -> Worker:
    """A worker whose registry holds only the Dotdigital plugin."""
    registry = Registry()
    register(registry, options)
    return Worker(settings=settings, session_factory=factory, registry=registry)


@contextmanager
def plugin_subscribed() -> Iterator[None]:
    """Subscribe the handlers on the default registry (where `emit` looks) for one test."""
    handlers = {event: dict(names) for event, names in default_registry.handlers.items()}
    jobs = dict(default_registry.jobs)
    register(default_registry, FAST)
    try:
        yield
    finally:
        default_registry.handlers.clear()
        default_registry.handlers.update(handlers)
        default_registry.jobs.clear()
        default_registry.jobs.update(jobs)


def set_tiers(factory: sessionmaker[Session], merchant_id: int) -> None:
    """Give the merchant two named VIP tiers."""
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        tiers = [
            {"id": "silver", "name": TIERS["silver"], "threshold": "100"},
            {"id": "gold", "name": TIERS["gold"], "threshold": "500"},
        ]
        update_program(
            session, merchant_id=merchant_id, changes={"vip": {"enabled": True, "tiers": tiers}}
        )


def insert_customers(
    factory: sessionmaker[Session],
    merchant_id: int,
    count: int,
    *,
    email: Callable[[int], str] | None = None,
    accepts_marketing: bool | None = True,
) -> list[int]:
    """Many customers at once (with a matching opening ledger entry), far faster than the API.

    Customer i has i % 1000 points, a birthday for every third, a tier for every fifth; all
    have ``accepts_marketing`` as their recorded consent (so the sync may create contacts).
    """
    now = utcnow()
    ids: list[int] = []
    with unit_of_work(factory) as session:
        for start in range(0, count, 5000):
            rows = []
            for i in range(start, min(count, start + 5000)):
                rows.append(
                    {
                        "merchant_id": merchant_id,
                        "email": email(i) if email else f"bulk{i}@m{merchant_id}.example.com",
                        "state": "member",
                        "referral_code": f"B{merchant_id}X{i:07d}",
                        "points_balance": i % 1000,
                        "birthday": date(1980 + i % 30, 1 + i % 12, 1 + i % 28)
                        if i % 3 == 0
                        else None,
                        "vip_tier": ("gold" if i % 10 == 0 else "silver") if i % 5 == 0 else None,
                        "accepts_marketing": accepts_marketing,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            session.execute(insert(Customer.__table__), rows)
            codes = [row["referral_code"] for row in rows]
            by_code = {
                code: customer_id
                for code, customer_id in session.execute(
                    select(Customer.referral_code, Customer.id).where(
                        Customer.referral_code.in_(codes)
                    )
                )
            }
            new_ids = [by_code[row["referral_code"]] for row in rows]
            entries = [
                {
                    "merchant_id": merchant_id,
                    "customer_id": customer_id,
                    "points": row["points_balance"],
                    "kind": EntryKind.IMPORT,
                    "reason": "bulk test data",
                    "idempotency_key": f"bulk:{customer_id}",
                    "remaining": row["points_balance"],
                    "created_at": now,
                }
                for customer_id, row in zip(new_ids, rows, strict=True)
                if row["points_balance"]
            ]
            if entries:
                session.execute(insert(LedgerEntry.__table__), entries)
            ids.extend(new_ids)
    return ids


def clean_sqlite_quickly(engine: Engine) -> None:
    """Empty every table with foreign keys off (SQLite only).

    Deleting many customers one by one under foreign keys scans ``customers.referred_by_id``
    (not indexed) for every row; this keeps tests with thousands of customers fast.
    """
    if engine.dialect.name != "sqlite":
        return
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA foreign_keys=OFF")
        for table in reversed(Base.metadata.sorted_tables):
            cursor.execute(f"DELETE FROM {table.name}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
    finally:
        raw.close()


def expected_fields(
    customer: Customer,
    tier_names: dict[str, str] | None = None,
    base_url: str = "http://tally.test",
) -> dict[str, Any]:
    """What the emulator should hold for a customer (fields set to null are absent)."""
    values: dict[str, Any] = {
        "LOYALTY_POINTS": customer.points_balance,
        "LOYALTY_REFERRAL_URL": f"{base_url}/r/{customer.referral_code}",
    }
    if customer.birthday is not None:
        # Noon UTC: the birthday for a merchant in UTC (the factories' default zone).
        values["LOYALTY_BIRTHDAY"] = f"{customer.birthday.isoformat()}T12:00:00+00:00"
    if customer.vip_tier is not None:
        names = TIERS if tier_names is None else tier_names
        values["LOYALTY_VIP_TIER"] = names.get(customer.vip_tier, customer.vip_tier)
    return values


def all_expected(factory: sessionmaker[Session], merchant_id: int) -> dict[str, dict[str, Any]]:
    """Expected data fields of every customer of a merchant, by email."""
    with factory() as session:
        _merchant, program = load_program(session, merchant_id)
        names = {tier.id: tier.name for tier in program.vip.tiers}
        return {
            c.email: expected_fields(c, names)
            for c in session.scalars(select(Customer).where(Customer.merchant_id == merchant_id))
        }


def emulator_fields(server: EmulatorServer) -> dict[str, dict[str, Any]]:
    """The demo account's contacts: email -> data fields."""
    return {email: c["dataFields"] for email, c in server.emulator.contacts.items()}


def pending_rows(factory: sessionmaker[Session]) -> list[tuple[int, int, int]]:
    """(customer id, version, attempts) of every pending contact."""
    with factory() as session:
        return [
            (row.customer_id, row.version, row.attempts)
            for row in session.scalars(select(PendingContact).order_by(PendingContact.customer_id))
        ]


# --------------------------------------------------------------------------- fixtures


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


def _connection(factory: sessionmaker[Session], merchant_id: int) -> DotdigitalConnection | None:
    with factory() as session:
        return session.scalar(
            select(DotdigitalConnection).where(DotdigitalConnection.merchant_id == merchant_id)
        )


# --------------------------------------------------------------------------- connect


def test_good_credentials_are_stored_with_the_password_encrypted(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    m = make_merchant(session_factory)
    saved = service.save_credentials(
        uow(session_factory, m.id),
        merchant_id=m.id,
        username=DEMO_USERNAME,
        password=DEMO_PASSWORD,
        settings=dd_settings,
    )
    assert saved == service.SavedCredentials(
        api_username=DEMO_USERNAME,
        api_endpoint=emulator.base_url,
        account_id=1,
        replaced_user=False,
        enabled=False,
    )
    connection = _connection(session_factory, m.id)
    assert connection is not None
    assert connection.api_endpoint == emulator.base_url
    assert connection.enabled is False
    assert DEMO_PASSWORD not in connection.password_encrypted
    assert DEMO_PASSWORD not in repr(connection)
    assert service.decrypt_password(dd_settings, connection.password_encrypted) == DEMO_PASSWORD
    access = service.connection_access(dd_settings, connection)
    assert DEMO_PASSWORD not in repr(access)
    with session_factory() as session:
        raw = session.execute(text("SELECT password_encrypted FROM dotdigital_connections")).one()
    assert DEMO_PASSWORD not in raw[0]
    assert emulator.emulator.call_counts == {"GET /v2/account-info": 1}
    # Connecting does not backfill: nothing was sent, nothing is waiting.
    assert pending_rows(session_factory) == []


def test_the_key_depends_on_the_secret(dd_settings: Settings) -> None:
    token = service.encrypt_password(dd_settings, "s3cret")
    other = dd_settings.model_copy(
        update={"secret_key": SecretStr("another-secret-of-enough-length")}
    )
    with pytest.raises(Conflict, match="cannot be decrypted"):
        service.decrypt_password(other, token)


def test_bad_credentials_are_refused_and_nothing_is_stored(
    session_factory: sessionmaker[Session], dd_settings: Settings
) -> None:
    m = make_merchant(session_factory)
    with pytest.raises(ValidationFailed) as refused:
        service.save_credentials(
            uow(session_factory, m.id),
            merchant_id=m.id,
            username=DEMO_USERNAME,
            password="wrong-password",
            settings=dd_settings,
        )
    assert refused.value.detail == "Dotdigital refused the API user's username or password"
    assert _connection(session_factory, m.id) is None


def test_empty_credentials_are_refused_before_calling_dotdigital(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    m = make_merchant(session_factory)
    with pytest.raises(ValidationFailed) as refused:
        service.save_credentials(
            uow(session_factory, m.id),
            merchant_id=m.id,
            username="  ",
            password="",
            settings=dd_settings,
        )
    assert [(p.field, p.message) for p in refused.value.errors] == [
        ("username", "the API user's username is required"),
        ("password", "the API user's password is required"),
    ]
    assert emulator.emulator.call_counts == {}
    assert _connection(session_factory, m.id) is None


def test_a_region_2_account_gets_the_region_2_endpoint(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    m = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id, username=US_USERNAME, password=US_PASSWORD)
    connection = _connection(session_factory, m.id)
    assert connection is not None
    assert connection.api_endpoint == emulator.url_for_region(2)
    assert connection.api_endpoint != emulator.base_url
    # The fields were created in the region-2 account, through region 2's own port.
    names = [f["name"] for f in emulator.emulator.data_fields_of(US_USERNAME)]
    assert names == BUILT_INS + FIELDS
    hosts = {c["host"] for c in emulator.emulator.calls if c["route"] == "/v2/data-fields"}
    assert hosts == {f"127.0.0.1:{emulator.ports[2]}"}


def test_replacing_the_api_user_switches_syncing_off(
    session_factory: sessionmaker[Session], dd_settings: Settings
) -> None:
    m = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id)
    saved = service.save_credentials(
        uow(session_factory, m.id),
        merchant_id=m.id,
        username=US_USERNAME,
        password=US_PASSWORD,
        settings=dd_settings,
    )
    assert saved.replaced_user is True
    assert saved.enabled is False
    # Saving the same user again (a new password, say) keeps syncing as it was.
    service.enable(uow(session_factory, m.id), merchant_id=m.id, settings=dd_settings)
    again = service.save_credentials(
        uow(session_factory, m.id),
        merchant_id=m.id,
        username=US_USERNAME,
        password=US_PASSWORD,
        settings=dd_settings,
    )
    assert (again.replaced_user, again.enabled) == (False, True)


# --------------------------------------------------------------------------- fields


def test_enable_creates_the_four_fields_with_their_types(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    m = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id, enable=False)
    result = service.enable(uow(session_factory, m.id), merchant_id=m.id, settings=dd_settings)
    assert result == service.EnableResult(created=FIELDS, existing=[])
    created = {f["name"]: (f["type"], f["visibility"]) for f in emulator.emulator.data_fields}
    assert {name: created[name] for name in FIELDS} == {
        "LOYALTY_POINTS": ("Numeric", "Private"),
        "LOYALTY_REFERRAL_URL": ("String", "Private"),
        "LOYALTY_BIRTHDAY": ("Date", "Private"),
        "LOYALTY_VIP_TIER": ("String", "Private"),
    }
    connection = _connection(session_factory, m.id)
    assert connection is not None
    assert connection.enabled is True
    # Enabling again finds them all.
    again = service.enable(uow(session_factory, m.id), merchant_id=m.id, settings=dd_settings)
    assert again == service.EnableResult(created=[], existing=FIELDS)


def test_a_field_of_the_wrong_type_is_reported_and_syncing_stays_off(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    m = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id, enable=False)
    # Someone created LOYALTY_POINTS as text in Dotdigital before Tally was connected.
    with HttpDotdigitalClient(DEMO_USERNAME, DEMO_PASSWORD, emulator.base_url, 2.0) as api:
        api.create_data_field("loyalty_points", "String")
    with pytest.raises(ValidationFailed) as refused:
        service.enable(uow(session_factory, m.id), merchant_id=m.id, settings=dd_settings)
    assert refused.value.detail == (
        "some mapped Dotdigital data fields cannot be used; syncing stays off until the "
        "mapping or the fields in Dotdigital are changed"
    )
    assert [(p.field, p.message, p.value) for p in refused.value.errors] == [
        (
            "mapping.points_balance",
            "Dotdigital data field loyalty_points is String, but points_balance needs Numeric; "
            "rename the mapping or change the field in Dotdigital",
            "loyalty_points",
        )
    ]
    connection = _connection(session_factory, m.id)
    assert connection is not None
    assert connection.enabled is False
    assert connection.field_check is not None
    assert connection.field_check["created"] == FIELDS[1:]
    assert [c["name"] for c in connection.field_check["conflicts"]] == ["loyalty_points"]
    # The conflicting field was left alone.
    types = {f["name"]: f["type"] for f in emulator.emulator.data_fields}
    assert types["loyalty_points"] == "String"

    # Mapping the points to another field resolves it.
    mapping = DataFieldMapping(points_balance="LOYALTY_POINTS_NUM")
    service.update_mapping(
        uow(session_factory, m.id), merchant_id=m.id, mapping=mapping, settings=dd_settings
    )
    result = service.enable(uow(session_factory, m.id), merchant_id=m.id, settings=dd_settings)
    assert result == service.EnableResult(created=["LOYALTY_POINTS_NUM"], existing=FIELDS[1:])
    types = {f["name"]: f["type"] for f in emulator.emulator.data_fields}
    assert types["LOYALTY_POINTS_NUM"] == "Numeric"


def test_a_mapping_with_a_conflict_is_refused_while_enabled_and_nothing_changes(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    m = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id)
    mapping = DataFieldMapping(vip_tier="FIRSTNAME", birthday=None)
    service.update_mapping(
        uow(session_factory, m.id), merchant_id=m.id, mapping=mapping, settings=dd_settings
    )  # FIRSTNAME is a String: fine
    bad = DataFieldMapping(points_balance="LASTNAME")
    with pytest.raises(ValidationFailed) as refused:
        service.update_mapping(
            uow(session_factory, m.id), merchant_id=m.id, mapping=bad, settings=dd_settings
        )
    assert [p.field for p in refused.value.errors] == ["mapping.points_balance"]
    connection = _connection(session_factory, m.id)
    assert connection is not None
    assert connection.field_mapping == mapping.model_dump()


def test_field_names_are_validated() -> None:
    with pytest.raises(ValidationFailed) as refused:
        service.parse_mapping({"points_balance": "LOYALTY POINTS", "vip_tier": "X" * 21})
    assert [(p.field, p.value) for p in refused.value.errors] == [
        ("mapping.points_balance", "LOYALTY POINTS"),
        ("mapping.vip_tier", "X" * 21),
    ]
    assert "contains ' '" in refused.value.errors[0].message


def test_disable_keeps_settings_and_disconnect_forgets_them(
    session_factory: sessionmaker[Session], dd_settings: Settings
) -> None:
    m = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id)
    customer_id = make_customer(session_factory, m.id)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        service.mark_dirty(session, merchant_id=m.id, customer_id=customer_id)
        service.disable(session, merchant_id=m.id)
    connection = _connection(session_factory, m.id)
    assert connection is not None
    assert (connection.enabled, connection.api_username) == (False, DEMO_USERNAME)
    assert pending_rows(session_factory) == [(customer_id, 1, 0)]

    with unit_of_work(session_factory, merchant_id=m.id) as session:
        assert service.disconnect(session, merchant_id=m.id) is True
    assert _connection(session_factory, m.id) is None
    assert pending_rows(session_factory) == []
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        assert service.disconnect(session, merchant_id=m.id) is False
        view = service.status(session, merchant_id=m.id)
    assert (view.connected, view.enabled, view.backlog) == (False, False, 0)


# --------------------------------------------------------------------------- marking


def test_changes_are_marked_only_while_syncing_is_on_and_coalesce(
    session_factory: sessionmaker[Session], dd_settings: Settings
) -> None:
    m = make_merchant(session_factory)
    with plugin_subscribed():
        customer_id = make_customer(session_factory, m.id, points=10)
        worker = sync_worker(dd_settings, session_factory)
        worker.drain()
        assert pending_rows(session_factory) == []  # not connected: nothing written

        connect(session_factory, dd_settings, m.id, enable=False)
        make_customer(session_factory, m.id, points=10)
        worker.drain()
        assert pending_rows(session_factory) == []  # connected but off

        service.enable(uow(session_factory, m.id), merchant_id=m.id, settings=dd_settings)
        with unit_of_work(session_factory, merchant_id=m.id) as session:
            for fields in [("first_name",), ("birthday",), ("email",)]:
                emit(
                    session,
                    CustomerUpdated(merchant_id=m.id, customer_id=customer_id, fields=fields),
                )
        # Marked, but not flushed: run the handlers only.
        for message in worker.claim(100):
            worker.handle(message)
    # A name change is not synced; the birthday and email changes coalesce into one row.
    assert pending_rows(session_factory) == [(customer_id, 2, 0)]


def test_an_import_batch_marks_all_its_customers_in_one_message(
    session_factory: sessionmaker[Session], dd_settings: Settings
) -> None:
    m = make_merchant(session_factory)
    other = make_merchant(session_factory)
    with plugin_subscribed():
        ids = [make_customer(session_factory, m.id) for _ in range(5)]
        stranger = make_customer(session_factory, other.id)
        worker = sync_worker(dd_settings, session_factory)
        worker.drain()
        connect(session_factory, dd_settings, m.id)
        with unit_of_work(session_factory, merchant_id=m.id) as session:
            service.mark_dirty(session, merchant_id=m.id, customer_id=ids[0])
            emit(
                session,
                CustomersImported(
                    merchant_id=m.id,
                    import_id=7,
                    # A customer deleted since and another merchant's customer are left out.
                    customer_ids=(*ids[:4], 999_999, stranger),
                ),
            )
        messages = worker.claim(100)
        assert [message.event_type for message in messages] == ["CustomersImported"]
        worker.handle(messages[0])
    # ids[0] was already waiting: its row is bumped, not doubled; ids[4] was not in the batch.
    assert pending_rows(session_factory) == [(ids[0], 2, 0)] + [(cid, 1, 0) for cid in ids[1:4]]


def test_an_import_batch_marks_nothing_while_syncing_is_off(
    session_factory: sessionmaker[Session], dd_settings: Settings
) -> None:
    m = make_merchant(session_factory)
    with plugin_subscribed():
        ids = [make_customer(session_factory, m.id) for _ in range(2)]
        connect(session_factory, dd_settings, m.id, enable=False)
        worker = sync_worker(dd_settings, session_factory)
        worker.drain()
        with unit_of_work(session_factory, merchant_id=m.id) as session:
            emit(session, CustomersImported(merchant_id=m.id, import_id=1, customer_ids=tuple(ids)))
        worker.drain()
    assert pending_rows(session_factory) == []


def test_status_reports_backlog_failures_and_jobs(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    m = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id)
    ids = [make_customer(session_factory, m.id) for _ in range(3)]
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        for customer_id in ids:
            service.mark_dirty(session, merchant_id=m.id, customer_id=customer_id)
        job = service.start_manual_sync(session, merchant_id=m.id)
        job_id = job.id
    with (
        unit_of_work(session_factory, merchant_id=m.id) as session,
        pytest.raises(Conflict, match=f"manual sync {job_id} is still running"),
    ):
        service.start_manual_sync(session, merchant_id=m.id)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        view = service.status(session, merchant_id=m.id, settings=dd_settings)
        total = session.scalar(select(func.count(Customer.id)))
    assert view.connected is True
    assert view.enabled is True
    assert view.api_endpoint == emulator.base_url
    assert view.calls_per_minute == 60_000
    assert view.backlog == 3
    assert view.last_successful_sync_at is None
    assert [(j.id, j.status, j.total, j.sent) for j in view.recent_jobs] == [
        (job_id, "running", total, 0)
    ]


def test_another_merchant_sees_nothing(
    session_factory: sessionmaker[Session], dd_settings: Settings
) -> None:
    m = make_merchant(session_factory)
    other = make_merchant(session_factory)
    connect(session_factory, dd_settings, m.id)
    with unit_of_work(session_factory, merchant_id=other.id) as session:
        view = service.status(session, merchant_id=other.id)
        assert view.connected is False
        with pytest.raises(Conflict, match="not connected"):
            service.start_manual_sync(session, merchant_id=other.id)
