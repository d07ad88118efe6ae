"""Reports: the points liability with planted figures, and the streamed CSV exports."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tally.cli import main as cli
from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.engine import unit_of_work
from tally.ledger import service as ledger
from tally.ledger.orm import EntryKind
from tally.program import jobs
from tally.program.config_service import update_program
from tally.reports import exports
from tally.reports.liability import points_liability
from tests.integration.test_admin_pages import admin_app, make_store, sign_in
from tests.support.factories import load_customer, make_customer, make_merchant

NOW = datetime.now(UTC).replace(microsecond=0)
REWARDS = [
    {"id": "five", "name": "$5 off", "type": "fixed_amount", "points_cost": 500, "amount": "5"},
    {"id": "twelve", "name": "$12 off", "type": "fixed_amount", "points_cost": 1000, "amount": "12"},
    {"id": "var", "name": "Pay with points", "type": "variable", "points_per_unit": 200,
     "min_points": 200},
    {"id": "ten", "name": "10% off", "type": "percentage", "points_cost": 300, "percent": "10"},
    {"id": "old", "name": "Old $50", "type": "fixed_amount", "points_cost": 100, "amount": "50",
     "enabled": False},
]  # fmt: skip


def _program(factory: sessionmaker[Session], merchant_id: int, **changes: Any) -> None:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        update_program(session, merchant_id=merchant_id, changes=changes)


def _rolling(days: int = 365) -> dict[str, Any]:
    return {"mode": "rolling", "days": days, "enabled_at": (NOW - timedelta(days=1000)).isoformat()}


def _last_active(factory: sessionmaker[Session], customer_id: int, days_ago: int) -> None:
    with unit_of_work(factory) as session:
        session.execute(
            update(Customer)
            .where(Customer.id == customer_id)
            .values(last_activity_at=NOW - timedelta(days=days_ago))
        )


def _opener(factory: sessionmaker[Session], merchant_id: int) -> Any:
    def open_session() -> AbstractContextManager[Session]:
        return unit_of_work(factory, merchant_id=merchant_id)

    return open_session


def _rows(pieces: Iterator[str]) -> list[list[str]]:
    return list(csv.reader(io.StringIO("".join(pieces))))


def test_liability_values_points_at_each_reward_and_counts_rolling_expiry(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, rewards=REWARDS, expiry=_rolling())
    # 365-day rolling expiry: these expire in 15, 45, 75 and 355 days.
    for points, days_ago in ((1000, 350), (400, 320), (250, 290), (2000, 10)):
        _last_active(session_factory, make_customer(session_factory, m.id, points=points), days_ago)
    make_customer(session_factory, m.id)  # no points
    other = make_merchant(session_factory)
    make_customer(session_factory, other.id, points=99_999)

    with unit_of_work(session_factory, merchant_id=m.id) as session:
        report = points_liability(session, merchant_id=m.id, now=NOW)

    assert (report.outstanding_points, report.customers_with_points) == (3650, 4)
    assert [(r.reward_id, r.value) for r in report.rewards] == [
        ("five", Decimal("36.50")),
        ("twelve", Decimal("43.80")),
        ("var", Decimal("18.25")),
        ("ten", None),
    ]
    assert report.best is not None
    assert report.best.reward_id == "twelve"
    assert report.best.explanation == "1000 points for 12 USD off"
    assert report.value == Decimal("43.80")
    assert report.expiring == {30: 1000, 60: 1400, 90: 1650}
    # The same rule as the job: a run 30 days from now expires exactly the first figure.
    stats = jobs.expire_points(session_factory, merchant_id=m.id, now=NOW + timedelta(days=30))
    assert stats.points == 1000


def test_liability_per_grant_counts_what_is_left_of_each_credit(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    policy = {"mode": "per_grant", "days": 100, "enabled_at": _rolling()["enabled_at"]}
    _program(session_factory, m.id, rewards=REWARDS[3:4], expiry=policy)
    first = make_customer(session_factory, m.id)
    second = make_customer(session_factory, m.id)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        for customer_id, points, in_days in (
            (first, 300, 10),
            (first, 200, 40),
            (second, 500, 100),
        ):
            customer = load_customer(session, m.id, customer_id)
            entry = ledger.credit(
                session, customer=customer, points=points, kind=EntryKind.ADJUST,
                idempotency_key=f"plant:{customer_id}:{points}", reason="planted",
            ).entry  # fmt: skip
            entry.expires_at = NOW + timedelta(days=in_days)
        session.flush()
        # A spend takes the soonest-expiring credit first: 200 of the 300 are left.
        ledger.debit(
            session, customer=load_customer(session, m.id, first), points=100,
            kind=EntryKind.SPEND, idempotency_key="plant:spend", reason="spent",
        )  # fmt: skip

    with unit_of_work(session_factory, merchant_id=m.id) as session:
        report = points_liability(session, merchant_id=m.id, now=NOW)

    assert report.outstanding_points == 900
    assert report.expiring == {30: 200, 60: 400, 90: 400}
    assert (report.best, report.value) == (None, None)
    assert report.rewards[0].explanation == "a percentage reward has no fixed money value"
    rows = _rows(exports.export_customers(_opener(session_factory, m.id), merchant_id=m.id))
    soonest = (NOW + timedelta(days=10)).date().isoformat()  # the merchant's zone is UTC
    assert [(r[0], r[5], r[7], r[8]) for r in rows[1:]] == [
        (str(first), "400", soonest, "200"),
        (str(second), "500", (NOW + timedelta(days=100)).date().isoformat(), "500"),
    ]


def test_liability_with_expiry_off_expires_nothing(session_factory: sessionmaker[Session]) -> None:
    m = make_merchant(session_factory)
    make_customer(session_factory, m.id, points=700)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        report = points_liability(session, merchant_id=m.id, now=NOW)
    assert (report.outstanding_points, report.expiry_mode) == (700, "off")
    assert report.expiring == {30: 0, 60: 0, 90: 0}


def test_customer_export_neutralises_formulas_and_shows_next_expiry(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, expiry=_rolling(days=100))
    hostile = make_customer(
        session_factory, m.id, email="eve@example.com", first_name="=HYPERLINK(1)",
        last_name="-2+3", points=120,
    )  # fmt: skip
    _last_active(session_factory, hostile, 40)
    plain = make_customer(session_factory, m.id, email="bo@example.com", first_name="Bo")

    rows = _rows(exports.export_customers(_opener(session_factory, m.id), merchant_id=m.id))

    assert rows[0] == list(exports.CUSTOMER_COLUMNS)
    assert [r[:9] for r in rows[1:]] == [
        [str(hostile), "eve@example.com", "'=HYPERLINK(1)", "'-2+3", "member", "120", "",
         (NOW + timedelta(days=60)).date().isoformat(), "120"],
        [str(plain), "bo@example.com", "Bo", "", "member", "0", "", "", ""],
    ]  # fmt: skip


def test_ledger_export_has_a_running_balance_per_customer(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    first = make_customer(session_factory, m.id, email="a@example.com", points=100)
    second = make_customer(session_factory, m.id, email="b@example.com", points=50)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        ledger.debit(
            session, customer=load_customer(session, m.id, first), points=30,
            kind=EntryKind.SPEND, idempotency_key="spend-1", reason="@reward", source_ref="r:1",
        )  # fmt: skip

    # A chunk of one entry: the running balance carries over from chunk to chunk.
    pieces = exports.export_ledger(_opener(session_factory, m.id), merchant_id=m.id, chunk_size=1)
    rows = _rows(pieces)

    assert rows[0] == list(exports.LEDGER_COLUMNS)
    assert [(r[1], r[2], r[4], r[5], r[6], r[7], r[8]) for r in rows[1:]] == [
        (str(first), "a@example.com", "adjust", "100", "100", "opening balance", ""),
        (str(first), "a@example.com", "spend", "-30", "70", "'@reward", "r:1"),
        (str(second), "b@example.com", "adjust", "50", "50", "opening balance", ""),
    ]


def _plant_customers(factory: sessionmaker[Session], merchant_id: int, count: int) -> None:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        session.execute(
            Customer.__table__.insert(),
            [
                {"merchant_id": merchant_id, "email": f"c{i}@example.com", "state": "member",
                 "referral_code": f"R{merchant_id}x{i}", "points_balance": i % 7,
                 "created_at": NOW, "updated_at": NOW}
                for i in range(count)
            ],
        )  # fmt: skip


def test_a_20000_customer_export_is_read_in_chunks_as_it_is_written(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    _plant_customers(session_factory, m.id, 20_000)
    selects: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM customers" in statement:
            selects.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        pieces = exports.export_customers(_opener(session_factory, m.id), merchant_id=m.id)
        header, first = next(pieces), next(pieces)
        # Streaming: the first chunk is out after one read of 1,000 customers.
        assert (len(selects), first.count("\r\n")) == (1, 1000)
        rest = list(pieces)
    finally:
        event.remove(engine, "before_cursor_execute", count)

    rows = list(csv.reader(io.StringIO(header + first + "".join(rest))))
    assert len(rows) == 20_001
    assert sum(int(r[5]) for r in rows[1:]) == sum(i % 7 for i in range(20_000))
    assert len({r[0] for r in rows[1:]}) == 20_000
    # 20 chunks and one empty read at the end, each a bounded (LIMIT) keyset query.
    assert len(selects) == 21
    assert all("LIMIT" in s.upper() for s in selects)


runner = CliRunner()


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("TALLY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TALLY_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("TALLY_ENVIRONMENT", "test")
    monkeypatch.setattr(cli.console, "_width", 400)
    return settings


def test_cli_exports_to_a_file_and_prints_the_liability(
    cli_env: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, rewards=REWARDS[:1])
    make_customer(session_factory, m.id, email="cli@example.com", points=1234)
    out = tmp_path / "ledger.csv"

    exported = runner.invoke(cli.app, ["export", "ledger", "--merchant", str(m.id), "-o", str(out)])
    liability = runner.invoke(cli.app, ["points", "liability", "--merchant", str(m.id)])
    stdout = runner.invoke(cli.app, ["export", "customers", "--merchant", str(m.id)])

    assert exported.exit_code == 0, exported.output
    assert [r[2] for r in csv.reader(out.open(encoding="utf-8"))] == ["email", "cli@example.com"]
    assert liability.exit_code == 0, liability.output
    assert "outstanding: 1234 points held by 1 customers" in liability.output
    assert (
        "value: 12.34 USD at the best rate, $5 off (500 points for 5 USD off)" in liability.output
    )
    assert stdout.exit_code == 0, stdout.output
    assert stdout.output.splitlines()[1].split(",")[1:7] == [
        "cli@example.com", "", "", "member", "1234", "",
    ]  # fmt: skip


def test_the_admin_shows_the_liability_and_streams_the_exports(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    store = make_store(session_factory, "owner@shop.example")
    _program(session_factory, store.merchant_id, rewards=REWARDS[:2], expiry=_rolling())
    customer = make_customer(
        session_factory, store.merchant_id, email="=cmd@example.com", points=2500
    )
    _last_active(session_factory, customer, 340)  # expires in 25 days

    with TestClient(admin_app(settings, session_factory)) as client:
        assert sign_in(client, store.email) == (303, "/admin")
        page = client.get("/admin/reports/liability")
        download = client.get("/admin/reports/export/customers.csv")
        ledger_csv = client.get("/admin/reports/export/ledger.csv")

    assert page.status_code == 200
    assert re.search(r'data-testid="outstanding-points">2,500<', page.text)
    assert re.search(r'data-testid="liability-value">30.00 USD', page.text)
    assert re.search(r"<td>30 days</td><td>[-0-9]+</td><td class=\"num\">2,500</td>", page.text)
    assert download.status_code == 200
    assert download.headers["content-type"] == "text/csv; charset=utf-8"
    assert download.headers["content-disposition"].startswith('attachment; filename="customers-')
    assert [r[:2] for r in csv.reader(io.StringIO(download.text))] == [
        ["customer_id", "email"],
        [str(customer), "'=cmd@example.com"],
    ]
    assert [r[5:7] for r in csv.reader(io.StringIO(ledger_csv.text))] == [
        ["points", "balance_after"],
        ["2500", "2500"],
    ]


def test_the_api_answers_the_liability_and_streams_the_exports(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, rewards=REWARDS[:4], expiry=_rolling())
    _last_active(session_factory, make_customer(session_factory, m.id, points=1000), 350)

    liability = client.get("/api/v1/points-liability", headers=m.headers)
    customers_csv = client.get("/api/v1/exports/customers", headers=m.headers)

    assert liability.status_code == 200
    body = liability.json()
    assert (body["outstanding_points"], body["value"], body["best_reward_id"]) == (
        1000, "12.00", "twelve",
    )  # fmt: skip
    assert [(r["reward_id"], r["value"]) for r in body["rewards"]] == [
        ("five", "10.00"), ("twelve", "12.00"), ("var", "5.00"), ("ten", None),
    ]  # fmt: skip
    assert body["expiring_within_days"] == {"30": 1000, "60": 1000, "90": 1000}
    assert customers_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert len(customers_csv.text.splitlines()) == 2
