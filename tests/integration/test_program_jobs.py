"""Program jobs and limits that depend on time: rolling VIP windows, action limits, scheduling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers.orm import Customer
from tally.outbox.orm import ScheduledJob
from tally.outbox.registry import Registry
from tally.outbox.worker import Worker
from tally.program import jobs
from tests.support.factories import make_merchant


def test_rolling_window_drops_a_customer_in_the_daily_review(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    vip = {
        "enabled": True,
        "metric": "amount_spent",
        "window": {"kind": "rolling", "days": 365},
        "tiers": [{"id": "silver", "name": "Silver", "threshold": "100"}],
    }
    client.patch("/api/v1/program", json={"vip": vip}, headers=m.headers)
    placed = datetime.now(UTC) - timedelta(days=300)
    order = {
        "order_id": "R1",
        "email": "r@example.com",
        "total": "150",
        "placed_at": placed.isoformat(),
    }
    cid = client.post("/api/v1/orders", json=order, headers=m.headers).json()["customer_id"]
    assert client.get(f"/api/v1/customers/{cid}/tier", headers=m.headers).json()["tier"] == "silver"
    # 64 days later the order is still inside the window; 66 days later it is not.
    assert (
        jobs.review_tiers(
            session_factory, merchant_id=m.id, now=datetime.now(UTC) + timedelta(days=64)
        )
        == 0
    )
    assert (
        jobs.review_tiers(
            session_factory, merchant_id=m.id, now=datetime.now(UTC) + timedelta(days=66)
        )
        == 1
    )
    tier = client.get(f"/api/v1/customers/{cid}/tier", headers=m.headers).json()
    assert tier["tier"] is None
    assert [(h["from"], h["to"]) for h in tier["history"]] == [("silver", None), (None, "silver")]


def test_custom_action_limit_per_day(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    actions = [
        {
            "id": "review",
            "name": "Wrote a review",
            "points": 20,
            "limit": {"max_count": 2, "period": "day"},
        }
    ]
    client.patch("/api/v1/program", json={"custom_actions": actions}, headers=m.headers)
    cid = client.post(
        "/api/v1/customers", json={"email": "w@example.com"}, headers=m.headers
    ).json()["id"]
    results = [
        client.post(
            "/api/v1/actions",
            json={"email": "w@example.com", "action_id": "review"},
            headers=m.headers,
        ).json()
        for _ in range(3)
    ]
    assert [r["awarded"] for r in results] == [20, 20, 0]
    assert results[2]["reason"] == "the action's limit is reached"
    override = client.post(
        "/api/v1/actions", json={"email": "w@example.com", "action_id": "nope"}, headers=m.headers
    )
    assert override.status_code == 404
    with session_factory() as session:
        assert session.get_one(Customer, cid).points_balance == 40


def test_program_jobs_are_registered_and_run_by_the_worker(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    registry = Registry()
    jobs.register(registry)
    assert sorted(registry.jobs) == [
        "program.birthdays",
        "program.expiry",
        "program.expiry_reminders",
        "program.tier_review",
    ]
    make_merchant(session_factory)
    worker = Worker(settings=settings, session_factory=session_factory, registry=registry)
    assert worker.run_due_jobs() == 4
    with session_factory() as session:
        rows = session.scalars(select(ScheduledJob).order_by(ScheduledJob.name)).all()
        assert [(r.name, r.runs, r.last_error) for r in rows] == [
            ("program.birthdays", 1, None),
            ("program.expiry", 1, None),
            ("program.expiry_reminders", 1, None),
            ("program.tier_review", 1, None),
        ]


def test_invalid_program_settings_are_refused_with_the_field(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    bad_tiers = {
        "vip": {
            "enabled": True,
            "tiers": [
                {"id": "gold", "name": "Gold", "threshold": "500"},
                {"id": "silver", "name": "Silver", "threshold": "500"},
            ],
        }
    }
    r = client.patch("/api/v1/program", json=bad_tiers, headers=m.headers)
    assert r.status_code == 422
    assert r.json()["errors"]
    unknown = client.patch("/api/v1/program", json={"loyalty": {}}, headers=m.headers)
    assert unknown.status_code == 422
    assert unknown.json()["errors"] == [{"field": "loyalty", "message": "not a settings section"}]
    assert client.get("/api/v1/program", headers=m.headers).json()["version"] == 1
