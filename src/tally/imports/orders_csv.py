"""Order import files: format detection, streaming parse and validation.

Accepted files (headers are matched ignoring case, surrounding spaces and ``_`` versus space):

- the Tally template ``order_id,email,total,subtotal,discounts,shipping,tax,currency,status,
  placed_at``: ``order_id``, ``email``, ``total`` and ``placed_at`` are required; ``status`` is
  one of paid (the default when blank), fulfilled (paid and shipped), pending, refunded,
  partially_refunded or cancelled; an optional ``refunded_amount`` column may be added;
- Shopify's order export, as downloaded. It has one row per line item and the order's own
  values on its first row only, so consecutive rows with the same ``Name`` are one order. The
  order id is the ``Name`` (``#1001``, the number the merchant sees) and ``Id`` becomes the
  external id. The status comes from ``Financial Status`` (authorized and partially_paid count
  as pending, voided and expired as cancelled; a paid order whose ``Fulfillment Status`` is
  fulfilled is fulfilled, which matters to programs that award points on fulfilment), and any
  ``Cancelled at`` value makes the order cancelled. The amounts are ``Total``, ``Subtotal``,
  ``Discount Amount``, ``Shipping``, ``Taxes`` and ``Refunded Amount``; ``Created at`` is when
  it was placed.

Amounts are non-negative decimals written with digits and ``.`` (no thousands separators, at
most 4 decimal places) and read as ``Decimal``. Currencies are 3-letter ISO 4217 codes (the
shape is checked, not the list). Dates are ISO 8601 dates or date-times with ``Z`` or an offset;
a date-time without an offset, or a date alone (midnight), is taken as UTC. Orders dated before
1970-01-01 (UTC) or more than a day ahead of the clock are refused. A row with a NUL character
in any value is refused (for Shopify: the first row of an order; the others are not read).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from enum import StrEnum
from operator import itemgetter
from typing import NamedTuple

from tally.customers.emails import canonical_email, email_problem
from tally.imports.consent import read_consent
from tally.imports.formats import (
    MAX_TEXT_LENGTH,
    REJECTED_REASON_HEADERS,
    BinarySource,
    CsvReader,
    FileLayout,
    ImportFileError,
    ImportRowError,
    SeenKeys,
    is_blank,
    normalise_header,
    normalised_headers,
    quoted_list,
)
from tally.imports.values import AMOUNT_PATTERN, amount_expected, impossible_date, parse_timestamp

FUTURE_TOLERANCE = timedelta(days=1)
"""How far ahead of the clock an order date may be (exports in a local time read as UTC)."""
EARLIEST_ORDER_DATE = datetime(1970, 1, 1, tzinfo=UTC)
"""Earliest accepted order date: an older one is a placeholder or a slip, not an online order."""

_valid_amount = AMOUNT_PATTERN.fullmatch


class OrderStatus(StrEnum):
    """Payment state of an imported order."""

    PAID = "paid"
    FULFILLED = "fulfilled"
    PENDING = "pending"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"
    CANCELLED = "cancelled"


_STATUSES: dict[str, OrderStatus] = {status.value: status for status in OrderStatus}
_STATUSES["canceled"] = OrderStatus.CANCELLED
_SHOPIFY_STATUSES: dict[str, OrderStatus] = {
    "paid": OrderStatus.PAID,
    "pending": OrderStatus.PENDING,
    "authorized": OrderStatus.PENDING,
    "partially_paid": OrderStatus.PENDING,
    "partially_refunded": OrderStatus.PARTIALLY_REFUNDED,
    "refunded": OrderStatus.REFUNDED,
    "voided": OrderStatus.CANCELLED,
    "expired": OrderStatus.CANCELLED,
}

_FIELDS = (
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
    "refunded_amount",
    "cancelled_at",
    "external_id",
    "fulfillment",
    "accepts_marketing",
)


class OrderRow(NamedTuple):
    """One valid order read from an import file (``row_number`` of its first row)."""

    row_number: int
    order_id: str
    email: str
    total: Decimal
    subtotal: Decimal | None
    discounts: Decimal | None
    shipping: Decimal | None
    tax: Decimal | None
    currency: str | None
    status: OrderStatus
    placed_at: datetime
    refunded_amount: Decimal | None
    external_id: str | None = None
    accepts_marketing: bool | None = None
    """The buyer's email marketing consent as the file states it (None: not stated)."""


