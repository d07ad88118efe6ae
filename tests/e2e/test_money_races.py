"""Every money-moving endpoint hammered by parallel requests over real HTTP, on both backends.

The assertions are business invariants, not only Σ entries = balance: an order is never
refunded beyond what was paid nor loses more points than it earned, program versions go up one
at a time, a duplicate has exactly one winner, and every loser gets the replay or a clear 4xx,
never a 500. How many requests win a race is never asserted where it depends on timing.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tally.customers.orm import Customer
from tally.ledger import service as ledger
from tally.ledger.orm import LedgerEntry
from tally.program.integrity import order_violations
from tally.program.orm import Order, Redemption, Refund
from tests.support.factories import MerchantFixture, make_customer, make_merchant

CLIENTS = 40


def _parallel(calls: list[tuple[str, str, dict[str, str], Any]]) -> list[httpx.Response]:
    """Send (method, url, headers, json) calls at once from CLIENTS threads."""
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(lambda c: client.request(c[0], c[1], headers=c[2], json=c[3]), calls))


def _statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def _no_server_errors(responses: list[httpx.Response]) -> None:
    errors = [r.text for r in responses if r.status_code >= 500]
    assert errors == []


def _assert_books_hold(session_factory: sessionmaker[Session], merchant_id: int) -> None:
    with session_factory() as session:
        assert list(ledger.verify_balances(session, merchant_id=merchant_id)) == []
        assert list(ledger.find_corrupt_customers(session, merchant_id=merchant_id)) == []
        assert order_violations(session, merchant_id=merchant_id) == []


def _order_program(live_server: str, m: MerchantFixture) -> None:
    response = httpx.patch(
        f"{live_server}/api/v1/program",
        headers=m.headers,
        json={"place_order": {"enabled": True, "points_per_unit": "1"}},
    )
    assert response.status_code == 200, response.text


def _paid_order(live_server: str, m: MerchantFixture, order_id: str, email: str) -> None:
    response = httpx.post(
        f"{live_server}/api/v1/orders",
        headers=m.headers,
        json={
            "order_id": order_id,
            "email": email,
            "total": "100.00",
            "placed_at": "2026-11-02T10:00:00Z",
        },
    )
    assert response.status_code == 201, response.text
    assert response.json()["points_awarded"] == 100


def test_parallel_partial_refunds_never_refund_more_than_was_paid(
    live_server: str, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    _order_program(live_server, m)
    _paid_order(live_server, m, "R-1", "refunds@example.com")
    url = f"{live_server}/api/v1/orders/R-1/refunds"
    responses = _parallel(
        [("POST", url, m.headers, {"amount": "10.00", "refund_id": f"r{i}"}) for i in range(40)]
    )
    _no_server_errors(responses)
    # Ten refunds of 10.00 pay back the 100.00 order; every other one finds nothing left.
    assert _statuses(responses) == {201: 10, 422: 30}
    assert sum(r.json()["points_clawed_back"] for r in responses if r.status_code == 201) == 100
    with session_factory() as session:
        order = session.scalars(select(Order).where(Order.merchant_id == m.id)).one()
        assert (order.refunded_amount, order.points_clawed_back) == (Decimal(100), 100)
        assert session.scalar(select(func.sum(Refund.amount))) == Decimal(100)
        assert session.scalars(select(Customer.points_balance)).one() == 0
    _assert_books_hold(session_factory, m.id)


def test_parallel_full_refunds_of_one_order_take_its_points_back_once(
    live_server: str, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    _order_program(live_server, m)
    cid = make_customer(session_factory, m.id, email="full@example.com", points=500)
    _paid_order(live_server, m, "R-2", "full@example.com")
    url = f"{live_server}/api/v1/orders/R-2/refunds"
    responses = _parallel([("POST", url, m.headers, {"refund_id": f"f{i}"}) for i in range(40)])
    _no_server_errors(responses)
    assert _statuses(responses) == {201: 1, 422: 39}
    with session_factory() as session:
        assert session.get_one(Customer, cid).points_balance == 500
        assert session.scalar(select(func.count(Refund.id))) == 1
    _assert_books_hold(session_factory, m.id)


def test_one_refund_id_sent_40_times_is_recorded_once_and_replayed(
    live_server: str, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    _order_program(live_server, m)
    _paid_order(live_server, m, "R-3", "dup@example.com")
    url = f"{live_server}/api/v1/orders/R-3/refunds"
    body = {"amount": "25.00", "refund_id": "same"}
    responses = _parallel([("POST", url, m.headers, body)] * 40)
    _no_server_errors(responses)
    assert _statuses(responses) == {201: 40}
    assert sum(1 for r in responses if not r.json()["replayed"]) == 1
    assert {r.json()["points_clawed_back"] for r in responses} == {25}
    with session_factory() as session:
        assert session.scalar(select(func.count(Refund.id))) == 1
        assert session.scalars(select(Customer.points_balance)).one() == 75
    _assert_books_hold(session_factory, m.id)


@pytest.mark.parametrize("known_customer", [True, False], ids=["known", "new-guest"])
def test_one_order_reported_50_times_at_once_is_stored_and_awarded_once(
    live_server: str, session_factory: sessionmaker[Session], known_customer: bool
) -> None:
    m = make_merchant(session_factory)
    _order_program(live_server, m)
    if known_customer:
        make_customer(session_factory, m.id, email="race@example.com")
    body = {
        "order_id": "#5001",
        "email": "race@example.com",
        "total": "80.00",
        "placed_at": "2026-11-02T10:00:00Z",
    }
    responses = _parallel([("POST", f"{live_server}/api/v1/orders", m.headers, body)] * 50)
    _no_server_errors(responses)
    # The first report creates the order; the others are answered as repeats of it.
    assert _statuses(responses) == {201: 1, 200: 49}
    assert {r.json()["points_awarded"] for r in responses} == {80}
    with session_factory() as session:
        assert session.scalar(select(func.count(Order.id))) == 1
        assert session.scalar(select(func.count(Customer.id))) == 1
        assert session.scalars(select(Customer.points_balance)).one() == 80
    _assert_books_hold(session_factory, m.id)


def test_one_order_under_one_idempotency_key_answers_every_client_the_same(
    live_server: str, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    _order_program(live_server, m)
    headers = {**m.headers, "Idempotency-Key": "order-5002"}
    body = {
        "order_id": "#5002",
        "email": "keyed@example.com",
        "total": "30.00",
        "placed_at": "2026-11-02T10:00:00Z",
    }
    responses = _parallel([("POST", f"{live_server}/api/v1/orders", headers, body)] * 30)
    _no_server_errors(responses)
    assert _statuses(responses) == {201: 30}
    assert len({r.text for r in responses}) == 1
    assert sum(1 for r in responses if r.headers.get("Idempotent-Replayed") == "true") == 29
    _assert_books_hold(session_factory, m.id)


def test_parallel_program_changes_are_all_kept_with_sequential_versions(
    live_server: str, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    url = f"{live_server}/api/v1/program"
    start = httpx.get(url, headers=m.headers).json()["version"]
    calls = [
        ("PATCH", url, m.headers, {"create_account": {"enabled": True, "points": i + 1}})
        for i in range(20)
    ]
    responses = _parallel(calls)
    _no_server_errors(responses)
    assert _statuses(responses) == {200: 20}
    versions = sorted(r.json()["version"] for r in responses)
    assert versions == list(range(start + 1, start + 21))
    final = httpx.get(url, headers=m.headers)
    assert final.json()["version"] == start + 20
    assert final.headers["ETag"] == f'"{start + 20}"'
    # The settings in force are those of the change that got the last version.
    last = max(responses, key=lambda r: r.json()["version"])
    assert final.json()["create_account"] == last.json()["create_account"]


def test_a_change_sent_with_a_stale_if_match_is_refused_and_changes_nothing(
    live_server: str, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    url = f"{live_server}/api/v1/program"
    read = httpx.get(url, headers=m.headers)
    etag = read.headers["ETag"]
    first = httpx.patch(
        url,
        headers={**m.headers, "If-Match": etag},
        json={"birthday": {"enabled": True, "points": 50}},
    )
    assert first.status_code == 200, first.text
    assert first.headers["ETag"] != etag
    stale = httpx.patch(
        url,
        headers={**m.headers, "If-Match": etag},
        json={"birthday": {"enabled": True, "points": 999}},
    )
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    assert "version" in stale.json()["detail"]
    now = httpx.get(url, headers=m.headers).json()
    assert now["birthday"]["points"] == 50
    assert now["version"] == read.json()["version"] + 1


def test_parallel_credits_and_debits_keep_every_balance_equal_to_its_ledger(
    live_server: str, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id, points=100)
    url = f"{live_server}/api/v1/customers/{cid}/adjustments"
    calls = [
        (
            "POST",
            url,
            {**m.headers, "Idempotency-Key": f"mix-{i % 30}"},
            {"points": 7 if i % 3 == 0 else -9, "reason": "race"},
        )
        for i in range(60)
    ]
    responses = _parallel(calls)
    _no_server_errors(responses)
    assert set(_statuses(responses)) <= {201, 409}
    with session_factory() as session:
        balance = session.get_one(Customer, cid).points_balance
        entries = list(session.scalars(select(LedgerEntry).where(LedgerEntry.customer_id == cid)))
    assert balance >= 0
    # Each of the 30 keys moved points at most once, whatever the number of its senders.
    assert len(entries) <= 31
    assert len({e.idempotency_key for e in entries}) == len(entries)
    _assert_books_hold(session_factory, m.id)


def test_parallel_redemptions_spend_only_what_the_balance_holds(
    live_server: str, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    reward = {
        "id": "five-off",
        "type": "fixed_amount",
        "name": "$5",
        "points_cost": 100,
        "amount": "5",
    }
    patched = httpx.patch(
        f"{live_server}/api/v1/program", headers=m.headers, json={"rewards": [reward]}
    )
    assert patched.status_code == 200, patched.text
    cid = make_customer(session_factory, m.id, points=450)
    url = f"{live_server}/api/v1/customers/{cid}/redemptions"
    calls = [
        ("POST", url, {**m.headers, "Idempotency-Key": f"redeem-{i}"}, {"reward_id": "five-off"})
        for i in range(30)
    ]
    responses = _parallel(calls)
    _no_server_errors(responses)
    assert _statuses(responses) == {201: 4, 409: 26}
    with session_factory() as session:
        assert session.get_one(Customer, cid).points_balance == 50
        assert session.scalar(select(func.count(Redemption.id))) == 4
    _assert_books_hold(session_factory, m.id)


def test_the_same_customers_file_imported_twice_at_once_credits_once(
    live_server: str, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    rows = "".join(f"Customer {i},imp{i}@example.com,{10 + i}\n" for i in range(50))
    content = ("Name,Email,Points\n" + rows).encode()
    url = f"{live_server}/api/v1/imports/customers?wait=true"

    def upload(_: int) -> httpx.Response:
        files = {"file": ("same.csv", content, "text/csv")}
        return httpx.post(url, headers=m.headers, files=files, timeout=120)

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(upload, range(4)))
    _no_server_errors(responses)
    assert set(_statuses(responses)) <= {201, 409}
    assert _statuses(responses)[201] >= 1
    with session_factory() as session:
        balances = dict(session.execute(select(Customer.email, Customer.points_balance)).all())
    assert balances == {f"imp{i}@example.com": 10 + i for i in range(50)}
    _assert_books_hold(session_factory, m.id)
