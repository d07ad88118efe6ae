"""Email marketing consent in import files: the columns Shopify and Tally use, and bad values."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from pathlib import Path

from tally.imports.consent import EXPECTED
from tally.imports.customers_csv import CustomerCsvReader, CustomerRow, parse_customers
from tally.imports.formats import ImportRowError
from tally.imports.orders_csv import OrderCsvReader, OrderRow, parse_orders

FIXTURES = Path(__file__).parents[1] / "fixtures" / "imports"
TODAY = date(2025, 6, 1)
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _customers(text: str) -> list[CustomerRow | ImportRowError]:
    return list(parse_customers(io.BytesIO(text.encode()), today=TODAY))


def _answers(rows: list[CustomerRow | ImportRowError]) -> list[object]:
    return [
        row.accepts_marketing if isinstance(row, CustomerRow) else (row.column, row.value)
        for row in rows
    ]


def test_the_tally_templates_column_reads_yes_no_true_false_and_blank() -> None:
    rows = _customers(
        "email,accepts_marketing\n"
        "a@example.com,yes\nb@example.com,No\nc@example.com,TRUE\nd@example.com,false\n"
        "e@example.com,\n"
    )
    assert _answers(rows) == [True, False, True, False, None]


def test_a_bad_consent_value_is_an_error_naming_row_column_and_what_is_accepted() -> None:
    rows = _customers("email,Accepts Marketing\na@example.com,maybe\nb@example.com,1\n")
    assert [
        (e.row, e.column, e.value, e.expected) for e in rows if isinstance(e, ImportRowError)
    ] == [
        (2, "Accepts Marketing", "maybe", EXPECTED),
        (3, "Accepts Marketing", "1", EXPECTED),
    ]
    assert not any(isinstance(row, CustomerRow) for row in rows)


def test_shopifys_customer_export_gives_accepts_email_marketing() -> None:
    with CustomerCsvReader(FIXTURES / "customers_shopify.csv", today=TODAY) as reader:
        rows = list(reader)
    assert reader.format.key == "shopify"
    # Accepts SMS Marketing is another consent (SMS), and is not read.
    answers = {row.email: row.accepts_marketing for row in rows if isinstance(row, CustomerRow)}
    assert answers == _fixture_answers("customers_shopify.csv", "Accepts Email Marketing")
    assert set(answers.values()) == {True, False}


def test_shopifys_order_export_gives_accepts_marketing() -> None:
    with OrderCsvReader(FIXTURES / "orders_shopify.csv", now=NOW) as reader:
        orders = [row for row in reader if isinstance(row, OrderRow)]
    assert orders
    assert {order.accepts_marketing for order in orders} == {False}


def test_a_bad_accepts_marketing_value_in_an_orders_file_is_a_row_error() -> None:
    rows = list(
        parse_orders(
            io.BytesIO(
                b"order_id,email,total,placed_at,accepts_marketing\n"
                b"1001,a@example.com,10.00,2025-05-01T10:00:00Z,yes\n"
                b"1002,b@example.com,12.00,2025-05-02T10:00:00Z,oui\n"
            ),
            now=NOW,
        )
    )
    assert isinstance(rows[0], OrderRow)
    assert rows[0].accepts_marketing is True
    error = rows[1]
    assert isinstance(error, ImportRowError)
    assert (error.row, error.column, error.value, error.expected) == (
        3,
        "accepts_marketing",
        "oui",
        EXPECTED,
    )


def _fixture_answers(name: str, column: str) -> dict[str, bool]:
    with (FIXTURES / name).open(encoding="utf-8-sig", newline="") as file:
        return {
            row["Email"].strip().lower(): row[column].strip().lower() == "yes"
            for row in csv.DictReader(file)
        }