@dataclass(frozen=True)
class OrderFormat(FileLayout):
    """An order file layout recognised from its header row."""

    line_items: bool = False
    """One row per line item, consecutive rows of an order sharing its id (Shopify)."""


TALLY_TEMPLATE = OrderFormat(
    key="tally",
    name="Tally template",
    columns={
        "order_id": "order id",
        "email": "email",
        "total": "total",
        "subtotal": "subtotal",
        "discounts": "discounts",
        "shipping": "shipping",
        "tax": "tax",
        "currency": "currency",
        "status": "status",
        "placed_at": "placed at",
        "refunded_amount": "refunded amount",
        "accepts_marketing": "accepts marketing",
    },
    required=frozenset({"order id", "email", "total", "placed at"}),
)
SHOPIFY_ORDERS = OrderFormat(
    key="shopify",
    name="Shopify order export",
    columns={
        "order_id": "name",
        "email": "email",
        "total": "total",
        "subtotal": "subtotal",
        "discounts": "discount amount",
        "shipping": "shipping",
        "tax": "taxes",
        "currency": "currency",
        "status": "financial status",
        "placed_at": "created at",
        "refunded_amount": "refunded amount",
        "cancelled_at": "cancelled at",
        "external_id": "id",
        "fulfillment": "fulfillment status",
        # Shopify's order export says whether the buyer accepts email marketing (yes/no).
        "accepts_marketing": "accepts marketing",
    },
    required=frozenset({"name", "email", "financial status", "total", "created at"}),
    line_items=True,
    ignores_other_columns=True,
)

ORDER_FORMATS: tuple[OrderFormat, ...] = (SHOPIFY_ORDERS, TALLY_TEMPLATE)
"""Recognised layouts, most specific first: the first whose headers match is used."""

_SHOPIFY_REQUIRED = ("Name", "Email", "Financial Status", "Total", "Created at")
_TEMPLATE_COLUMNS = (
    "order_id, email, total, subtotal, discounts, shipping, tax, currency, status, placed_at"
)


def detect_order_format(headers: Sequence[str]) -> OrderFormat:
    """The layout of an order file from its header row; ``ImportFileError`` if none fits."""
    normalised = [
        "" if name in REJECTED_REASON_HEADERS else name for name in normalised_headers(headers)
    ]
    present = {name for name in normalised if name}
    for layout in ORDER_FORMATS:
        if layout.matches(present):
            return layout
    columns = quoted_list(h.strip() for h in headers if h.strip())
    if "name" in present and present & {"created at", "financial status", "lineitem name"}:
        missing = [
            header for header in _SHOPIFY_REQUIRED if normalise_header(header) not in present
        ]
        raise ImportFileError(
            f"the file looks like a Shopify order export but lacks {quoted_list(missing)}; "
            f"export the orders again from Shopify with all columns"
        )
    missing = [
        column.replace(" ", "_")
        for column in ("order id", "email", "total", "placed at")
        if column not in present
    ]
    if missing:
        raise ImportFileError(
            f"the file lacks the required {'column' if len(missing) == 1 else 'columns'} "
            f"{quoted_list(missing)} (its columns are {columns}); expected the Tally "
            f"template ({_TEMPLATE_COLUMNS}) or a Shopify order export"
        )
    known = set(TALLY_TEMPLATE.columns.values())
    unknown = [
        header.strip()
        for header, name in zip(headers, normalised, strict=True)
        if name and name not in known
    ]
    raise ImportFileError(
        f"unknown {'column' if len(unknown) == 1 else 'columns'} {quoted_list(unknown)}: "
        f"the columns of a Tally template file are {_TEMPLATE_COLUMNS} and refunded_amount"
    )


