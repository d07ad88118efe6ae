"""Imports through the service: every accepted format, errors, idempotency, resume and revert."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers.orm import Customer, CustomerState
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.errors import Conflict, NotFound
from tally.imports import checking
from tally.imports import service as imports
from tally.imports.orders_csv import OrderCsvReader, OrderRow, OrderStatus
from tally.imports.orm import ImportJob, ImportRejectedRow
from tally.ledger import service as ledger
from tally.ledger.orm import EntryKind, LedgerEntry
from tally.notifications.orm import EmailMessage
from tally.outbox.events import CustomersImported
from tally.outbox.orm import OutboxMessage
from tally.outbox.registry import default_registry, load_plugins
from tally.program import jobs as program_jobs
from tally.program import service as program_service
from tally.program.config_service import update_program
from tally.program.orm import Order, TierChangeRecord
from tests.support.factories import make_customer, make_merchant

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "imports"

CustomerOptions = imports.CustomerImportOptions
OrderOptions = imports.OrderImportOptions


# --- helpers ---------------------------------------------------------------------------------


def _program(factory: sessionmaker[Session], merchant_id: int, **changes: Any) -> None:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        update_program(session, merchant_id=merchant_id, changes=changes)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def _customers(factory: sessionmaker[Session], merchant_id: int) -> dict[str, Customer]:
    with factory() as session:
        rows = session.scalars(select(Customer).where(Customer.merchant_id == merchant_id))
        return {customer.email: customer for customer in rows}


def _balances(factory: sessionmaker[Session], merchant_id: int) -> dict[str, int]:
    return {email: c.points_balance for email, c in _customers(factory, merchant_id).items()}


def _entries(factory: sessionmaker[Session], merchant_id: int) -> list[tuple[str, int, str]]:
    with factory() as session:
        rows = session.execute(
            select(Customer.email, LedgerEntry.points, LedgerEntry.kind)
            .join(Customer, Customer.id == LedgerEntry.customer_id)
            .where(LedgerEntry.merchant_id == merchant_id)
            .order_by(LedgerEntry.id)
        )
        return [(email, points, kind) for email, points, kind in rows]


def _count(factory: sessionmaker[Session], model: Any, merchant_id: int) -> int:
    with factory() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(model).where(model.merchant_id == merchant_id)
            )
            or 0
        )


def _assert_ledger_consistent(factory: sessionmaker[Session], merchant_id: int) -> None:
    with factory() as session:
        assert list(ledger.verify_balances(session, merchant_id=merchant_id)) == []
        # Open credits add up to the balance, customer by customer.
        remaining = dict(
            session.execute(
                select(LedgerEntry.customer_id, func.coalesce(func.sum(LedgerEntry.remaining), 0))
                .where(LedgerEntry.merchant_id == merchant_id)
                .group_by(LedgerEntry.customer_id)
            ).all()
        )
        for customer in session.scalars(
            select(Customer).where(Customer.merchant_id == merchant_id)
        ):
            assert int(remaining.get(customer.id, 0)) == customer.points_balance, customer.email


TIERS = {
    "enabled": True,
    "metric": "amount_spent",
    "tiers": [
        {"id": "silver", "name": "Silver", "threshold": "100"},
        {"id": "gold", "name": "Gold", "threshold": "500", "multiplier": "2"},
    ],
}


# --- customers: every accepted format ----------------------------------------------------------


def test_tally_template_creates_members_with_balances_birthdays_and_tiers(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, vip=TIERS)
    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=FIXTURES / "customers_tally.csv",
        options=CustomerOptions(),
    )
    assert (job.status, job.file_format, job.total_rows) == ("completed", "Tally template", 4)
    assert (job.new_count, job.updated_count, job.skipped_count, job.invalid_count) == (4, 0, 0, 0)
    assert job.points_issued == 1550
    assert job.created_by == "cli"  # what the service records unless told who
    assert job.cursor == 5
    customers = _customers(session_factory, m.id)
    assert {
        email: (c.first_name, c.last_name, c.birthday, c.vip_tier, c.state, c.points_balance)
        for email, c in customers.items()
    } == {
        "ana.souza@example.com": ("Ana", "Souza", date(1990, 4, 17), "gold", "member", 1250),
        "wei.li@example.com": ("Wei", "Li", None, None, "member", 300),
        "jordan.okafor@example.org": (
            "Jordan",
            "Okafor, Jr.",
            date(1985, 11, 2),
            "silver",
            "member",
            0,
        ),
        "zoe.muller@example.de": ("Zoë", "Müller", None, None, "member", 0),
    }
    # One import entry per customer with points, nothing for 0 or blank.
    assert _entries(session_factory, m.id) == [
        ("ana.souza@example.com", 1250, "import"),
        ("wei.li@example.com", 300, "import"),
    ]
    with session_factory() as session:
        ana = customers["ana.souza@example.com"]
        entry = session.scalars(select(LedgerEntry).where(LedgerEntry.customer_id == ana.id)).one()
        checksum = imports.file_facts(FIXTURES / "customers_tally.csv").checksum
        assert entry.idempotency_key == f"import:{checksum[:20]}:{ana.id}"
        assert (entry.remaining, entry.expires_at) == (1250, None)
        assert ana.referral_code
        assert ana.enrolled_at is not None
        assert ana.last_activity_at is not None
        assert ana.birthday_set_at is not None
    _assert_ledger_consistent(session_factory, m.id)


def test_shopify_customer_export_keeps_ids_and_multiline_fields(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=FIXTURES / "customers_shopify.csv",
        options=CustomerOptions(),
    )
    assert (job.file_format, job.new_count, job.points_issued) == (
        "Shopify customer export",
        3,
        0,
    )
    customers = _customers(session_factory, m.id)
    assert {
        email: (c.first_name, c.last_name, c.external_id, c.points_balance)
        for email, c in customers.items()
    } == {
        "teo.villasenor@example.com": ("Teodoro", "Villaseñor", "7210448301122", 0),
        "hollis.pettibone@example.com": ("Hollis", "Pettibone", "7210448301123", 0),
        "guest.buyer@example.net": (None, None, "7210448301124", 0),
    }
    assert _entries(session_factory, m.id) == []


@pytest.mark.parametrize(
    ("name", "layout", "expected"),
    [
        (
            "customers_smile_io.csv",
            "Smile.io export",
            {
                "ana.souza@example.com": (None, None, None, 1250),
                "wei.li@example.com": (None, None, None, 300),
                "kofi.mensah@example.com": (None, None, None, 0),
            },
        ),
        (
            "customers_yotpo.csv",
            "Yotpo export",
            {
                "ana.souza@example.com": ("Ana", "Souza", date(1990, 4, 17), 1250),
                "wei.li@example.com": ("Wei", "Li", None, 300),
                "kofi.mensah@example.com": ("Kofi", "Mensah", date(1978, 9, 30), 0),
            },
        ),
        (
            "customers_name_email_points.csv",
            "Name/Email/Points",
            {
                "ana.souza@example.com": ("Ana", "Souza", None, 1250),
                "mary.whitfield@example.com": ("Mary", "Ann Whitfield", None, 480),
                "prince@example.net": ("Prince", None, None, 0),
            },
        ),
    ],
)
def test_other_customer_layouts(
    session_factory: sessionmaker[Session],
    name: str,
    layout: str,
    expected: dict[str, tuple[Any, ...]],
) -> None:
    m = make_merchant(session_factory)
    job = imports.run_import(
        session_factory, merchant_id=m.id, path=FIXTURES / name, options=CustomerOptions()
    )
    assert (job.status, job.file_format, job.new_count) == ("completed", layout, 3)
    customers = _customers(session_factory, m.id)
    assert {
        email: (c.first_name, c.last_name, c.birthday, c.points_balance)
        for email, c in customers.items()
    } == expected
    _assert_ledger_consistent(session_factory, m.id)


def test_a_file_that_is_not_utf8_is_refused_with_its_row(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    with pytest.raises(imports.ImportFileRefused) as refused:
        imports.preview_import(
            session_factory,
            merchant_id=m.id,
            path=FIXTURES / "customers_windows1252.csv",
            options=CustomerOptions(),
        )
    assert "not UTF-8" in refused.value.detail
    assert "row 3" in refused.value.detail
    with pytest.raises(imports.ImportFileRefused):
        imports.run_import(
            session_factory,
            merchant_id=m.id,
            path=FIXTURES / "customers_windows1252.csv",
            options=CustomerOptions(),
        )
    # Nothing recorded, nothing written.
    assert _count(session_factory, ImportJob, m.id) == 0
    assert _customers(session_factory, m.id) == {}


def test_file_level_errors_are_refused(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    cases = {
        "semicolons.csv": ("email;points\r\na@example.com;5\r\n", "separated by semicolons"),
        "unknown.csv": ("email,points,colour\na@example.com,5,red\n", 'unknown column "colour"'),
        "empty.csv": ("", "the file is empty"),
        "orders.csv": ("order_id,email\n1,a@example.com\n", 'lacks the required columns "total"'),
    }
    for name, (text, message) in cases.items():
        options: imports.ImportOptions = (
            OrderOptions() if name == "orders.csv" else CustomerOptions()
        )
        with pytest.raises(imports.ImportFileRefused) as refused:
            imports.run_import(
                session_factory,
                merchant_id=m.id,
                path=_write(tmp_path, name, text),
                options=options,
            )
        assert message in refused.value.detail, name
    assert _count(session_factory, ImportJob, m.id) == 0


# --- customers: row errors, preview and refusal --------------------------------------------------

BAD_CUSTOMERS = (
    "email,first_name,last_name,points,birthday,vip_tier\n"
    "ok@example.com,Ok,Person,10,1990-01-01,Gold\n"
    "not-an-email,,,5,,\n"
    'thousands@example.com,,,"1,200",,\n'
    "negative@example.com,,,-5,,\n"
    "decimal@example.com,,,12.5,,\n"
    "us.date@example.com,,,,04/17/1990,\n"
    "future@example.com,,,,2999-01-01,\n"
    "OK@example.com,,,1,,\n"
    "tier@example.com,,,1,,Platinum\n"
    "extra@example.com,,,1,,,surplus\n"
    "fine@example.com,Fine,,7,,\n"
)


def _errors(job: ImportJob) -> list[tuple[int, str, str]]:
    return [(e["row"], e["column"], e["value"]) for e in job.errors]


def test_preview_lists_every_error_with_row_column_value_and_expectation(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, vip={**TIERS, "tiers": [TIERS["tiers"][1]]})
    path = _write(tmp_path, "bad.csv", BAD_CUSTOMERS)
    job = imports.preview_import(
        session_factory, merchant_id=m.id, path=path, options=CustomerOptions()
    )
    assert job.status == "previewed"
    assert _errors(job) == [
        (3, "email", "not-an-email"),
        (4, "points", "1,200"),
        (5, "points", "-5"),
        (6, "points", "12.5"),
        (7, "birthday", "04/17/1990"),
        (8, "birthday", "2999-01-01"),
        (9, "email", "OK@example.com"),
        (10, "vip_tier", "Platinum"),
        (11, "column 7", "surplus"),
    ]
    expected = {e["row"]: e["expected"] for e in job.errors}
    assert expected[3].startswith("an email address like name@example.com")
    assert expected[4] == "a whole number without thousands separators"
    assert expected[5] == "a whole number that is not negative"
    assert expected[6] == "a whole number (no decimals)"
    assert "ambiguous" in expected[7]
    assert expected[8] == "a birthday that is not in the future"
    assert "(it is on row 2)" in expected[9]
    assert expected[10] == "one of this store's VIP tiers (Gold), or blank"
    assert "beyond the header's 6 columns" in expected[11]
    assert job.errors[1]["message"] == (
        'row 4, column "points": "1,200" — expected a whole number without thousands separators'
    )
    assert (job.total_rows, job.invalid_count, job.error_count) == (11, 9, 9)
    assert (job.new_count, job.points_issued) == (2, 17)
    # A preview writes nothing but its job.
    assert _customers(session_factory, m.id) == {}


def test_a_file_with_errors_is_refused_whole(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    path = _write(tmp_path, "bad.csv", BAD_CUSTOMERS)
    with pytest.raises(imports.ImportRefused) as refused:
        imports.run_import(session_factory, merchant_id=m.id, path=path, options=CustomerOptions())
    problem = refused.value
    assert problem.status_code == 422
    assert "nothing was imported" in problem.detail
    assert problem.errors[1].field == "row 3, email"
    assert problem.errors[1].value == "not-an-email"
    job = problem.job
    assert (job.status, job.invalid_count, job.cursor) == ("failed", 10, 0)
    assert job.failure_reason == "refused: 10 invalid rows, nothing was imported"
    assert _customers(session_factory, m.id) == {}
    assert _entries(session_factory, m.id) == []


def test_skip_invalid_imports_the_rest_and_keeps_the_rejected_rows(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    path = _write(tmp_path, "bad.csv", BAD_CUSTOMERS)
    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=path,
        options=CustomerOptions(skip_invalid=True),
        batch_size=4,
    )
    # This store has no VIP tiers, so the "Gold" of row 2 is refused too.
    assert (job.status, job.new_count, job.invalid_count, job.points_issued) == (
        "completed",
        1,
        10,
        7,
    )
    assert _balances(session_factory, m.id) == {"fine@example.com": 7}
    with session_factory() as session:
        text = "".join(imports.rejected_csv(session, merchant_id=m.id, job_id=job.id))
    lines = text.split("\r\n")
    assert lines[0] == "email,first_name,last_name,points,birthday,vip_tier,reason"
    assert lines[1].startswith("ok@example.com,Ok,Person,10,1990-01-01,Gold,")
    assert lines[2] == (
        'not-an-email,,,5,,,"row 3, column ""email"": ""not-an-email"" — expected an email '
        'address like name@example.com (one @, a dot in the domain, no spaces)"'
    )
    assert lines[3] == (
        'thousands@example.com,,,"1,200",,,"row 4, column ""points"": ""1,200"" — expected a '
        'whole number without thousands separators"'
    )
    # The extra value stays out of the columns.
    assert lines[9].startswith("tier@example.com,,,1,,Platinum,")
    assert lines[10].startswith('extra@example.com,,,1,,,"row 11, column ""column 7""')
    assert lines[11] == ""
    assert len(lines) == 12
    assert [row for row, _ in _rejected(session_factory, job.id)] == [
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        10,
        11,
    ]


@pytest.mark.parametrize("kind", ["customers", "orders"])
def test_a_corrected_rejected_rows_file_imports(
    session_factory: sessionmaker[Session], tmp_path: Path, kind: str
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, place_order={"enabled": True})
    options: imports.ImportOptions
    if kind == "customers":
        text = 'email,points\nana@example.com,10\nwei@example.com,"1,200"\n'
        options, fixed = CustomerOptions(skip_invalid=True), "1200"
    else:
        text = (
            "order_id,email,total,placed_at\n"
            "A1,ana@example.com,10.00,2025-01-05\n"
            'A2,wei@example.com,"1,200.00",2025-01-06\n'
        )
        options, fixed = OrderOptions(skip_invalid=True), "1200.00"
    job = imports.run_import(
        session_factory, merchant_id=m.id, path=_write(tmp_path, "in.csv", text), options=options
    )
    assert (job.new_count, job.invalid_count) == (1, 1)
    with session_factory() as session:
        rejected = "".join(imports.rejected_csv(session, merchant_id=m.id, job_id=job.id))
    # The merchant fixes the value and imports the file as it is, reason column included.
    records = list(csv.reader(io.StringIO(rejected)))
    assert records[0][-1] == "reason"
    records[1] = [fixed if value.startswith("1,200") else value for value in records[1]]
    out = io.StringIO()
    csv.writer(out).writerows(records)
    corrected = out.getvalue()
    again = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=_write(tmp_path, "fixed.csv", corrected),
        options=replace(options, skip_invalid=False),
    )
    assert (again.status, again.new_count, again.invalid_count) == ("completed", 1, 0)
    assert _balances(session_factory, m.id) == {"ana@example.com": 10, "wei@example.com": 1200}


def _rejected(factory: sessionmaker[Session], job_id: int) -> list[tuple[int, str]]:
    with factory() as session:
        return [
            (r.row_number, r.reason)
            for r in session.scalars(
                select(ImportRejectedRow)
                .where(ImportRejectedRow.job_id == job_id)
                .order_by(ImportRejectedRow.row_number)
            )
        ]


# --- customers: idempotency, points modes, existing customers ------------------------------------


def test_importing_the_same_file_again_changes_nothing(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    path = FIXTURES / "customers_yotpo.csv"
    first = imports.run_import(
        session_factory, merchant_id=m.id, path=path, options=CustomerOptions()
    )
    balances, entries = _balances(session_factory, m.id), _entries(session_factory, m.id)
    for options in (CustomerOptions(), CustomerOptions(points=imports.PointsMode.ADD)):
        again = imports.run_import(session_factory, merchant_id=m.id, path=path, options=options)
        assert again.id != first.id
        assert (again.new_count, again.updated_count, again.skipped_count) == (0, 0, 3)
        assert again.points_issued == 0
        assert _balances(session_factory, m.id) == balances
        assert _entries(session_factory, m.id) == entries
    preview = imports.preview_import(
        session_factory, merchant_id=m.id, path=path, options=CustomerOptions()
    )
    assert (preview.new_count, preview.updated_count, preview.skipped_count) == (0, 0, 3)


def test_replace_makes_the_file_the_migrated_balance_and_add_adds(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    # Ana already has 40 points earned in Tally.
    make_customer(session_factory, m.id, email="ana.souza@example.com", points=40)
    header = "email,points\n"
    first = _write(tmp_path, "first.csv", header + "ana.souza@example.com,1000\n")
    job = imports.run_import(
        session_factory, merchant_id=m.id, path=first, options=CustomerOptions()
    )
    assert (job.new_count, job.updated_count, job.points_issued) == (0, 1, 1000)
    assert _balances(session_factory, m.id) == {"ana.souza@example.com": 1040}

    # A corrected export: the migrated part becomes 1200, Tally's own 40 stay.
    corrected = _write(tmp_path, "corrected.csv", header + "ana.souza@example.com,1200\n")
    preview = imports.preview_import(
        session_factory, merchant_id=m.id, path=corrected, options=CustomerOptions()
    )
    assert (preview.updated_count, preview.points_issued) == (1, 200)
    imports.run_import(session_factory, merchant_id=m.id, path=corrected, options=CustomerOptions())
    assert _balances(session_factory, m.id) == {"ana.souza@example.com": 1240}

    lower = _write(tmp_path, "lower.csv", header + "ana.souza@example.com,900\n")
    imports.run_import(session_factory, merchant_id=m.id, path=lower, options=CustomerOptions())
    assert _balances(session_factory, m.id) == {"ana.souza@example.com": 940}

    # --points add credits the file's value on top.
    more = _write(tmp_path, "more.csv", header + "ana.souza@example.com,60\n")
    added = imports.preview_import(
        session_factory,
        merchant_id=m.id,
        path=more,
        options=CustomerOptions(points=imports.PointsMode.ADD),
    )
    assert (added.points_issued, added.options["points"]) == (60, "add")
    imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=more,
        options=CustomerOptions(points=imports.PointsMode.ADD),
    )
    assert _balances(session_factory, m.id) == {"ana.souza@example.com": 1000}
    assert [points for _, points, kind in _entries(session_factory, m.id) if kind == "import"] == [
        1000,
        200,
        -300,
        60,
    ]
    _assert_ledger_consistent(session_factory, m.id)


def test_replace_cannot_lower_a_balance_below_what_was_spent(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    first = _write(tmp_path, "first.csv", "email,points\nana@example.com,1000\n")
    imports.run_import(session_factory, merchant_id=m.id, path=first, options=CustomerOptions())
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        ana = session.scalars(select(Customer).where(Customer.merchant_id == m.id)).one()
        ledger.debit(
            session, customer=ana, points=800, kind=EntryKind.SPEND, idempotency_key="spend"
        )
    lower = _write(tmp_path, "lower.csv", "email,points\nana@example.com,100\n")
    preview = imports.preview_import(
        session_factory, merchant_id=m.id, path=lower, options=CustomerOptions()
    )
    assert _errors(preview) == [(2, "points", "100")]
    assert preview.errors[0]["expected"] == (
        "at least 800 points: 1000 points were imported for this customer before and the "
        "balance is now 200, so it cannot be lowered by 900"
    )
    with pytest.raises(imports.ImportRefused):
        imports.run_import(session_factory, merchant_id=m.id, path=lower, options=CustomerOptions())
    assert _balances(session_factory, m.id) == {"ana@example.com": 200}


def test_existing_customers_are_updated_and_guests_become_members(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    make_customer(
        session_factory, m.id, email="ana.souza@example.com", first_name="Old", last_name="Name"
    )
    make_customer(session_factory, m.id, email="wei.li@example.com", state=CustomerState.GUEST)
    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=FIXTURES / "customers_yotpo.csv",
        options=CustomerOptions(),
    )
    assert (job.new_count, job.updated_count, job.skipped_count) == (1, 2, 0)
    customers = _customers(session_factory, m.id)
    ana, wei = customers["ana.souza@example.com"], customers["wei.li@example.com"]
    assert (ana.first_name, ana.last_name, ana.birthday, ana.points_balance) == (
        "Ana",
        "Souza",
        date(1990, 4, 17),
        1250,
    )
    assert (wei.state, wei.enrolled_at is not None, wei.points_balance) == ("member", True, 300)


def test_award_create_account_gives_new_customers_points_and_an_email(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, create_account={"enabled": True, "points": 50})
    make_customer(session_factory, m.id, email="ana.souza@example.com")
    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=FIXTURES / "customers_smile_io.csv",
        options=CustomerOptions(award_create_account=True),
    )
    assert (job.new_count, job.updated_count, job.emails_queued) == (2, 1, 2)
    assert job.points_issued == 1250 + 300 + 0 + 2 * 50
    assert _balances(session_factory, m.id) == {
        "ana.souza@example.com": 1250,
        "wei.li@example.com": 350,
        "kofi.mensah@example.com": 50,
    }
    with session_factory() as session:
        emails = session.execute(
            select(EmailMessage.recipient, EmailMessage.email_type, EmailMessage.variables)
            .where(EmailMessage.merchant_id == m.id)
            .order_by(EmailMessage.recipient)
        ).all()
        assert [tuple(e) for e in emails] == [
            ("kofi.mensah@example.com", "create_account_points", {"points": 50}),
            ("wei.li@example.com", "create_account_points", {"points": 350}),
        ]
        bonus = session.scalars(
            select(LedgerEntry).where(LedgerEntry.rule_id == "create_account")
        ).all()
        assert sorted(e.idempotency_key.split(":")[0] for e in bonus) == ["create_account"] * 2
    _assert_ledger_consistent(session_factory, m.id)


def test_per_grant_expiry_dates_imported_points_from_the_import(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    enabled = utcnow() - timedelta(days=10)
    _program(
        session_factory,
        m.id,
        expiry={"mode": "per_grant", "days": 90, "enabled_at": enabled.isoformat()},
    )
    before = utcnow()
    imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=FIXTURES / "customers_smile_io.csv",
        options=CustomerOptions(),
    )
    with session_factory() as session:
        entries = session.scalars(select(LedgerEntry).where(LedgerEntry.merchant_id == m.id)).all()
    assert len(entries) == 2
    for entry in entries:
        assert entry.expires_at is not None
        assert before + timedelta(days=90) <= entry.expires_at <= utcnow() + timedelta(days=90)


def test_rolling_expiry_counts_from_the_import(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    # Expiry has been on for long: a customer silent for 90 days loses the balance.
    enabled = utcnow() - timedelta(days=400)
    _program(
        session_factory,
        m.id,
        expiry={"mode": "rolling", "days": 90, "enabled_at": enabled.isoformat()},
    )
    make_customer(session_factory, m.id, email="dormant@example.com", points=5)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        # The existing customer's last activity was long ago...
        session.execute(
            update(Customer)
            .where(Customer.merchant_id == m.id)
            .values(last_activity_at=utcnow() - timedelta(days=200))
        )
    path_text = "email,points\ndormant@example.com,100\nfresh@example.com,40\n"
    started = utcnow()
    imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=_write(tmp_path, "customers.csv", path_text),
        options=CustomerOptions(points=imports.PointsMode.ADD),
    )
    # ... but the import is a balance change: 89 days on, nothing has expired ...
    program_jobs.expire_points(session_factory, merchant_id=m.id, now=started + timedelta(days=89))
    assert _balances(session_factory, m.id) == {
        "dormant@example.com": 105,
        "fresh@example.com": 40,
    }
    # ... and 91 days after the import both balances expire.
    program_jobs.expire_points(session_factory, merchant_id=m.id, now=utcnow() + timedelta(days=91))
    assert _balances(session_factory, m.id) == {"dormant@example.com": 0, "fresh@example.com": 0}
    _assert_ledger_consistent(session_factory, m.id)


# --- orders --------------------------------------------------------------------------------------


def test_tally_order_template_awards_points_by_the_rules(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, place_order={"enabled": True})
    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=FIXTURES / "orders_tally.csv",
        options=OrderOptions(),
    )
    assert (job.status, job.file_format, job.new_count, job.customers_created) == (
        "completed",
        "Tally template",
        5,
        4,
    )
    # 1001: 49.90 - 5.00 discount -> 44; 1002 refunded; 1003: 15; 1004 partially refunded
    # without an amount; 1005 cancelled.
    assert job.points_issued == 59
    assert _balances(session_factory, m.id) == {
        "ana.souza@example.com": 44,
        "wei.li@example.com": 0,
        "jordan.okafor@example.org": 15,
        "kofi.mensah@example.com": 0,
    }
    with session_factory() as session:
        orders = {
            o.order_id: (o.status, o.currency, o.refunded_amount, o.points_awarded, o.source)
            for o in session.scalars(select(Order).where(Order.merchant_id == m.id))
        }
        guests = {c.state for c in session.scalars(select(Customer))}
    assert orders == {
        "1001": ("paid", "EUR", Decimal("0"), 44, "import"),
        "1002": ("refunded", "EUR", Decimal("120"), 0, "import"),
        "1003": ("paid", "EUR", Decimal("0"), 15, "import"),
        "1004": ("partially_refunded", "EUR", Decimal("0"), 0, "import"),
        "1005": ("cancelled", "EUR", Decimal("0"), 0, "import"),
    }
    assert guests == {"guest"}
    _assert_ledger_consistent(session_factory, m.id)


def test_shopify_order_export_with_line_items_refunds_and_a_bom(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, place_order={"enabled": True})
    make_customer(session_factory, m.id, email="ana.souza@example.com", points=5)
    preview = imports.preview_import(
        session_factory,
        merchant_id=m.id,
        path=FIXTURES / "orders_shopify.csv",
        options=OrderOptions(),
    )
    assert (preview.file_format, preview.total_rows, preview.new_count) == (
        "Shopify order export",
        5,
        5,
    )
    assert (preview.customers_created, preview.points_issued, preview.errors) == (3, 107, [])
    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=FIXTURES / "orders_shopify.csv",
        options=OrderOptions(),
    )
    assert (job.new_count, job.customers_created, job.points_issued) == (5, 3, 107)
    # #1001: 49.90 - 5.00 -> 44; #1002 refunded in full; #1003 partially refunded (15.00 of
    # 93.82): earns on 63.01 -> 63; #1004 voided and cancelled; #1005 authorized (pending).
    assert _balances(session_factory, m.id) == {
        "ana.souza@example.com": 49,
        "wei.li@example.com": 0,
        "zoe.muller@example.de": 63,
        "kofi.mensah@example.com": 0,
    }
    with session_factory() as session:
        orders = {
            o.order_id: (o.status, o.currency, o.total, o.refunded_amount, o.points_basis)
            for o in session.scalars(select(Order).where(Order.merchant_id == m.id))
        }
    assert orders == {
        "#1001": ("fulfilled", "EUR", Decimal("49.85"), Decimal("0"), Decimal("58.17")),
        "#1002": ("refunded", "NZD", Decimal("120"), Decimal("120"), None),
        "#1003": ("partially_refunded", "EUR", Decimal("80.9"), Decimal("15"), Decimal("78.82")),
        "#1004": ("cancelled", "GBP", Decimal("35.99"), Decimal("0"), None),
        "#1005": ("pending", "EUR", Decimal("19.9"), Decimal("0"), None),
    }
    _assert_ledger_consistent(session_factory, m.id)


def test_a_tier_from_the_customer_file_is_kept_for_a_year(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, place_order={"enabled": True}, vip=TIERS)
    path = _write(
        tmp_path,
        "customers.csv",
        "email,points,vip_tier\ngold@example.com,0,Gold\nnone@example.com,0,\n",
    )
    job = imports.run_import(
        session_factory, merchant_id=m.id, path=path, options=CustomerOptions()
    )
    # The daily tier review does not take it away although no spending backs it ...
    program_jobs.review_tiers(session_factory, merchant_id=m.id, now=utcnow() + timedelta(days=1))
    assert _customers(session_factory, m.id)["gold@example.com"].vip_tier == "gold"
    # ... nor does an orders import: the order earns Gold's double points.
    orders = _write(
        tmp_path,
        "orders.csv",
        "order_id,email,total,placed_at\n"
        "G1,gold@example.com,10.00,2025-01-05\n"
        "N1,none@example.com,120.00,2025-01-05\n",
    )
    imports.run_import(session_factory, merchant_id=m.id, path=orders, options=OrderOptions())
    customers = _customers(session_factory, m.id)
    assert (
        customers["gold@example.com"].vip_tier,
        customers["gold@example.com"].points_balance,
    ) == (
        "gold",
        20,
    )
    assert customers["none@example.com"].vip_tier == "silver"
    # A year after the import the tier is measured like any other.
    later = job.created_at + timedelta(days=366)
    program_jobs.review_tiers(session_factory, merchant_id=m.id, now=later)
    customers = _customers(session_factory, m.id)
    assert customers["gold@example.com"].vip_tier is None
    assert customers["none@example.com"].vip_tier == "silver"


def test_a_program_that_awards_on_fulfilment_rewards_fulfilled_orders(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, place_order={"enabled": True, "award_on_status": "fulfilled"})
    path = _write(
        tmp_path,
        "orders.csv",
        "order_id,email,total,status,placed_at\n"
        "F1,ana@example.com,40.00,fulfilled,2025-01-05\n"
        "P1,ana@example.com,30.00,paid,2025-01-06\n",
    )
    job = imports.run_import(session_factory, merchant_id=m.id, path=path, options=OrderOptions())
    with session_factory() as session:
        points = dict(
            session.execute(
                select(Order.order_id, Order.points_awarded).where(Order.merchant_id == m.id)
            ).all()
        )
    # Paid but not yet shipped earns nothing under this rule, as it would live.
    assert points == {"F1": 40, "P1": 0}
    assert job.points_issued == 40
    # Shopify: "paid" with Fulfillment Status "fulfilled" is a fulfilled order.
    other = make_merchant(session_factory)
    _program(
        session_factory, other.id, place_order={"enabled": True, "award_on_status": "fulfilled"}
    )
    shopify = imports.run_import(
        session_factory,
        merchant_id=other.id,
        path=FIXTURES / "orders_shopify.csv",
        options=OrderOptions(),
    )
    with session_factory() as session:
        earned = {
            order_id
            for order_id, awarded in session.execute(
                select(Order.order_id, Order.points_awarded).where(Order.merchant_id == other.id)
            )
            if awarded
        }
    assert earned == {"#1001", "#1003"}
    assert shopify.points_issued > 0


def test_known_orders_are_skipped_and_a_second_import_changes_nothing(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, place_order={"enabled": True})
    path = FIXTURES / "orders_shopify.csv"
    imports.run_import(session_factory, merchant_id=m.id, path=path, options=OrderOptions())
    balances, entries = _balances(session_factory, m.id), _entries(session_factory, m.id)
    again = imports.run_import(session_factory, merchant_id=m.id, path=path, options=OrderOptions())
    assert (again.new_count, again.skipped_count, again.points_issued) == (0, 5, 0)
    assert _balances(session_factory, m.id) == balances
    assert _entries(session_factory, m.id) == entries
    assert _count(session_factory, Order, m.id) == 5


def test_vip_only_records_orders_and_tiers_without_points(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, place_order={"enabled": True}, vip=TIERS)
    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=FIXTURES / "orders_tally.csv",
        options=OrderOptions(vip_only=True),
    )
    assert (job.new_count, job.points_issued) == (5, 0)
    customers = _customers(session_factory, m.id)
    # Ana: 54.90 paid + 230.00 partially refunded (no amount given: counts whole) -> silver.
    assert {e: (c.vip_tier, c.points_balance) for e, c in customers.items()} == {
        "ana.souza@example.com": ("silver", 0),
        "wei.li@example.com": (None, 0),
        "jordan.okafor@example.org": (None, 0),
        "kofi.mensah@example.com": (None, 0),
    }


def test_claim_invitations_go_to_guests_who_received_points(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, place_order={"enabled": True})
    make_customer(session_factory, m.id, email="jordan.okafor@example.org")
    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=FIXTURES / "orders_tally.csv",
        options=OrderOptions(send_create_account_emails=True),
    )
    assert job.emails_queued == 1
    with session_factory() as session:
        emails = session.execute(
            select(EmailMessage.recipient, EmailMessage.email_type, EmailMessage.variables)
        ).all()
    # Jordan is a member (no invitation); Wei and Kofi received no points.
    assert [tuple(e) for e in emails] == [
        (
            "ana.souza@example.com",
            "claim_points_invitation",
            {"points": 44, "claim_url": "https://shop.example/account/register"},
        )
    ]


ORDER_ERRORS = (
    "order_id,email,total,subtotal,discounts,shipping,tax,currency,status,placed_at,"
    "refunded_amount\n"
    "A1,a@example.com,10.00,,,,,EUR,paid,2024-01-01,\n"
    "A2,a@example.com,$10.00,,,,,,paid,2024-01-01,\n"
    'A3,a@example.com,"10,50",,,,,,,2024-01-01,\n'
    "A4,a@example.com,10.00,,,,,EURO,,2024-01-01,\n"
    "A5,a@example.com,10.00,,,,,,shipped,2024-01-01,\n"
    "A6,a@example.com,10.00,,,,,,,05/03/2024,\n"
    "A1,b@example.com,10.00,,,,,,,2024-01-01,\n"
    ",a@example.com,10.00,,,,,,,2024-01-01,\n"
    "A9,a@example.com,10.00,,,,,,,2999-01-01,\n"
    "R1,a@example.com,10.00,,,,,,partially_refunded,2024-01-01,12.00\n"
    'A10,a@example.com,"1,234.50",,,,,,,2024-01-01,\n'
)


def test_order_preview_lists_every_error(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    path = _write(tmp_path, "orders.csv", ORDER_ERRORS)
    job = imports.preview_import(
        session_factory, merchant_id=m.id, path=path, options=OrderOptions()
    )
    assert _errors(job) == [
        (3, "total", "$10.00"),
        (4, "total", "10,50"),
        (5, "currency", "EURO"),
        (6, "status", "shipped"),
        (7, "placed_at", "05/03/2024"),
        (8, "order_id", "A1"),
        (9, "order_id", ""),
        (10, "placed_at", "2999-01-01"),
        (11, "refunded_amount", "12.00"),
        (12, "total", "1,234.50"),
    ]
    expected = {e["row"]: e["expected"] for e in job.errors}
    assert expected[3] == "an amount without a currency sign, like 49.90"
    assert expected[4] == 'an amount with a "." decimal point, like 49.90'
    assert expected[5] == "a 3-letter ISO 4217 currency code like USD or EUR"
    assert expected[6].startswith("one of paid, fulfilled, pending, refunded")
    assert expected[8] == "an order id not already used in this file (it is on row 2)"
    assert expected[9] == "an order id (required)"
    assert expected[10] == "a date that is not in the future"
    assert expected[11] == "a refunded amount no larger than the order's total (10.00)"
    assert expected[12] == "an amount without thousands separators, like 1234.50"
    assert (job.new_count, job.invalid_count) == (1, 10)
    with pytest.raises(imports.ImportRefused):
        imports.run_import(session_factory, merchant_id=m.id, path=path, options=OrderOptions())
    assert _count(session_factory, Order, m.id) == 0
    assert _customers(session_factory, m.id) == {}


# --- bulk writes give what record_order gives ------------------------------------------------------


def _varied_orders(count: int, customers: int) -> str:
    statuses = ["paid", "paid", "paid", "pending", "refunded", "partially_refunded", "cancelled"]
    lines = [
        "order_id,email,total,subtotal,discounts,shipping,tax,currency,status,placed_at,"
        "refunded_amount"
    ]
    for number in range(count):
        status = statuses[number % len(statuses)]
        subtotal = Decimal(17 + (number * 37) % 400) + Decimal(number % 100) / 100
        discount = Decimal(number % 3 * 5)
        shipping = Decimal("4.95") if number % 2 else Decimal(0)
        tax = (subtotal * Decimal("0.08")).quantize(Decimal("0.01"))
        total = subtotal - discount + shipping + tax
        refunded = ""
        if status == "partially_refunded":
            refunded = str((total / 3).quantize(Decimal("0.01")))
        day = 1 + number % 28
        lines.append(
            f"O{number},c{number * 7 % customers}@example.com,{total},{subtotal},{discount},"
            f"{shipping},{tax},USD,{status},2025-03-{day:02d}T10:00:00Z,{refunded}"
        )
    return "\n".join(lines) + "\n"


def _record_one_by_one(factory: sessionmaker[Session], merchant_id: int, path: Path) -> int:
    """The file's orders recorded one at a time through ``record_order`` (the API's path), in
    date order as an import applies them; how many."""
    with OrderCsvReader(path) as reader:
        rows = [row for row in reader if isinstance(row, OrderRow)]
    rows.sort(key=lambda row: (row.placed_at, row.row_number))
    now = utcnow()
    for row in rows:
        refunded = row.refunded_amount
        if refunded is None:
            refunded = row.total if row.status is OrderStatus.REFUNDED else Decimal(0)
        # As an import counts them: refunded and cancelled orders earn nothing, and neither does
        # a partially refunded one whose refunded amount the file does not give.
        earns = row.status not in {OrderStatus.REFUNDED, OrderStatus.CANCELLED} and (
            row.status is not OrderStatus.PARTIALLY_REFUNDED or row.refunded_amount is not None
        )
        data = program_service.OrderInput(
            order_id=row.order_id,
            total=row.total,
            placed_at=row.placed_at,
            email=row.email,
            subtotal=row.subtotal,
            discounts=row.discounts or Decimal(0),
            shipping=row.shipping or Decimal(0),
            tax=row.tax or Decimal(0),
            currency=row.currency,
            status=row.status.value,
            refunded_amount=refunded,
        )
        with unit_of_work(factory, merchant_id=merchant_id) as session:
            program_service.record_order(
                session,
                merchant_id=merchant_id,
                data=data,
                award_points=earns,
                apply_limits=False,
                source="import",
                now=now,
            )
    return len(rows)


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_orders_count_in_date_order_whatever_the_file_order(
    session_factory: sessionmaker[Session], tmp_path: Path, batch_size: int
) -> None:
    header = "order_id,email,total,status,placed_at"
    orders = [  # oldest first: 50 and 50 reach Silver at 100, 300 then reaches Gold (x2 after)
        "A1,ana@example.com,50.00,paid,2025-01-05T10:00:00Z",
        "A2,ana@example.com,50.00,paid,2025-02-05T10:00:00Z",
        "A3,ana@example.com,300.00,paid,2025-03-05T10:00:00Z",
        "A4,ana@example.com,10.00,paid,2025-04-05T10:00:00Z",
    ]
    results = []
    for name, lines in (("oldest-first", orders), ("newest-first", orders[::-1])):
        m = make_merchant(session_factory)
        _program(
            session_factory,
            m.id,
            place_order={"enabled": True},
            vip={
                "enabled": True,
                "metric": "amount_spent",
                "tiers": [
                    {"id": "silver", "name": "Silver", "threshold": "100"},
                    {"id": "gold", "name": "Gold", "threshold": "400", "multiplier": "2"},
                ],
            },
        )
        path = _write(tmp_path, f"{name}.csv", "\n".join([header, *lines]) + "\n")
        preview = imports.preview_import(
            session_factory, merchant_id=m.id, path=path, options=OrderOptions()
        )
        job = imports.run_import(
            session_factory,
            merchant_id=m.id,
            path=path,
            options=OrderOptions(),
            batch_size=batch_size,
        )
        with session_factory() as session:
            points = dict(
                session.execute(
                    select(Order.order_id, Order.points_awarded).where(Order.merchant_id == m.id)
                ).all()
            )
            moves = [
                (old, new, changed_at.date())
                for old, new, changed_at in session.execute(
                    select(
                        TierChangeRecord.old_tier,
                        TierChangeRecord.new_tier,
                        TierChangeRecord.changed_at,
                    )
                    .where(TierChangeRecord.merchant_id == m.id)
                    .order_by(TierChangeRecord.changed_at)
                )
            ]
        results.append((points, moves, _balances(session_factory, m.id), preview.points_issued))
        assert job.points_issued == preview.points_issued
    oldest_first, newest_first = results
    # Gold is reached by A3 itself, so only A4 (placed after it) earns double.
    assert oldest_first[0] == {"A1": 50, "A2": 50, "A3": 300, "A4": 20}
    assert oldest_first[1] == [
        (None, "silver", date(2025, 2, 5)),
        ("silver", "gold", date(2025, 3, 5)),
    ]
    assert oldest_first[2] == {"ana@example.com": 420}
    assert oldest_first[3] == 420
    assert newest_first == oldest_first


@pytest.mark.parametrize("metric", ["amount_spent", "points_earned"])
def test_bulk_orders_match_record_order_one_by_one(
    session_factory: sessionmaker[Session], tmp_path: Path, metric: str
) -> None:
    program = {
        "place_order": {"enabled": True, "points_per_unit": "1.5", "include_shipping": True},
        "vip": {
            "enabled": True,
            "metric": metric,
            "tiers": [
                {
                    "id": "silver",
                    "name": "Silver",
                    "threshold": "300",
                    "multiplier": "1.25",
                    "entry_reward_points": 40,
                },
                {
                    "id": "gold",
                    "name": "Gold",
                    "threshold": "900",
                    "multiplier": "2",
                    "entry_reward_points": 100,
                },
            ],
        },
    }
    path = _write(tmp_path, "orders.csv", _varied_orders(70, 9))
    results = []
    for one_by_one in (False, True):
        m = make_merchant(session_factory)
        _program(session_factory, m.id, **program)
        # Two of the customers exist already.
        make_customer(session_factory, m.id, email="c0@example.com", points=10)
        make_customer(session_factory, m.id, email="c1@example.com")
        if one_by_one:
            new_count = _record_one_by_one(session_factory, m.id, path)
        else:
            new_count = imports.run_import(
                session_factory,
                merchant_id=m.id,
                path=path,
                options=OrderOptions(),
                batch_size=8,
            ).new_count
        with session_factory() as session:
            orders = {
                o.order_id: (o.points_awarded, o.points_basis, o.refunded_amount, o.status)
                for o in session.scalars(select(Order).where(Order.merchant_id == m.id))
            }
            changes = [
                (email, old, new, value)
                for email, old, new, value in session.execute(
                    select(
                        Customer.email,
                        TierChangeRecord.old_tier,
                        TierChangeRecord.new_tier,
                        TierChangeRecord.value,
                    )
                    .join(Customer, Customer.id == TierChangeRecord.customer_id)
                    .where(TierChangeRecord.merchant_id == m.id)
                    .order_by(TierChangeRecord.id)
                )
            ]
            entries = sorted(
                (email, points, kind, key.split(":")[0], rule or "")
                for email, points, kind, key, rule in session.execute(
                    select(
                        Customer.email,
                        LedgerEntry.points,
                        LedgerEntry.kind,
                        LedgerEntry.idempotency_key,
                        LedgerEntry.rule_id,
                    )
                    .join(Customer, Customer.id == LedgerEntry.customer_id)
                    .where(LedgerEntry.merchant_id == m.id)
                )
            )
        customers = {
            e: (c.points_balance, c.vip_tier, c.state)
            for e, c in _customers(session_factory, m.id).items()
        }
        _assert_ledger_consistent(session_factory, m.id)
        # Per customer in the order they happened (batches write them customer by customer).
        changes.sort(key=lambda change: change[0])
        results.append((customers, orders, changes, entries, new_count))
    bulk, one_by_one = results
    assert bulk[0] == one_by_one[0]
    assert bulk[1] == one_by_one[1]
    assert bulk[2] == one_by_one[2]
    assert bulk[3] == one_by_one[3]
    assert bulk[4] == one_by_one[4] == 70
    assert any(points for points, *_ in bulk[1].values())
    assert "gold" in {tier for _, tier, _ in bulk[0].values()}
    assert {new for _, _, new, _ in bulk[2]} == {"silver", "gold"}


# --- crash and resume -----------------------------------------------------------------------------


class Crash(Exception):
    pass


def _caused_by_crash(failed: BaseException) -> bool:
    return isinstance(failed.__cause__, Crash)


def _crash_after(batches: int) -> Any:
    def hook(committed: int) -> None:
        if committed == batches:
            raise Crash(f"simulated crash after {committed} batches")

    return hook


def test_a_claimed_job_runs_and_resumes_by_its_id_and_file(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    lines = ["email,points"] + [f"c{n}@example.com,{n + 1}" for n in range(25)]
    path = _write(tmp_path, "customers.csv", "\n".join(lines) + "\n")
    other = _write(tmp_path, "other.csv", "email,points\nana@example.com,5\n")
    with pytest.raises(imports.ImportFailed, check=_caused_by_crash):
        imports.run_import(
            session_factory,
            merchant_id=m.id,
            path=path,
            options=CustomerOptions(),
            batch_size=10,
            after_batch=_crash_after(1),
        )
    with session_factory() as session:
        job = session.scalars(select(ImportJob).where(ImportJob.merchant_id == m.id)).one()
        job.status = "running"  # claimed again, as a worker would find it
        session.commit()

    with pytest.raises(Conflict):
        imports.run_job(session_factory, merchant_id=m.id, job_id=job.id, path=other)
    resumed = imports.run_job(
        session_factory, merchant_id=m.id, job_id=job.id, path=path, batch_size=10
    )

    assert (resumed.id, resumed.status, resumed.new_count, resumed.points_issued) == (
        job.id,
        "completed",
        25,
        325,
    )
    assert _balances(session_factory, m.id) == {f"c{n}@example.com": n + 1 for n in range(25)}
    _assert_ledger_consistent(session_factory, m.id)


def test_a_crashed_customer_import_resumes_without_double_counting(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    lines = ["email,points"] + [f"c{n}@example.com,{n + 1}" for n in range(25)]
    lines.insert(8, "broken,3")
    path = _write(tmp_path, "customers.csv", "\n".join(lines) + "\n")
    options = CustomerOptions(skip_invalid=True)
    with pytest.raises(imports.ImportFailed, check=_caused_by_crash):
        imports.run_import(
            session_factory,
            merchant_id=m.id,
            path=path,
            options=options,
            batch_size=10,
            after_batch=_crash_after(2),
        )
    with session_factory() as session:
        job = session.scalars(select(ImportJob).where(ImportJob.merchant_id == m.id)).one()
    assert (job.status, job.cursor, job.new_count, job.invalid_count) == ("failed", 21, 19, 1)
    # An unexpected error is logged; the job (shown to the merchant) names only a reference.
    assert job.failure_reason is not None
    assert re.fullmatch(
        r"the import failed unexpectedly \(reference [0-9a-f]{8}\); "
        r"the operator's log has the details",
        job.failure_reason,
    )
    assert len(_balances(session_factory, m.id)) == 19

    resumed = imports.run_import(
        session_factory, merchant_id=m.id, path=path, options=options, batch_size=10
    )
    assert resumed.id == job.id
    assert (resumed.status, resumed.total_rows, resumed.cursor) == ("completed", 26, 27)
    assert (resumed.new_count, resumed.invalid_count, resumed.points_issued) == (25, 1, 325)
    assert _balances(session_factory, m.id) == {f"c{n}@example.com": n + 1 for n in range(25)}
    assert len(_entries(session_factory, m.id)) == 25
    assert [row for row, _ in _rejected(session_factory, job.id)] == [9]
    _assert_ledger_consistent(session_factory, m.id)


def test_a_killed_order_import_resumes_once_its_heartbeat_is_stale(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, place_order={"enabled": True}, vip=TIERS)
    path = _write(tmp_path, "orders.csv", _varied_orders(40, 6))

    class Killed(BaseException):
        pass

    def kill(committed: int) -> None:
        if committed == 2:
            raise Killed

    with pytest.raises(Killed):
        imports.run_import(
            session_factory,
            merchant_id=m.id,
            path=path,
            options=OrderOptions(),
            batch_size=7,
            after_batch=kill,
        )
    # A kill leaves the job running; until its heartbeat is old it counts as still running.
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        job = session.scalars(select(ImportJob)).one()
        job.status = "running"
        job.failure_reason = None
    with pytest.raises(imports.ImportInProgress):
        imports.run_import(session_factory, merchant_id=m.id, path=path, options=OrderOptions())
    resumed = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=path,
        options=OrderOptions(),
        batch_size=7,
        stale_after=timedelta(0),
    )
    assert (resumed.id, resumed.status, resumed.new_count) == (job.id, "completed", 40)

    reference = make_merchant(session_factory)
    _program(session_factory, reference.id, place_order={"enabled": True}, vip=TIERS)
    imports.run_import(
        session_factory, merchant_id=reference.id, path=path, options=OrderOptions(), batch_size=7
    )
    assert _balances(session_factory, m.id) == _balances(session_factory, reference.id)
    with session_factory() as session:
        expected = session.scalar(
            select(ImportJob.points_issued).where(ImportJob.merchant_id == reference.id)
        )
    assert resumed.points_issued == expected
    assert expected
    _assert_ledger_consistent(session_factory, m.id)


def test_a_long_check_keeps_its_job_alive(
    session_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = make_merchant(session_factory)
    lines = ["email,points"] + [f"c{n}@example.com,{n}" for n in range(30)]
    path = _write(tmp_path, "customers.csv", "\n".join(lines) + "\n")
    monkeypatch.setattr(checking, "HEARTBEAT_SECONDS", 0.0)
    second: list[BaseException] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase != "checking":
            return
        if done == 10:
            time.sleep(1.2)  # a slow first batch: the claim is now older than stale_after
        elif done == 20:
            # The same file again while the first run is still checking: it must not take over.
            try:
                imports.run_import(
                    session_factory,
                    merchant_id=m.id,
                    path=path,
                    options=CustomerOptions(),
                    stale_after=timedelta(seconds=1),
                )
            except imports.ImportInProgress as exc:
                second.append(exc)

    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=path,
        options=CustomerOptions(),
        batch_size=10,
        progress=progress,
    )
    assert len(second) == 1
    assert (job.status, job.new_count) == ("completed", 30)


def test_resuming_with_other_options_is_refused(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    path = _write(
        tmp_path, "c.csv", "email,points\n" + "".join(f"c{n}@example.com,5\n" for n in range(6))
    )
    with pytest.raises(imports.ImportFailed, check=_caused_by_crash):
        imports.run_import(
            session_factory,
            merchant_id=m.id,
            path=path,
            options=CustomerOptions(),
            batch_size=2,
            after_batch=_crash_after(1),
        )
    with pytest.raises(Conflict) as refused:
        imports.run_import(
            session_factory,
            merchant_id=m.id,
            path=path,
            options=CustomerOptions(points=imports.PointsMode.ADD),
        )
    assert "with other options" in refused.value.detail
    assert len(_balances(session_factory, m.id)) == 2


# --- revert ---------------------------------------------------------------------------------------


def test_revert_takes_back_what_the_import_credited(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    enabled = utcnow() - timedelta(days=10)
    _program(
        session_factory,
        m.id,
        create_account={"enabled": True, "points": 25, "send_email": False},
        expiry={"mode": "per_grant", "days": 90, "enabled_at": enabled.isoformat()},
    )
    make_customer(session_factory, m.id, email="wei.li@example.com", points=70)
    path = FIXTURES / "customers_smile_io.csv"
    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=path,
        options=CustomerOptions(award_create_account=True),
    )
    assert _balances(session_factory, m.id) == {
        "ana.souza@example.com": 1275,
        "wei.li@example.com": 370,
        "kofi.mensah@example.com": 25,
    }
    # Wei spends 50: spending takes the soonest-expiring credit, the imported one, first; his
    # balance still covers what the import credited him.
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        wei = session.scalars(select(Customer).where(Customer.email == "wei.li@example.com")).one()
        ledger.debit(
            session, customer=wei, points=50, kind=EntryKind.SPEND, idempotency_key="spend-1"
        )
    reverted = imports.revert_import(session_factory, merchant_id=m.id, job_id=job.id)
    assert (reverted.status, reverted.reverted_at is not None) == ("reverted", True)
    assert _balances(session_factory, m.id) == {
        "ana.souza@example.com": 0,
        "wei.li@example.com": 20,
        "kofi.mensah@example.com": 0,
    }
    _assert_ledger_consistent(session_factory, m.id)
    with pytest.raises(imports.RevertRefused) as again:
        imports.revert_import(session_factory, merchant_id=m.id, job_id=job.id)
    assert again.value.detail == f"import {job.id} was already reverted"

    # The same file imported again after a revert is credited again.
    second = imports.run_import(
        session_factory, merchant_id=m.id, path=path, options=CustomerOptions()
    )
    assert (second.generation, second.points_issued) == (1, 1550)
    assert _balances(session_factory, m.id) == {
        "ana.souza@example.com": 1250,
        "wei.li@example.com": 320,
        "kofi.mensah@example.com": 0,
    }
    _assert_ledger_consistent(session_factory, m.id)


def test_revert_is_refused_when_points_were_spent_and_changes_nothing(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=FIXTURES / "customers_smile_io.csv",
        options=CustomerOptions(),
    )
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        ana = session.scalars(
            select(Customer).where(Customer.email == "ana.souza@example.com")
        ).one()
        ledger.debit(
            session, customer=ana, points=1000, kind=EntryKind.SPEND, idempotency_key="spend"
        )
    balances, entries = _balances(session_factory, m.id), _entries(session_factory, m.id)
    with pytest.raises(imports.RevertRefused) as refused:
        imports.revert_import(session_factory, merchant_id=m.id, job_id=job.id)
    assert "1 customer has already spent points it credited (the balance is lower" in (
        refused.value.detail
    )
    assert [(p.field, p.message, p.value) for p in refused.value.errors] == [
        ("ana.souza@example.com", "balance 250 is lower than the 1250 points to take back", 250)
    ]
    assert _balances(session_factory, m.id) == balances
    assert _entries(session_factory, m.id) == entries
    with session_factory() as session:
        assert session.get_one(ImportJob, job.id).status == "completed"


def test_reverting_an_orders_import(session_factory: sessionmaker[Session]) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, place_order={"enabled": True})
    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=FIXTURES / "orders_shopify.csv",
        options=OrderOptions(),
    )
    imports.revert_import(session_factory, merchant_id=m.id, job_id=job.id)
    assert set(_balances(session_factory, m.id).values()) == {0}
    # The orders are gone (they no longer count toward tiers) ...
    assert _count(session_factory, Order, m.id) == 0
    _assert_ledger_consistent(session_factory, m.id)
    # ... so the (corrected) file can be imported again.
    again = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=FIXTURES / "orders_shopify.csv",
        options=OrderOptions(),
    )
    assert (again.new_count, again.skipped_count) == (5, 0)
    assert again.points_issued == job.points_issued > 0
    _assert_ledger_consistent(session_factory, m.id)


def test_reverting_an_orders_import_takes_back_tier_rewards_and_tiers(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    vip = {
        "enabled": True,
        "metric": "amount_spent",
        "tiers": [
            {"id": "silver", "name": "Silver", "threshold": "100", "entry_reward_points": 50}
        ],
    }
    _program(session_factory, m.id, place_order={"enabled": True}, vip=vip)
    kept = make_customer(session_factory, m.id, email="kept@example.com", points=7)
    path = _write(
        tmp_path,
        "orders.csv",
        "order_id,email,total,placed_at\n"
        "A1,ana@example.com,80.00,2025-01-05\n"
        "A2,ana@example.com,40.00,2025-02-05\n"
        "K1,kept@example.com,30.00,2025-02-06\n",
    )
    job = imports.run_import(session_factory, merchant_id=m.id, path=path, options=OrderOptions())
    customers = _customers(session_factory, m.id)
    assert (customers["ana@example.com"].points_balance, customers["ana@example.com"].vip_tier) == (
        80 + 40 + 50,
        "silver",
    )
    imports.revert_import(session_factory, merchant_id=m.id, job_id=job.id)
    customers = _customers(session_factory, m.id)
    assert (customers["ana@example.com"].points_balance, customers["ana@example.com"].vip_tier) == (
        0,
        None,
    )
    assert customers["kept@example.com"].points_balance == 7
    assert customers["kept@example.com"].id == kept
    _assert_ledger_consistent(session_factory, m.id)


def test_an_orders_import_with_refunds_recorded_since_is_not_reverted(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    _program(session_factory, m.id, place_order={"enabled": True})
    path = _write(
        tmp_path, "orders.csv", "order_id,email,total,placed_at\nA1,a@example.com,80,2025-01-05\n"
    )
    job = imports.run_import(session_factory, merchant_id=m.id, path=path, options=OrderOptions())
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        program_service.refund_order(
            session, merchant_id=m.id, order_id="A1", refund_id="R1", amount=Decimal("20")
        )
    before = _balances(session_factory, m.id)
    with pytest.raises(imports.RevertRefused) as refused:
        imports.revert_import(session_factory, merchant_id=m.id, job_id=job.id)
    assert "refunds were recorded for some of its orders" in refused.value.detail
    assert "A1" in refused.value.detail
    assert _balances(session_factory, m.id) == before
    assert _count(session_factory, Order, m.id) == 1


def test_only_a_completed_or_failed_import_can_be_reverted(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    preview = imports.preview_import(
        session_factory,
        merchant_id=m.id,
        path=FIXTURES / "customers_smile_io.csv",
        options=CustomerOptions(),
    )
    with pytest.raises(imports.RevertRefused) as refused:
        imports.revert_import(session_factory, merchant_id=m.id, job_id=preview.id)
    assert refused.value.detail == (
        f"import {preview.id} is previewed: only a completed import, or one that stopped part "
        "way (failed), can be reverted"
    )
    # An import that stopped part way is reverted for what it applied.
    lines = ["email,points"] + [f"c{n}@example.com,{n + 1}" for n in range(25)]
    path = _write(tmp_path, "customers.csv", "\n".join(lines) + "\n")
    with pytest.raises(imports.ImportFailed, check=_caused_by_crash):
        imports.run_import(
            session_factory,
            merchant_id=m.id,
            path=path,
            options=CustomerOptions(),
            batch_size=10,
            after_batch=_crash_after(1),
        )
    with session_factory() as session:
        failed = session.scalars(
            select(ImportJob).where(ImportJob.merchant_id == m.id, ImportJob.status == "failed")
        ).one()
    assert sum(_balances(session_factory, m.id).values()) == sum(range(1, 11))
    reverted = imports.revert_import(session_factory, merchant_id=m.id, job_id=failed.id)
    assert reverted.status == "reverted"
    assert set(_balances(session_factory, m.id).values()) == {0}
    _assert_ledger_consistent(session_factory, m.id)


# --- jobs are the merchant's own -------------------------------------------------------------------


def test_jobs_are_listed_per_merchant(session_factory: sessionmaker[Session]) -> None:
    a, b = make_merchant(session_factory), make_merchant(session_factory)
    job = imports.run_import(
        session_factory,
        merchant_id=a.id,
        path=FIXTURES / "customers_smile_io.csv",
        options=CustomerOptions(),
    )
    with session_factory() as session:
        assert imports.list_imports(session, merchant_id=a.id)[1] == 1
        assert imports.list_imports(session, merchant_id=b.id) == ([], 0)
        with pytest.raises(NotFound):
            imports.get_import(session, merchant_id=b.id, job_id=job.id)
    with pytest.raises(NotFound):
        imports.revert_import(session_factory, merchant_id=b.id, job_id=job.id)
    assert _balances(session_factory, a.id)["ana.souza@example.com"] == 1250


def test_an_import_batch_is_announced_by_one_customers_imported_event(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    load_plugins(settings)
    m = make_merchant(session_factory)
    make_customer(session_factory, m.id, email="wei.li@example.com", state=CustomerState.GUEST)
    with session_factory() as session:
        before = session.scalar(select(func.max(OutboxMessage.id))) or 0
    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=FIXTURES / "customers_yotpo.csv",
        options=CustomerOptions(),
    )
    customers = _customers(session_factory, m.id)
    with session_factory() as session:
        rows = session.execute(
            select(OutboxMessage.event_type, OutboxMessage.handler, OutboxMessage.payload)
            .where(OutboxMessage.id > before)
            .order_by(OutboxMessage.id)
        ).all()
    changed = sorted(
        customers[e].id
        for e in ("ana.souza@example.com", "wei.li@example.com", "kofi.mensah@example.com")
    )
    # One event for the batch: the two new customers and the guest the file made a member.
    event = CustomersImported(merchant_id=m.id, import_id=job.id, customer_ids=tuple(changed))
    assert event.payload() == {"merchant_id": m.id, "import_id": job.id, "customer_ids": changed}
    handlers = default_registry.handler_names(event.event_type)
    assert handlers, "the built-in plugins subscribe to imported customers"
    # Besides the batch, the finished job is announced once (to webhooks).
    finished = [h for t, h, _p in rows if t == "ImportFinished"]
    assert finished == default_registry.handler_names("ImportFinished")
    rows = [row for row in rows if row[0] != "ImportFinished"]
    assert [(t, h, p) for t, h, p in rows] == [
        (event.event_type, handler, json.loads(json.dumps(event.payload()))) for handler in handlers
    ]
