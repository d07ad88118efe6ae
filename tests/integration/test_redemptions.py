"""Spending points on rewards: quotes, coupon codes, code pools, idempotency and concurrency."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tally.api.app import create_app
from tally.api.rewards import router
from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.engine import unit_of_work
from tally.ledger import service as ledger
from tally.ledger.errors import IdempotencyKeyReused, InsufficientPoints
from tally.ledger.orm import LedgerEntry
from tally.program import redemptions
from tally.program.config_service import update_program
from tally.program.orm import PoolCode, Redemption
from tally.program.rewards import COUPON_ALPHABET
from tally.state import AppState
from tests.support.factories import MerchantFixture, make_customer, make_merchant
from tests.support.server import serve_in_thread

GROUP = f"[{COUPON_ALPHABET}]{{4}}"
GENERATED_CODE = re.compile(rf"^{GROUP}-{GROUP}-{GROUP}$")

REWARDS: list[dict[str, Any]] = [
    {
        "id": "five-off",
        "type": "fixed_amount",
        "name": "$5 off",
        "points_cost": 500,
        "amount": "5",
        "minimum_order": "25",
        "coupon_expiry_days": 30,
    },
    {
        "id": "ten-percent",
        "type": "percentage",
        "name": "10% off",
        "points_cost": 800,
        "percent": "10",
    },
    {"id": "free-shipping", "type": "free_shipping", "name": "Free shipping", "points_cost": 300},
    {
        "id": "free-mug",
        "type": "free_product",
        "name": "Free mug",
        "points_cost": 1000,
        "product_id": "sku-mug-1",
    },
    {
        "id": "points-off",
        "type": "variable",
        "name": "Points for cash",
        "points_per_unit": 100,
        "min_points": 200,
        "max_points": 1000,
    },
    {
        "id": "retired",
        "type": "fixed_amount",
        "name": "Old reward",
        "points_cost": 100,
        "amount": "1",
        "enabled": False,
    },
]


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    """The application with the rewards router (added here until create_app includes it)."""
    application = create_app(settings, AppState(settings=settings, session_factory=session_factory))
    if not any(getattr(route, "path", None) == "/api/v1/rewards" for route in application.routes):
        application.include_router(router)
    return application


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """An in-process client for the application above."""
    with TestClient(app, raise_server_exceptions=True) as test_client:
        yield test_client


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[str]:
    """The application above served by uvicorn on a loopback port; yields its base URL."""
    with serve_in_thread(app) as url:
        yield url


def _merchant_with_rewards(factory: sessionmaker[Session]) -> MerchantFixture:
    merchant = make_merchant(factory)
    with unit_of_work(factory, merchant_id=merchant.id) as session:
        update_program(session, merchant_id=merchant.id, changes={"rewards": REWARDS})
    return merchant


@dataclass(frozen=True)
class Snapshot:
    """Everything a redemption may change."""

    balance: int
    entries: list[tuple[int, str]]
    redemptions: int
    pool: list[tuple[str, str, int | None]]


def _snapshot(factory: sessionmaker[Session], customer_id: int) -> Snapshot:
    with factory() as session:
        entries = session.execute(
            select(LedgerEntry.points, LedgerEntry.kind)
            .where(LedgerEntry.customer_id == customer_id)
            .order_by(LedgerEntry.id)
        )
        pool = session.execute(
            select(PoolCode.reward_id, PoolCode.code, PoolCode.redemption_id).order_by(PoolCode.id)
        )
        return Snapshot(
            balance=session.get_one(Customer, customer_id).points_balance,
            entries=[(points, kind) for points, kind in entries],
            redemptions=session.scalar(select(func.count()).select_from(Redemption)) or 0,
            pool=[(reward_id, code, used) for reward_id, code, used in pool],
        )


def _redeem(
    client: TestClient,
    merchant: MerchantFixture,
    customer_id: int,
    body: dict[str, Any],
    key: str | None = None,
) -> httpx.Response:
    headers = dict(merchant.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(f"/api/v1/customers/{customer_id}/redemptions", json=body, headers=headers)


def _upload(
    client: TestClient, merchant: MerchantFixture, reward_id: str, content: str | bytes
) -> httpx.Response:
    data = content.encode() if isinstance(content, str) else content
    return client.post(
        f"/api/v1/rewards/{reward_id}/codes",
        files={"file": ("codes.csv", data, "text/csv")},
        headers=merchant.headers,
    )


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- each reward type -----------------------------------------------------------------------------


def test_each_reward_type_spends_its_quote_and_issues_a_code(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = _merchant_with_rewards(session_factory)
    cid = make_customer(session_factory, m.id, points=5000)
    cases = [
        ({"reward_id": "five-off"}, 500, "5.00", "currency", 4500),
        ({"reward_id": "ten-percent"}, 800, "10.00", "percent", 3700),
        ({"reward_id": "free-shipping", "points": 300}, 300, "0.00", "none", 3400),
        ({"reward_id": "free-mug"}, 1000, "0.00", "none", 2400),
        ({"reward_id": "points-off", "points": 700}, 700, "7.00", "currency", 1700),
    ]
    bodies = []
    for request, spent, value, unit, balance in cases:
        r = _redeem(client, m, cid, request)
        assert r.status_code == 201, r.text
        body = r.json()
        bodies.append(body)
        reward = next(reward for reward in REWARDS if reward["id"] == request["reward_id"])
        assert body["customer_id"] == cid
        assert body["reward_id"] == reward["id"]
        assert body["reward_name"] == reward["name"]
        assert (body["points_spent"], body["discount_value"], body["discount_unit"]) == (
            spent,
            value,
            unit,
        )
        assert body["balance"] == balance
        assert GENERATED_CODE.match(body["coupon_code"]), body["coupon_code"]
        if reward["id"] == "five-off":
            expires = _moment(body["expires_at"]) - _moment(body["created_at"])
            assert expires == timedelta(days=30)
        else:
            assert body["expires_at"] is None

    assert len({body["coupon_code"] for body in bodies}) == 5
    with session_factory() as session:
        spends = list(
            session.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.customer_id == cid, LedgerEntry.kind == "spend")
                .order_by(LedgerEntry.id)
            )
        )
        assert [(e.points, e.rule_id, e.rule_version, e.reason) for e in spends] == [
            (-500, "five-off", 2, "Redeemed $5 off"),
            (-800, "ten-percent", 2, "Redeemed 10% off"),
            (-300, "free-shipping", 2, "Redeemed Free shipping"),
            (-1000, "free-mug", 2, "Redeemed Free mug"),
            (-700, "points-off", 2, "Redeemed Points for cash"),
        ]
        redeemed = session.scalars(select(Redemption).order_by(Redemption.id))
        assert [r.ledger_entry_id for r in redeemed] == [e.id for e in spends]
        assert list(ledger.verify_balances(session)) == []

    listed = client.get(f"/api/v1/customers/{cid}/redemptions", headers=m.headers).json()
    assert listed["total"] == 5
    # The list reads back from the database exactly what the redemption returned.
    assert listed["items"] == [
        {k: v for k, v in body.items() if k != "balance"} for body in reversed(bodies)
    ]
    page = client.get(
        f"/api/v1/customers/{cid}/redemptions",
        params={"limit": 2, "offset": 1},
        headers=m.headers,
    ).json()
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)
    assert [item["reward_id"] for item in page["items"]] == ["free-mug", "free-shipping"]


def test_variable_reward_with_maximum_points(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = _merchant_with_rewards(session_factory)
    cid = make_customer(session_factory, m.id, points=1000)
    r = _redeem(client, m, cid, {"reward_id": "points-off", "points": 1000})
    assert r.status_code == 201, r.text
    assert (r.json()["points_spent"], r.json()["discount_value"], r.json()["balance"]) == (
        1000,
        "10.00",
        0,
    )


# -- refusals -------------------------------------------------------------------------------------


def test_insufficient_points_spends_nothing_and_keeps_pool_codes(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = _merchant_with_rewards(session_factory)
    cid = make_customer(session_factory, m.id, points=400)
    assert _upload(client, m, "free-mug", "MUG-1\nMUG-2\n").status_code == 200
    before = _snapshot(session_factory, cid)

    for reward_id, cost in [("five-off", 500), ("free-mug", 1000)]:
        r = _redeem(client, m, cid, {"reward_id": reward_id}, key=f"try-{reward_id}")
        assert r.status_code == 409, r.text
        assert r.json()["title"] == "Insufficient points"
        assert r.json()["detail"] == f"the customer has 400 points; {cost} cannot be taken"
        assert _snapshot(session_factory, cid) == before

    assert before.balance == 400
    assert before.entries == [(400, "adjust")]
    assert before.redemptions == 0
    assert before.pool == [("free-mug", "MUG-1", None), ("free-mug", "MUG-2", None)]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            {"reward_id": "points-off", "points": 100},
            "at least 200 points must be spent on 'Points for cash'",
        ),
        (
            {"reward_id": "points-off", "points": 1100},
            "at most 1000 points can be spent on 'Points for cash'",
        ),
        (
            {"reward_id": "points-off", "points": 250},
            "points spent on 'Points for cash' must be a multiple of 100",
        ),
        (
            {"reward_id": "points-off"},
            "choose how many points to spend on 'Points for cash' (at least 200, in steps of 100)",
        ),
        ({"reward_id": "five-off", "points": 400}, "the reward '$5 off' costs exactly 500 points"),
        ({"reward_id": "retired"}, "reward 'retired' is disabled and cannot be redeemed"),
    ],
)
def test_out_of_bounds_and_disabled_redemptions_are_refused(
    client: TestClient,
    session_factory: sessionmaker[Session],
    body: dict[str, Any],
    detail: str,
) -> None:
    m = _merchant_with_rewards(session_factory)
    cid = make_customer(session_factory, m.id, points=5000)
    before = _snapshot(session_factory, cid)
    r = _redeem(client, m, cid, body, key="refused")
    assert r.status_code == 422, r.text
    assert r.json()["title"] == "Redemption refused"
    assert r.json()["detail"] == detail
    assert _snapshot(session_factory, cid) == before
    # A refused request stores no response: the same key works once the request is fixed.
    fixed = _redeem(client, m, cid, {"reward_id": "free-shipping"}, key="refused")
    assert fixed.status_code == 201


def test_unknown_reward_and_unknown_customer_are_not_found(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = _merchant_with_rewards(session_factory)
    cid = make_customer(session_factory, m.id, points=5000)
    before = _snapshot(session_factory, cid)

    r = _redeem(client, m, cid, {"reward_id": "no-such-reward"})
    assert r.status_code == 404
    assert r.json()["detail"] == "reward 'no-such-reward' does not exist"
    assert r.json()["errors"] == [
        {"field": "reward_id", "message": "no reward with this id", "value": "no-such-reward"}
    ]
    missing = _redeem(client, m, cid + 1000, {"reward_id": "five-off"})
    assert missing.status_code == 404
    assert missing.json()["detail"] == f"customer {cid + 1000} does not exist"
    bad = _redeem(client, m, cid, {"reward_id": "five-off", "points": 0, "extra": 1})
    assert bad.status_code == 422
    assert sorted(e["field"] for e in bad.json()["errors"]) == ["extra", "points"]
    assert _snapshot(session_factory, cid) == before


def test_empty_code_pool_refuses_and_spends_nothing(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = _merchant_with_rewards(session_factory)
    cid = make_customer(session_factory, m.id, points=5000)
    assert _upload(client, m, "five-off", "code\nONLY-ONE\n").json()["available"] == 1

    first = _redeem(client, m, cid, {"reward_id": "five-off"})
    assert first.status_code == 201
    assert (first.json()["coupon_code"], first.json()["balance"]) == ("ONLY-ONE", 4500)
    before = _snapshot(session_factory, cid)
    assert before.pool == [("five-off", "ONLY-ONE", first.json()["id"])]

    second = _redeem(client, m, cid, {"reward_id": "five-off"})
    assert second.status_code == 409
    assert second.json()["title"] == "Code pool empty"
    assert second.json()["detail"] == "the code pool of reward 'five-off' is empty"
    assert _snapshot(session_factory, cid) == before


def test_merchant_cannot_redeem_for_another_merchants_customer(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    a = _merchant_with_rewards(session_factory)
    b = _merchant_with_rewards(session_factory)
    b_customer = make_customer(session_factory, b.id, points=5000)
    before = _snapshot(session_factory, b_customer)

    r = _redeem(client, a, b_customer, {"reward_id": "five-off"}, key="cross")
    assert r.status_code == 404
    assert r.json()["detail"] == f"customer {b_customer} does not exist"
    listed = client.get(f"/api/v1/customers/{b_customer}/redemptions", headers=a.headers)
    assert listed.status_code == 404
    assert _snapshot(session_factory, b_customer) == before
    # B's own key "cross" is unaffected by A's refused attempt.
    assert _redeem(client, b, b_customer, {"reward_id": "five-off"}, key="cross").status_code == 201

    # Reward ids name each merchant's own rewards: the same code goes into two separate pools.
    assert _upload(client, b, "free-mug", "SAME-1\n").json()["added"] == 1
    assert _upload(client, a, "free-mug", "SAME-1\n").json()["added"] == 1
    a_customer = make_customer(session_factory, a.id, points=1000)
    a_won = _redeem(client, a, a_customer, {"reward_id": "free-mug"})
    assert a_won.json()["coupon_code"] == "SAME-1"
    with session_factory() as session:
        pools = session.execute(
            select(PoolCode.merchant_id, PoolCode.redemption_id).order_by(PoolCode.id)
        )
        assert list(pools) == [(b.id, None), (a.id, a_won.json()["id"])]
    b_rewards = client.get("/api/v1/rewards", headers=b.headers).json()["items"]
    b_mug = next(item for item in b_rewards if item["id"] == "free-mug")
    assert b_mug["code_pool"] == {"total": 1, "available": 1, "used": 0}


# -- idempotency ----------------------------------------------------------------------------------


def test_replaying_an_idempotency_key_returns_the_same_redemption(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = _merchant_with_rewards(session_factory)
    cid = make_customer(session_factory, m.id, points=2000)

    first = _redeem(client, m, cid, {"reward_id": "points-off", "points": 300}, key="order-77")
    again = _redeem(client, m, cid, {"reward_id": "points-off", "points": 300}, key="order-77")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    after = _snapshot(session_factory, cid)
    assert after.balance == 1700
    assert after.entries == [(2000, "adjust"), (-300, "spend")]
    assert after.redemptions == 1

    other = _redeem(client, m, cid, {"reward_id": "points-off", "points": 400}, key="order-77")
    assert other.status_code == 409
    assert other.json()["title"] == "Idempotency key reused"
    assert _snapshot(session_factory, cid) == after

    # Without a key every call is a new redemption.
    one = _redeem(client, m, cid, {"reward_id": "free-shipping"})
    two = _redeem(client, m, cid, {"reward_id": "free-shipping"})
    assert one.json()["id"] != two.json()["id"]
    assert two.json()["balance"] == 1100


def test_service_replay_finds_the_redemption_through_the_ledger(
    session_factory: sessionmaker[Session],
) -> None:
    m = _merchant_with_rewards(session_factory)
    cid = make_customer(session_factory, m.id, points=2000)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        first = redemptions.redeem_reward(
            session, merchant_id=m.id, customer_id=cid, reward_id="five-off", idempotency_key="k1"
        )
        first_id, first_code = first.id, first.coupon_code
    # The reward is disabled afterwards: a replay still answers with what was issued.
    disabled = [{**r, "enabled": False} if r["id"] == "five-off" else r for r in REWARDS]
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        update_program(session, merchant_id=m.id, changes={"rewards": disabled})
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        replay = redemptions.redeem_reward(
            session, merchant_id=m.id, customer_id=cid, reward_id="five-off", idempotency_key="k1"
        )
        assert (replay.id, replay.coupon_code) == (first_id, first_code)
    before = _snapshot(session_factory, cid)
    assert before.entries == [(2000, "adjust"), (-500, "spend")]

    with (
        pytest.raises(IdempotencyKeyReused),
        unit_of_work(session_factory, merchant_id=m.id) as session,
    ):
        redemptions.redeem_reward(
            session,
            merchant_id=m.id,
            customer_id=cid,
            reward_id="free-shipping",
            idempotency_key="k1",
        )
    assert _snapshot(session_factory, cid) == before
    # A key longer than the ledger column is hashed to fit, and still replays.
    long_key = "x" * 200
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        a = redemptions.redeem_reward(
            session,
            merchant_id=m.id,
            customer_id=cid,
            reward_id="ten-percent",
            idempotency_key=long_key,
        ).id
        b = redemptions.redeem_reward(
            session,
            merchant_id=m.id,
            customer_id=cid,
            reward_id="ten-percent",
            idempotency_key=long_key,
        ).id
        assert a == b
    assert _snapshot(session_factory, cid).balance == 700


def test_refusal_inside_a_larger_unit_of_work_leaves_nothing_behind(
    session_factory: sessionmaker[Session],
) -> None:
    m = _merchant_with_rewards(session_factory)
    cid = make_customer(session_factory, m.id, points=600)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        session.add(PoolCode(merchant_id=m.id, reward_id="free-mug", code="MUG-1"))
        session.flush()
        with pytest.raises(InsufficientPoints):
            redemptions.redeem_reward(
                session,
                merchant_id=m.id,
                customer_id=cid,
                reward_id="free-mug",
                idempotency_key="caught",
            )
        # The caller carries on and commits: the savepoint undid the claim and the debit.
    after = _snapshot(session_factory, cid)
    assert after.balance == 600
    assert after.entries == [(600, "adjust")]
    assert after.pool == [("free-mug", "MUG-1", None)]


def test_generated_code_collisions_are_retried(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    m = _merchant_with_rewards(session_factory)
    cid = make_customer(session_factory, m.id, points=5000)
    codes = iter(["TAKEN", "TAKEN", "TAKEN", "FRESH"])
    monkeypatch.setattr(redemptions, "generate_coupon_code", lambda prefix, rng: next(codes))
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        first = redemptions.redeem_reward(
            session, merchant_id=m.id, customer_id=cid, reward_id="five-off", idempotency_key="a"
        )
        second = redemptions.redeem_reward(
            session, merchant_id=m.id, customer_id=cid, reward_id="five-off", idempotency_key="b"
        )
        assert (first.coupon_code, second.coupon_code) == ("TAKEN", "FRESH")
    before = _snapshot(session_factory, cid)
    assert before.balance == 4000

    monkeypatch.setattr(redemptions, "generate_coupon_code", lambda prefix, rng: "TAKEN")
    with (
        pytest.raises(IntegrityError),
        unit_of_work(session_factory, merchant_id=m.id) as session,
    ):
        redemptions.redeem_reward(
            session, merchant_id=m.id, customer_id=cid, reward_id="five-off", idempotency_key="c"
        )
    assert _snapshot(session_factory, cid) == before


# -- concurrency ----------------------------------------------------------------------------------


def test_20_concurrent_redemptions_share_a_pool_of_5_codes(
    client: TestClient,
    live_server: str,
    session_factory: sessionmaker[Session],
    backend: str,
) -> None:
    m = _merchant_with_rewards(session_factory)
    cid = make_customer(session_factory, m.id, points=20 * 500)
    pool = ["POOL-1", "POOL-2", "POOL-3", "POOL-4", "POOL-5"]
    assert _upload(client, m, "five-off", "\n".join(pool)).json()["added"] == 5
    url = f"{live_server}/api/v1/customers/{cid}/redemptions"

    def redeem(number: int) -> httpx.Response:
        headers = {**m.headers, "Idempotency-Key": f"race-{number}"}
        return http.post(url, headers=headers, json={"reward_id": "five-off"})

    with httpx.Client(timeout=60) as http, ThreadPoolExecutor(20) as threads:
        responses = list(threads.map(redeem, range(20)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 5 + [409] * 15, [r.text for r in responses]
    won = [r.json() for r in responses if r.status_code == 201]
    assert sorted(body["coupon_code"] for body in won) == pool
    refused = [r.json() for r in responses if r.status_code == 409]
    assert {(p["title"], p["detail"]) for p in refused} == {
        ("Code pool empty", "the code pool of reward 'five-off' is empty")
    }
    after = _snapshot(session_factory, cid)
    assert after.balance == 10000 - 5 * 500
    assert after.entries == [(10000, "adjust")] + [(-500, "spend")] * 5
    assert after.redemptions == 5
    assert sorted((code, used) for _, code, used in after.pool) == sorted(
        (body["coupon_code"], body["id"]) for body in won
    )
    with session_factory() as session:
        assert list(ledger.verify_balances(session)) == []


# -- code pools -----------------------------------------------------------------------------------


def test_code_pool_upload_skips_existing_codes_and_reports_bad_rows(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = _merchant_with_rewards(session_factory)
    cid = make_customer(session_factory, m.id, points=5000)

    first = _upload(client, m, "five-off", "\ufeffCode\r\nAAA-1\r\nBBB-2\r\nCCC-3\r\n")
    assert first.status_code == 200, first.text
    assert first.json() == {
        "reward_id": "five-off",
        "added": 3,
        "skipped_existing": 0,
        "available": 3,
    }
    again = _upload(client, m, "five-off", "AAA-1\nbbb-2\nDDD-4\n")
    assert again.json() == {
        "reward_id": "five-off",
        "added": 1,
        "skipped_existing": 2,
        "available": 4,
    }
    before = _snapshot(session_factory, cid)
    assert [code for _, code, _ in before.pool] == ["AAA-1", "BBB-2", "CCC-3", "DDD-4"]

    bad = _upload(client, m, "five-off", "code\nEEE-5\n\nEEE-5\nFFF,GGG\nHHH-8\n")
    assert bad.status_code == 422
    assert bad.json()["title"] == "Invalid code pool"
    assert bad.json()["detail"] == "the code pool has 3 problems"
    assert bad.json()["errors"] == [
        {"field": "row 3", "message": "the row is blank"},
        {"field": "row 4", "message": "duplicate of row 2", "value": "EEE-5"},
        {"field": "row 5", "message": "expected one code per row", "value": "FFF,GGG"},
    ]
    assert _snapshot(session_factory, cid) == before

    redeemed = _redeem(client, m, cid, {"reward_id": "free-shipping"})
    issued = redeemed.json()["coupon_code"]
    before = _snapshot(session_factory, cid)
    elsewhere = _upload(client, m, "ten-percent", f"NEW-1\naaa-1\n{issued.lower()}\n")
    assert elsewhere.status_code == 422
    assert elsewhere.json()["detail"] == "2 codes are already used elsewhere"
    assert elsewhere.json()["errors"] == [
        {
            "field": "code",
            "message": "already in the code pool of reward 'five-off'",
            "value": "aaa-1",
        },
        {"field": "code", "message": "already issued by a redemption", "value": issued.lower()},
    ]
    assert _snapshot(session_factory, cid) == before

    for content, detail in [
        (b"\xff\xfeA\x00", "the file is not UTF-8 text"),
        ("", "the code pool has no codes"),
        ("code\n", "the code pool has no codes"),
    ]:
        r = _upload(client, m, "five-off", content)
        assert (r.status_code, r.json()["detail"]) == (422, detail)
    unknown = _upload(client, m, "no-such-reward", "ZZZ-1\n")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "reward 'no-such-reward' does not exist"
    missing_file = client.post("/api/v1/rewards/five-off/codes", headers=m.headers)
    assert missing_file.status_code == 422
    assert _snapshot(session_factory, cid) == before

    # Codes are handed out in upload order.
    assert _redeem(client, m, cid, {"reward_id": "five-off"}).json()["coupon_code"] == "AAA-1"


def test_rewards_list_shows_settings_and_pool_availability(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = _merchant_with_rewards(session_factory)
    cid = make_customer(session_factory, m.id, points=5000)
    _upload(client, m, "free-mug", "MUG-1\nMUG-2\nMUG-3\n")
    _redeem(client, m, cid, {"reward_id": "free-mug"})

    r = client.get("/api/v1/rewards", headers=m.headers)
    assert r.status_code == 200
    items = {item["id"]: item for item in r.json()["items"]}
    assert list(items) == [reward["id"] for reward in REWARDS]
    assert items["five-off"] == {
        "id": "five-off",
        "name": "$5 off",
        "type": "fixed_amount",
        "enabled": True,
        "points_cost": 500,
        "amount": "5.00",
        "percent": None,
        "product_id": None,
        "points_per_unit": None,
        "min_points": None,
        "max_points": None,
        "minimum_order": "25.00",
        "coupon_expiry_days": 30,
        "code_pool": None,
    }
    assert items["free-mug"]["product_id"] == "sku-mug-1"
    assert items["free-mug"]["code_pool"] == {"total": 3, "available": 2, "used": 1}
    assert items["ten-percent"]["percent"] == "10.00"
    assert (
        items["points-off"]["points_cost"],
        items["points-off"]["points_per_unit"],
        items["points-off"]["min_points"],
        items["points-off"]["max_points"],
    ) == (None, 100, 200, 1000)
    assert items["retired"]["enabled"] is False

    other = make_merchant(session_factory)
    assert client.get("/api/v1/rewards", headers=other.headers).json() == {"items": []}
    assert client.get("/api/v1/rewards").status_code == 401


def test_coupon_expiry_counts_from_the_redemption_time(
    session_factory: sessionmaker[Session],
) -> None:
    m = _merchant_with_rewards(session_factory)
    cid = make_customer(session_factory, m.id, points=1000)
    issued_at = datetime(2024, 2, 10, 15, 30, tzinfo=UTC)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        redemption = redemptions.redeem_reward(
            session,
            merchant_id=m.id,
            customer_id=cid,
            reward_id="five-off",
            idempotency_key="dated",
            now=issued_at,
        )
        assert redemption.expires_at == datetime(2024, 3, 11, 15, 30, tzinfo=UTC)
    with session_factory() as session:
        stored = session.scalars(select(Redemption)).one()
        assert (stored.created_at, stored.expires_at) == (
            issued_at,
            datetime(2024, 3, 11, 15, 30, tzinfo=UTC),
        )
        entry = session.get_one(LedgerEntry, stored.ledger_entry_id)
        assert entry.created_at == issued_at
