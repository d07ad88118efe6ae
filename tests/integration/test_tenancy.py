"""Merchant A's API key can never read, list or change merchant B's data.

Every /api/v1 route in the OpenAPI document must appear below (a test checks), with what A
sends and the answer A must get: 404 for anything that names one of B's customers, orders or
rewards; for merchant-wide routes (settings, lists) A gets its own data, and the final checks
prove B's data did not change.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers.orm import Customer
from tally.devtools.dotdigital_emulator import EmulatorConfig, EmulatorServer
from tally.integrations.dotdigital.orm import DotdigitalConnection
from tally.ledger.orm import LedgerEntry
from tally.merchants.orm import Merchant
from tally.program.orm import Order
from tally.webhooks.orm import WebhookEndpoint
from tests.support.factories import make_customer, make_merchant

ORDER = {"order_id": "VICTIM-1", "total": "10", "placed_at": "2026-10-01T00:00:00Z"}
TEMPLATE = {"subject": "Hi", "html_body": "<p>Hi</p>", "text_body": "Hi"}

# (method, path) -> (verb, url for A to call, JSON body, status A must get)
CROSS_TENANT_REQUESTS: dict[tuple[str, str], tuple[str, str, Any, int | str]] = {
    ("GET", "/api/v1/customers/by-email"): (
        "get",
        "/api/v1/customers/by-email?email=victim@example.com",
        None,
        404,
    ),
    ("GET", "/api/v1/customers/{customer_id}"): ("get", "/api/v1/customers/{cid}", None, 404),
    ("PATCH", "/api/v1/customers/{customer_id}"): (
        "patch",
        "/api/v1/customers/{cid}",
        {"first_name": "X"},
        404,
    ),
    ("GET", "/api/v1/customers/{customer_id}/ledger"): (
        "get",
        "/api/v1/customers/{cid}/ledger",
        None,
        404,
    ),
    ("POST", "/api/v1/customers/{customer_id}/adjustments"): (
        "post",
        "/api/v1/customers/{cid}/adjustments",
        {"points": -5, "reason": "steal"},
        404,
    ),
    ("GET", "/api/v1/customers/{customer_id}/tier"): (
        "get",
        "/api/v1/customers/{cid}/tier",
        None,
        404,
    ),
    ("GET", "/api/v1/customers/{customer_id}/redemptions"): (
        "get",
        "/api/v1/customers/{cid}/redemptions",
        None,
        404,
    ),
    ("POST", "/api/v1/customers/{customer_id}/redemptions"): (
        "post",
        "/api/v1/customers/{cid}/redemptions",
        {"reward_id": "five-off"},
        404,
    ),
    ("POST", "/api/v1/customers/{customer_id}/unsubscribe"): (
        "post",
        "/api/v1/customers/{cid}/unsubscribe",
        None,
        404,
    ),
    ("POST", "/api/v1/customers/{customer_id}/resubscribe"): (
        "post",
        "/api/v1/customers/{cid}/resubscribe",
        None,
        404,
    ),
    ("POST", "/api/v1/email-templates/{email_type}/preview"): (
        "post",
        "/api/v1/email-templates/points_earned/preview",
        {"customer_id": "{cid}"},
        404,
    ),
    ("GET", "/api/v1/orders/{order_id}"): ("get", "/api/v1/orders/VICTIM-1", None, 404),
    ("POST", "/api/v1/orders/{order_id}/refunds"): (
        "post",
        "/api/v1/orders/VICTIM-1/refunds",
        {},
        404,
    ),
    ("POST", "/api/v1/actions"): (
        "post",
        "/api/v1/actions",
        {"email": "victim@example.com", "action_id": "review"},
        404,
    ),
    ("POST", "/api/v1/rewards/{reward_id}/codes"): (
        "upload",
        "/api/v1/rewards/five-off/codes",
        None,
        404,
    ),
    # Merchant-wide routes: A works on its own data.
    ("GET", "/api/v1/customers"): ("get", "/api/v1/customers?query=victim", None, 200),
    ("GET", "/api/v1/rewards"): ("get", "/api/v1/rewards", None, 200),
    ("GET", "/api/v1/program"): ("get", "/api/v1/program", None, 200),
    ("PATCH", "/api/v1/program"): (
        "patch",
        "/api/v1/program",
        {"birthday": {"enabled": True}},
        200,
    ),
    ("GET", "/api/v1/email-templates"): ("get", "/api/v1/email-templates", None, 200),
    ("GET", "/api/v1/email-templates/{email_type}"): (
        "get",
        "/api/v1/email-templates/points_earned",
        None,
        200,
    ),
    ("PUT", "/api/v1/email-templates/{email_type}"): (
        "put",
        "/api/v1/email-templates/points_earned",
        TEMPLATE,
        200,
    ),
    ("PATCH", "/api/v1/email-templates/{email_type}"): (
        "patch",
        "/api/v1/email-templates/points_earned",
        {"enabled": False},
        200,
    ),
    ("DELETE", "/api/v1/email-templates/{email_type}"): (
        "delete",
        "/api/v1/email-templates/points_earned",
        None,
        200,
    ),
    ("GET", "/api/v1/emails"): ("get", "/api/v1/emails", None, 200),
    ("GET", "/api/v1/points-liability"): ("get", "/api/v1/points-liability", None, 200),
    ("GET", "/api/v1/exports/customers"): ("get", "/api/v1/exports/customers", None, 200),
    ("GET", "/api/v1/exports/ledger"): ("get", "/api/v1/exports/ledger", None, 200),
    ("GET", "/api/v1/mail-settings"): ("get", "/api/v1/mail-settings", None, 200),
    ("PUT", "/api/v1/mail-settings"): (
        "put",
        "/api/v1/mail-settings",
        {"host": "smtp.a.example", "port": 587, "security": "starttls", "sender": "a@a.example"},
        200,
    ),
    ("DELETE", "/api/v1/mail-settings"): ("delete", "/api/v1/mail-settings", None, 204),
    # Dotdigital: A is not connected, and B's connection and sync job stay out of reach.
    ("GET", "/api/v1/integrations/dotdigital"): (
        "get",
        "/api/v1/integrations/dotdigital",
        None,
        200,
    ),
    ("POST", "/api/v1/integrations/dotdigital/enable"): (
        "post",
        "/api/v1/integrations/dotdigital/enable",
        None,
        "{not_connected}",
    ),
    ("POST", "/api/v1/integrations/dotdigital/disable"): (
        "post",
        "/api/v1/integrations/dotdigital/disable",
        None,
        "{not_connected}",
    ),
    ("PUT", "/api/v1/integrations/dotdigital/mapping"): (
        "put",
        "/api/v1/integrations/dotdigital/mapping",
        {},
        "{not_connected}",
    ),
    ("POST", "/api/v1/integrations/dotdigital/sync"): (
        "post",
        "/api/v1/integrations/dotdigital/sync",
        None,
        "{not_connected}",
    ),
    ("GET", "/api/v1/integrations/dotdigital/sync/{job_id}"): (
        "get",
        "/api/v1/integrations/dotdigital/sync/{job}",
        None,
        404,
    ),
    # A has no drift check of its own; B's is out of reach.
    ("GET", "/api/v1/integrations/dotdigital/reconcile"): (
        "get",
        "/api/v1/integrations/dotdigital/reconcile",
        None,
        404,
    ),
    ("POST", "/api/v1/integrations/dotdigital/reconcile"): (
        "post",
        "/api/v1/integrations/dotdigital/reconcile",
        None,
        "{not_connected}",
    ),
    ("POST", "/api/v1/integrations/dotdigital/reconcile/fix"): (
        "post",
        "/api/v1/integrations/dotdigital/reconcile/fix",
        None,
        "{not_connected}",
    ),
    ("DELETE", "/api/v1/integrations/dotdigital"): (
        "delete",
        "/api/v1/integrations/dotdigital",
        None,
        404,
    ),
    ("PUT", "/api/v1/integrations/dotdigital/credentials"): (
        "put",
        "/api/v1/integrations/dotdigital/credentials",
        {"username": "apiuser-demo@apiconnector.com", "password": "wrong"},
        422,
    ),
    # Imports: B's import job is out of reach; A's own lists are empty.
    ("GET", "/api/v1/imports/templates/{kind}"): (
        "get",
        "/api/v1/imports/templates/customers",
        None,
        200,
    ),
    ("GET", "/api/v1/imports"): ("get", "/api/v1/imports", None, 200),
    # Only the caller's own events (tests/integration/test_audit.py checks another's are absent).
    ("GET", "/api/v1/audit-events"): ("get", "/api/v1/audit-events", None, 200),
    ("GET", "/api/v1/imports/{job_id}"): ("get", "/api/v1/imports/{import_job}", None, 404),
    ("GET", "/api/v1/imports/{job_id}/rejected.csv"): (
        "get",
        "/api/v1/imports/{import_job}/rejected.csv",
        None,
        404,
    ),
    ("POST", "/api/v1/imports/{job_id}/revert"): (
        "post",
        "/api/v1/imports/{import_job}/revert",
        None,
        404,
    ),
    ("POST", "/api/v1/imports/{kind}/preview"): (
        "upload_import",
        "/api/v1/imports/customers/preview",
        None,
        200,
    ),
    ("POST", "/api/v1/imports/{kind}"): (
        "upload_import",
        "/api/v1/imports/customers?wait=true",
        None,
        201,
    ),
    # Webhooks: B's endpoint and delivery are out of reach; A's own list is empty.
    ("GET", "/api/v1/webhooks/event-types"): ("get", "/api/v1/webhooks/event-types", None, 200),
    ("GET", "/api/v1/webhooks/endpoints"): ("get", "/api/v1/webhooks/endpoints", None, 200),
    ("POST", "/api/v1/webhooks/endpoints"): (
        "post",
        "/api/v1/webhooks/endpoints",
        {"url": "http://127.0.0.1:9/a", "events": ["points.changed"]},
        201,
    ),
    ("GET", "/api/v1/webhooks/endpoints/{endpoint_id}"): (
        "get",
        "/api/v1/webhooks/endpoints/{webhook}",
        None,
        404,
    ),
    ("PATCH", "/api/v1/webhooks/endpoints/{endpoint_id}"): (
        "patch",
        "/api/v1/webhooks/endpoints/{webhook}",
        {"url": "http://127.0.0.1:9/stolen"},
        404,
    ),
    ("DELETE", "/api/v1/webhooks/endpoints/{endpoint_id}"): (
        "delete",
        "/api/v1/webhooks/endpoints/{webhook}",
        None,
        404,
    ),
    ("POST", "/api/v1/webhooks/endpoints/{endpoint_id}/rotate-secret"): (
        "post",
        "/api/v1/webhooks/endpoints/{webhook}/rotate-secret",
        None,
        404,
    ),
    ("POST", "/api/v1/webhooks/endpoints/{endpoint_id}/enable"): (
        "post",
        "/api/v1/webhooks/endpoints/{webhook}/enable",
        None,
        404,
    ),
    ("POST", "/api/v1/webhooks/endpoints/{endpoint_id}/disable"): (
        "post",
        "/api/v1/webhooks/endpoints/{webhook}/disable",
        None,
        404,
    ),
    ("POST", "/api/v1/webhooks/endpoints/{endpoint_id}/test"): (
        "post",
        "/api/v1/webhooks/endpoints/{webhook}/test",
        None,
        404,
    ),
    ("GET", "/api/v1/webhooks/endpoints/{endpoint_id}/deliveries"): (
        "get",
        "/api/v1/webhooks/endpoints/{webhook}/deliveries",
        None,
        404,
    ),
    ("GET", "/api/v1/webhooks/deliveries/{delivery_id}"): (
        "get",
        "/api/v1/webhooks/deliveries/{delivery}",
        None,
        404,
    ),
    ("POST", "/api/v1/webhooks/deliveries/{delivery_id}/replay"): (
        "post",
        "/api/v1/webhooks/deliveries/{delivery}/replay",
        None,
        404,
    ),
    # Creating: A's own customer or order with the same email or order id, separate from B's.
    ("POST", "/api/v1/orders"): (
        "post",
        "/api/v1/orders",
        {**ORDER, "email": "x@example.com"},
        201,
    ),
    ("POST", "/api/v1/customers"): (
        "post",
        "/api/v1/customers",
        {"email": "victim@example.com"},
        201,
    ),
}


def _openapi_routes(client: TestClient) -> set[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    return {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        if path.startswith("/api/v1")
        for method in operations
    }


def test_every_api_route_is_covered_by_the_tenancy_test(client: TestClient) -> None:
    assert _openapi_routes(client) == set(CROSS_TENANT_REQUESTS)


def _connect_victim(client: TestClient, headers: dict[str, str]) -> int:
    credentials = {"username": "apiuser-demo@apiconnector.com", "password": "demo-password"}
    path = "/api/v1/integrations/dotdigital"
    assert client.put(f"{path}/credentials", json=credentials, headers=headers).status_code == 200
    assert client.post(f"{path}/enable", headers=headers).status_code == 200
    job = client.post(f"{path}/sync", headers=headers)
    assert job.status_code == 202
    return int(job.json()["id"])


def _seed_victim(client: TestClient, headers: dict[str, str]) -> None:
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
    order = {**ORDER, "email": "victim@example.com"}
    assert client.post("/api/v1/orders", json=order, headers=headers).status_code == 201


def _fill(value: Any, cid: int) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, cid) for k, v in value.items()}
    return cid if value == "{cid}" else value


def _b_state(factory: sessionmaker[Session], merchant_id: int) -> tuple[Any, ...]:
    with factory() as session:
        customers = sorted(
            (c.email, c.first_name, c.points_balance, c.unsubscribed_at is None)
            for c in session.scalars(select(Customer).where(Customer.merchant_id == merchant_id))
        )
        entries = session.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.merchant_id == merchant_id)
        )
        orders = sorted(
            (o.order_id, o.status, o.refunded_amount)
            for o in session.scalars(select(Order).where(Order.merchant_id == merchant_id))
        )
        program = session.get_one(Merchant, merchant_id).program_settings
        connection = session.scalars(
            select(DotdigitalConnection).where(DotdigitalConnection.merchant_id == merchant_id)
        ).one()
        dotdigital = (connection.api_username, connection.enabled, connection.field_mapping)
        webhooks = sorted(
            (e.url, e.state, e.secret_encrypted)
            for e in session.scalars(
                select(WebhookEndpoint).where(WebhookEndpoint.merchant_id == merchant_id)
            )
        )
    return customers, entries, orders, program, dotdigital, webhooks


def test_merchant_a_cannot_touch_merchant_b(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    a, b = make_merchant(session_factory), make_merchant(session_factory)
    victim = make_customer(
        session_factory, b.id, email="victim@example.com", points=10, first_name="Vic"
    )
    _seed_victim(client, b.headers)
    with EmulatorServer(EmulatorConfig()) as emulator:
        settings.dotdigital_base_url = emulator.base_url
        job = _connect_victim(client, b.headers)
        import_job = _import_for_victim(client, b.headers)
        hooks = _webhook_for_victim(client, b.headers)
        before = _b_state(session_factory, b.id)
        _attack(client, a.headers, victim, job, import_job, hooks)
    assert _b_state(session_factory, b.id) == before
    assert client.get(f"/api/v1/customers/{victim}", headers=b.headers).status_code == 200


NOT_CONNECTED = 409
LIST_ROUTES = {
    "/api/v1/customers",
    "/api/v1/rewards",
    "/api/v1/imports",
    "/api/v1/webhooks/endpoints",
}


IMPORT_FILE = b"email,points\nvictim@example.com,10\nnew@example.com,5\n"


def _import_for_victim(client: TestClient, headers: dict[str, str]) -> int:
    files = {"file": ("customers.csv", IMPORT_FILE, "text/csv")}
    r = client.post("/api/v1/imports/customers?wait=true", files=files, headers=headers)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _webhook_for_victim(client: TestClient, headers: dict[str, str]) -> dict[str, int]:
    body = {"url": "http://127.0.0.1:9/victim", "events": ["points.changed"]}
    endpoint = client.post("/api/v1/webhooks/endpoints", json=body, headers=headers)
    assert endpoint.status_code == 201, endpoint.text
    webhook = int(endpoint.json()["id"])
    test = client.post(f"/api/v1/webhooks/endpoints/{webhook}/test", headers=headers)
    assert test.status_code == 202, test.text
    return {"webhook": webhook, "delivery": int(test.json()["id"])}


def _attack(
    client: TestClient,
    headers: dict[str, str],
    victim: int,
    job: int,
    import_job: int,
    hooks: dict[str, int],
) -> None:
    for (method, path), (verb, url, payload, expected) in CROSS_TENANT_REQUESTS.items():
        url = url.format(cid=victim, job=job, import_job=import_job, **hooks)
        if expected == "{not_connected}":
            expected = NOT_CONNECTED
        if verb == "upload_import":
            files = {"file": ("other.csv", b"email,points\nsomeone@a.example,3\n", "text/csv")}
            r = client.post(url, files=files, headers=headers)
        elif verb == "upload":
            r = client.post(url, files={"file": ("codes.csv", b"code\nSTEAL1\n")}, headers=headers)
        else:
            r = client.request(verb, url, json=_fill(payload, victim), headers=headers)
        assert r.status_code == expected, (method, path, r.text)
        if expected == 200 and method == "GET" and path in LIST_ROUTES:
            body = r.json()
            items = body["items"] if isinstance(body, dict) else body
            assert items == [], (path, items)
        if path.startswith("/api/v1/exports/"):
            assert "victim@example.com" not in r.text, path
        if path == "/api/v1/points-liability":
            assert r.json()["outstanding_points"] == 0
        if (method, path) == ("POST", "/api/v1/customers"):
            assert r.json()["id"] != victim
