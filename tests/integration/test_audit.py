"""The audit log: admin, API and command-line changes each recorded once, with who and what."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from tally.audit.actor import Actor
from tally.audit.orm import AuditEvent
from tally.cli import main as cli
from tally.config import Settings
from tally.db.engine import unit_of_work
from tally.demo import DEMO_PROGRAM
from tally.merchants import service as merchants
from tally.merchants.orm import AdminUser, ApiKey
from tally.program.config_service import update_program
from tests.integration.test_admin_pages import (
    PASSWORD,
    Store,
    admin_app,
    make_store,
    sign_in,
    token,
)
from tests.support.factories import make_customer

runner = CliRunner()


@pytest.fixture
def tally(settings: Settings, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TALLY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TALLY_ENVIRONMENT", "test")
    monkeypatch.setattr(cli.console, "_width", 300)

    def run(*args: str) -> Result:
        return runner.invoke(cli.app, list(args))

    return run


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    return admin_app(settings, session_factory)


@pytest.fixture
def store(session_factory: sessionmaker[Session]) -> Store:
    store = make_store(session_factory, "owner@shop.example")
    with unit_of_work(session_factory) as session:
        update_program(
            session, merchant_id=store.merchant_id, changes=DEMO_PROGRAM, changed_by="seed"
        )
    return store


@pytest.fixture
def owner(app: FastAPI, store: Store) -> TestClient:
    client = TestClient(app, client=("198.51.100.7", 5000))
    assert sign_in(client, store.email) == (303, "/admin")
    return client


def events(factory: sessionmaker[Session], merchant_id: int) -> list[AuditEvent]:
    with factory() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.merchant_id == merchant_id)
                .order_by(AuditEvent.id)
            )
        )


def test_nothing_is_recorded_without_an_actor(
    store: Store, session_factory: sessionmaker[Session]
) -> None:
    # The seeding above ran in units of work without an actor, as the worker's do.
    assert events(session_factory, store.merchant_id) == []


def test_a_program_change_in_the_admin_is_one_event_with_the_changed_sections(
    owner: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    response = owner.post(
        "/admin/settings/vip",
        data={
            "form": "vip",
            "vip.metric": "amount_spent",
            "vip.window_kind": "lifetime",
            "csrf_token": token(owner),
        },
        follow_redirects=False,
    )

    assert response.status_code == 303
    (event,) = events(session_factory, store.merchant_id)
    assert (event.actor, event.action, event.target_type, event.target_id) == (
        "admin:owner@shop.example",
        "program.updated",
        "program",
        str(store.merchant_id),
    )
    assert event.address == "198.51.100.7"
    assert event.before is not None
    assert event.after is not None
    assert set(event.before) == set(event.after) == {"version", "vip"}
    assert event.before["vip"]["enabled"] is True
    assert event.after["vip"]["enabled"] is False
    assert event.after["version"] == event.before["version"] + 1


def test_a_points_adjustment_through_the_api_is_one_event_naming_the_key(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with unit_of_work(session_factory) as session:
        merchant = merchants.create_merchant(session, name="Shop", store_url="https://shop.example")
        key = merchants.create_api_key(session, merchant_id=merchant.id, name="storefront")
    customer_id = make_customer(session_factory, merchant.id, points=100)

    response = client.post(
        f"/api/v1/customers/{customer_id}/adjustments",
        json={"points": -30, "reason": "Damaged parcel goodwill, reversed"},
        headers={"Authorization": f"Bearer {key.secret}"},
    )

    assert response.status_code == 201, response.text
    (event,) = events(session_factory, merchant.id)
    assert (event.actor, event.actor_id, event.action, event.target_id) == (
        "api-key:storefront",
        str(key.id),
        "points.adjusted",
        str(customer_id),
    )
    assert event.before == {"points_balance": 100}
    assert event.after is not None
    assert {k: event.after[k] for k in ("points_balance", "points", "reason")} == {
        "points_balance": 70,
        "points": -30,
        "reason": "Damaged parcel goodwill, reversed",
    }
    listed = client.get("/api/v1/audit-events", headers={"Authorization": f"Bearer {key.secret}"})
    assert listed.status_code == 200
    assert [(e["action"], e["actor"]) for e in listed.json()["items"]] == [
        ("points.adjusted", "api-key:storefront")
    ]
    with unit_of_work(session_factory) as session:
        other = merchants.create_merchant(session, name="Other", store_url="https://o.example")
        other_key = merchants.create_api_key(session, merchant_id=other.id)
    theirs = client.get(
        "/api/v1/audit-events", headers={"Authorization": f"Bearer {other_key.secret}"}
    )
    assert theirs.json()["items"] == []


def test_removing_a_member_is_one_event_and_the_password_hash_is_masked(
    owner: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    with unit_of_work(session_factory) as session:
        sam = merchants.create_admin_user(
            session,
            merchant_id=store.merchant_id,
            email="sam@shop.example",
            password=PASSWORD,
            role="manager",
        )
        sam_id, sam_hash = sam.id, sam.password_hash

    removed = owner.post(
        f"/admin/team/{sam_id}/remove",
        data={"csrf_token": token(owner, "/admin/team")},
        follow_redirects=False,
    )

    assert removed.status_code == 303
    (event,) = events(session_factory, store.merchant_id)
    assert (event.actor, event.action, event.target_id, event.after) == (
        "admin:owner@shop.example",
        "admin_user.deleted",
        str(sam_id),
        None,
    )
    assert event.before is not None
    assert (event.before["email"], event.before["role"]) == ("sam@shop.example", "manager")
    assert event.before["password_hash"] == "***"
    assert sam_hash not in json.dumps(event.before)


def test_a_reward_change_from_the_cli_is_one_event_and_listed_by_tally_audit(
    tally: Any, store: Store, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    shown = tally("program", "show", "--merchant", str(store.merchant_id))
    path = tmp_path / "program.yaml"
    path.write_text(shown.output.replace("points_cost: 500", "points_cost: 650"), "utf-8")

    applied = tally("program", "apply", str(path), "--merchant", str(store.merchant_id))

    assert applied.exit_code == 0, applied.output
    (event,) = events(session_factory, store.merchant_id)
    assert (event.actor, event.action) == (f"cli:{getpass.getuser()}", "program.updated")
    assert event.before is not None
    assert event.after is not None
    assert set(event.after) == {"version", "rewards"}
    costs = [
        [r["points_cost"] for r in side["rewards"] if r["points_cost"] in (500, 650)]
        for side in (event.before, event.after)
    ]
    assert costs == [[500], [650]]
    listed = tally("audit", "list", "--merchant", str(store.merchant_id), "--json")
    assert listed.exit_code == 0, listed.output
    assert [(e["action"], e["target_type"]) for e in json.loads(listed.output)] == [
        ("program.updated", "program")
    ]
    none = tally("audit", "list", "--merchant", str(store.merchant_id), "--actor", "admin")
    assert "0 of 0 events" in none.output


def test_a_new_api_key_is_recorded_without_its_hash(
    owner: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    response = owner.post(
        "/admin/settings/api-keys",
        data={"name": "erp", "csrf_token": token(owner, "/admin/settings/api-keys")},
        follow_redirects=False,
    )

    assert response.status_code == 201
    (event,) = events(session_factory, store.merchant_id)
    with session_factory() as session:
        stored_hash = session.scalars(select(ApiKey.key_hash).where(ApiKey.name == "erp")).one()
    assert event.action == "api_key.created"
    assert event.after is not None
    assert event.after["key_hash"] == "***"
    assert event.after["name"] == "erp"
    assert stored_hash not in json.dumps(event.after)


def test_an_import_of_ten_thousand_rows_is_one_event(
    tally: Any, store: Store, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    path = tmp_path / "customers.csv"
    rows = "".join(f"c{n}@example.com,{n % 50}\n" for n in range(10_000))
    path.write_text("email,points\n" + rows, encoding="utf-8", newline="")

    imported = tally("import", "customers", str(path), "--merchant", str(store.merchant_id))

    assert imported.exit_code == 0, imported.output
    (event,) = events(session_factory, store.merchant_id)
    assert (event.action, event.target_type) == ("import.created", "import")
    assert event.after is not None
    assert (event.after["kind"], event.after["file_name"]) == ("customers", "customers.csv")
    assert event.target_id is not None

    reverted = tally("import", "revert", event.target_id, "--merchant", str(store.merchant_id))

    assert reverted.exit_code == 0, reverted.output
    started, revert = events(session_factory, store.merchant_id)
    assert started.id == event.id
    assert (revert.action, revert.target_id) == ("import.updated", event.target_id)
    assert (revert.before, revert.after) == ({"status": "completed"}, {"status": "reverted"})


def test_the_audit_page_shows_events_to_owners_and_refuses_support(
    app: FastAPI, owner: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    owner.post(
        "/admin/settings/vip",
        data={
            "form": "vip",
            "vip.metric": "amount_spent",
            "vip.window_kind": "lifetime",
            "csrf_token": token(owner),
        },
        follow_redirects=False,
    )
    with unit_of_work(session_factory) as session:
        merchants.create_admin_user(
            session,
            merchant_id=store.merchant_id,
            email="sue@shop.example",
            password=PASSWORD,
            role="support",
        )

    page = owner.get("/admin/audit?action=program")
    filtered = owner.get("/admin/audit?actor=cli:nobody")
    support = TestClient(app, client=("198.51.100.8", 5000))
    assert sign_in(support, "sue@shop.example") == (303, "/admin")
    refused = support.get("/admin/audit")

    assert page.status_code == 200
    assert 'data-action="program.updated"' in page.text
    assert "admin:owner@shop.example" in page.text
    assert 'data-action="program.updated"' not in filtered.text
    assert refused.status_code == 403
    with session_factory() as session:
        assert session.scalar(select(AdminUser.role).where(AdminUser.email == "sue@shop.example"))


def test_a_rolled_back_unit_of_work_records_nothing_and_a_savepoint_keeps_what_came_before(
    store: Store, session_factory: sessionmaker[Session]
) -> None:
    actor = Actor("cli", "ops")
    with pytest.raises(RuntimeError), unit_of_work(session_factory, actor=actor) as session:
        update_program(session, merchant_id=store.merchant_id, changes={"live": False})
        raise RuntimeError("stop")
    assert events(session_factory, store.merchant_id) == []

    with unit_of_work(session_factory, actor=actor) as session:
        update_program(session, merchant_id=store.merchant_id, changes={"live": False})
        savepoint = session.begin_nested()
        savepoint.rollback()

    (event,) = events(session_factory, store.merchant_id)
    assert (event.actor, event.action) == ("cli:ops", "program.updated")
    assert event.before is not None
    assert event.after is not None
    assert (event.before["live"], event.after["live"]) == (True, False)
    assert event.after["version"] == event.before["version"] + 1


def test_a_redemption_on_the_customers_behalf_and_a_code_pool_upload_are_one_event_each(
    owner: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    customer_id = make_customer(session_factory, store.merchant_id, points=1200)
    uploaded = owner.post(
        "/admin/settings/rewards/five-off/codes",
        data={"csrf_token": token(owner, "/admin/settings/rewards")},
        files={"file": ("codes.csv", b"code\nAAA-1\nBBB-2\n", "text/csv")},
        follow_redirects=False,
    )
    redeemed = owner.post(
        f"/admin/customers/{customer_id}/redemptions",
        data={
            "reward_id": "five-off",
            "redeem_key": "form-1",
            "csrf_token": token(owner, f"/admin/customers/{customer_id}"),
        },
        follow_redirects=False,
    )
    # The same form sent again spends nothing more, and records nothing more.
    owner.post(
        f"/admin/customers/{customer_id}/redemptions",
        data={
            "reward_id": "five-off",
            "redeem_key": "form-1",
            "csrf_token": token(owner, f"/admin/customers/{customer_id}"),
        },
        follow_redirects=False,
    )

    assert (uploaded.status_code, redeemed.status_code) == (303, 303)
    upload, redemption = events(session_factory, store.merchant_id)
    assert (upload.actor, upload.action, upload.target_type, upload.target_id, upload.after) == (
        "admin:owner@shop.example",
        "reward.codes_uploaded",
        "reward",
        "five-off",
        {"added": 2, "skipped_existing": 0},
    )
    assert (redemption.action, redemption.target_id, redemption.before) == (
        "reward.redeemed",
        str(customer_id),
        {"points_balance": 1200},
    )
    assert redemption.after == {
        "points_balance": 700,
        "reward": "five-off",
        "points_spent": 500,
        "coupon_code": "AAA-1",
    }
