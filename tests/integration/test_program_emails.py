"""The program queues the right emails: points earned, tier earned, reward redeemed, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers.orm import Customer
from tally.ledger.orm import LedgerEntry
from tally.notifications.orm import EmailMessage
from tally.notifications.service import render_for_customer
from tally.notifications.templates import EmailType
from tally.program import jobs
from tests.support.factories import make_merchant


def _emails(factory: sessionmaker[Session]) -> list[tuple[str, str, str]]:
    with factory() as session:
        return [
            (e.email_type, e.recipient, e.status)
            for e in session.scalars(select(EmailMessage).order_by(EmailMessage.id))
        ]


def test_order_tier_and_redemption_emails(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    program = {
        "create_account": {"enabled": True, "points": 10, "send_email": False},
        "place_order": {"enabled": True, "send_email": True},
        "vip": {
            "enabled": True,
            "tiers": [{"id": "gold", "name": "Gold", "threshold": "100", "send_email": True}],
        },
        "rewards": [
            {"type": "free_shipping", "id": "ship", "name": "Free shipping", "points_cost": 50}
        ],
    }
    assert client.patch("/api/v1/program", json=program, headers=m.headers).status_code == 200
    cid = client.post(
        "/api/v1/customers", json={"email": "e@example.com"}, headers=m.headers
    ).json()["id"]
    assert _emails(session_factory) == []  # create_account has send_email off
    order = {
        "order_id": "E1",
        "email": "e@example.com",
        "total": "120",
        "placed_at": "2026-10-01T00:00:00Z",
    }
    client.post("/api/v1/orders", json=order, headers=m.headers)
    # Replaying the order queues nothing new.
    client.post("/api/v1/orders", json=order, headers=m.headers)
    r = client.post(
        f"/api/v1/customers/{cid}/redemptions", json={"reward_id": "ship"}, headers=m.headers
    )
    assert r.status_code == 201
    assert _emails(session_factory) == [
        ("points_earned", "e@example.com", "queued"),
        ("vip_tier_earned", "e@example.com", "queued"),
        ("reward_redeemed", "e@example.com", "queued"),
    ]
    # A manual adjustment sends nothing.
    client.post(
        f"/api/v1/customers/{cid}/adjustments", json={"points": 5, "reason": "x"}, headers=m.headers
    )
    assert len(_emails(session_factory)) == 3


def test_expiry_reminders_once_per_expiry_date(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    enabled = datetime.now(UTC) - timedelta(days=100)
    policy = {
        "mode": "rolling",
        "days": 30,
        "reminder_days_before": 7,
        "last_chance_days_before": 1,
        "enabled_at": enabled.isoformat(),
    }
    client.patch("/api/v1/program", json={"expiry": policy}, headers=m.headers)
    cid = client.post(
        "/api/v1/customers", json={"email": "x@example.com"}, headers=m.headers
    ).json()["id"]
    client.post(
        f"/api/v1/customers/{cid}/adjustments",
        json={"points": 80, "reason": "gift"},
        headers=m.headers,
    )
    with session_factory() as session:
        last = session.get_one(Customer, cid).last_activity_at
    assert last is not None
    expires = last + timedelta(days=30)
    assert (
        jobs.send_expiry_reminders(
            session_factory, merchant_id=m.id, now=expires - timedelta(days=8)
        )
        == 0
    )
    assert (
        jobs.send_expiry_reminders(
            session_factory, merchant_id=m.id, now=expires - timedelta(days=6)
        )
        == 1
    )
    jobs.send_expiry_reminders(session_factory, merchant_id=m.id, now=expires - timedelta(days=5))
    jobs.send_expiry_reminders(session_factory, merchant_id=m.id, now=expires - timedelta(hours=12))
    assert (
        jobs.send_expiry_reminders(
            session_factory, merchant_id=m.id, now=expires + timedelta(hours=1)
        )
        == 0
    )
    assert [t for t, _, _ in _emails(session_factory)] == ["expiry_reminder", "expiry_last_chance"]


def test_each_kind_of_points_has_its_own_email_under_the_same_dedupe_key(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    m = make_merchant(session_factory)
    program = {
        "create_account": {"enabled": True, "points": 100, "send_email": True},
        "birthday": {"enabled": True, "points": 40, "send_email": True},
        "place_order": {"enabled": True, "send_email": True},
        "custom_actions": [
            {"id": "review", "name": "Wrote a review", "points": 20, "send_email": True}
        ],
    }
    assert client.patch("/api/v1/program", json=program, headers=m.headers).status_code == 200
    cid = client.post(
        "/api/v1/customers",
        json={"email": "k@example.com", "birthday": "1990-03-15"},
        headers=m.headers,
    ).json()["id"]
    with session_factory() as session:
        session.get_one(Customer, cid).birthday_set_at = datetime(2026, 1, 1, tzinfo=UTC)
        session.commit()
    assert jobs.award_birthdays(
        session_factory, merchant_id=m.id, now=datetime(2026, 3, 15, 12, tzinfo=UTC)
    )
    order = {
        "order_id": "K1",
        "email": "k@example.com",
        "total": "30",
        "placed_at": "2026-10-01T00:00:00Z",
    }
    r = client.post("/api/v1/orders", json=order, headers=m.headers)
    assert r.status_code == 201, r.text
    action = {"email": "k@example.com", "action_id": "review"}
    assert client.post("/api/v1/actions", json=action, headers=m.headers).status_code == 201
    with session_factory() as session:
        rules = {f"points-earned:{e.id}": e.rule_id for e in session.scalars(select(LedgerEntry))}
        emails = session.scalars(select(EmailMessage).order_by(EmailMessage.id)).all()
        kinds = [(e.email_type, rules[e.dedupe_key]) for e in emails]
        subjects = [
            render_for_customer(
                session,
                settings=settings,
                merchant_id=m.id,
                customer_id=cid,
                email_type=EmailType(e.email_type),
                variables={"points": 10},
                fill_with_samples=False,
            ).subject
            for e in emails
        ]
    # The dedupe key still names the ledger entry, whatever the email type.
    assert kinds == [
        ("signup_points", "create_account"),
        ("birthday_points", "birthday"),
        ("points_earned", "place_order"),
        ("custom_action_points", "custom:review"),
    ]
    assert len(set(subjects)) == 4, subjects
    assert subjects[0].startswith("Welcome to")
    assert subjects[1].startswith("Happy birthday")
