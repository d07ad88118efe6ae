"""Marketing consent and the Dotdigital sync, against the emulator as a real HTTP server.

Dotdigital creates a contact sent without a channel status as subscribed, so Tally creates a
contact only for a customer whose consent is recorded, and never sends a status that could
change an existing contact's.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers import service as customers
from tally.customers.orm import Customer, CustomerState
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.devtools.dotdigital_emulator import DEMO_PASSWORD, DEMO_USERNAME, EmulatorServer
from tally.integrations.dotdigital import service
from tally.integrations.dotdigital.auto_sync import LOOKUP_POSTPONE
from tally.integrations.dotdigital.client import HttpDotdigitalClient
from tally.integrations.dotdigital.consent import (
    LEFT_OUT_REASONS,
    NO_CONSENT_NO_CONTACT,
    NO_CONSENT_NOT_LOOKED_UP,
)
from tally.integrations.dotdigital.orm import PendingContact, SyncFailure
from tally.integrations.dotdigital.sync import read_job
from tally.merchants import service as merchants
from tally.outbox.worker import Worker
from tests.integration.test_admin_pages import PASSWORD, admin_app, sign_in
from tests.integration.test_dotdigital_service import (
    FAST,
    connect,
    dotdigital_settings,
    emulator_config,
    pending_rows,
    plugin_subscribed,
    sync_worker,
)
from tests.support.factories import make_customer, make_merchant

PATCH = "PATCH /contacts/v3/email/{email}"
GET = "GET /contacts/v3/email/{email}"
IMPORT = "PUT /contacts/v3/import"


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


def _shop(factory: sessionmaker[Session], settings: Settings, emulator: EmulatorServer) -> int:
    """A connected merchant with three customers the sync must treat differently.

    - ``yes@`` consented: created subscribed;
    - ``guest@``, a guest from an order, never stated consent and has no contact;
    - ``old@`` never stated consent, but the merchant's account already has an unsubscribed
      contact for the address.
    """
    merchant_id = make_merchant(factory).id
    emulator.emulator.seed_contact("old@example.com", status="unsubscribed")
    ids = [
        make_customer(
            factory, merchant_id, email="yes@example.com", points=10, accepts_marketing=True
        ),
        make_customer(factory, merchant_id, email="guest@example.com", state=CustomerState.GUEST),
        make_customer(factory, merchant_id, email="old@example.com", points=30),
    ]
    connect(factory, settings, merchant_id)
    _mark(factory, merchant_id, ids)
    return merchant_id


def _mark(factory: sessionmaker[Session], merchant_id: int, ids: list[int]) -> None:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        for customer_id in ids:
            service.mark_dirty(session, merchant_id=merchant_id, customer_id=customer_id)


def _status(emulator: EmulatorServer, email: str) -> tuple[str, str]:
    contact = emulator.emulator.contacts[email]
    return contact["status"], contact["channelProperties"]["email"]["status"]


def _no_status_sent(emulator: EmulatorServer) -> None:
    """No request Tally made named a channel status (it would change an existing contact)."""
    for call in emulator.emulator.calls:
        body = call.get("body")
        contacts = body.get("contacts", [body]) if isinstance(body, dict) else []
        assert all("channelProperties" not in c for c in contacts if isinstance(c, dict)), call


def _left_out(factory: sessionmaker[Session]) -> dict[str, str]:
    with factory() as session:
        return {
            str(f.email): f.code
            for f in session.scalars(
                select(SyncFailure).where(
                    SyncFailure.code.in_((NO_CONSENT_NO_CONTACT, NO_CONSENT_NOT_LOOKED_UP))
                )
            )
        }


def _page(settings: Settings, factory: sessionmaker[Session], merchant_id: int) -> str:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        merchants.create_admin_user(
            session, merchant_id=merchant_id, email="owner@shop.example", password=PASSWORD
        )
    with TestClient(admin_app(settings, factory)) as browser:
        assert sign_in(browser, "owner@shop.example") == (303, "/admin")
        html = browser.get("/admin/integrations/dotdigital").text
    cell = html[html.index('data-testid="left-out"') :]
    return cell[: cell.index("</dd>")]


def test_single_upserts_create_only_consenting_customers_and_keep_statuses(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    merchant_id = _shop(session_factory, dd_settings, emulator)
    sync_worker(dd_settings, session_factory).run_due_jobs()

    contacts = emulator.emulator.contacts
    assert sorted(contacts) == ["old@example.com", "yes@example.com"]
    assert _status(emulator, "yes@example.com") == ("subscribed", "Subscribed")
    # The existing contact got the loyalty values and kept its status.
    assert _status(emulator, "old@example.com") == ("unsubscribed", "Unsubscribed")
    assert contacts["old@example.com"]["dataFields"]["LOYALTY_POINTS"] == 30
    # Looked up before any upsert; the guest's lookup found nothing, so no upsert for it.
    assert sorted(c["path"].rsplit("/", 1)[1] for c in _calls(emulator, GET)) == [
        "guest@example.com",
        "old@example.com",
    ]
    assert emulator.emulator.call_counts[PATCH] == 2
    _no_status_sent(emulator)
    assert pending_rows(session_factory) == []
    assert _left_out(session_factory) == {"guest@example.com": NO_CONSENT_NO_CONTACT}
    page = _page(dd_settings, session_factory, merchant_id)
    assert f"1 customer not sent: {LEFT_OUT_REASONS[NO_CONSENT_NO_CONTACT]}" in page


def test_a_guest_who_consents_later_is_created_and_no_longer_counted_as_left_out(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    merchant_id = _shop(session_factory, dd_settings, emulator)
    worker = sync_worker(dd_settings, session_factory)
    worker.run_due_jobs()
    assert "guest@example.com" not in emulator.emulator.contacts

    # Recording consent is a CustomerUpdated event, which marks the customer for the sync.
    with plugin_subscribed(), unit_of_work(session_factory, merchant_id=merchant_id) as session:
        guest = customers.get_customer_by_email(session, merchant_id, "guest@example.com")
        customers.update_customer(
            session, merchant_id=merchant_id, customer_id=guest.id, accepts_marketing=True
        )
    # Delivering the event marks the guest; the flush the drain runs then creates it.
    worker.drain()
    assert pending_rows(session_factory) == []
    assert _status(emulator, "guest@example.com") == ("subscribed", "Subscribed")
    assert _left_out(session_factory) == {}


def test_a_bulk_import_carries_only_consenting_customers(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    merchant_id = _shop(session_factory, dd_settings, emulator)
    more = [
        make_customer(
            session_factory, merchant_id, email=f"bulk{i}@example.com", accepts_marketing=True
        )
        for i in range(3)
    ]
    _mark(session_factory, merchant_id, more)
    options = dataclasses.replace(FAST, bulk_threshold=2)
    worker = sync_worker(dd_settings, session_factory, options)
    _run_until_sent(worker, session_factory)

    imports = _calls(emulator, IMPORT)
    assert len(imports) == 1
    sent = sorted(c["identifiers"]["email"] for c in imports[0]["body"]["contacts"])
    assert sent == [f"bulk{i}@example.com" for i in range(3)] + ["yes@example.com"]
    contacts = emulator.emulator.contacts
    assert "guest@example.com" not in contacts
    for email in [*sent]:
        assert _status(emulator, email) == ("subscribed", "Subscribed")
    assert _status(emulator, "old@example.com") == ("unsubscribed", "Unsubscribed")
    assert contacts["old@example.com"]["dataFields"]["LOYALTY_POINTS"] == 30
    _no_status_sent(emulator)
    assert _left_out(session_factory) == {"guest@example.com": NO_CONSENT_NO_CONTACT}


def test_a_manual_sync_creates_only_consenting_customers_and_changes_no_status(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    merchant_id = _shop(session_factory, dd_settings, emulator)
    # A consenting customer whose contact was unsubscribed in Dotdigital stays unsubscribed.
    emulator.emulator.seed_contact("gone@example.com", status="unsubscribed")
    make_customer(
        session_factory, merchant_id, email="gone@example.com", points=5, accepts_marketing=True
    )
    with unit_of_work(session_factory, merchant_id=merchant_id) as session:
        # Only the manual sync sends: nothing is left for the automatic one.
        session.execute(delete(PendingContact))
        job_id = service.start_manual_sync(session, merchant_id=merchant_id).id
    worker = sync_worker(dd_settings, session_factory)
    deadline = time.monotonic() + 120  # a safety net for a busy machine, not a speed test
    while read_job(session_factory, job_id).status == "running":
        assert time.monotonic() < deadline, "the manual sync did not finish"
        worker.run_due_jobs()
        time.sleep(0.02)
    view = read_job(session_factory, job_id)
    assert (view.status, view.sent) == ("finished", 2)

    contacts = emulator.emulator.contacts
    assert "guest@example.com" not in contacts
    assert _status(emulator, "yes@example.com") == ("subscribed", "Subscribed")
    assert _status(emulator, "gone@example.com") == ("unsubscribed", "Unsubscribed")
    assert contacts["gone@example.com"]["dataFields"]["LOYALTY_POINTS"] == 5
    assert _status(emulator, "old@example.com") == ("unsubscribed", "Unsubscribed")
    _no_status_sent(emulator)
    assert emulator.emulator.call_counts.get(GET, 0) == 0
    assert _left_out(session_factory) == {
        "guest@example.com": NO_CONSENT_NOT_LOOKED_UP,
        "old@example.com": NO_CONSENT_NOT_LOOKED_UP,
    }
    page = _page(dd_settings, session_factory, merchant_id)
    assert f"2 customers not sent: {LEFT_OUT_REASONS[NO_CONSENT_NOT_LOOKED_UP]}" in page


def _run_until_sent(worker: Worker, factory: sessionmaker[Session]) -> None:
    deadline = time.monotonic() + 120  # a safety net for a busy machine, not a speed test
    while pending_rows(factory):
        assert time.monotonic() < deadline, "the backlog was not sent"
        worker.run_due_jobs()
        time.sleep(0.02)


def _calls(emulator: EmulatorServer, key: str) -> list[dict[str, Any]]:
    method, route = key.split(" ", 1)
    return [c for c in emulator.emulator.calls if (c["method"], c["route"]) == (method, route)]


def test_the_emulator_keeps_a_contacts_status_unless_the_update_names_one(
    emulator: EmulatorServer,
) -> None:
    with HttpDotdigitalClient(DEMO_USERNAME, DEMO_PASSWORD, emulator.base_url) as client:
        created = client.upsert_contact("new@example.com", {})
        emulator.emulator.seed_contact("u@example.com", status="unsubscribed")
        client.upsert_contact(
            "u@example.com", {}, channel_properties={"email": {"emailType": "html"}}
        )
        client.upsert_contact("s@example.com", {})
        client.upsert_contact(
            "s@example.com", {}, channel_properties={"email": {"status": "unsubscribed"}}
        )
    assert created.created
    assert created.contact.status == "subscribed"
    assert _status(emulator, "new@example.com") == ("subscribed", "Subscribed")
    assert _status(emulator, "u@example.com") == ("unsubscribed", "Unsubscribed")
    assert _status(emulator, "s@example.com") == ("unsubscribed", "Unsubscribed")


def test_customers_a_bulk_run_could_not_look_up_step_aside_for_later_ones(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    merchant_id = _shop(session_factory, dd_settings, emulator)
    with unit_of_work(session_factory, merchant_id=merchant_id) as session:
        # One call in the bucket: the import's start.
        service.set_calls_per_minute(session, merchant_id=merchant_id, calls_per_minute=6)
    options = dataclasses.replace(FAST, bulk_threshold=2)
    before = utcnow()
    sync_worker(dd_settings, session_factory, options).run_due_jobs()

    assert emulator.emulator.call_counts.get(IMPORT) == 1
    assert emulator.emulator.call_counts.get(GET, 0) == 0
    with session_factory() as session:
        rows = {
            row.customer_id: (row.attempts, row.next_attempt_at, row.import_pk)
            for row in session.scalars(select(PendingContact))
        }
        emails = dict(session.execute(select(Customer.id, Customer.email)).tuples().all())
    waiting = {emails[cid]: value for cid, value in rows.items()}
    assert waiting["yes@example.com"][2] is not None  # travelling in the import
    for email in ("guest@example.com", "old@example.com"):
        attempts, next_attempt_at, import_pk = waiting[email]
        assert (attempts, import_pk) == (0, None)
        assert next_attempt_at >= before + LOOKUP_POSTPONE