class OrderCsvReader(CsvReader[OrderRow, OrderFormat]):
    """Reads an order import file order by order (opening, closing: ``CsvReader``).

    Iterating yields, in file order, an ``OrderRow`` for each valid order and one
    ``ImportRowError`` per invalid value; blank rows are skipped. An order id seen earlier in
    the file (for Shopify: not on the row just before) is an error naming the row that used it
    first. ``now`` (aware) bounds how late an order may be dated.
    """

    def __init__(
        self, source: BinarySource, *, now: datetime | None = None, zone: tzinfo = UTC
    ) -> None:
        self._latest = (now if now is not None else datetime.now(UTC)) + FUTURE_TOLERANCE
        self._zone = zone  # a date without a time is that day in the merchant's time zone
        super().__init__(source, detect_order_format)

    def _parse(self) -> Generator[OrderRow | ImportRowError, None, None]:
        indexes, self._label = self._field_columns(_FIELDS)
        pick = itemgetter(*indexes)
        id_position = indexes[0]
        self._seen = SeenKeys(self._input.line_count)
        previous_id = ""

        def another_line_item(record: list[str]) -> bool:
            # Shopify: the rows after an order's first are its other line items.
            nonlocal previous_id
            order_id = record[id_position].strip()
            if order_id and order_id == previous_id:
                return True
            previous_id = order_id
            return False

        skip = another_line_item if self.format.line_items else None
        for row, record in self._records(skip):
            if isinstance(record, ImportRowError):
                yield record
                continue
            order_id = record[id_position].strip()
            if not order_id and is_blank(record):
                continue
            parsed = self._order(row, order_id, pick(record))
            if isinstance(parsed, OrderRow):
                yield parsed
            else:
                yield from parsed

    def _order(
        self, row: int, order_id: str, values: Sequence[str]
    ) -> OrderRow | list[ImportRowError]:
        """The order on a row, or its errors."""
        (
            raw_id,
            raw_email,
            raw_total,
            raw_subtotal,
            raw_discounts,
            raw_shipping,
            raw_tax,
            raw_currency,
            raw_status,
            raw_placed_at,
            raw_refunded,
            raw_cancelled_at,
            raw_external_id,
            raw_fulfillment,
            raw_accepts,
        ) = values
        label = self._label
        errors = self._id_errors(row, order_id, raw_id)
        canonical = canonical_email(raw_email)
        email = raw_email.strip().lower() if canonical is None else canonical
        if canonical is None:
            expected = email_problem(raw_email)
            if self.format.line_items and not email:
                expected = f"an email address: order {order_id} has no email"
            errors.append(ImportRowError(row, label["email"], raw_email, expected))
        text = raw_total.strip()
        total = Decimal(text) if _valid_amount(text) else None
        if total is None:
            errors.append(_amount_error(row, label["total"], raw_total))
        subtotal, discounts, shipping, tax, refunded = self._amounts(
            row, raw_subtotal, raw_discounts, raw_shipping, raw_tax, raw_refunded, errors
        )
        currency: str | None = raw_currency.strip().upper()
        if not currency:
            currency = None
        elif len(currency) != 3 or not (currency.isalpha() and currency.isascii()):
            errors.append(ImportRowError(row, label["currency"], raw_currency, _CURRENCY_EXPECTED))
        status = self._status(row, raw_status, raw_cancelled_at, raw_fulfillment, errors)
        text = raw_placed_at.strip()
        placed_at = parse_timestamp(text, self._zone) if text else None
        if placed_at is None or not EARLIEST_ORDER_DATE <= placed_at <= self._latest:
            errors.append(_placed_at_error(row, label["placed_at"], raw_placed_at, placed_at))
        accepts = read_consent(row, label["accepts_marketing"], raw_accepts, errors)
        if errors or total is None or status is None or placed_at is None:
            return errors
        external_id = raw_external_id.strip().removeprefix("'")
        return OrderRow(
            row,
            order_id,
            email,
            total,
            subtotal,
            discounts,
            shipping,
            tax,
            currency,
            status,
            placed_at,
            refunded,
            external_id or None,
            accepts,
        )

    def _id_errors(self, row: int, order_id: str, raw_id: str) -> list[ImportRowError]:
        """The errors of an order id: missing, too long, or already used in the file."""
        column = self._label["order_id"]
        if not order_id:
            return [ImportRowError(row, column, raw_id, _ID_REQUIRED)]
        if len(order_id) > MAX_TEXT_LENGTH:
            return [ImportRowError(row, column, raw_id, _ID_TOO_LONG)]
        first_row = self._seen.first_row(order_id, row)
        if first_row is None:
            return []
        expected = f"an order id not already used in this file (it is on row {first_row})"
        return [ImportRowError(row, column, raw_id, expected)]

    def _amounts(
        self,
        row: int,
        raw_subtotal: str,
        raw_discounts: str,
        raw_shipping: str,
        raw_tax: str,
        raw_refunded: str,
        errors: list[ImportRowError],
    ) -> tuple[Decimal | None, Decimal | None, Decimal | None, Decimal | None, Decimal | None]:
        """The optional amounts (blank: None); their errors go to ``errors``."""
        subtotal = self._optional_amount(row, "subtotal", raw_subtotal, errors)
        discounts = self._optional_amount(row, "discounts", raw_discounts, errors)
        shipping = self._optional_amount(row, "shipping", raw_shipping, errors)
        tax = self._optional_amount(row, "tax", raw_tax, errors)
        refunded = self._optional_amount(row, "refunded_amount", raw_refunded, errors)
        return subtotal, discounts, shipping, tax, refunded

    def _optional_amount(
        self, row: int, field: str, raw: str, errors: list[ImportRowError]
    ) -> Decimal | None:
        """An optional amount (blank: None); an invalid one is None, its error in ``errors``."""
        text = raw.strip()
        if not text:
            return None
        if _valid_amount(text):
            return Decimal(text)
        errors.append(_amount_error(row, self._label[field], raw))
        return None

    def _status(
        self,
        row: int,
        raw_status: str,
        raw_cancelled_at: str,
        raw_fulfillment: str,
        errors: list[ImportRowError],
    ) -> OrderStatus | None:
        """The order's status (None, with its error in ``errors``, when not one)."""
        if raw_cancelled_at.strip():
            return OrderStatus.CANCELLED  # Shopify: cancelled whatever the payment state
        text = raw_status.strip()
        shopify = self.format.line_items
        if not text and not shopify:
            return OrderStatus.PAID
        statuses = _SHOPIFY_STATUSES if shopify else _STATUSES
        status = statuses.get(text) or statuses.get(
            text.lower().replace(" ", "_").replace("-", "_")
        )
        if status is None:
            expected = _SHOPIFY_STATUS_EXPECTED if shopify else _STATUS_EXPECTED
            errors.append(ImportRowError(row, self._label["status"], raw_status, expected))
        elif status is OrderStatus.PAID and raw_fulfillment.strip().lower() == "fulfilled":
            return OrderStatus.FULFILLED  # Shopify: paid and shipped
        return status


