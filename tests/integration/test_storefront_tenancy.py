"""Merchant A's widget id and signatures can never read or spend merchant B's customers.

Every route under /storefront/v1 is walked from the application itself (a test fails when a
new one is missing below), and each is called three ways: A's widget id with a signature made
with B's secret, B's widget id with A's secret, and A's widget id with a valid A signature that
names B's customer (store id and email). The first two must be 401; the third acts on a new
customer of A's, never on B's; and B's customers, ledger and redemptions must not change.
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.db.engine import unit_of_work
from tally.storefront import service
from tests.support.factories import make_customer
from tests.support.storefront import STORE_ORIGIN, Store, ledger_state, make_store

VICTIM_ID, VICTIM_EMAIL = "v-1", "victim@example.com"
B_ORIGIN = "https://b-shop.example"

# (method, route path) -> (path after the widget id, JSON body, extra headers,
#                          status for A's valid signature naming B's customer)
STOREFRONT_REQUESTS: dict[tuple[str, str], tuple[str, Any, dict[str, str], int]] = {
    ("OPTIONS", "/storefront/v1/{widget_id}/{path}"): (
        "/me/redemptions",
        None,
        {"Access-Control-Request-Method": "POST"},
        204,
    ),
    ("GET", "/storefront/v1/{widget_id}/program"): ("/program", None, {}, 200),
    ("GET", "/storefront/v1/{widget_id}/me"): ("/me", None, {}, 200),
    ("GET", "/storefront/v1/{widget_id}/me/activity"): ("/me/activity", None, {}, 200),
    ("POST", "/storefront/v1/{widget_id}/me/redemptions"): (
        "/me/redemptions",
        {"reward_id": "five-off"},
        {"Idempotency-Key": "steal"},
        409,
    ),
    ("PUT", "/storefront/v1/{widget_id}/me/birthday"): (
        "/me/birthday",
        {"birthday": "1980-01-01"},
        {},
        200,
    ),
    ("POST", "/storefront/v1/{widget_id}/me/actions/{action_id}"): (
        "/me/actions/follow",
        None,
        {},
        201,
    ),
}
# Routes a guest may call: they answer without a signature, with the widget's own merchant.
PUBLIC = {"/storefront/v1/{widget_id}/program", "/storefront/v1/{widget_id}/{path}"}


def _storefront_routes(client: TestClient) -> set[tuple[str, str]]:
    # Included routers come wrapped: their route contexts answer with the full path.
    return {
        (method, context.path_format)
        for context in iter_route_contexts(client.app.routes)  # type: ignore[attr-defined]
        if isinstance(context.original_route, APIRoute)
        and context.path_format.startswith("/storefront/v1/")
        for method in context.methods or ()
        if method != "HEAD"
    }


def test_every_storefront_route_is_covered_by_the_tenancy_test(client: TestClient) -> None:
    assert _storefront_routes(client) == set(STOREFRONT_REQUESTS)


def _call(
    client: TestClient, store: Store, suffix: str, method: str, body: Any, headers: dict[str, str]
) -> Any:
    return client.request(method, store.url(suffix), json=body, headers=headers)


def _victim_store(client: TestClient, factory: sessionmaker[Session], settings: Settings) -> Store:
    b = make_store(client, factory, settings)
    with unit_of_work(factory, merchant_id=b.merchant.id) as session:
        service.set_origins(session, config=settings, merchant_id=b.merchant.id, origins=[B_ORIGIN])
    make_customer(factory, b.merchant.id, email=VICTIM_EMAIL, external_id=VICTIM_ID, points=500)
    redeemed = client.post(
        b.url("/me/redemptions"),
        json={"reward_id": "five-off"},
        headers={**b.signed(VICTIM_ID, VICTIM_EMAIL), "Idempotency-Key": "steal"},
    )
    assert redeemed.status_code == 201, redeemed.text
    return b


def test_merchant_a_can_never_read_or_spend_merchant_bs_customers(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    a = make_store(client, session_factory, settings)
    b = _victim_store(client, session_factory, settings)
    before = ledger_state(session_factory, b.merchant.id)
    for (method, path), (suffix, body, extra, own_status) in STOREFRONT_REQUESTS.items():
        origin = {"Origin": STORE_ORIGIN}
        with_b_secret = {**extra, **origin, **a.signed(VICTIM_ID, VICTIM_EMAIL, secret=b.secret)}
        with_a_secret = {**extra, **b.signed(VICTIM_ID, VICTIM_EMAIL, secret=a.secret)}
        if path in PUBLIC:
            # Guests' routes: A's widget shows A's program; B's widget refuses A's origin.
            r = _call(client, a, suffix, method, body, with_b_secret)
            assert r.status_code == own_status, (method, path, r.text)
            refused = _call(client, b, suffix, method, body, {**extra, **origin})
            assert refused.status_code == 403, (method, path)
            continue
        for store, headers in ((a, with_b_secret), (b, with_a_secret)):
            r = _call(client, store, suffix, method, body, headers)
            assert r.status_code == 401, (method, path, store.widget_id, r.text)
        valid_in_a = {**extra, **origin, **a.signed(VICTIM_ID, VICTIM_EMAIL)}
        r = _call(client, a, suffix, method, body, valid_in_a)
        assert r.status_code == own_status, (method, path, r.text)
        if path.endswith("/me"):
            assert r.json()["customer"]["points_balance"] == 50
            assert r.json()["coupons"] == []
        if path.endswith("/me/activity"):
            assert [i["reason"] for i in r.json()["items"]] == ["Created an account"]
    assert ledger_state(session_factory, b.merchant.id) == before
    customers_of_a, _, redemptions_of_a = ledger_state(session_factory, a.merchant.id)
    assert customers_of_a == [
        (VICTIM_EMAIL, VICTIM_ID, "member", 65, customers_of_a[0][4]),
    ]
    assert str(customers_of_a[0][4]) == "1980-01-01"
    assert redemptions_of_a == 0
