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
    ("GET", "/api/v1/customers/{customer_id}/tier"): ("get", "/api/v1/customers/{cid}/tier", None),
    ("GET", "/api/v1/orders/{order_id}"): ("get", "/api/v1/orders/VICTIM-1", None),
    ("POST", "/api/v1/orders/{order_id}/refunds"): ("post", "/api/v1/orders/VICTIM-1/refunds", {}),
    ("POST", "/api/v1/actions"): (
        "post",
        "/api/v1/actions",
        {"email": "victim@example.com", "action_id": "review"},
    ),
    ("POST", "/api/v1/orders"): (
        "post",
        "/api/v1/orders",
        {
            "order_id": "VICTIM-1",
            "email": "x@example.com",
            "total": "5",
            "placed_at": "2026-10-02T00:00:00Z",
        },
    ),
    ("GET", "/api/v1/customers/{customer_id}/redemptions"): (
        "get",
        "/api/v1/customers/{cid}/redemptions",
        None,
    ),
    ("POST", "/api/v1/customers/{customer_id}/redemptions"): (
        "post",
        "/api/v1/customers/{cid}/redemptions",
        {"reward_id": "five-off"},
    ),
    ("POST", "/api/v1/rewards/{reward_id}/codes"): (
        "upload",
        "/api/v1/rewards/five-off/codes",
        None,
    ),
    ("GET", "/api/v1/rewards"): ("get", "/api/v1/rewards", None),
    # Merchant-wide settings: A sees and changes only its own program.
    ("GET", "/api/v1/program"): ("get", "/api/v1/program", None),
    ("PATCH", "/api/v1/program"): ("patch", "/api/v1/program", {"birthday": {"enabled": True}}),
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


def _victim_order_and_action(client: TestClient, headers: dict[str, str]) -> None:
    program = {
        "place_order": {"enabled": True},
        "custom_actions": [{"id": "review", "name": "Review", "points": 5}],
        "rewards": [
            {
                "type": "fixed_amount",
                "id": "five-off",
                "name": "$5 off",
                "points_cost": 5,
                "amount": "5",
            }
        ],
    }
    assert client.patch("/api/v1/program", json=program, headers=headers).status_code == 200
    order = {
        "order_id": "VICTIM-1",
        "email": "victim@example.com",
        "total": "10",
        "placed_at": "2026-10-01T00:00:00Z",
    }
    assert client.post("/api/v1/orders", json=order, headers=headers).status_code == 201


def test_merchant_a_cannot_touch_merchant_b(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    a, b = make_merchant(session_factory), make_merchant(session_factory)
    victim = make_customer(
        session_factory, b.id, email="victim@example.com", points=10, first_name="Vic"
    )
    _victim_order_and_action(client, b.headers)
    for (method, path), (verb, url, payload) in CROSS_TENANT_REQUESTS.items():
        if verb == "upload":
            r = client.post(
                url, files={"file": ("codes.csv", b"code\nSTEAL1\n")}, headers=a.headers
            )
        else:
            r = client.request(verb, url.format(cid=victim), json=payload, headers=a.headers)
        if (method, path) == ("POST", "/api/v1/orders"):
            # The same order id at A is A's own order; B's order is untouched.
            assert r.status_code == 201
            assert r.json()["customer_id"] != victim
        elif (method, path) == ("GET", "/api/v1/rewards"):
            assert r.status_code == 200
            assert r.json() == [] or all(rw["id"] != "five-off" for rw in r.json()["items"])
        elif path == "/api/v1/program":
            assert r.status_code == 200
            assert r.json()["version"] == (1 if method == "GET" else 2)
        elif (method, path) == ("POST", "/api/v1/customers"):
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
        assert (customer.first_name, customer.points_balance) == ("Vic", 20)
        assert session.query(LedgerEntry).filter_by(customer_id=victim).count() == 2
    own = client.get(f"/api/v1/customers/{victim}", headers=b.headers)
    assert own.status_code == 200
