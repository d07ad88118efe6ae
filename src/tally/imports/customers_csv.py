"""Customer import files: format detection, streaming parse and validation.

Accepted files (headers are matched ignoring case, surrounding spaces and ``_`` versus space):

- the Tally template ``email,first_name,last_name,points,birthday,vip_tier`` (only ``email`` is
  required; the other columns may be left out or come in any order);
- ``Name,Email,Points``, where ``Name`` is split into first and last name at the first space;
- Smile.io's ``email,points`` export;
- Yotpo's ``Email,First Name,Last Name,Points Balance,Birthday`` export;
- Shopify's customer export, as downloaded: ``Customer ID`` becomes the external id, the name,
  email and ``Accepts Email Marketing`` columns are read, every other column is ignored.

``accepts_marketing`` (Tally) and ``Accepts Email Marketing`` / ``Accepts Marketing`` (Shopify)
hold the customer's email marketing consent: yes/no/true/false, blank for not stated.

Values are trimmed. Emails are lowercased; points are whole numbers written with digits only;
birthdays are ``YYYY-MM-DD`` or ``YYYY/MM/DD`` (day-month orders are ambiguous and refused),
from 1900-01-01 to today. A row with a NUL character in any value is refused.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
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
    normalised_headers,
    quoted_list,
)
from tally.imports.values import impossible_date, whole_number_expected

MAX_POINTS = 2_147_483_647
"""Largest accepted points balance (fits a signed 32-bit column)."""
EARLIEST_BIRTHDAY = date(1900, 1, 1)
"""Earliest accepted birthday: an older one is a placeholder or a typing slip, not a person's."""

_SHOPIFY_ID = re.compile(r"'?(\d+)", re.ASCII)

_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "points",
    "birthday",
    "vip_tier",
    "external_id",
    "accepts_marketing",
    # Shopify's current customer export names it so; older ones (and Tally's) the line above.
    "accepts_email_marketing",
)
# Either header may hold the customer's email marketing consent (imports/consent.py).
_CONSENT_COLUMNS = {
    "accepts_marketing": "accepts marketing",
    "accepts_email_marketing": "accepts email marketing",
}


class CustomerRow(NamedTuple):
    """One valid customer read from an import file (``row_number`` as a spreadsheet shows it)."""

    row_number: int
    email: str
    first_name: str | None
    last_name: str | None
    points: int | None
    birthday: date | None
    vip_tier: str | None
    external_id: str | None
    accepts_marketing: bool | None = None
    """Email marketing consent as the file states it (None: blank or no such column)."""


@dataclass(frozen=True)
class CustomerFormat(FileLayout):
    """A customer file layout (in ``columns``, ``name`` is a full name to split)."""

    layout: str
    """The columns as the source writes them, for messages."""


TALLY_TEMPLATE = CustomerFormat(
    key="tally",
    name="Tally template",
    columns={
        "email": "email",
        "first_name": "first name",
        "last_name": "last name",
        "points": "points",
        "birthday": "birthday",
        "vip_tier": "vip tier",
        **_CONSENT_COLUMNS,
    },
    required=frozenset({"email"}),
    layout=(
        "email, first_name, last_name, points, birthday, vip_tier, accepts_marketing "
        "(only email is required)"
    ),
)
NAME_EMAIL_POINTS = CustomerFormat(
    key="name_email_points",
    name="Name/Email/Points",
    columns={"name": "name", "email": "email", "points": "points"},
    required=frozenset({"name", "email"}),
    layout="Name, Email, Points",
)
SMILE_IO = CustomerFormat(
    key="smile_io",
    name="Smile.io export",
    columns={"email": "email", "points": "points"},
    required=frozenset({"email", "points"}),
    layout="email, points",
)
YOTPO = CustomerFormat(
    key="yotpo",
    name="Yotpo export",
    columns={
        "email": "email",
        "first_name": "first name",
        "last_name": "last name",
        "points": "points balance",
        "birthday": "birthday",
    },
    required=frozenset({"email", "points balance"}),
    layout="Email, First Name, Last Name, Points Balance, Birthday",
)
SHOPIFY_CUSTOMERS = CustomerFormat(
    key="shopify",
    name="Shopify customer export",
    columns={
        "external_id": "customer id",
        "first_name": "first name",
        "last_name": "last name",
        "email": "email",
        **_CONSENT_COLUMNS,
    },
    required=frozenset({"email", "first name", "last name", "total spent", "total orders"}),
    layout=(
        "Customer ID, First Name, Last Name, Email, Accepts Email Marketing, …, Total Spent, "
        "Total Orders, …"
    ),
    ignores_other_columns=True,
)

