"""What a hostile client sends at the edge: NUL characters, ids past 64 bits, the docs pages.

Each case used to end in a 500 (PostgreSQL refuses NUL in text; both drivers overflow on ids
of 2^63 and more); now each is a 422 problem naming the field, and nothing is written.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Receive, Scope, Send

from tally.api.app import create_app
from tally.api.edge import RefuseNul
from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.engine import unit_of_work
from tally.ledger.orm import LedgerEntry
from tally.merchants import service as merchants
from tally.program.orm import Order
from tally.state import AppState
from tests.support.factories import make_customer, make_merchant

TOO_BIG = 2**63
PASSWORD = "correct horse battery"
NUL_MESSAGE = "must not contain NUL characters (\\u0000)"


def _count(factory: sessionmaker[Session], model: type) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def _assert_nul_refused(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["title"] == "Validation failed"
    assert body["errors"] == [{"field": field, "message": NUL_MESSAGE}]


# -- NUL characters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("post", "/api/v1/customers", {"email": "a\u0000@example.com"}, "email"),
        (
            "post",
            "/api/v1/customers",
            {"email": "a@example.com", "first_name": "A\u0000"},
            "first_name",
        ),
        (
            "post",
            "/api/v1/customers",
            {"email": "a@example.com", "external_id": "\u0000"},
            "external_id",
        ),
        (
            "post",
            "/api/v1/customers",
            {"email": "a@example.com", "bad\u0000key": 1},
            "bad\u0000key",
        ),
        ("patch", "/api/v1/customers/{cid}", {"last_name": "Lovel\u0000ace"}, "last_name"),
        (
            "post",
            "/api/v1/customers/{cid}/adjustments",
            {"points": 5, "reason": "x\u0000"},
            "reason",
        ),
        (
            "post",
            "/api/v1/orders",
            {
                "order_id": "1\u00002",
                "email": "a@example.com",
                "total": "10",
                "placed_at": "2024-01-01T00:00:00Z",
            },
            "order_id",
        ),
        (
            "post",
            "/api/v1/actions",
            {"email": "a@example.com", "action_id": "review\u0000"},
            "action_id",
        ),
        (
            "patch",
            "/api/v1/program",
            {"vip": {"tiers": [{"id": "gold", "name": "G\u0000"}]}},
            "vip.tiers.0.name",
        ),
        (
            "put",
            "/api/v1/mail-settings",
            {"host": "smtp\u0000.example.com", "sender": "a@b.co"},
            "host",
        ),
    ],
)
def test_a_nul_in_a_json_body_is_a_422_naming_the_field_and_nothing_changes(
    client: TestClient,
    session_factory: sessionmaker[Session],
    method: str,
    path: str,
    body: dict[str, Any],
    field: str,
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id, email="known@example.com", points=10)
    before = (_count(session_factory, Customer), _count(session_factory, LedgerEntry))

    response = client.request(method, path.format(cid=cid), json=body, headers=m.headers)

    _assert_nul_refused(response, field)
    assert (_count(session_factory, Customer), _count(session_factory, LedgerEntry)) == before
    assert _count(session_factory, Order) == 0
    with session_factory() as session:
        customer = session.get_one(Customer, cid)
        assert (customer.first_name, customer.last_name, customer.points_balance) == (
            None,
            None,
            10,
        )


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/customers?query=ad%00a", "query"),
        ("/api/v1/customers?tier=%00", "tier"),
        ("/api/v1/customers/by-email?email=a%00@example.com", "email"),
        ("/api/v1/emails?status=sent%00", "status"),
        ("/api/v1/program?unknown=%00", "unknown"),
        ("/api/v1/orders/A%00B", "path"),
        ("/api/v1/email-templates/points_earned%00", "path"),
        ("/r/CODE%00", "path"),
        ("/admin/customers?q=%00", "q"),
    ],
)
def test_a_nul_in_the_path_or_query_string_is_a_422(
    client: TestClient, session_factory: sessionmaker[Session], path: str, field: str
) -> None:
    m = make_merchant(session_factory)
    _assert_nul_refused(client.get(path, headers=m.headers), field)


def test_a_nul_in_a_header_is_a_422(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    response = client.post(
        "/api/v1/customers",
        json={"email": "a@example.com"},
        headers=m.headers | {"Idempotency-Key": "key\x00"},
    )
    _assert_nul_refused(response, "idempotency-key")
    assert _count(session_factory, Customer) == 0


def test_an_escaped_backslash_before_u0000_is_no_nul(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    response = client.post(
        "/api/v1/customers",
        content=b'{"email": "a@example.com", "first_name": "x\\\\u0000"}',
        headers=m.headers | {"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["first_name"] == "x\\u0000"


def test_a_nul_in_an_admin_form_is_a_422_problem_and_signs_nobody_in(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    with unit_of_work(session_factory) as session:
        merchants.create_admin_user(
            session, merchant_id=m.id, email="owner@example.com", password=PASSWORD
        )
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/admin/login").text)
    assert token is not None

    response = client.post(
        "/admin/login",
        content=f"email=owner%00@example.com&password=x&csrf_token={token.group(1)}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )

    _assert_nul_refused(response, "email")
    assert "set-cookie" not in {name.lower() for name in response.headers}


def _echo_app() -> tuple[RefuseNul, list[bytes]]:
    """RefuseNul in front of an app that records the body it was given."""
    seen: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        seen.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return RefuseNul(app), seen


def test_multipart_bodies_pass_untouched_and_chunked_bodies_are_replayed_whole() -> None:
    guarded, seen = _echo_app()
    client = TestClient(guarded)
    multipart = client.post("/upload", files={"file": ("codes.csv", b"code\nA\x00B\n")})
    assert multipart.status_code == 200
    assert b"A\x00B" in seen[-1]

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "a'
        yield b'b", "email": "x@example.com"}'

    chunked = client.post("/json", content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 200
    assert seen[-1] == b'{"name": "ab", "email": "x@example.com"}'

    def split_escape() -> Iterator[bytes]:
        yield b'{"name": "a\\u00'
        yield b'00"}'

    refused = client.post(
        "/json", content=split_escape(), headers={"Content-Type": "application/merge-patch+json"}
    )
    _assert_nul_refused(refused, "name")
    assert len(seen) == 2


async def _never_called(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("the app must not run")


def test_a_utf16_json_body_is_decoded_before_it_is_judged() -> None:
    guarded, seen = _echo_app()
    client = TestClient(guarded)
    plain = client.post(
        "/json",
        content='{"name": "ab"}'.encode("utf-16"),
        headers={"Content-Type": "application/json"},
    )
    assert plain.status_code == 200
    assert seen == ['{"name": "ab"}'.encode("utf-16")]
    refused = TestClient(RefuseNul(_never_called)).post(
        "/json",
        content='{"name": "a\\u0000"}'.encode("utf-16"),
        headers={"Content-Type": "application/json"},
    )
    _assert_nul_refused(refused, "name")


# -- ids and offsets past 64 bits ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("get", "/api/v1/customers/{big}", None, "customer_id"),
        ("patch", "/api/v1/customers/{big}", {"first_name": "A"}, "customer_id"),
        ("get", "/api/v1/customers/{big}/ledger", None, "customer_id"),
        (
            "post",
            "/api/v1/customers/{big}/adjustments",
            {"points": 1, "reason": "x"},
            "customer_id",
        ),
        ("get", "/api/v1/customers/{big}/tier", None, "customer_id"),
        ("get", "/api/v1/customers/{big}/redemptions", None, "customer_id"),
        ("post", "/api/v1/customers/{big}/redemptions", {"reward_id": "r"}, "customer_id"),
        ("post", "/api/v1/customers/{big}/unsubscribe", None, "customer_id"),
        ("post", "/api/v1/customers/{big}/resubscribe", None, "customer_id"),
        ("get", "/api/v1/imports/{big}", None, "job_id"),
        ("get", "/api/v1/imports/{big}/rejected.csv", None, "job_id"),
        ("post", "/api/v1/imports/{big}/revert", None, "job_id"),
        ("get", "/api/v1/integrations/dotdigital/sync/{big}", None, "job_id"),
        ("get", "/api/v1/customers?offset={big}", None, "offset"),
        ("get", "/api/v1/customers/{cid}/ledger?offset={big}", None, "offset"),
        ("get", "/api/v1/customers/{cid}/redemptions?offset={big}", None, "offset"),
        ("get", "/api/v1/emails?customer_id={big}", None, "customer_id"),
        ("get", "/api/v1/emails?offset={big}", None, "offset"),
        ("get", "/api/v1/imports?offset={big}", None, "offset"),
        (
            "post",
            "/api/v1/email-templates/points_earned/preview",
            {"customer_id": TOO_BIG},
            "customer_id",
        ),
        (
            "put",
            "/api/v1/mail-settings",
            {"host": "h", "sender": "a@b.co", "port": TOO_BIG},
            "port",
        ),
        ("get", "/api/v1/customers/99999999999999999999999", None, "customer_id"),
        ("get", "/api/v1/customers/0", None, "customer_id"),
        ("get", "/api/v1/orders/{long}", None, "order_id"),
        ("post", "/api/v1/orders/{long}/refunds", {}, "order_id"),
    ],
)
def test_ids_and_offsets_out_of_range_are_422_naming_the_parameter(
    client: TestClient,
    session_factory: sessionmaker[Session],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    field: str,
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id, points=10)
    url = path.format(big=TOO_BIG, cid=cid, long="x" * 101)

    response = client.request(method, url, json=body, headers=m.headers)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert _count(session_factory, LedgerEntry) == 1


def test_the_largest_id_is_merely_not_found(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    response = client.get(f"/api/v1/customers/{TOO_BIG - 1}", headers=m.headers)
    assert response.status_code == 404
    assert response.json()["detail"] == f"customer {TOO_BIG - 1} does not exist"


def test_an_admin_page_with_an_id_past_64_bits_is_an_error_page_not_a_500(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    with unit_of_work(session_factory) as session:
        merchants.create_admin_user(
            session, merchant_id=m.id, email="owner@example.com", password=PASSWORD
        )
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/admin/login").text)
    assert token is not None
    signed_in = client.post(
        "/admin/login",
        data={"email": "owner@example.com", "password": PASSWORD, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert signed_in.status_code == 303

    for path in (
        "/admin/customers/99999999999999999999999",
        f"/admin/customers/{TOO_BIG}/activity",
        f"/admin/imports/jobs/{TOO_BIG}/rejected.csv",
        f"/admin/integrations/dotdigital/sync/{TOO_BIG}",
    ):
        response = client.get(path)
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"].startswith("text/html")
        assert "less than or equal to 9223372036854775807" in response.text


def test_an_adjustment_with_the_longest_idempotency_key_is_made_once(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    headers = m.headers | {"Idempotency-Key": "k" * 200}
    body = {"points": 7, "reason": "goodwill"}

    first = client.post(f"/api/v1/customers/{cid}/adjustments", json=body, headers=headers)
    again = client.post(f"/api/v1/customers/{cid}/adjustments", json=body, headers=headers)

    assert (first.status_code, again.status_code) == (201, 201), first.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert _count(session_factory, LedgerEntry) == 1


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/v1/customers/1", "GET, PATCH"),
        ("/api/v1/email-templates/points_earned", "DELETE, GET, PATCH, PUT"),
        ("/api/v1/imports/customers", "POST"),
        ("/api/v1/imports/7", "GET"),
    ],
)
def test_a_405_allows_every_method_of_the_path(
    client: TestClient, session_factory: sessionmaker[Session], path: str, allowed: str
) -> None:
    m = make_merchant(session_factory)
    response = client.request("OPTIONS", path, headers=m.headers)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.headers["content-type"] == "application/problem+json"


# -- the documentation pages ---------------------------------------------------------------


@pytest.fixture
def docs_app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    return create_app(settings, AppState(settings=settings, session_factory=session_factory))


def _csp(response: Any) -> dict[str, list[str]]:
    policy = response.headers["content-security-policy"]
    directives = [part.split() for part in policy.split(";") if part.strip()]
    return {d[0]: d[1:] for d in directives}


def test_swagger_ui_loads_only_files_of_this_host_under_a_csp(docs_app: FastAPI) -> None:
    client = TestClient(docs_app)
    page = client.get("/docs")

    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources
    assert all(s.startswith("/") and not s.startswith("//") for s in sources)
    assert "http" not in page.text.replace("http-equiv", "")
    csp = _csp(page)
    assert csp["default-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["connect-src"] == ["'self'"]
    # The page's one inline script (Swagger UI's settings) runs because its hash is allowed.
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert csp["script-src"] == ["'self'", f"'sha256-{digest}'"]
    assert page.headers["x-frame-options"] == "DENY"

    vendored = resources.files("tally.api").joinpath("static")
    for source in sources:
        asset = client.get(source)
        assert asset.status_code == 200, source
        if source.startswith("/docs/assets/"):
            name = source.removeprefix("/docs/assets/").split("?")[0]
            assert asset.content == vendored.joinpath(name).read_bytes()
            assert asset.headers["x-content-type-options"] == "nosniff"
    assert client.get("/docs/assets/swagger-ui-bundle.js").headers["content-type"] == (
        "text/javascript; charset=utf-8"
    )
    assert client.get("/docs/assets/swagger-ui.css").headers["content-type"] == (
        "text/css; charset=utf-8"
    )


def test_redoc_loads_only_files_of_this_host_under_a_csp(docs_app: FastAPI) -> None:
    client = TestClient(docs_app)
    page = client.get("/redoc")

    assert page.status_code == 200
    scripts = re.findall(r'<script src="([^"]+)"', page.text)
    assert len(scripts) == 1
    assert scripts[0].startswith("/docs/assets/redoc.standalone.js?v=")
    assert "http" not in page.text
    csp = _csp(page)
    assert csp["script-src"] == ["'self'"]
    assert csp["default-src"] == ["'none'"]
    assert csp["worker-src"] == ["blob:"]
    redoc = client.get(scripts[0])
    assert redoc.status_code == 200
    assert redoc.headers["content-type"] == "text/javascript; charset=utf-8"
    assert hashlib.sha256(redoc.content).hexdigest() == (
        "dcaf76612bc4a3fbcc923a8966dee2f6146a5f32e5ce1b6f02dd60cbbf89500b"
    )


@pytest.mark.parametrize("name", ["README.md", "redoc.LICENSE.txt", "..%2Fapp.py", "x.js"])
def test_only_the_viewers_are_served_as_docs_assets(docs_app: FastAPI, name: str) -> None:
    response = TestClient(docs_app).get(f"/docs/assets/{name}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


# -- the OpenAPI document ------------------------------------------------------------------


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def test_the_openapi_document_describes_problem_responses(docs_app: FastAPI) -> None:
    document = TestClient(docs_app).get("/openapi.json").json()
    schemas = document["components"]["schemas"]

    assert schemas["Problem"]["required"] == ["type", "title", "status", "detail", "errors"]
    assert "HTTPValidationError" not in schemas
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    operations = list(_operations(document))
    assert len(operations) > 40
    for method, path, operation in operations:
        responses = operation["responses"]
        label = f"{method} {path}"
        for status, response in responses.items():
            if not status.startswith("2"):
                assert list(response["content"]) == ["application/problem+json"], label
                schema = response["content"]["application/problem+json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}, label
        assert "422" in responses, label
        if path.startswith("/api/v1/"):
            assert "401" in responses, label
            assert operation["security"] == [{"apiKey": []}], label
        if "{" in path:
            assert "404" in responses, label
        if any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", [])):
            assert "409" in responses, label


def test_statuses_only_the_services_know_are_documented(docs_app: FastAPI) -> None:
    paths = TestClient(docs_app).get("/openapi.json").json()["paths"]

    def statuses(method: str, path: str) -> list[str]:
        return list(paths[path][method]["responses"])

    assert statuses("post", "/api/v1/customers") == ["200", "201", "400", "401", "409", "422"]
    assert statuses("post", "/api/v1/imports/{kind}") == [
        "201",
        "202",
        "400",
        "401",
        "404",
        "409",
        "413",
        "422",
    ]
    assert "502" in statuses("put", "/api/v1/integrations/dotdigital/credentials")
    assert "412" in statuses("patch", "/api/v1/program")
    created = paths["/api/v1/customers"]["post"]["responses"]
    assert created["200"]["content"] == created["201"]["content"]


def test_id_parameters_document_their_range(docs_app: FastAPI) -> None:
    paths = TestClient(docs_app).get("/openapi.json").json()["paths"]
    (customer_id,) = paths["/api/v1/customers/{customer_id}"]["get"]["parameters"]
    assert (customer_id["schema"]["minimum"], customer_id["schema"]["maximum"]) == (1, 2**63 - 1)
    offset = next(
        p for p in paths["/api/v1/customers"]["get"]["parameters"] if p["name"] == "offset"
    )
    assert offset["schema"]["maximum"] == 2**31 - 1
