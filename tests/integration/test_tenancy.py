"""Merchant A's API key can never read, list or change merchant B's customers."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tally.customers.orm import Customer
from tally.ledger.orm import LedgerEntry
from tests.support.factories import make_customer, make_merchant

# Every /api/v1 route with the request merchant A sends against merchant B's customer {cid}.
CROSS_TENANT_REQUESTS = {
    ("GET", "/api/v1/customers"): ("get", "/api/v1/customers?query=victim", None),
    ("GET", "/api/v1/customers/by-email"): (
        "get",
        "/api/v1/customers/by-email?email=victim@example.com",
        None,
    ),
    ("GET", "/api/v1/customers/{customer_id}"): ("get", "/api/v1/customers/{cid}", None),
    ("PATCH", "/api/v1/customers/{customer_id}"): (
        "patch",
        "/api/v1/customers/{cid}",
        {"first_name": "X"},
    ),
    ("GET", "/api/v1/customers/{customer_id}/ledger"): (
        "get",
        "/api/v1/customers/{cid}/ledger",
        None,
    ),
    ("POST", "/api/v1/customers/{customer_id}/adjustments"): (
        "post",
        "/api/v1/customers/{cid}/adjustments",
        {"points": -5, "reason": "steal"},
    ),
    # Last, so the lookups above run while A has no customer with the victim's email.
    ("POST", "/api/v1/customers"): ("post", "/api/v1/customers", {"email": "victim@example.com"}),
}


def test_every_api_route_is_covered_by_the_tenancy_test(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    routes = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        if path.startswith("/api/v1")
        for method in operations
    }
    assert routes == set(CROSS_TENANT_REQUESTS)


def test_merchant_a_cannot_touch_merchant_b(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    a, b = make_merchant(session_factory), make_merchant(session_factory)
    victim = make_customer(
        session_factory, b.id, email="victim@example.com", points=10, first_name="Vic"
    )
    for (method, path), (verb, url, payload) in CROSS_TENANT_REQUESTS.items():
        r = client.request(verb, url.format(cid=victim), json=payload, headers=a.headers)
        if (method, path) == ("POST", "/api/v1/customers"):
            # A's own customer with the same email: allowed, and separate from B's.
            assert r.status_code == 201
            assert r.json()["id"] != victim
        elif (method, path) == ("GET", "/api/v1/customers"):
            assert r.status_code == 200
            assert r.json()["items"] == []
        else:
            assert r.status_code == 404, (method, path, r.text)
    with session_factory() as session:
        customer = session.get_one(Customer, victim)
        assert (customer.first_name, customer.points_balance) == ("Vic", 10)
        assert session.query(LedgerEntry).filter_by(customer_id=victim).count() == 1
    own = client.get(f"/api/v1/customers/{victim}", headers=b.headers)
    assert own.status_code == 200
