"""Hostile values where points and customers enter: bounds, look-alike emails, corrupt rows."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tally.cli import main as cli
from tally.config import Settings
from tally.customers.emails import canonical_email
from tally.customers.orm import Customer
from tally.db.engine import unit_of_work
from tally.ledger import service as ledger
from tally.ledger.bounds import MAX_POINTS
from tally.ledger.errors import InvalidPoints
from tally.ledger.orm import EntryKind, LedgerEntry
from tally.program.integrity import order_violations
from tests.support.factories import load_customer, make_customer, make_merchant

runner = CliRunner()


def _entries(session_factory: sessionmaker[Session], customer_id: int) -> list[int]:
    with session_factory() as session:
        return list(
            session.scalars(
                select(LedgerEntry.points).where(LedgerEntry.customer_id == customer_id)
            )
        )


@pytest.mark.parametrize("points", [2**62, -(2**62), MAX_POINTS + 1, -(MAX_POINTS + 1), 2**70])
def test_an_adjustment_beyond_the_points_bound_is_refused_and_changes_nothing(
    client: TestClient, session_factory: sessionmaker[Session], points: int
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id, points=10)
    response = client.post(
        f"/api/v1/customers/{cid}/adjustments",
        headers={**m.headers, "Idempotency-Key": "huge"},
        json={"points": points, "reason": "overflow attempt"},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "points"
    assert _entries(session_factory, cid) == [10]


def test_the_bound_itself_is_accepted_twice_and_the_balance_stays_exact(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    for key in ("max-1", "max-2"):
        response = client.post(
            f"/api/v1/customers/{cid}/adjustments",
            headers={**m.headers, "Idempotency-Key": key},
            json={"points": MAX_POINTS, "reason": "big but allowed"},
        )
        assert response.status_code == 201, response.text
    assert client.get(f"/api/v1/customers/{cid}", headers=m.headers).json()["points_balance"] == (
        2 * MAX_POINTS
    )


def test_the_ledger_refuses_an_out_of_bound_posting_from_any_caller(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    with pytest.raises(InvalidPoints), unit_of_work(session_factory, merchant_id=m.id) as session:
        ledger.credit(
            session,
            customer=load_customer(session, m.id, cid),
            points=MAX_POINTS + 1,
            kind=EntryKind.IMPORT,
            idempotency_key="too-big",
        )
    assert _entries(session_factory, cid) == []


def test_custom_action_points_and_program_points_are_bounded(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    action = client.post(
        "/api/v1/actions",
        headers=m.headers,
        json={"email": "a@example.com", "action_id": "review", "points": 2**62},
    )
    assert action.status_code == 422
    before = client.get("/api/v1/program", headers=m.headers).json()
    for change in (
        {"create_account": {"enabled": True, "points": 2**62}},
        {"place_order": {"enabled": True, "points_per_unit": "1e30"}},
    ):
        response = client.patch("/api/v1/program", headers=m.headers, json=change)
        assert response.status_code == 422, change
    assert client.get("/api/v1/program", headers=m.headers).json() == before


def _plant_corrupt_points(session_factory: sessionmaker[Session], backend: str) -> int:
    """Write what two 2^62 adjustments left behind before points were bounded."""
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    with unit_of_work(session_factory) as session:
        for n in (1, 2):
            session.execute(
                text(
                    "INSERT INTO ledger_entries (merchant_id, customer_id, points, kind, reason,"
                    " idempotency_key, remaining, created_at) VALUES (:m, :c, :p, 'adjust', 'x',"
                    " :k, :p, CURRENT_TIMESTAMP)"
                ),
                {"m": m.id, "c": cid, "p": 2**62, "k": f"old-{n}"},
            )
        # SQLite stored the overflowing sum as a REAL; PostgreSQL would have refused it.
        corrupt = "9.3e18" if backend == "sqlite" else str(2**62)
        session.execute(
            text(f"UPDATE customers SET points_balance = {corrupt} WHERE id = :c"), {"c": cid}
        )
    return cid


def test_verify_reports_corrupt_points_and_still_checks_every_other_customer(
    session_factory: sessionmaker[Session],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
) -> None:
    corrupt = _plant_corrupt_points(session_factory, backend)
    other = make_merchant(session_factory)
    tampered = make_customer(session_factory, other.id, points=20)
    with unit_of_work(session_factory) as session:
        session.get_one(Customer, tampered).points_balance = 25
    with session_factory() as session:
        assert [c.customer_id for c in ledger.find_corrupt_customers(session)] == [corrupt]
        mismatches = list(ledger.verify_balances(session))
    assert [(x.customer_id, x.cached, x.computed) for x in mismatches] == [(tampered, 25, 20)]

    monkeypatch.setenv("TALLY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TALLY_ENVIRONMENT", "test")
    monkeypatch.setattr(cli.console, "_width", 300)
    monkeypatch.setattr(cli.err_console, "_width", 300)
    result = runner.invoke(cli.app, ["ledger", "verify"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "1 of 2 balances do not match the ledger" in result.output
    assert "1 customers have corrupt points" in result.output


def test_verify_finds_an_order_refunded_beyond_its_total(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    client.patch("/api/v1/program", headers=m.headers, json={"place_order": {"enabled": True}})
    order = {
        "order_id": "V-1",
        "email": "v@example.com",
        "total": "40.00",
        "placed_at": "2026-11-02T10:00:00Z",
    }
    assert client.post("/api/v1/orders", headers=m.headers, json=order).status_code == 201
    with session_factory() as session:
        assert order_violations(session) == []
    with unit_of_work(session_factory) as session:
        # What the refund race of 6e89467 left behind: more refunded and clawed back than paid.
        session.execute(text("UPDATE orders SET refunded_amount = 120, points_clawed_back = 120"))
        session.execute(
            text(
                "INSERT INTO ledger_entries (merchant_id, customer_id, points, kind, reason,"
                " source_ref, idempotency_key, created_at) SELECT merchant_id, id, -80, 'refund',"
                " 'x', 'order:V-1', 'extra-refund', CURRENT_TIMESTAMP FROM customers"
            )
        )
    with session_factory() as session:
        found = order_violations(session, merchant_id=m.id)
        assert session.scalar(select(func.count(Customer.id))) == 1
    details = [v.detail for v in found]
    assert {v.order_id for v in found} == {"V-1"}
    assert any(d.startswith("refunded 120") and "of a 40" in d for d in details)
    assert any("clawed back of 40 awarded" in d for d in details)
    assert any("take back 80 points of 40 earned" in d for d in details)


LOOK_ALIKES = [
    "ana\u200b@example.com",  # zero-width space
    "\ufeffana@example.com",  # byte-order mark pasted from a spreadsheet
    # fullwidth letters and full stop, as a phone keyboard in CJK mode types them
    "".join(chr(ord(c) + 0xFEE0) if c != "@" else c for c in "ana@example.com"),
    "  ANA@Example.COM ",
    "an\u00ada@example.com",  # soft hyphen
]


@pytest.mark.parametrize("variant", LOOK_ALIKES)
def test_a_look_alike_email_is_the_same_customer(
    client: TestClient, session_factory: sessionmaker[Session], variant: str
) -> None:
    m = make_merchant(session_factory)
    first = client.post("/api/v1/customers", headers=m.headers, json={"email": "ana@example.com"})
    assert first.status_code == 201
    second = client.post("/api/v1/customers", headers=m.headers, json={"email": variant})
    assert second.status_code == 409, second.text
    found = client.get("/api/v1/customers/by-email", headers=m.headers, params={"email": variant})
    assert found.json()["id"] == first.json()["id"]
    with session_factory() as session:
        assert session.scalar(select(func.count(Customer.id))) == 1


@pytest.mark.parametrize(
    "bad", ["a@b..c", "a@.b.c", "a@b.c.", "a b@c.com", "a@b", "a@-b.com", "@b.com", "a@b.123"]
)
def test_an_address_the_importer_refuses_is_refused_by_the_api_too(
    client: TestClient, session_factory: sessionmaker[Session], bad: str
) -> None:
    m = make_merchant(session_factory)
    response = client.post("/api/v1/customers", headers=m.headers, json={"email": bad})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "email"
    assert canonical_email(bad) is None
    with session_factory() as session:
        assert session.scalar(select(func.count(Customer.id))) == 0


def test_international_addresses_keep_working() -> None:
    assert canonical_email("José@Correo.example.es") == "josé@correo.example.es"
    assert canonical_email("kunde@münchen.de") == "kunde@münchen.de"
    assert (
        canonical_email("first.last+tag@mail.example.co.uk") == "first.last+tag@mail.example.co.uk"
    )
    assert canonical_email("o'brien@example.ie") == "o'brien@example.ie"


def test_an_import_file_folds_look_alike_emails_into_one_customer(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    existing = client.post(
        "/api/v1/customers", headers=m.headers, json={"email": "ana@example.com"}
    )
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c != "@" else c for c in "bo@example.com")
    content = (
        "Name,Email,Points\n"
        "Ana,ana\u200b@example.com,10\n"  # the existing customer, with a zero-width space
        "Bo,bo@example.com,20\n"
        f"Bo again,{fullwidth},30\n"  # the row above, typed in fullwidth letters
    ).encode()
    preview = client.post(
        "/api/v1/imports/customers/preview",
        headers=m.headers,
        files={"file": ("lookalikes.csv", content, "text/csv")},
    )
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["new_count"] == 1
    assert [(e["row"], e["column"]) for e in body["errors"]] == [(4, "Email")]
    assert "it is on row 3" in body["errors"][0]["expected"]
    assert existing.status_code == 201