CUSTOMER_FORMATS: tuple[CustomerFormat, ...] = (
    SHOPIFY_CUSTOMERS,
    YOTPO,
    NAME_EMAIL_POINTS,
    SMILE_IO,
    TALLY_TEMPLATE,
)
"""Recognised layouts, most specific first: the first whose headers match is used."""


def detect_customer_format(headers: Sequence[str]) -> CustomerFormat:
    """The layout of a customer file from its header row; ``ImportFileError`` if none fits."""
    normalised = [
        "" if name in REJECTED_REASON_HEADERS else name for name in normalised_headers(headers)
    ]
    present = {name for name in normalised if name}
    if "email" not in present:
        raise ImportFileError(
            "the file has no email column "
            f"(its columns are {quoted_list(h.strip() for h in headers if h.strip())}); "
            "expected the Tally template (email, first_name, last_name, points, birthday, "
            "vip_tier) or an export from Smile.io, Yotpo or Shopify"
        )
    for layout in CUSTOMER_FORMATS:
        if layout.matches(present):
            return layout
    # Name the columns that keep the closest layout from matching.
    candidates = [
        layout
        for layout in CUSTOMER_FORMATS
        if not layout.ignores_other_columns and layout.required <= present
    ]
    closest = min(candidates, key=lambda layout: len(present - set(layout.columns.values())))
    known = set(closest.columns.values())
    unknown = [
        header
        for header, name in zip(headers, normalised, strict=True)
        if name and name not in known
    ]
    raise _unknown_columns(unknown, closest)


def _unknown_columns(unknown: list[str], closest: CustomerFormat) -> ImportFileError:
    noun = "column" if len(unknown) == 1 else "columns"
    return ImportFileError(
        f"unknown {noun} {quoted_list(h.strip() for h in unknown)}: "
        f"the columns of a {closest.name} file are {closest.layout}"
    )


class CustomerCsvReader(CsvReader[CustomerRow, CustomerFormat]):
    """Reads a customer import file row by row (opening, closing: ``CsvReader``).

    Iterating yields, in file order, a ``CustomerRow`` for each valid row and one
    ``ImportRowError`` per invalid value; blank rows are skipped. An email already seen earlier
    in the file is an error naming the row that used it first.
    """

    def __init__(self, source: BinarySource, *, today: date | None = None) -> None:
        self._today = today if today is not None else datetime.now(UTC).date()
        super().__init__(source, detect_customer_format)

    def _parse(self) -> Generator[CustomerRow | ImportRowError, None, None]:
        self._split_name = "name" in self.format.columns
        fields = tuple(
            "name" if field == "first_name" and self._split_name else field for field in _FIELDS
        )
        indexes, self._label = self._field_columns(fields)
        pick = itemgetter(*indexes)
        self._seen = SeenKeys(self._input.line_count)
        for row, record in self._records():
            if isinstance(record, ImportRowError):
                yield record
                continue
            parsed = self._row(row, record, pick(record))
            if isinstance(parsed, CustomerRow):
                yield parsed
            elif parsed is not None:
                yield from parsed

    def _row(
        self, row: int, record: list[str], values: Sequence[str]
    ) -> CustomerRow | list[ImportRowError] | None:
        """The customer on a row, or its errors; None for a row without values."""
        raw_email, raw_first, raw_last, raw_points, raw_birthday, raw_tier, raw_id = values[:7]
        label = self._label
        errors: list[ImportRowError] = []
        canonical = canonical_email(raw_email)
        email = raw_email.strip().lower() if canonical is None else canonical
        if canonical is not None:
            first_row = self._seen.first_row(email, row)
            if first_row is not None:
                errors.append(
                    ImportRowError(
                        row,
                        label["email"],
                        raw_email,
                        "an email address not already used in this file "
                        f"(it is on row {first_row})",
                    )
                )
        elif email or not is_blank(record):
            errors.append(ImportRowError(row, label["email"], raw_email, email_problem(raw_email)))
        else:
            return None

        first_name = raw_first.strip()
        if self._split_name:
            first_name, _, last_name = first_name.partition(" ")
            last_name = last_name.strip()
        else:
            last_name = raw_last.strip()
        if len(first_name) > MAX_TEXT_LENGTH or len(last_name) > MAX_TEXT_LENGTH:
            errors.extend(_name_errors(row, label, raw_first, raw_last, self._split_name))
        points, birthday, tier, external_id = self._values(
            row, raw_points, raw_birthday, raw_tier, raw_id, errors
        )
        accepts = self._consent(row, values[7], values[8], errors)
        if errors:
            return errors
        return CustomerRow(
            row,
            email,
            first_name or None,
            last_name or None,
            points,
            birthday,
            tier or None,
            external_id or None,
            accepts,
        )

    def _consent(
        self, row: int, raw_accepts: str, raw_email_marketing: str, errors: list[ImportRowError]
    ) -> bool | None:
        """The row's email marketing consent, from whichever consent column holds a value."""
        field = "accepts_email_marketing" if raw_email_marketing.strip() else "accepts_marketing"
        raw = raw_email_marketing if field == "accepts_email_marketing" else raw_accepts
        return read_consent(row, self._label[field], raw, errors)

    def _values(
        self,
        row: int,
        raw_points: str,
        raw_birthday: str,
        raw_tier: str,
        raw_id: str,
        errors: list[ImportRowError],
    ) -> tuple[int | None, date | None, str, str]:
        """Points, birthday, tier and external id of a row; their errors go to ``errors``."""
        label = self._label
        text = raw_points.strip()
        points: int | None = None
        if text:
            if text.isdigit() and text.isascii() and (len(text) < 10 or int(text) <= MAX_POINTS):
                points = int(text)
            else:
                errors.append(_points_error(row, label["points"], raw_points, text))

        text = raw_birthday.strip()
        birthday: date | None = None
        if text:
            birthday = _parse_date(text)
            if birthday is None or not EARLIEST_BIRTHDAY <= birthday <= self._today:
                errors.append(_birthday_error(row, label["birthday"], raw_birthday, birthday))

        tier = raw_tier.strip()
        if len(tier) > MAX_TEXT_LENGTH:
            expected = f"a tier name of at most {MAX_TEXT_LENGTH} characters"
            errors.append(ImportRowError(row, label["vip_tier"], raw_tier, expected))

        external_id = raw_id.strip()
        if external_id:
            match = _SHOPIFY_ID.fullmatch(external_id)
            if match is None:
                errors.append(_external_id_error(row, label["external_id"], raw_id))
            else:
                external_id = match[1]
        return points, birthday, tier, external_id


