"""Order import files: the Tally template, Shopify's export, every refused value and file."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from tally.imports.formats import ImportFileError, ImportRowError, order_template_csv
from tally.imports.orders_csv import (
    OrderCsvReader,
    OrderRow,
    OrderStatus,
    detect_order_format,
    parse_orders,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "imports"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
HEADER = "order_id,email,total,currency,status,placed_at\n"
BAD_TIME = (
    "an ISO 8601 date or date-time like 2024-03-05, 2024-03-05T14:22:10Z "
    "or 2024-03-05 14:22:10 -0500"
)
STATUSES = (
    "one of paid, fulfilled, pending, refunded, partially_refunded, cancelled (blank means paid)"
)
SHOPIFY_HEADER = "Name,Email,Financial Status,Total,Created at,Cancelled at,Refunded Amount,Id\n"


def parse(text: str) -> list[OrderRow | ImportRowError]:
    return list(parse_orders(io.BytesIO(text.encode()), now=NOW))


def order(row: int, order_id: str, email: str, total: str, **values: object) -> OrderRow:
    fields: dict[str, object] = {
        "subtotal": None,
        "discounts": None,
        "shipping": None,
        "tax": None,
        "currency": None,
        "status": OrderStatus.PAID,
        "placed_at": datetime(2024, 3, 5, tzinfo=UTC),
        "refunded_amount": None,
        "external_id": None,
    }
    fields.update(values)
    return OrderRow(row, order_id, email, Decimal(total), **fields)  # type: ignore[arg-type]


# --- accepted layouts ------------------------------------------------------------------------


def test_tally_template_file_is_read() -> None:
    with OrderCsvReader(FIXTURES / "orders_tally.csv", now=NOW) as reader:
        rows = list(reader)
        assert reader.format_name == "Tally template"
        assert reader.format.key == "tally"

    assert rows == [
        order(
            2,
            "1001",
            "ana.souza@example.com",
            "54.90",
            subtotal=Decimal("49.90"),
            discounts=Decimal("5.00"),
            shipping=Decimal("4.95"),
            tax=Decimal("5.05"),
            currency="EUR",
            placed_at=datetime(2024, 3, 5, 14, 22, 10, tzinfo=UTC),
        ),
        order(
            3,
            "1002",
            "wei.li@example.com",
            "120.00",
            subtotal=Decimal("120.00"),
            discounts=Decimal("0.00"),
            shipping=Decimal("0.00"),
            tax=Decimal("0.00"),
            currency="EUR",
            status=OrderStatus.REFUNDED,
            placed_at=datetime(2024, 3, 7, 8, 5, tzinfo=UTC),
        ),
        order(
            4,
            "1003",
            "jordan.okafor@example.org",
            "18.50",
            subtotal=Decimal("15.00"),
            shipping=Decimal("3.50"),
            currency="EUR",
            placed_at=datetime(2024, 3, 9, tzinfo=UTC),
        ),
        order(
            5,
            "1004",
            "ana.souza@example.com",
            "230.00",
            subtotal=Decimal("230.00"),
            discounts=Decimal("0.00"),
            shipping=Decimal("0.00"),
            tax=Decimal("0.00"),
            currency="EUR",
            status=OrderStatus.PARTIALLY_REFUNDED,
            placed_at=datetime(2024, 3, 11, 18, 40, tzinfo=UTC),
        ),
        order(
            6,
            "1005",
            "kofi.mensah@example.com",
            "9.99",
            subtotal=Decimal("9.99"),
            discounts=Decimal("0.00"),
            shipping=Decimal("0.00"),
            tax=Decimal("0.00"),
            currency="EUR",
            status=OrderStatus.CANCELLED,
            placed_at=datetime(2024, 3, 12, 13, 0, tzinfo=UTC),
        ),
    ]


def test_shopify_export_groups_line_items_into_orders() -> None:
    with OrderCsvReader(FIXTURES / "orders_shopify.csv", now=NOW) as reader:
        rows = list(reader)
        assert reader.format_name == "Shopify order export"
        assert reader.headers[:3] == ("Name", "Email", "Financial Status")

    # The file starts with a UTF-8 byte order mark and ends its lines with CRLF; the first
    # order's Notes span two lines. Its Accepts Marketing answers: test_import_consent.py.
    assert all(isinstance(row, OrderRow) for row in rows)
    assert [row._replace(accepts_marketing=None) for row in rows if isinstance(row, OrderRow)] == [
        order(
            2,
            "#1001",
            "ana.souza@example.com",
            "49.85",
            subtotal=Decimal("49.90"),
            discounts=Decimal("5.00"),
            shipping=Decimal("4.95"),
            tax=Decimal("8.32"),
            currency="EUR",
            # Paid, and its Fulfillment Status is fulfilled.
            status=OrderStatus.FULFILLED,
            placed_at=datetime(2024, 3, 5, 19, 22, 10, tzinfo=UTC),
            refunded_amount=Decimal("0.00"),
            external_id="5620112343201",
        ),
        order(
            4,
            "#1002",
            "wei.li@example.com",
            "120.00",
            subtotal=Decimal("120.00"),
            discounts=Decimal("0.00"),
            shipping=Decimal("0.00"),
            tax=Decimal("15.65"),
            currency="NZD",
            status=OrderStatus.REFUNDED,
            placed_at=datetime(2024, 3, 5, 19, 0, tzinfo=UTC),
            refunded_amount=Decimal("120.00"),
            external_id="5620112343202",
        ),
        order(
            5,
            "#1003",
            "zoe.muller@example.de",
            "80.90",
            subtotal=Decimal("75.00"),
            discounts=Decimal("0.00"),
            shipping=Decimal("5.90"),
            tax=Decimal("12.92"),
            currency="EUR",
            status=OrderStatus.PARTIALLY_REFUNDED,
            placed_at=datetime(2024, 3, 7, 18, 45, 31, tzinfo=UTC),
            refunded_amount=Decimal("15.00"),
            external_id="5620112343203",
        ),
        order(
            8,
            "#1004",
            "kofi.mensah@example.com",
            "35.99",
            subtotal=Decimal("32.00"),
            discounts=Decimal("0.00"),
            shipping=Decimal("3.99"),
            tax=Decimal("6.00"),
            currency="GBP",
            status=OrderStatus.CANCELLED,
            placed_at=datetime(2024, 3, 8, 11, 2, tzinfo=UTC),
            refunded_amount=Decimal("0.00"),
            external_id="5620112343204",
        ),
        order(
            9,
            "#1005",
            "ana.souza@example.com",
            "19.90",
            subtotal=Decimal("14.95"),
            discounts=Decimal("0.00"),
            shipping=Decimal("4.95"),
            tax=Decimal("3.32"),
            currency="EUR",
            status=OrderStatus.PENDING,
            placed_at=datetime(2024, 3, 9, 15, 15, tzinfo=UTC),
            refunded_amount=Decimal("0.00"),
            external_id="5620112343205",
        ),
    ]


def test_shipped_template_is_a_valid_tally_template_file() -> None:
    template = order_template_csv()
    reader = OrderCsvReader(io.BytesIO(template.encode()), now=NOW)

    rows = list(reader)

    assert template.splitlines()[0] == (
        "order_id,email,total,subtotal,discounts,shipping,tax,currency,status,placed_at"
    )
    assert reader.format_name == "Tally template"
    assert len(rows) == 3
    assert all(isinstance(row, OrderRow) for row in rows)


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        (
            [
                "order_id",
                "email",
                "total",
                "subtotal",
                "discounts",
                "shipping",
                "tax",
                "currency",
                "status",
                "placed_at",
            ],
            "tally",
        ),
        (["Placed At", "TOTAL", "Email", " Order ID "], "tally"),
        (["order_id", "email", "total", "placed_at", "refunded_amount"], "tally"),
        (["Name", "Email", "Financial Status", "Total", "Created at"], "shopify"),
        (
            ["Name", "Email", "Financial Status", "Paid at", "Total", "Created at", "Lineitem sku"],
            "shopify",
        ),
    ],
)
def test_layout_is_detected_from_the_headers(headers: list[str], key: str) -> None:
    assert detect_order_format(headers).key == key


@pytest.mark.parametrize(
    ("placed_at", "expected"),
    [
        ("2024-03-05T14:22:10Z", datetime(2024, 3, 5, 14, 22, 10, tzinfo=UTC)),
        ("2024-03-05T14:22:10+02:00", datetime(2024, 3, 5, 12, 22, 10, tzinfo=UTC)),
        ("2024-03-05T14:22:10.250-05:00", datetime(2024, 3, 5, 19, 22, 10, 250000, tzinfo=UTC)),
        ("2024-03-05 14:22:10 -0500", datetime(2024, 3, 5, 19, 22, 10, tzinfo=UTC)),
        ("2024-03-05 14:22", datetime(2024, 3, 5, 14, 22, tzinfo=UTC)),
        ("2024-03-05", datetime(2024, 3, 5, tzinfo=UTC)),
    ],
)
def test_placed_at_is_read_as_utc_and_naive_values_are_taken_as_utc(
    placed_at: str, expected: datetime
) -> None:
    (row,) = parse(f"{HEADER}1001,ana@example.com,10.00,EUR,paid,{placed_at}\n")

    assert isinstance(row, OrderRow)
    assert row.placed_at == expected
    assert row.placed_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("", OrderStatus.PAID),
        ("paid", OrderStatus.PAID),
        ("Pending", OrderStatus.PENDING),
        ("refunded", OrderStatus.REFUNDED),
        ("partially_refunded", OrderStatus.PARTIALLY_REFUNDED),
        ("Partially Refunded", OrderStatus.PARTIALLY_REFUNDED),
        ("cancelled", OrderStatus.CANCELLED),
        ("canceled", OrderStatus.CANCELLED),
    ],
)
def test_template_statuses_are_read(status: str, expected: OrderStatus) -> None:
    (row,) = parse(f"{HEADER}1001,ana@example.com,10.00,EUR,{status},2024-03-05\n")

    assert isinstance(row, OrderRow)
    assert row.status is expected


@pytest.mark.parametrize(
    ("financial_status", "cancelled_at", "expected"),
    [
        ("paid", "", OrderStatus.PAID),
        ("pending", "", OrderStatus.PENDING),
        ("authorized", "", OrderStatus.PENDING),
        ("partially_paid", "", OrderStatus.PENDING),
        ("partially_refunded", "", OrderStatus.PARTIALLY_REFUNDED),
        ("refunded", "", OrderStatus.REFUNDED),
        ("voided", "", OrderStatus.CANCELLED),
        ("paid", "2024-03-06 10:00:00 +0000", OrderStatus.CANCELLED),
        ("refunded", "2024-03-06 10:00:00 +0000", OrderStatus.CANCELLED),
    ],
)
def test_shopify_financial_status_and_cancellation_give_the_status(
    financial_status: str, cancelled_at: str, expected: OrderStatus
) -> None:
    (row,) = parse(
        f"{SHOPIFY_HEADER}#1001,ana@example.com,{financial_status},10.00,"
        f"2024-03-05 14:22:10 -0500,{cancelled_at},0.00,5620112343201\n"
    )

    assert isinstance(row, OrderRow)
    assert row.status is expected


def test_amounts_keep_their_written_precision() -> None:
    (row,) = parse(
        "order_id,email,total,subtotal,tax,placed_at\n"
        "1001,ana@example.com,0012.345,12,0.0001,2024-03-05\n"
    )

    assert isinstance(row, OrderRow)
    assert (row.total, row.subtotal, row.tax) == (
        Decimal("12.345"),
        Decimal("12"),
        Decimal("0.0001"),
    )


def test_template_refunded_amount_column_is_read() -> None:
    (row,) = parse(
        "order_id,email,total,status,placed_at,refunded_amount\n"
        "1001,ana@example.com,80.00,partially_refunded,2024-03-05,15.50\n"
    )

    assert isinstance(row, OrderRow)
    assert row.refunded_amount == Decimal("15.50")


def test_quoted_commas_and_newlines_in_shopify_fields_are_read() -> None:
    rows = parse(
        "Name,Email,Financial Status,Total,Created at,Notes,Lineitem name\n"
        '#1001,ana@example.com,paid,10.00,2024-03-05 14:22:10 -0500,"Gift, please\nthanks",'
        '"Mug, 350 ml"\n'
        '#1001,,,,,,"Towel, sage"\n'
        "#1002,wei@example.com,paid,5.00,2024-03-05 15:00:00 -0500,,Pin\n"
    )

    assert [(row.row_number, row.order_id) for row in rows if isinstance(row, OrderRow)] == [
        (2, "#1001"),
        (4, "#1002"),
    ]


def test_blank_rows_are_skipped_and_rows_keep_their_spreadsheet_numbers() -> None:
    rows = parse(f"{HEADER}\n1001,ana@example.com,10.00,EUR,,2024-03-05\n,,,,,\n")

    assert rows == [order(3, "1001", "ana@example.com", "10.00", currency="EUR")]


def test_an_order_dated_within_a_day_ahead_of_the_clock_is_accepted() -> None:
    ahead = (NOW + timedelta(hours=23)).isoformat()

    (row,) = parse(f"{HEADER}1001,ana@example.com,10.00,EUR,,{ahead}\n")

    assert isinstance(row, OrderRow)
    assert row.placed_at == NOW + timedelta(hours=23)


# --- refused values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        ("1,234.50", "an amount without thousands separators, like 1234.50"),
        ("1 234.50", "an amount without thousands separators, like 1234.50"),
        ("1.234,50", "an amount without thousands separators, like 1234.50"),
        ("1,234", "an amount without thousands separators, like 1234.50"),
        ("12,50", 'an amount with a "." decimal point, like 49.90'),
        ("-5.00", "an amount that is not negative"),
        ("$12.00", "an amount without a currency sign, like 49.90"),
        ("12.00€", "an amount without a currency sign, like 49.90"),
        ("1.23456", "an amount with at most 4 decimal places"),
        ("twelve", 'an amount like 49.90 (digits and an optional "." decimal point)'),
        (".50", 'an amount like 49.90 (digits and an optional "." decimal point)'),
        ("12.", 'an amount like 49.90 (digits and an optional "." decimal point)'),
        ("1e3", 'an amount like 49.90 (digits and an optional "." decimal point)'),
        ("", "an amount like 49.90 (required)"),
    ],
)
def test_invalid_totals_are_refused(total: str, expected: str) -> None:
    rows = parse(f'{HEADER}1001,ana@example.com,"{total}",EUR,paid,2024-03-05\n')

    assert rows == [ImportRowError(2, "total", total, expected)]


def test_invalid_optional_amounts_are_refused_each_in_its_column() -> None:
    rows = parse(
        "order_id,email,total,subtotal,discounts,shipping,tax,placed_at,refunded_amount\n"
        '1001,ana@example.com,10.00,"1,000.00",-1,"4,95",€2,2024-03-05,abc\n'
    )

    assert rows == [
        ImportRowError(
            2, "subtotal", "1,000.00", "an amount without thousands separators, like 1234.50"
        ),
        ImportRowError(2, "discounts", "-1", "an amount that is not negative"),
        ImportRowError(2, "shipping", "4,95", 'an amount with a "." decimal point, like 49.90'),
        ImportRowError(2, "tax", "€2", "an amount without a currency sign, like 49.90"),
        ImportRowError(
            2,
            "refunded_amount",
            "abc",
            'an amount like 49.90 (digits and an optional "." decimal point)',
        ),
    ]


@pytest.mark.parametrize("currency", ["EURO", "€", "E1R", "US"])
def test_invalid_currencies_are_refused(currency: str) -> None:
    rows = parse(f"{HEADER}1001,ana@example.com,10.00,{currency},paid,2024-03-05\n")

    assert rows == [
        ImportRowError(2, "currency", currency, "a 3-letter ISO 4217 currency code like USD or EUR")
    ]


@pytest.mark.parametrize("status", ["shipped", "complete", "refund"])
def test_unknown_template_statuses_are_refused(status: str) -> None:
    rows = parse(f"{HEADER}1001,ana@example.com,10.00,EUR,{status},2024-03-05\n")

    assert rows == [ImportRowError(2, "status", status, STATUSES)]


def test_unknown_shopify_financial_statuses_are_refused() -> None:
    rows = parse(
        f"{SHOPIFY_HEADER}#1001,ana@example.com,chargeback,10.00,2024-03-05 14:22:10 -0500,,,1\n"
        f"#1002,ana@example.com,,10.00,2024-03-05 14:22:10 -0500,,,2\n"
    )

    expected = (
        "a Shopify financial status: paid, pending, authorized, partially_paid, "
        "partially_refunded, refunded, voided, expired"
    )
    assert rows == [
        ImportRowError(2, "Financial Status", "chargeback", expected),
        ImportRowError(3, "Financial Status", "", expected),
    ]


@pytest.mark.parametrize(
    "placed_at", ["03/05/2024", "05.03.2024", "yesterday", "2024-03-05T25:00:00", "2024/02/28"]
)
def test_invalid_order_dates_are_refused(placed_at: str) -> None:
    rows = parse(f"{HEADER}1001,ana@example.com,10.00,EUR,paid,{placed_at}\n")

    assert rows == [ImportRowError(2, "placed_at", placed_at, BAD_TIME)]


def test_a_missing_order_date_is_refused() -> None:
    rows = parse(f"{HEADER}1001,ana@example.com,10.00,EUR,paid,\n")

    assert rows == [ImportRowError(2, "placed_at", "", "the date the order was placed (required)")]


def test_an_order_dated_more_than_a_day_ahead_is_refused() -> None:
    ahead = (NOW + timedelta(days=1, seconds=1)).astimezone(timezone(timedelta(hours=2)))

    rows = parse(f"{HEADER}1001,ana@example.com,10.00,EUR,paid,{ahead.isoformat()}\n")

    assert rows == [
        ImportRowError(2, "placed_at", ahead.isoformat(), "a date that is not in the future")
    ]


def test_a_repeated_template_order_id_is_refused_naming_the_first_row() -> None:
    rows = parse(
        f"{HEADER}"
        "1001,ana@example.com,10.00,EUR,paid,2024-03-05\n"
        "1001,ana@example.com,10.00,EUR,paid,2024-03-05\n"
    )

    assert rows == [
        order(2, "1001", "ana@example.com", "10.00", currency="EUR"),
        ImportRowError(
            3, "order_id", "1001", "an order id not already used in this file (it is on row 2)"
        ),
    ]


def test_a_shopify_order_repeated_after_another_order_is_refused() -> None:
    rows = parse(
        f"{SHOPIFY_HEADER}"
        "#1001,ana@example.com,paid,10.00,2024-03-05 14:22:10 -0500,,0.00,1\n"
        "#1001,ana@example.com,,,,,,\n"
        "#1002,wei@example.com,paid,5.00,2024-03-05 15:00:00 -0500,,0.00,2\n"
        "#1001,ana@example.com,paid,10.00,2024-03-05 14:22:10 -0500,,0.00,1\n"
        "#1001,ana@example.com,,,,,,\n"
    )

    assert [row.row_number for row in rows if isinstance(row, OrderRow)] == [2, 4]
    assert rows[2:] == [
        ImportRowError(
            5, "Name", "#1001", "an order id not already used in this file (it is on row 2)"
        )
    ]


def test_a_shopify_order_without_an_email_is_refused() -> None:
    rows = parse(
        f"{SHOPIFY_HEADER}#1003,,paid,10.00,2024-03-05 14:22:10 -0500,,0.00,1\n#1003,,,,,,,\n"
    )

    assert rows == [ImportRowError(2, "Email", "", "an email address: order #1003 has no email")]
    assert str(rows[0]) == (
        'row 2, column "Email" is blank — expected an email address: order #1003 has no email'
    )


def test_invalid_and_missing_emails_are_refused() -> None:
    rows = parse(
        f"{HEADER}1001,ana@example,10.00,EUR,paid,2024-03-05\n1002,,10.00,EUR,paid,2024-03-05\n"
    )

    assert rows == [
        ImportRowError(
            2,
            "email",
            "ana@example",
            "an email address like name@example.com (one @, a dot in the domain, no spaces)",
        ),
        ImportRowError(3, "email", "", "an email address (required)"),
    ]


def test_short_rows_are_padded_and_extra_values_refused() -> None:
    rows = parse(
        "order_id,email,total,placed_at,currency\n"
        "1001,ana@example.com,10.00,2024-03-05\n"
        "1002,wei@example.com,1,234.00,2024-03-05,EUR\n"
    )

    assert rows == [
        order(2, "1001", "ana@example.com", "10.00"),
        ImportRowError(
            3,
            "column 6",
            "EUR",
            "no value beyond the header's 5 columns "
            "(is a value containing a comma missing its quotes?)",
        ),
    ]


def test_missing_and_overlong_order_ids_are_refused() -> None:
    long_id = "A" * 101
    rows = parse(
        f"{HEADER}"
        ",ana@example.com,10.00,EUR,paid,2024-03-05\n"
        f"{long_id},ana@example.com,10.00,EUR,paid,2024-03-05\n"
    )

    assert rows == [
        ImportRowError(2, "order_id", "", "an order id (required)"),
        ImportRowError(3, "order_id", long_id, "an order id of at most 100 characters"),
    ]


# --- refused files ---------------------------------------------------------------------------


def test_a_file_missing_required_columns_is_refused() -> None:
    with pytest.raises(ImportFileError) as caught:
        OrderCsvReader(io.BytesIO(b"order_id,email,amount\n1001,ana@example.com,10.00\n"))

    assert str(caught.value) == (
        'the file lacks the required columns "total", "placed_at" (its columns are '
        '"order_id", "email", "amount"); expected the Tally template (order_id, email, total, '
        "subtotal, discounts, shipping, tax, currency, status, placed_at) "
        "or a Shopify order export"
    )


def test_a_file_with_an_unknown_column_is_refused() -> None:
    with pytest.raises(ImportFileError) as caught:
        OrderCsvReader(io.BytesIO(b"order_id,email,total,placed_at,Notes\n"))

    assert str(caught.value) == (
        'unknown column "Notes": the columns of a Tally template file are order_id, email, '
        "total, subtotal, discounts, shipping, tax, currency, status, placed_at "
        "and refunded_amount"
    )


def test_a_trimmed_shopify_export_is_refused_naming_its_missing_columns() -> None:
    with pytest.raises(ImportFileError) as caught:
        OrderCsvReader(io.BytesIO(b"Name,Email,Paid at,Total,Created at,Lineitem name\n"))

    assert str(caught.value) == (
        'the file looks like a Shopify order export but lacks "Financial Status"; '
        "export the orders again from Shopify with all columns"
    )


def test_a_file_naming_a_column_twice_is_refused() -> None:
    with pytest.raises(ImportFileError) as caught:
        OrderCsvReader(io.BytesIO(b"order_id,email,total,placed_at,Total\n"))

    assert str(caught.value) == 'the column "Total" appears twice (columns 3 and 5)'


def test_an_empty_file_is_refused() -> None:
    with pytest.raises(ImportFileError) as caught:
        OrderCsvReader(io.BytesIO(b"\xef\xbb\xbf\r\n"))

    assert str(caught.value) == "the file is empty: expected a header row and at least one row"


def test_a_file_that_is_not_utf8_is_refused_before_any_order_is_read() -> None:
    data = f"{HEADER}1001,ana@example.com,10.00,EUR,paid,2024-03-05\n".encode()
    data += b"1002,zo\xeb@example.com,10.00,EUR,paid,2024-03-05\n"

    with pytest.raises(ImportFileError) as caught:
        OrderCsvReader(io.BytesIO(data))

    offset = data.index(b"\xeb")
    assert str(caught.value) == (
        f"the file is not UTF-8: invalid byte 0xEB on row 3 (byte offset {offset}); "
        'save the file as "CSV UTF-8 (Comma delimited)" and upload it again'
    )


def test_broken_quoting_stops_the_file_at_its_row() -> None:
    rows = parse_orders(
        io.BytesIO(
            f'{HEADER}1001,ana@example.com,10.00,EUR,paid,2024-03-05\n1002,"wei@example.com\n'.encode()
        ),
        now=NOW,
    )

    assert next(rows) == order(2, "1001", "ana@example.com", "10.00", currency="EUR")
    with pytest.raises(
        ImportFileError, match=r"^row 3 is not valid CSV \(unexpected end of data\)"
    ):
        next(rows)


# --- hostile input ---------------------------------------------------------------------------

NUL_EXPECTED = (
    "a value without NUL characters (the invisible character shown as \\0, "
    "left by a damaged file or a faulty export: delete it)"
)


def test_a_nul_character_in_any_value_refuses_the_order_naming_the_column() -> None:
    rows = parse(
        f"{HEADER}"
        "10\x0001,ana@example.com,10.00,EUR,paid,2024-03-05\n"
        "1002,wei@example.com,5.00,E\x00R,pa\x00id,2024-03-05\n"
        "1003,jo@example.com,1.00,EUR,paid,2024-03-05\n"
    )

    assert rows == [
        ImportRowError(2, "order_id", "10\x0001", NUL_EXPECTED),
        ImportRowError(3, "currency", "E\x00R", NUL_EXPECTED),
        ImportRowError(3, "status", "pa\x00id", NUL_EXPECTED),
        order(4, "1003", "jo@example.com", "1.00", currency="EUR"),
    ]
    assert str(rows[0]) == f'row 2, column "order_id": "10\\001" — expected {NUL_EXPECTED}'


def test_a_nul_character_on_a_shopify_line_item_row_is_not_read() -> None:
    # Only an order's first row is read; the other line items' values are ignored.
    rows = parse(
        f"{SHOPIFY_HEADER}"
        "#1001,ana@example.com,paid,10.00,2024-03-05 14:22:10 -0500,,0.00,1\n"
        "#1001,ana@example.com,,,,,\x00,\n"
        "#1002,wei@example.com,paid,5.00,2024-03-05 15:00:00 -0500,,0.00,2\x00\n"
    )

    assert [row.row_number for row in rows if isinstance(row, OrderRow)] == [2]
    assert rows[1:] == [ImportRowError(4, "Id", "2\x00", NUL_EXPECTED)]


@pytest.mark.parametrize(
    ("placed_at", "expected"),
    [
        # No UTC equivalent: converting them overflows.
        ("9999-12-31T23:59:59-23:59", "a date that is not in the future"),
        ("0001-01-01T00:00:00+23:59", "a date on or after 1970-01-01"),
        ("9999-12-31", "a date that is not in the future"),
        ("1969-12-31T23:59:59Z", "a date on or after 1970-01-01"),
        ("1970-01-01T00:59:59+01:00", "a date on or after 1970-01-01"),
        ("0001-01-01", "a date on or after 1970-01-01"),
    ],
)
def test_order_dates_out_of_range_are_refused(placed_at: str, expected: str) -> None:
    rows = parse(f"{HEADER}1001,ana@example.com,10.00,EUR,paid,{placed_at}\n")

    assert rows == [ImportRowError(2, "placed_at", placed_at, expected)]


def test_an_order_placed_at_the_start_of_1970_is_accepted() -> None:
    rows = parse(f"{HEADER}1001,ana@example.com,10.00,EUR,paid,1970-01-01T01:00:00+01:00\n")

    assert rows == [
        order(
            2,
            "1001",
            "ana@example.com",
            "10.00",
            currency="EUR",
            placed_at=datetime(1970, 1, 1, tzinfo=UTC),
        )
    ]


@pytest.mark.parametrize(
    ("placed_at", "expected"),
    [
        ("2024-02-30", "a real date (2024-02-30 is not one: February 2024 has 29 days)"),
        ("2023-02-29T10:00:00Z", "a real date (2023-02-29 is not one: February 2023 has 28 days)"),
        (
            "2024-04-31 14:22:10 -0500",
            "a real date (2024-04-31 is not one: April 2024 has 30 days)",
        ),
        ("2024-13-01", "a real date (2024-13-01 is not one: there is no month 13)"),
        ("2024-00-10", "a real date (2024-00-10 is not one: there is no month 0)"),
    ],
)
def test_an_order_date_that_does_not_exist_is_refused_as_not_a_real_date(
    placed_at: str, expected: str
) -> None:
    rows = parse(f"{HEADER}1001,ana@example.com,10.00,EUR,paid,{placed_at}\n")

    assert rows == [ImportRowError(2, "placed_at", placed_at, expected)]


def test_cells_neutralised_against_formulas_are_read_as_they_were() -> None:
    rows = parse(
        f"{HEADER}'=1001,ana@example.com,'-5.00,EUR,paid,2024-03-05\n"
        "'@1002,ana@example.com,5.00,EUR,paid,2024-03-05\n"
    )

    assert rows == [
        ImportRowError(2, "total", "-5.00", "an amount that is not negative"),
        order(3, "@1002", "ana@example.com", "5.00", currency="EUR"),
    ]


def test_a_date_without_a_time_is_midnight_in_the_stores_zone() -> None:
    from zoneinfo import ZoneInfo

    data = b"order_id,email,total,placed_at\nA1,a@example.com,10.00,2025-01-05\n" + (
        b"A2,a@example.com,10.00,2025-01-05T10:00:00\n"
    )
    with OrderCsvReader(io.BytesIO(data), now=NOW, zone=ZoneInfo("America/Sao_Paulo")) as reader:
        rows = list(reader)
    assert [row.placed_at for row in rows if isinstance(row, OrderRow)] == [
        datetime(2025, 1, 5, 3, tzinfo=UTC),  # midnight in Sao Paulo (UTC-3)
        datetime(2025, 1, 5, 10, tzinfo=UTC),  # a time without an offset stays UTC
    ]
