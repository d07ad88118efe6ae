"""Editing a reward or a VIP tier in the admin: the preview of its effect, the save, the review."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.engine import unit_of_work
from tally.outbox.orm import OutboxMessage
from tally.outbox.registry import Registry
from tally.outbox.worker import Worker
from tally.program import jobs
from tally.program import service as program_service
from tally.program.config_service import load_program, update_program
from tally.program.orm import TierChangeRecord
from tests.integration.test_admin_pages import Store, admin_app, make_store, sign_in, token
from tests.support.factories import make_customer

TIERS = [
    {"id": "silver", "name": "Silver", "threshold": "100"},
    {"id": "gold", "name": "Gold", "threshold": "500", "entry_reward_points": 50},
]
REWARD = {
    "id": "five-off",
    "type": "fixed_amount",
    "name": "$5 off",
    "points_cost": 500,
    "amount": "5",
}


@pytest.fixture
def store(session_factory: sessionmaker[Session]) -> Store:
    return make_store(session_factory, "owner@shop.example")


@pytest.fixture
def admin(
    settings: Settings, session_factory: sessionmaker[Session], store: Store
) -> Iterator[TestClient]:
    """A browser signed in as the store's owner."""
    with TestClient(admin_app(settings, session_factory)) as browser:
        assert sign_in(browser, store.email) == (303, "/admin")
        yield browser


def _program(factory: sessionmaker[Session], merchant_id: int) -> None:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        update_program(
            session,
            merchant_id=merchant_id,
            changes={
                "vip": {"enabled": True, "metric": "amount_spent", "tiers": TIERS},
                "rewards": [REWARD],
            },
        )


def _spend(factory: sessionmaker[Session], merchant_id: int, email: str, total: str) -> int:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        result = program_service.record_order(
            session,
            merchant_id=merchant_id,
            data=program_service.OrderInput(
                order_id=f"order-{email}",
                email=email,
                total=Decimal(total),
                placed_at=datetime.now(UTC) - timedelta(days=1),
            ),
        )
        return result.order.customer_id


def _tiers(factory: sessionmaker[Session]) -> dict[str, str | None]:
    with factory() as session:
        return {
            email: tier
            for email, tier in session.execute(select(Customer.email, Customer.vip_tier))
        }


def _version(factory: sessionmaker[Session], merchant_id: int) -> int:
    with factory() as session:
        return load_program(session, merchant_id)[1].version


def _tier_form(admin: TestClient, version: int, **fields: str) -> dict[str, Any]:
    base = {
        "form": "tier",
        "version": str(version),
        "tier.name": "Gold",
        "tier.threshold": "500",
        "tier.multiplier": "1",
        "tier.entry_reward_points": "50",
        "tier.send_email": "on",
        "csrf_token": token(admin, "/admin/settings/vip"),
    }
    return base | fields