def parse_customers(
    source: BinarySource, *, today: date | None = None
) -> Iterator[CustomerRow | ImportRowError]:
    """Stream the rows of a customer file; raises ``ImportFileError`` at once for a bad file.

    A shortcut for iterating ``CustomerCsvReader(source, today=today)``.
    """
    return iter(CustomerCsvReader(source, today=today))


def _parse_date(text: str) -> date | None:
    """A date written YYYY-MM-DD or YYYY/MM/DD, or None."""
    # date.fromisoformat also reads week dates and YYYYMMDD: only hand it YYYY-MM-DD.
    if len(text) != 10 or text[4] != text[7] or text[4] not in "-/":
        return None
    try:
        return date.fromisoformat(text if text[4] == "-" else text.replace("/", "-"))
    except ValueError:  # a date that does not exist, like 2023-02-29
        return None


def _name_errors(
    row: int, label: Mapping[str, str], raw_first: str, raw_last: str, split_name: bool
) -> list[ImportRowError]:
    expected = f"a name of at most {MAX_TEXT_LENGTH} characters"
    if split_name:
        return [ImportRowError(row, label["name"], raw_first, expected)]
    return [
        ImportRowError(row, label[field], raw, expected)
        for field, raw in (("first_name", raw_first), ("last_name", raw_last))
        if len(raw.strip()) > MAX_TEXT_LENGTH
    ]


def _points_error(row: int, column: str, raw: str, text: str) -> ImportRowError:
    if text.isdigit() and text.isascii():
        expected = f"a whole number no larger than {MAX_POINTS}"
    else:
        expected = whole_number_expected(text)
    return ImportRowError(row, column, raw, expected)


def _birthday_error(row: int, column: str, raw: str, birthday: date | None) -> ImportRowError:
    text = raw.strip()
    if birthday is None:
        expected = (impossible_date(text, slashes=True) if len(text) == 10 else None) or (
            "a date written YYYY-MM-DD or YYYY/MM/DD "
            "(orders like MM/DD/YYYY or DD/MM/YYYY are ambiguous and not accepted)"
        )
    elif birthday < EARLIEST_BIRTHDAY:
        expected = f"a birthday on or after {EARLIEST_BIRTHDAY.isoformat()}"
    else:
        expected = "a birthday that is not in the future"
    return ImportRowError(row, column, raw, expected)


def _external_id_error(row: int, column: str, raw: str) -> ImportRowError:
    expected = "a Shopify customer ID made of digits"
    if "e+" in raw.lower():
        expected += " (this one looks like a number rewritten by a spreadsheet program)"
    return ImportRowError(row, column, raw, expected)