def parse_orders(
    source: BinarySource, *, now: datetime | None = None
) -> Iterator[OrderRow | ImportRowError]:
    """Stream the orders of a file; raises ``ImportFileError`` at once for a bad file.

    A shortcut for iterating ``OrderCsvReader(source, now=now)``.
    """
    return iter(OrderCsvReader(source, now=now))


_ID_REQUIRED = "an order id (required)"
_ID_TOO_LONG = f"an order id of at most {MAX_TEXT_LENGTH} characters"
_CURRENCY_EXPECTED = "a 3-letter ISO 4217 currency code like USD or EUR"
_STATUS_EXPECTED = (
    "one of paid, fulfilled, pending, refunded, partially_refunded, cancelled (blank means paid)"
)
_SHOPIFY_STATUS_EXPECTED = "a Shopify financial status: " + ", ".join(_SHOPIFY_STATUSES)


def _amount_error(row: int, column: str, raw: str) -> ImportRowError:
    return ImportRowError(row, column, raw, amount_expected(raw.strip()))


def _placed_at_error(row: int, column: str, raw: str, placed_at: datetime | None) -> ImportRowError:
    text = raw.strip()
    if placed_at is not None:
        if placed_at < EARLIEST_ORDER_DATE:
            expected = f"a date on or after {EARLIEST_ORDER_DATE.date().isoformat()}"
        else:
            expected = "a date that is not in the future"
    elif not text:
        expected = "the date the order was placed (required)"
    else:
        expected = impossible_date(text) or (
            "an ISO 8601 date or date-time like 2024-03-05, 2024-03-05T14:22:10Z "
            "or 2024-03-05 14:22:10 -0500"
        )
    return ImportRowError(row, column, raw, expected)
