"""Defects found by trying Tally as a new user (issue 13): order dates without a time, the
claim-points figure, the Dotdigital "last sync" after a sync, and the dashboard chart's note."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.engine import unit_of_work
from tally.imports import service as imports
from tally.integrations.dotdigital.orm import DotdigitalConnection, SyncJob
from tally.merchants.orm import Merchant
from tally.notifications.orm import EmailMessage
from tally.program.config_service import update_program
from tests.integration.test_admin_pages import Store, admin_app, make_store, sign_in


@pytest.fixture
def store(session_factory: sessionmaker[Session]) -> Store:
    store = make_store(session_factory, "owner@first-use.example")
    with unit_of_work(session_factory) as session:
        # West of UTC: midnight UTC of a date is the evening before here.
        session.get_one(Merchant, store.merchant_id).timezone = "America/Sao_Paulo"
    return store


@pytest.fixture
def client(
    settings: Settings, session_factory: sessionmaker[Session], store: Store
) -> Iterator[TestClient]:
    with TestClient(admin_app(settings, session_factory)) as test_client:
        assert sign_in(test_client, store.email) == (303, "/admin")
        yield test_client


def _import_orders(
    factory: sessionmaker[Session], merchant_id: int, tmp_path: Path, text: str, **options: bool
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(text, encoding="utf-8")
    job = imports.run_import(
        factory, merchant_id=merchant_id, path=path, options=imports.OrderImportOptions(**options)
    )
    assert job.status == "completed", job.errors


def test_an_order_date_without_a_time_is_that_day_in_the_stores_zone(
    client: TestClient, store: Store, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    _import_orders(
        session_factory,
        store.merchant_id,
        tmp_path,
        "order_id,email,total,placed_at\nD1,ana@example.com,40.00,2025-01-05\n",
    )
    with session_factory() as session:
        ana = session.scalars(select(Customer).where(Customer.email == "ana@example.com")).one()
    activity = client.get(
        f"/admin/customers/{ana.id}/activity?tab=orders", headers={"HX-Request": "true"}
    ).text
    assert "2025-01-05 00:00" in activity
    assert "2025-01-04" not in activity


def test_the_claim_invitation_offers_the_whole_balance(
    store: Store, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with unit_of_work(session_factory, merchant_id=store.merchant_id) as session:
        update_program(
            session,
            merchant_id=store.merchant_id,
            changes={
                "place_order": {"enabled": True},
                "vip": {
                    "enabled": True,
                    "tiers": [
                        {
                            "id": "gold",
                            "name": "Gold",
                            "threshold": "100",
                            "entry_reward_points": 50,
                        }
                    ],
                },
            },
        )
    _import_orders(
        session_factory,
        store.merchant_id,
        tmp_path,
        "order_id,email,total,placed_at\nG1,guest@example.com,135.00,2025-01-05\n",
        send_create_account_emails=True,
    )
    with session_factory() as session:
        guest = session.scalars(select(Customer).where(Customer.email == "guest@example.com")).one()
        email = session.scalars(select(EmailMessage)).one()
    # 135 points for the order and 50 for entering Gold: the invitation offers all 185.
    assert guest.points_balance == 185
    assert (email.email_type, email.variables["points"]) == ("claim_points_invitation", 185)


def test_a_finished_sync_refreshes_the_last_sync_on_the_page(
    client: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    finished = datetime(2026, 5, 4, 15, 30, tzinfo=UTC)
    with unit_of_work(session_factory, merchant_id=store.merchant_id) as session:
        session.add(
            DotdigitalConnection(
                merchant_id=store.merchant_id,
                api_username="apiuser@example.com",
                password_encrypted="not-used",
                api_endpoint="https://r1-api.dotdigital.com",
                enabled=True,
                last_successful_sync_at=finished,
            )
        )
        running = SyncJob(merchant_id=store.merchant_id, status="running", total_count=3)
        done = SyncJob(
            merchant_id=store.merchant_id, status="finished", total_count=3, finished_at=finished
        )
        session.add_all([running, done])
        session.flush()
        running_id, done_id = running.id, done.id
    polled = client.get(
        f"/admin/integrations/dotdigital/sync/{running_id}", headers={"HX-Request": "true"}
    ).text
    assert 'id="last-sync"' not in polled
    last = client.get(
        f"/admin/integrations/dotdigital/sync/{done_id}", headers={"HX-Request": "true"}
    ).text
    oob = re.search(r'<dd id="last-sync"[^>]*hx-swap-oob="true">([^<]*)</dd>', last)
    assert oob is not None, last
    assert oob.group(1) == "2026-05-04 12:30"  # in the store's zone, as the page shows it
    page = client.get("/admin/integrations/dotdigital").text
    assert re.search(r'<dd id="last-sync"[^>]*>2026-05-04 12:30</dd>', page)


def test_the_dashboard_chart_says_imported_points_count_on_the_import_day(
    client: TestClient,
) -> None:
    note = re.search(r'data-testid="chart-note">([^<]*)<', client.get("/admin").text)
    assert note is not None
    assert "import day" in note.group(1)


def test_each_kind_of_points_email_is_listed_and_editable(client: TestClient) -> None:
    listed = client.get("/admin/settings/emails").text
    for name in (
        "Points earned for an order",
        "Points for creating an account",
        "Birthday points",
        "Points for a custom action",
    ):
        assert name in listed
    birthday = client.get("/admin/settings/emails/birthday_points")
    assert birthday.status_code == 200
    assert "Happy birthday from {{ store_name }}" in birthday.text
