"""The customer and points API."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tally.customers.orm import Customer, CustomerState
from tally.idempotency.orm import IdempotencyRecord
from tally.ledger.orm import LedgerEntry
from tests.support.factories import make_customer, make_merchant


def _count(factory: sessionmaker[Session], model: type) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_enroll_get_update_and_adjust(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    r = client.post(
        "/api/v1/customers",
        json={"email": " Ada@Example.COM ", "first_name": "Ada", "birthday": "1990-02-28"},
        headers=m.headers,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["email"] == "ada@example.com"
    assert body["state"] == "member"
    assert body["points_balance"] == 0
    assert body["referral_url"] == f"http://tally.test/r/{body['referral_code']}"
    cid = body["id"]

    assert client.get(f"/api/v1/customers/{cid}", headers=m.headers).json()["first_name"] == "Ada"
    by_email = client.get(
        "/api/v1/customers/by-email", params={"email": "ADA@example.com"}, headers=m.headers
    )
    assert by_email.json()["id"] == cid

    patched = client.patch(
        f"/api/v1/customers/{cid}", json={"last_name": "Lovelace"}, headers=m.headers
    )
    assert patched.status_code == 200
    assert (patched.json()["first_name"], patched.json()["last_name"]) == ("Ada", "Lovelace")
    assert patched.json()["birthday"] == "1990-02-28"

    adj = client.post(
        f"/api/v1/customers/{cid}/adjustments",
        json={"points": 120, "reason": "welcome"},
        headers=m.headers,
    )
    assert adj.status_code == 201
    assert adj.json()["balance"] == 120
    assert adj.json()["entry"]["kind"] == "adjust"
    neg = client.post(
        f"/api/v1/customers/{cid}/adjustments",
        json={"points": -20, "reason": "typo"},
        headers=m.headers,
    )
    assert neg.json()["balance"] == 100
    page = client.get(
        f"/api/v1/customers/{cid}/ledger", params={"limit": 1}, headers=m.headers
    ).json()
    assert page["total"] == 2
    assert [e["points"] for e in page["items"]] == [-20]


def test_duplicate_email_is_a_conflict_but_a_guest_becomes_a_member(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    make_customer(
        session_factory, m.id, email="guest@example.com", state=CustomerState.GUEST, points=40
    )
    r = client.post("/api/v1/customers", json={"email": "GUEST@example.com"}, headers=m.headers)
    assert r.status_code == 200
    assert (r.json()["state"], r.json()["points_balance"]) == ("member", 40)
    again = client.post("/api/v1/customers", json={"email": "guest@example.com"}, headers=m.headers)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["detail"] == "a customer with email 'guest@example.com' already exists"
    assert _count(session_factory, Customer) == 1


def test_bad_input_gets_specific_problems_never_500(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id, points=10)
    cases = [
        ("post", "/api/v1/customers", {"email": "not-an-email"}, 422, "email"),
        (
            "post",
            "/api/v1/customers",
            {"email": "a@b.co", "birthday": "1990-13-01"},
            422,
            "birthday",
        ),
        (
            "post",
            "/api/v1/customers",
            {"email": "a@b.co", "birthday": "2999-01-01"},
            422,
            "birthday",
        ),
        ("post", "/api/v1/customers", {"email": "a@b.co", "extra": 1}, 422, "extra"),
        (
            "post",
            "/api/v1/customers",
            {"email": "a@b.co", "referred_by": "NOPE"},
            422,
            "referred_by",
        ),
        (
            "post",
            f"/api/v1/customers/{cid}/adjustments",
            {"points": 0, "reason": "x"},
            422,
            "points",
        ),
        (
            "post",
            f"/api/v1/customers/{cid}/adjustments",
            {"points": "ten", "reason": "x"},
            422,
            "points",
        ),
        ("post", f"/api/v1/customers/{cid}/adjustments", {"points": 5}, 422, "reason"),
        (
            "post",
            f"/api/v1/customers/{cid}/adjustments",
            {"points": -11, "reason": "x"},
            409,
            "points",
        ),
        ("get", "/api/v1/customers/999999", None, 404, None),
        ("get", "/api/v1/customers/abc", None, 422, "customer_id"),
        ("get", "/api/v1/customers?limit=1000", None, 422, "limit"),
    ]
    for method, url, payload, status, field in cases:
        r = client.request(method, url, json=payload, headers=m.headers)
        assert r.status_code == status, (url, payload, r.text)
        problem = r.json()
        assert problem["status"] == status
        assert problem["detail"]
        if field:
            assert field in [e["field"] for e in problem["errors"]], problem
    r = client.post(
        "/api/v1/customers",
        content=b"{not json",
        headers={**m.headers, "content-type": "application/json"},
    )
    assert r.status_code == 422
    assert _count(session_factory, Customer) == 1
    assert _count(session_factory, LedgerEntry) == 1


def test_missing_or_revoked_key_is_401(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    from tally.db.engine import unit_of_work
    from tally.merchants.orm import ApiKey
    from tally.merchants.service import revoke_api_key

    m = make_merchant(session_factory)
    assert client.get("/api/v1/customers").status_code == 401
    assert (
        client.get(
            "/api/v1/customers", headers={"Authorization": "Bearer tly_nope_nope"}
        ).status_code
        == 401
    )
    assert client.get("/api/v1/customers", headers=m.headers).status_code == 200
    with unit_of_work(session_factory) as session:
        key_id = session.scalars(select(ApiKey.id).where(ApiKey.merchant_id == m.id)).one()
        revoke_api_key(session, merchant_id=m.id, key_id=key_id)
    r = client.get("/api/v1/customers", headers=m.headers)
    assert r.status_code == 401
    assert r.json()["detail"] == "the API key is unknown or revoked"


def test_list_search_and_paginate(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    for i in range(7):
        make_customer(
            session_factory,
            m.id,
            email=f"shopper{i}@example.com",
            first_name="Sam" if i % 2 else "Lee",
        )
    make_customer(session_factory, m.id, email="guest@example.com", state=CustomerState.GUEST)
    first = client.get("/api/v1/customers", params={"limit": 3}, headers=m.headers).json()
    second = client.get(
        "/api/v1/customers", params={"limit": 3, "offset": 3}, headers=m.headers
    ).json()
    assert first["total"] == 8
    assert len(first["items"]) == 3
    assert not {c["id"] for c in first["items"]} & {c["id"] for c in second["items"]}
    sams = client.get("/api/v1/customers", params={"query": "sam"}, headers=m.headers).json()
    assert sams["total"] == 3
    guests = client.get("/api/v1/customers", params={"state": "guest"}, headers=m.headers).json()
    assert [c["email"] for c in guests["items"]] == ["guest@example.com"]


def test_idempotency_key_replays_and_refuses_a_different_body(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    url = f"/api/v1/customers/{cid}/adjustments"
    headers = {**m.headers, "Idempotency-Key": "order-1001-bonus"}
    first = client.post(url, json={"points": 50, "reason": "bonus"}, headers=headers)
    replay = client.post(url, json={"points": 50, "reason": "bonus"}, headers=headers)
    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    other = client.post(url, json={"points": 60, "reason": "bonus"}, headers=headers)
    assert other.status_code == 409
    assert "already used with a different request" in other.json()["detail"]
    with session_factory() as session:
        assert session.get_one(Customer, cid).points_balance == 50
    assert _count(session_factory, LedgerEntry) == 1

    create_headers = {**m.headers, "Idempotency-Key": "signup-1"}
    c1 = client.post("/api/v1/customers", json={"email": "new@example.com"}, headers=create_headers)
    c2 = client.post("/api/v1/customers", json={"email": "new@example.com"}, headers=create_headers)
    assert (c1.status_code, c2.status_code) == (201, 201)
    assert c1.json()["id"] == c2.json()["id"]


def test_refused_request_is_not_stored_so_a_fixed_retry_works(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id, points=5)
    headers = {**m.headers, "Idempotency-Key": "k"}
    url = f"/api/v1/customers/{cid}/adjustments"
    assert client.post(url, json={"points": -10, "reason": "x"}, headers=headers).status_code == 409
    assert _count(session_factory, IdempotencyRecord) == 0
    # A different body under the same key after a refusal: the key was never used.
    assert client.post(url, json={"points": -5, "reason": "x"}, headers=headers).status_code == 201


def test_openapi_and_docs_are_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/api/v1/customers/{customer_id}/adjustments" in spec["paths"]
    assert client.get("/docs").status_code == 200
