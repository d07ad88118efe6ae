"""The whole program, end to end through the API, with exact balances at every step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.customers.orm import Customer
from tally.ledger import service as ledger
from tally.ledger.orm import LedgerEntry
from tally.outbox.orm import OutboxMessage
from tally.program import jobs
from tests.support.factories import make_merchant

PROGRAM = {
    "create_account": {"enabled": True, "points": 100},
    "place_order": {"enabled": True, "points_per_unit": "2"},
    "vip": {
        "enabled": True,
        "metric": "amount_spent",
        "window": {"kind": "lifetime"},
        "tiers": [
            {
                "id": "silver",
                "name": "Silver",
                "threshold": "100",
                "multiplier": "1",
                "entry_reward_points": 50,
            },
            {
                "id": "gold",
                "name": "Gold",
                "threshold": "500",
                "multiplier": "1.5",
                "entry_reward_points": 200,
            },
        ],
    },
    "rewards": [
        {
            "type": "fixed_amount",
            "id": "five-off",
            "name": "$5 off",
            "points_cost": 300,
            "amount": "5",
        },
    ],
}


def _balance(client: TestClient, headers: dict[str, str], cid: int) -> int:
    return int(client.get(f"/api/v1/customers/{cid}", headers=headers).json()["points_balance"])


def _order(
    client: TestClient, headers: dict[str, str], order_id: str, total: str, **extra: object
) -> dict:
    body = {
        "order_id": order_id,
        "email": "ada@example.com",
        "total": total,
        "placed_at": "2026-11-01T10:00:00Z",
        **extra,
    }
    r = client.post("/api/v1/orders", json=body, headers=headers)
    assert r.status_code in (200, 201), r.text
    return r.json()


def test_account_orders_tiers_spend_refund_expiry(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    h = m.headers
    assert client.patch("/api/v1/program", json=PROGRAM, headers=h).json()["version"] == 2

    # Create account: 100 points.
    cid = client.post("/api/v1/customers", json={"email": "ada@example.com"}, headers=h).json()[
        "id"
    ]
    assert _balance(client, h, cid) == 100

    # An order of 80 earns 160; not yet Silver.
    assert _order(client, h, "1001", "80.00")["points_awarded"] == 160
    assert _balance(client, h, cid) == 260
    assert client.get(f"/api/v1/customers/{cid}/tier", headers=h).json()["tier"] is None

    # Replaying the order changes nothing.
    _order(client, h, "1001", "80.00")
    assert _balance(client, h, cid) == 260

    # A pending order earns nothing until it is paid; then 2 x 40 = 80, and 120 spent → Silver (+50).
    assert _order(client, h, "1002", "40.00", status="pending")["points_awarded"] == 0
    assert _balance(client, h, cid) == 260
    assert _order(client, h, "1002", "40.00", status="paid")["points_awarded"] == 80
    assert _balance(client, h, cid) == 260 + 80 + 50
    assert client.get(f"/api/v1/customers/{cid}/tier", headers=h).json()["tier"] == "silver"

    # 400 more: Gold (+200). The order itself earned at Silver's multiplier 1: 800.
    assert _order(client, h, "1003", "400.00")["points_awarded"] == 800
    assert _balance(client, h, cid) == 390 + 800 + 200
    # A Gold order earns 1.5 x 2 x 10 = 30.
    assert _order(client, h, "1004", "10.00")["points_awarded"] == 30
    assert _balance(client, h, cid) == 1420

    # Redeem $5 off for 300 points: a coupon code, and the same Idempotency-Key replays it.
    redeem = {"reward_id": "five-off"}
    rh = {**h, "Idempotency-Key": "redeem-1"}
    first = client.post(f"/api/v1/customers/{cid}/redemptions", json=redeem, headers=rh)
    assert first.status_code == 201, first.text
    again = client.post(f"/api/v1/customers/{cid}/redemptions", json=redeem, headers=rh)
    assert again.json()["coupon_code"] == first.json()["coupon_code"]
    assert (first.json()["points_spent"], first.json()["discount_value"]) == (300, "5.00")
    assert _balance(client, h, cid) == 1120

    # Refund the whole 400 order: 800 back, and the customer drops to Silver (130 spent).
    r = client.post("/api/v1/orders/1003/refunds", json={"refund_id": "r1"}, headers=h)
    assert r.status_code == 201, r.text
    assert (r.json()["points_clawed_back"], r.json()["shortfall"]) == (800, 0)
    assert _balance(client, h, cid) == 320
    assert client.get(f"/api/v1/customers/{cid}/tier", headers=h).json()["tier"] == "silver"
    # The same refund again is a replay.
    again = client.post("/api/v1/orders/1003/refunds", json={"refund_id": "r1"}, headers=h).json()
    assert again["replayed"] is True
    assert _balance(client, h, cid) == 320

    # Back to Gold with a new order: no second entry reward for Gold. 2 x 380 = 760 at Silver.
    assert _order(client, h, "1005", "380.00")["points_awarded"] == 760
    assert client.get(f"/api/v1/customers/{cid}/tier", headers=h).json()["tier"] == "gold"
    assert _balance(client, h, cid) == 1080
    with session_factory() as session:
        gold_rewards = session.scalars(
            select(LedgerEntry).where(LedgerEntry.rule_id == "tier:gold")
        ).all()
        assert len(gold_rewards) == 1

    # Expiry: rolling, 30 days. Switched on now; 31 days after the last change it all expires.
    enabled = datetime.now(UTC)
    client.patch(
        "/api/v1/program",
        json={"expiry": {"mode": "rolling", "days": 30, "enabled_at": enabled.isoformat()}},
        headers=h,
    )
    shown = client.get(f"/api/v1/customers/{cid}", headers=h).json()
    assert shown["points_expiring"] == 1080
    assert shown["points_expire_at"] is not None
    assert jobs.expire_points(session_factory, merchant_id=m.id, now=enabled).customers == 0
    later = enabled + timedelta(days=31)
    stats = jobs.expire_points(session_factory, merchant_id=m.id, now=later)
    assert (stats.customers, stats.points) == (1, 1080)
    assert _balance(client, h, cid) == 0
    # Running it again (or concurrently) expires nothing twice.
    assert jobs.expire_points(session_factory, merchant_id=m.id, now=later).entries == 0
    with session_factory() as session:
        assert list(ledger.verify_balances(session)) == []


def test_refund_beyond_balance_goes_to_zero_and_records_the_shortfall(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    h = m.headers
    client.patch(
        "/api/v1/program",
        json={"place_order": {"enabled": True, "points_per_unit": "1"}},
        headers=h,
    )
    body = {
        "order_id": "A1",
        "email": "bob@example.com",
        "total": "100.00",
        "placed_at": "2026-10-01T00:00:00Z",
    }
    order = client.post("/api/v1/orders", json=body, headers=h).json()
    cid = order["customer_id"]
    # A guest customer accrued the points.
    assert client.get(f"/api/v1/customers/{cid}", headers=h).json()["state"] == "guest"
    assert _balance(client, h, cid) == 100
    with session_factory() as session:
        ledger.debit(
            session,
            customer=session.get_one(Customer, cid),
            points=70,
            kind="spend",
            idempotency_key="s",
        )
        session.commit()
    partial = client.post(
        "/api/v1/orders/A1/refunds", json={"amount": "50.00", "refund_id": "p1"}, headers=h
    ).json()
    assert (partial["points_clawed_back"], partial["shortfall"]) == (30, 20)
    assert _balance(client, h, cid) == 0
    rest = client.post("/api/v1/orders/A1/refunds", json={"refund_id": "p2"}, headers=h).json()
    assert (rest["points_clawed_back"], rest["shortfall"]) == (0, 50)
    assert rest["order"]["status"] == "refunded"
    too_much = client.post("/api/v1/orders/A1/refunds", json={"amount": "1.00"}, headers=h)
    assert too_much.status_code == 422
    assert "has 0.0000 left to refund" in too_much.json()["detail"]
    # The guest signs up and keeps its (zero) balance; it becomes a member.
    joined = client.post("/api/v1/customers", json={"email": "bob@example.com"}, headers=h)
    assert joined.status_code == 200
    assert joined.json()["state"] == "member"


def test_cancelled_orders_award_nothing_and_cancelling_claws_back(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    h = m.headers
    client.patch("/api/v1/program", json={"place_order": {"enabled": True}}, headers=h)
    base = {"email": "c@example.com", "total": "25.50", "placed_at": "2026-10-01T00:00:00Z"}
    c1 = client.post(
        "/api/v1/orders", json={**base, "order_id": "C1", "status": "cancelled"}, headers=h
    ).json()
    assert c1["points_awarded"] == 0
    c2 = client.post("/api/v1/orders", json={**base, "order_id": "C2"}, headers=h).json()
    assert c2["points_awarded"] == 25
    c2 = client.post(
        "/api/v1/orders", json={**base, "order_id": "C2", "status": "cancelled"}, headers=h
    ).json()
    assert c2["points_clawed_back"] == 25
    assert _balance(client, h, c2["customer_id"]) == 0


def test_bad_orders_are_refused_with_specific_errors(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    cases = [
        ({"order_id": "X", "total": "10", "placed_at": "2026-10-01T00:00:00Z"}, "email"),
        (
            {
                "order_id": "X",
                "email": "a@b.co",
                "total": "-1",
                "placed_at": "2026-10-01T00:00:00Z",
            },
            "total",
        ),
        (
            {"order_id": "X", "email": "a@b.co", "total": "10", "placed_at": "2026-10-01T00:00:00"},
            "placed_at",
        ),
        (
            {
                "order_id": "X",
                "email": "a@b.co",
                "total": "10",
                "placed_at": "2026-10-01T00:00:00Z",
                "status": "shipped",
            },
            "status",
        ),
        (
            {
                "order_id": "X",
                "email": "a@b.co",
                "total": "1,000",
                "placed_at": "2026-10-01T00:00:00Z",
            },
            "total",
        ),
    ]
    for body, field in cases:
        r = client.post("/api/v1/orders", json=body, headers=m.headers)
        assert r.status_code == 422, (body, r.text)
        assert field in [e["field"] for e in r.json()["errors"]], r.json()
    with session_factory() as session:
        assert session.scalars(select(Customer)).all() == []


def test_birthday_job_awards_once_per_year(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    h = m.headers
    client.patch("/api/v1/program", json={"birthday": {"enabled": True, "points": 40}}, headers=h)
    cid = client.post(
        "/api/v1/customers", json={"email": "b@example.com", "birthday": "1990-03-15"}, headers=h
    ).json()["id"]
    with session_factory() as session:
        session.get_one(Customer, cid).birthday_set_at = datetime(2026, 1, 1, tzinfo=UTC)
        session.commit()
    assert (
        jobs.award_birthdays(
            session_factory, merchant_id=m.id, now=datetime(2026, 3, 14, 12, tzinfo=UTC)
        )
        == 0
    )
    assert (
        jobs.award_birthdays(
            session_factory, merchant_id=m.id, now=datetime(2026, 3, 15, 12, tzinfo=UTC)
        )
        == 1
    )
    assert (
        jobs.award_birthdays(
            session_factory, merchant_id=m.id, now=datetime(2026, 3, 16, 12, tzinfo=UTC)
        )
        == 0
    )
    assert _balance(client, h, cid) == 40
    assert (
        jobs.award_birthdays(
            session_factory, merchant_id=m.id, now=datetime(2027, 3, 15, 12, tzinfo=UTC)
        )
        == 1
    )
    assert _balance(client, h, cid) == 80


def test_per_grant_expiry_takes_only_expired_credits(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    h = m.headers
    enabled = datetime.now(UTC) - timedelta(days=10)
    client.patch(
        "/api/v1/program",
        json={
            "place_order": {"enabled": True},
            "expiry": {"mode": "per_grant", "days": 5, "enabled_at": enabled.isoformat()},
        },
        headers=h,
    )
    o = client.post(
        "/api/v1/orders",
        json={
            "order_id": "G1",
            "email": "g@example.com",
            "total": "30",
            "placed_at": "2026-10-01T00:00:00Z",
        },
        headers=h,
    ).json()
    cid = o["customer_id"]
    client.post(
        f"/api/v1/customers/{cid}/adjustments", json={"points": 12, "reason": "gift"}, headers=h
    )
    with session_factory() as session:
        customer = session.get_one(Customer, cid)
        ledger.debit(session, customer=customer, points=10, kind="spend", idempotency_key="sp")
        session.commit()
    # 30 expiring (per grant) - 10 spent from it first = 20 expire; the 12 never expire.
    stats = jobs.expire_points(
        session_factory, merchant_id=m.id, now=datetime.now(UTC) + timedelta(days=6)
    )
    assert (stats.entries, stats.points) == (1, 20)
    assert _balance(client, h, cid) == 12
    assert (
        jobs.expire_points(
            session_factory, merchant_id=m.id, now=datetime.now(UTC) + timedelta(days=6)
        ).points
        == 0
    )
    with session_factory() as session:
        assert list(ledger.verify_balances(session)) == []
        kinds = [
            e.kind
            for e in session.scalars(
                select(LedgerEntry).where(LedgerEntry.customer_id == cid).order_by(LedgerEntry.id)
            )
        ]
    assert kinds == ["earn", "adjust", "spend", "expire"]


def test_referral_rewards_both_sides_and_refuses_self_referral(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    h = m.headers
    client.patch(
        "/api/v1/program",
        json={
            "referral": {
                "enabled": True,
                "sender_points": 500,
                "receiver_points": 250,
                "minimum_order": "20",
            }
        },
        headers=h,
    )
    ref = client.post("/api/v1/customers", json={"email": "jane.doe@gmail.com"}, headers=h).json()
    code = ref["referral_code"]
    r = client.get(f"/r/{code}", follow_redirects=False)
    assert r.status_code == 302
    assert r.headers["location"] == f"https://shop.example/?ref={code}"
    assert client.get("/r/NOSUCHCODE", follow_redirects=False).status_code == 404

    cheat = client.post(
        "/api/v1/customers",
        json={"email": "Jane.Doe+2@googlemail.com", "referred_by": code},
        headers=h,
    ).json()
    friend = client.post(
        "/api/v1/customers", json={"email": "tom@example.com", "referred_by": code}, headers=h
    ).json()
    # Below the minimum order: nothing yet.
    client.post(
        "/api/v1/orders",
        json={
            "order_id": "F1",
            "email": "tom@example.com",
            "total": "10",
            "placed_at": "2026-10-01T00:00:00Z",
        },
        headers=h,
    )
    assert _balance(client, h, ref["id"]) == 0
    client.post(
        "/api/v1/orders",
        json={
            "order_id": "F2",
            "email": "tom@example.com",
            "total": "25",
            "placed_at": "2026-10-02T00:00:00Z",
        },
        headers=h,
    )
    assert _balance(client, h, ref["id"]) == 500
    assert _balance(client, h, friend["id"]) == 250
    client.post(
        "/api/v1/orders",
        json={
            "order_id": "F3",
            "email": "Jane.Doe+2@googlemail.com",
            "total": "99",
            "placed_at": "2026-10-02T00:00:00Z",
        },
        headers=h,
    )
    assert _balance(client, h, ref["id"]) == 500
    assert _balance(client, h, cheat["id"]) == 0
    from tally.program.orm import Referral

    with session_factory() as session:
        rows = {
            r.friend_id: (r.status, r.refusal_reason) for r in session.scalars(select(Referral))
        }
    assert rows == {cheat["id"]: ("refused", "same_email"), friend["id"]: ("completed", None)}


def test_events_are_written_for_tier_changes(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    from tally.outbox.registry import default_registry

    default_registry.subscribe("VipTierChanged", "probe", lambda _c, _p: None)
    try:
        m = make_merchant(session_factory)
        client.patch("/api/v1/program", json={"vip": PROGRAM["vip"]}, headers=m.headers)
        client.post(
            "/api/v1/orders",
            json={
                "order_id": "V1",
                "email": "v@example.com",
                "total": "150",
                "placed_at": "2026-10-01T00:00:00Z",
            },
            headers=m.headers,
        )
        with session_factory() as session:
            payloads = [
                o.payload
                for o in session.scalars(
                    select(OutboxMessage).where(OutboxMessage.handler == "probe")
                )
            ]
        assert [(p["old_tier"], p["new_tier"]) for p in payloads] == [(None, "silver")]
    finally:
        default_registry.handlers["VipTierChanged"].pop("probe")