def test_a_tier_threshold_change_is_previewed_then_saved_and_moves_customers_through_the_engine(
    admin: TestClient, store: Store, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    m = store.merchant_id
    _program(session_factory, m)
    _spend(session_factory, m, "silver@example.com", "300")
    _spend(session_factory, m, "gold@example.com", "600")
    _spend(session_factory, m, "low@example.com", "50")
    # A tier kept from an import holds a customer whose spending reaches none.
    kept = make_customer(session_factory, m, email="kept@example.com")
    with unit_of_work(session_factory, merchant_id=m) as session:
        customer = session.get_one(Customer, kept)
        customer.vip_tier = "gold"
        customer.vip_tier_kept = "gold"
        customer.vip_tier_kept_until = datetime.now(UTC) + timedelta(days=100)
    before = _tiers(session_factory)
    assert before == {
        "silver@example.com": "silver",
        "gold@example.com": "gold",
        "low@example.com": None,
        "kept@example.com": "gold",
    }
    version = _version(session_factory, m)

    page = admin.get("/admin/settings/vip/tiers/gold/edit")
    assert page.status_code == 200
    assert 'value="500"' in page.text

    preview = admin.post(
        "/admin/settings/vip/tiers/gold/edit",
        data=_tier_form(admin, version, **{"tier.threshold": "250", "step": "preview"}),
    )
    assert preview.status_code == 200
    assert "moves 1 customers up and 0 down" in preview.text
    assert "1 from Silver to Gold (up)" in preview.text
    # A preview saves nothing.
    assert _version(session_factory, m) == version
    assert _tiers(session_factory) == before

    lowered_silver = admin.post(
        "/admin/settings/vip/tiers/silver/edit",
        data=_tier_form(
            admin,
            version,
            **{"tier.name": "Silver", "tier.threshold": "600", "step": "preview"},
        ),
    )
    # Silver above Gold's 500: the silver customer drops out, the gold one (600) reaches
    # Silver, now the top tier; the kept Gold stays.
    assert "moves 1 customers up and 1 down" in lowered_silver.text
    assert "1 from Silver to no tier (down)" in lowered_silver.text
    assert "1 from Gold to Silver (up)" in lowered_silver.text

    saved = admin.post(
        "/admin/settings/vip/tiers/gold/edit",
        data=_tier_form(admin, version, **{"tier.threshold": "250", "step": "save"}),
        follow_redirects=False,
    )
    assert (saved.status_code, saved.headers["location"]) == (
        303,
        "/admin/settings/vip?done=saved",
    )
    with session_factory() as session:
        _, program = load_program(session, m)
        review = session.execute(
            select(OutboxMessage.handler, OutboxMessage.payload)
            .where(OutboxMessage.event_type == "VipTiersChanged")
            .order_by(OutboxMessage.id)
        ).all()
    assert program.version == version + 1
    assert [(t.id, t.name, t.threshold) for t in program.vip.tiers] == [
        ("silver", "Silver", Decimal(100)),
        ("gold", "Gold", Decimal(250)),
    ]
    # The setup's tier change, then this one, each announcing a review.
    assert [(handler, payload["version"]) for handler, payload in review] == [
        (jobs.TIER_CHANGE_HANDLER, version),
        (jobs.TIER_CHANGE_HANDLER, version + 1),
    ]
    # Saving does not move anyone itself: the tier review the change announced does.
    assert _tiers(session_factory) == before

    registry = Registry()
    jobs.register(registry)
    Worker(settings=settings, session_factory=session_factory, registry=registry).drain()

    assert _tiers(session_factory) == before | {"silver@example.com": "gold"}
    with session_factory() as session:
        changes = session.execute(
            select(Customer.email, TierChangeRecord.old_tier, TierChangeRecord.new_tier)
            .join(Customer, Customer.id == TierChangeRecord.customer_id)
            .where(TierChangeRecord.old_tier == "silver")
        ).all()
        tier_events = session.scalars(
            select(OutboxMessage.payload).where(OutboxMessage.event_type == "VipTierChanged")
        ).all()
        balance = session.scalar(
            select(Customer.points_balance).where(Customer.email == "silver@example.com")
        )
    assert changes == [("silver@example.com", "silver", "gold")]
    assert balance == 50  # Gold's entry reward, given by the engine (no order points here)
    # Announced like any tier change (Dotdigital, webhooks), with the tier-earned email's name.
    moved = [p for p in tier_events if p["old_tier"] == "silver"]
    assert {(p["new_tier"], p["earned"]) for p in moved} == {("gold", "Gold")}
    # A second review (a redelivered event) moves nobody.
    assert jobs.review_changed_tiers(session_factory, merchant_id=m) == 0


def test_a_stale_or_invalid_tier_edit_is_refused_and_changes_nothing(
    admin: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    m = store.merchant_id
    _program(session_factory, m)
    version = _version(session_factory, m)
    # Someone else saves in between.
    with unit_of_work(session_factory, merchant_id=m) as session:
        update_program(session, merchant_id=m, changes={"rewards": []})

    for step in ("preview", "save"):
        stale = admin.post(
            "/admin/settings/vip/tiers/gold/edit",
            data=_tier_form(admin, version, **{"tier.threshold": "250", "step": step}),
        )
        assert stale.status_code == 409, step
        assert "someone saved these settings after you opened the page" in stale.text
        # The form keeps what was typed.
        assert 'value="250"' in stale.text

    bad = admin.post(
        "/admin/settings/vip/tiers/gold/edit",
        data=_tier_form(admin, version + 1, **{"tier.threshold": "lots", "step": "save"}),
    )
    assert bad.status_code == 422
    assert "enter a number" in bad.text
    missing = admin.get("/admin/settings/vip/tiers/platinum/edit")
    assert missing.status_code == 404
    assert _version(session_factory, m) == version + 1


def _reward_form(admin: TestClient, version: int, **fields: str) -> dict[str, Any]:
    base = {
        "form": "reward",
        "version": str(version),
        "reward.name": "$5 off",
        "reward.type": "fixed_amount",
        "reward.points_cost": "500",
        "reward.amount": "5",
        "csrf_token": token(admin, "/admin/settings/rewards"),
    }
    return base | fields


def test_a_reward_cost_change_shows_who_can_afford_it_and_keeps_the_id(
    admin: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    m = store.merchant_id
    _program(session_factory, m)
    for points in (100, 300, 450, 500, 900):
        make_customer(session_factory, m, points=points)
    version = _version(session_factory, m)

    cheaper = admin.post(
        "/admin/settings/rewards/five-off/edit",
        data=_reward_form(admin, version, **{"reward.points_cost": "300", "step": "preview"}),
    )
    assert cheaper.status_code == 200
    assert "4 members can afford it at the new cost (2 now)" in cheaper.text
    assert "2 more members can afford it." in cheaper.text
    dearer = admin.post(
        "/admin/settings/rewards/five-off/edit",
        data=_reward_form(admin, version, **{"reward.points_cost": "600", "step": "preview"}),
    )
    assert "1 members can afford it at the new cost (2 now)" in dearer.text
    assert "1 members can no longer afford it." in dearer.text
    assert _version(session_factory, m) == version

    saved = admin.post(
        "/admin/settings/rewards/five-off/edit",
        data=_reward_form(
            admin,
            version,
            **{"reward.name": "$6 off", "reward.amount": "6", "reward.points_cost": "600"},
        )
        | {"step": "save"},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    with session_factory() as session:
        _, program = load_program(session, m)
        messages = session.scalars(
            select(OutboxMessage.event_type).where(OutboxMessage.event_type == "VipTiersChanged")
        ).all()
    reward = program.reward("five-off")
    assert reward is not None
    assert (reward.name, reward.points_cost, reward.amount, reward.enabled) == (
        "$6 off",
        600,
        Decimal(6),
        True,
    )
    assert [r.id for r in program.rewards] == ["five-off"]
    # Only the setup's tier change announced a review; a reward edit does not.
    assert len(messages) == 1
