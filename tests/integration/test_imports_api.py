"""The imports API: templates, preview, run, jobs, rejected rows, revert, and tenancy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tally.api.app import create_app
from tally.config import Settings
from tally.customers.orm import Customer
from tally.imports import queue
from tally.merchants.orm import ApiKey
from tally.program.config_service import update_program
from tally.state import AppState
from tests.support.factories import MerchantFixture, make_merchant

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "imports"


@pytest.fixture
def api(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    """The API on the test database."""
    app = create_app(settings, AppState(settings=settings, session_factory=session_factory))
    with TestClient(app) as client:
        yield client


def _upload(name: str, content: bytes | None = None) -> dict[str, tuple[str, bytes, str]]:
    data = content if content is not None else (FIXTURES / name).read_bytes()
    return {"file": (name, data, "text/csv")}


def _finished(api: TestClient, location: str, headers: dict[str, str]) -> dict[str, Any]:
    """The job at ``location`` once it is no longer running."""
    # The tests run no background worker: run the queued import here, as a worker would.
    state = api.app.state.tally  # type: ignore[attr-defined]
    queue.work(state.settings, state.session_factory)
    for _ in range(200):
        job: dict[str, Any] = api.get(location, headers=headers).json()
        if job["status"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError(f"{location} is still running")


def _customer_count(factory: sessionmaker[Session], merchant_id: int) -> int:
    with factory() as session:
        return int(
            session.scalar(
                select(func.count(Customer.id)).where(Customer.merchant_id == merchant_id)
            )
            or 0
        )


def _key_id(factory: sessionmaker[Session], merchant: MerchantFixture) -> int:
    with factory() as session:
        return int(
            session.scalars(select(ApiKey.id).where(ApiKey.merchant_id == merchant.id)).one()
        )


def test_templates_download_as_csv(api: TestClient, session_factory: sessionmaker[Session]) -> None:
    m = make_merchant(session_factory)
    r = api.get("/api/v1/imports/templates/customers", headers=m.headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == (
        'attachment; filename="tally-customers-template.csv"'
    )
    assert r.text.splitlines()[0] == "email,first_name,last_name,points,birthday,vip_tier"
    orders = api.get("/api/v1/imports/templates/orders", headers=m.headers)
    assert orders.text.splitlines()[0].startswith("order_id,email,total,")
    assert api.get("/api/v1/imports/templates/coupons", headers=m.headers).status_code == 422
    assert api.get("/api/v1/imports/templates/customers").status_code == 401


def test_preview_then_import_then_status(
    api: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    preview = api.post(
        "/api/v1/imports/customers/preview",
        files=_upload("customers_smile_io.csv"),
        data={"points": "add"},
        headers=m.headers,
    )
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert (body["status"], body["new_count"], body["points_issued"]) == ("previewed", 3, 1550)
    assert body["options"] == {
        "points": "add",
        "award_create_account": False,
        "skip_invalid": False,
    }
    assert body["created_by"] == f"api-key:{_key_id(session_factory, m)}"
    assert _customer_count(session_factory, m.id) == 0

    run = api.post(
        "/api/v1/imports/customers", files=_upload("customers_smile_io.csv"), headers=m.headers
    )
    # Accepted at once; the import goes on in the background and the job tells how it ends.
    assert run.status_code == 202, run.text
    started = run.json()
    assert started["id"] == body["id"]  # the previewed job of the same file is the one that runs
    assert started["status"] == "queued"  # stored for a worker, which runs it
    assert run.headers["location"] == f"/api/v1/imports/{started['id']}"
    job = _finished(api, run.headers["location"], m.headers)
    assert (job["status"], job["new_count"], job["points_issued"]) == ("completed", 3, 1550)
    assert (job["file_name"], job["file_format"], job["total_rows"]) == (
        "customers_smile_io.csv",
        "Smile.io export",
        3,
    )
    assert job["last_row_applied"] == 4
    assert job["rejected_rows_url"] is None
    assert _customer_count(session_factory, m.id) == 3

    shown = api.get(f"/api/v1/imports/{job['id']}", headers=m.headers).json()
    assert shown == job
    listed = api.get("/api/v1/imports", headers=m.headers).json()
    assert (listed["total"], [item["id"] for item in listed["items"]]) == (1, [job["id"]])


def test_order_import_over_the_api(api: TestClient, session_factory: sessionmaker[Session]) -> None:
    m = make_merchant(session_factory)
    api.patch("/api/v1/program", json={"place_order": {"enabled": True}}, headers=m.headers)
    r = api.post(
        "/api/v1/imports/orders?wait=true",
        files=_upload("orders_shopify.csv"),
        data={"send_create_account_emails": "true"},
        headers=m.headers,
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert (job["kind"], job["new_count"], job["customers_created"], job["points_issued"]) == (
        "orders",
        5,
        4,
        107,
    )
    assert job["emails_queued"] == 2
    again = api.post(
        "/api/v1/imports/orders/preview", files=_upload("orders_shopify.csv"), headers=m.headers
    ).json()
    assert (again["new_count"], again["skipped_count"]) == (0, 5)


def test_a_file_with_errors_is_refused_with_a_problem(
    api: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    content = b"email,points\nok@example.com,5\nbad-email,5\nx@example.com,1.200\n"
    r = api.post(
        "/api/v1/imports/customers?wait=true", files=_upload("bad.csv", content), headers=m.headers
    )
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["title"] == "Import refused"
    assert "2 of the 3 rows of bad.csv are not valid, so nothing was imported" in problem["detail"]
    assert problem["errors"] == [
        {
            "field": "row 3, email",
            "message": "expected an email address like name@example.com (one @, a dot in the "
            "domain, no spaces)",
            "value": "bad-email",
        },
        {
            "field": "row 4, points",
            "message": "expected a whole number without thousands separators",
            "value": "1.200",
        },
    ]
    assert _customer_count(session_factory, m.id) == 0
    # Without wait the refusal is on the job: failed, with the same errors.
    r = api.post("/api/v1/imports/customers", files=_upload("bad.csv", content), headers=m.headers)
    assert r.status_code == 202, r.text
    failed = _finished(api, r.headers["location"], m.headers)
    assert failed["status"] == "failed"
    assert failed["failure_reason"] == "refused: 2 invalid rows, nothing was imported"
    assert [(e["row"], e["column"]) for e in failed["errors"]] == [(3, "email"), (4, "points")]
    assert _customer_count(session_factory, m.id) == 0

    # With skip_invalid the valid row goes in and the others come back as CSV.
    r = api.post(
        "/api/v1/imports/customers?wait=true",
        files=_upload("bad.csv", content),
        data={"skip_invalid": "true"},
        headers=m.headers,
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert (job["new_count"], job["invalid_count"]) == (1, 2)
    assert job["rejected_rows_url"] == f"/api/v1/imports/{job['id']}/rejected.csv"
    rejected = api.get(job["rejected_rows_url"], headers=m.headers)
    assert rejected.status_code == 200
    assert rejected.headers["content-type"] == "text/csv; charset=utf-8"
    assert rejected.text.split("\r\n") == [
        "email,points,reason",
        'bad-email,5,"row 3, column ""email"": ""bad-email"" — expected an email address like '
        'name@example.com (one @, a dot in the domain, no spaces)"',
        'x@example.com,1.200,"row 4, column ""points"": ""1.200"" — expected a whole number '
        'without thousands separators"',
        "",
    ]


def test_unreadable_file_is_a_problem(
    api: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    r = api.post(
        "/api/v1/imports/customers/preview",
        files=_upload("customers_windows1252.csv"),
        headers=m.headers,
    )
    assert r.status_code == 422
    assert r.json()["title"] == "Import file refused"
    assert "not UTF-8" in r.json()["detail"]
    bad_option = api.post(
        "/api/v1/imports/customers?wait=true",
        files=_upload("customers_smile_io.csv"),
        data={"points": "double"},
        headers=m.headers,
    )
    assert bad_option.status_code == 422
    assert api.get("/api/v1/imports", headers=m.headers).json()["total"] == 0


def test_revert_over_the_api(api: TestClient, session_factory: sessionmaker[Session]) -> None:
    m = make_merchant(session_factory)
    job = api.post(
        "/api/v1/imports/customers?wait=true",
        files=_upload("customers_smile_io.csv"),
        headers=m.headers,
    ).json()
    customer = api.get(
        "/api/v1/customers/by-email",
        params={"email": "ana.souza@example.com"},
        headers=m.headers,
    ).json()
    spent = api.post(
        f"/api/v1/customers/{customer['id']}/adjustments",
        json={"points": -1000, "reason": "spent elsewhere"},
        headers=m.headers,
    )
    assert spent.status_code == 201, spent.text
    refused = api.post(f"/api/v1/imports/{job['id']}/revert", headers=m.headers)
    assert refused.status_code == 409
    assert refused.json()["errors"] == [
        {
            "field": "ana.souza@example.com",
            "message": "balance 250 is lower than the 1250 points to take back",
            "value": 250,
        }
    ]
    api.post(
        f"/api/v1/customers/{customer['id']}/adjustments",
        json={"points": 1000, "reason": "given back"},
        headers=m.headers,
    )
    done = api.post(f"/api/v1/imports/{job['id']}/revert", headers=m.headers)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "reverted"
    after = api.get(f"/api/v1/customers/{customer['id']}", headers=m.headers).json()
    assert after["points_balance"] == 0


def test_a_merchant_cannot_see_another_merchants_imports(
    api: TestClient, session_factory: sessionmaker[Session]
) -> None:
    a, b = make_merchant(session_factory), make_merchant(session_factory)
    job = api.post(
        "/api/v1/imports/customers?wait=true",
        files=_upload("bad.csv", b"email,points\nok@example.com,5\nbad,1\n"),
        data={"skip_invalid": "true"},
        headers=a.headers,
    ).json()
    for path in (f"/api/v1/imports/{job['id']}", f"/api/v1/imports/{job['id']}/rejected.csv"):
        r = api.get(path, headers=b.headers)
        assert r.status_code == 404, path
        assert r.json()["detail"] == f"import {job['id']} does not exist"
    assert api.post(f"/api/v1/imports/{job['id']}/revert", headers=b.headers).status_code == 404
    assert api.get("/api/v1/imports", headers=b.headers).json()["total"] == 0
    assert api.get(f"/api/v1/imports/{job['id']}", headers=a.headers).status_code == 200
    assert _customer_count(session_factory, b.id) == 0
    assert api.get(f"/api/v1/imports/{job['id']}", headers=a.headers).json()["status"] == (
        "completed"
    )


def test_an_upload_over_the_size_limit_is_refused_and_nothing_is_recorded(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    small = settings.model_copy(update={"import_max_upload_mb": 1})
    app = create_app(small, AppState(settings=small, session_factory=session_factory))
    m = make_merchant(session_factory)
    lines = [f"customer{n:07d}@example.com,{n % 1000}\n" for n in range(40_000)]
    big = ("email,points\n" + "".join(lines)).encode()
    assert len(big) > 1024 * 1024
    with TestClient(app) as client:
        r = client.post(
            "/api/v1/imports/customers?wait=true",
            files=_upload("big.csv", big),
            headers={**m.headers, "Idempotency-Key": "big-1"},
        )
        assert r.status_code == 413
        assert r.json()["detail"].startswith("the file is larger than 1 MB")
        assert client.get("/api/v1/imports", headers=m.headers).json()["total"] == 0
        # Under the limit, the same kind of file goes through.
        r = client.post(
            "/api/v1/imports/customers?wait=true",
            files=_upload("small.csv", ("email,points\n" + "".join(lines[:1500])).encode()),
            headers={**m.headers, "Idempotency-Key": "small-1"},
        )
        assert r.status_code == 201, r.text
    assert _customer_count(session_factory, m.id) == 1500


def test_a_preview_says_what_in_the_program_holds_the_import_back(
    api: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)  # a new program: place-order rule and VIP tiers are off
    orders = b"order_id,email,total,placed_at\nA1,ana@example.com,40.00,2025-01-05\n"
    r = api.post(
        "/api/v1/imports/orders/preview",
        files=_upload("orders.csv", orders),
        headers={**m.headers, "Idempotency-Key": "p-1"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["points_issued"] == 0
    assert r.json()["notes"] == [
        "the place-order rule is off in the program: the orders would earn no points (they "
        "still count toward VIP tiers)",
        "VIP tiers are off in the program: the orders move no tiers",
    ]
    with session_factory() as session:
        update_program(
            session,
            merchant_id=m.id,
            changes={"place_order": {"enabled": True, "award_on_status": "fulfilled"}},
        )
        session.commit()
    r = api.post(
        "/api/v1/imports/orders/preview",
        files=_upload("orders.csv", orders),
        data={"vip_only": "false"},
        headers={**m.headers, "Idempotency-Key": "p-2"},
    )
    assert r.json()["notes"][0].startswith("the program awards order points at status 'fulfilled'")
    r = api.post(
        "/api/v1/imports/customers/preview",
        files=_upload("customers.csv", b"email,points\nana@example.com,5\n"),
        data={"award_create_account": "true"},
        headers={**m.headers, "Idempotency-Key": "p-3"},
    )
    assert r.json()["notes"] == [
        "create-account points are asked for, but the create-account action is off in the "
        "program: new customers would get none"
    ]
