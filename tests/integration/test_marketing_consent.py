"""Recorded email marketing consent: through the API and import files, with source and time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.imports import service as imports
from tally.imports.consent import EXPECTED
from tests.support.factories import make_customer, make_merchant

FIXTURES = Path(__file__).parents[1] / "fixtures" / "imports"


def _consent(
    factory: sessionmaker[Session], merchant_id: int
) -> dict[str, tuple[bool | None, str | None]]:
    with factory() as session:
        return {
            c.email: (c.accepts_marketing, c.marketing_consent_source)
            for c in session.scalars(select(Customer).where(Customer.merchant_id == merchant_id))
        }


def test_the_api_records_consent_with_its_source_and_time(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    before = utcnow()
    created = client.post(
        "/api/v1/customers",
        json={"email": "ada@example.com", "accepts_marketing": True},
        headers=m.headers,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["accepts_marketing"], body["marketing_consent_source"]) == (True, "api")
    given_at = body["marketing_consent_at"]
    assert given_at is not None

    plain = client.post("/api/v1/customers", json={"email": "bo@example.com"}, headers=m.headers)
    assert plain.json()["accepts_marketing"] is None
    assert plain.json()["marketing_consent_source"] is None

    # The same answer again keeps the time it was first given; another answer replaces it.
    cid = body["id"]
    same = client.patch(
        f"/api/v1/customers/{cid}", json={"accepts_marketing": True}, headers=m.headers
    )
    assert same.json()["marketing_consent_at"] == given_at
    withdrawn = client.patch(
        f"/api/v1/customers/{cid}", json={"accepts_marketing": False}, headers=m.headers
    )
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["accepts_marketing"] is False
    untouched = client.patch(
        f"/api/v1/customers/{cid}", json={"first_name": "Ada"}, headers=m.headers
    )
    assert untouched.json()["accepts_marketing"] is False
    with session_factory() as session:
        customer = session.get(Customer, cid)
        assert customer is not None
        assert customer.marketing_consent_at is not None
        assert before <= customer.marketing_consent_at <= utcnow() + timedelta(seconds=1)

    refused = client.patch(
        f"/api/v1/customers/{cid}", json={"accepts_marketing": "perhaps"}, headers=m.headers
    )
    assert refused.status_code == 422
    assert _consent(session_factory, m.id)["ada@example.com"] == (False, "api")


def test_a_customer_file_records_consent_as_import_of_its_job(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    make_customer(session_factory, m.id, email="old@example.com", accepts_marketing=True)
    path = tmp_path / "customers.csv"
    path.write_text(
        "email,points,accepts_marketing\n"
        "new@example.com,10,yes\nold@example.com,5,no\nquiet@example.com,1,\n"
    )
    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=path,
        options=imports.CustomerImportOptions(),
    )
    assert job.status == "completed"
    source = f"import:{job.id}"
    assert _consent(session_factory, m.id) == {
        "new@example.com": (True, source),
        "old@example.com": (False, source),
        "quiet@example.com": (None, None),
    }


def test_a_bad_accepts_marketing_value_refuses_the_file_and_records_nothing(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    path = tmp_path / "customers.csv"
    path.write_text("email,accepts_marketing\na@example.com,yes\nb@example.com,maybe\n")
    with pytest.raises(imports.ImportRefused) as refused:
        imports.run_import(
            session_factory,
            merchant_id=m.id,
            path=path,
            options=imports.CustomerImportOptions(),
        )
    [error] = refused.value.errors
    assert (error.field, error.value, error.message) == (
        "row 3, accepts_marketing",
        "maybe",
        f"expected {EXPECTED}",
    )
    assert _consent(session_factory, m.id) == {}


def test_shopifys_order_export_records_the_buyers_answer_on_guests(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=FIXTURES / "orders_shopify.csv",
        options=imports.OrderImportOptions(),
    )
    assert job.status == "completed"
    consent = _consent(session_factory, m.id)
    assert consent
    # The fixture's buyers all said no: recorded, so none becomes a Dotdigital contact.
    assert set(consent.values()) == {(False, f"import:{job.id}")}
