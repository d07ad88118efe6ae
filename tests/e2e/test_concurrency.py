"""Concurrent requests over real HTTP: one ledger entry per idempotency key, no negative balance."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.customers.orm import Customer
from tally.ledger.orm import LedgerEntry
from tests.support.factories import make_customer, make_merchant

CLIENTS = 20


def _post_all(
    url: str, requests: list[tuple[dict[str, str], dict[str, object]]]
) -> list[httpx.Response]:
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(lambda r: client.post(url, headers=r[0], json=r[1]), requests))


def test_same_idempotency_key_from_20_clients_writes_one_entry(
    live_server: str, session_factory: sessionmaker[Session], backend: str
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    headers = {**m.headers, "Idempotency-Key": "same-key"}
    body = {"points": 15, "reason": "concurrent bonus"}
    responses = _post_all(
        f"{live_server}/api/v1/customers/{cid}/adjustments", [(headers, body)] * CLIENTS
    )
    assert [r.status_code for r in responses] == [201] * CLIENTS, [
        r.text for r in responses if r.status_code != 201
    ]
    assert len({r.json()["entry"]["id"] for r in responses}) == 1
    assert (
        sum(1 for r in responses if r.headers.get("Idempotent-Replayed") == "true") == CLIENTS - 1
    )
    with session_factory() as session:
        entries = list(session.scalars(select(LedgerEntry).where(LedgerEntry.customer_id == cid)))
        assert [e.points for e in entries] == [15]
        assert session.get_one(Customer, cid).points_balance == 15


def test_20_concurrent_debits_never_drive_the_balance_negative(
    live_server: str, session_factory: sessionmaker[Session], backend: str
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id, points=100)
    requests = [
        ({**m.headers, "Idempotency-Key": f"debit-{i}"}, {"points": -15, "reason": "redeem"})
        for i in range(CLIENTS)
    ]
    responses = _post_all(f"{live_server}/api/v1/customers/{cid}/adjustments", requests)
    statuses = sorted(r.status_code for r in responses)
    # 100 points pay for exactly six debits of 15; the other fourteen are refused cleanly.
    assert statuses == [201] * 6 + [409] * 14
    refused = [r.json() for r in responses if r.status_code == 409]
    assert all(p["title"] == "Insufficient points" for p in refused)
    with session_factory() as session:
        assert session.get_one(Customer, cid).points_balance == 10
        total = sum(
            session.scalars(select(LedgerEntry.points).where(LedgerEntry.customer_id == cid))
        )
        assert total == 10


@pytest.mark.parametrize("clients", [CLIENTS])
def test_concurrent_enrolments_of_one_email_create_one_customer(
    live_server: str, session_factory: sessionmaker[Session], clients: int
) -> None:
    m = make_merchant(session_factory)
    responses = _post_all(
        f"{live_server}/api/v1/customers", [(m.headers, {"email": "race@example.com"})] * clients
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * (clients - 1)
    with session_factory() as session:
        assert len(list(session.scalars(select(Customer.id)))) == 1
