"""Customer import files: every accepted layout, every refused value, every refused file."""

from __future__ import annotations

import io
import tracemalloc
from datetime import date
from pathlib import Path

import pytest

from tally.imports.customers_csv import (
    CustomerCsvReader,
    CustomerRow,
    detect_customer_format,
    parse_customers,
)
from tally.imports.formats import (
    ImportFileError,
    ImportRowError,
    SeenKeys,
    customer_template_csv,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "imports"
TODAY = date(2025, 6, 1)
BAD_DATE = (
    "a date written YYYY-MM-DD or YYYY/MM/DD "
    "(orders like MM/DD/YYYY or DD/MM/YYYY are ambiguous and not accepted)"
)
BAD_EMAIL = "an email address like name@example.com (one @, a dot in the domain, no spaces)"
RESAVE = 'save the file as "CSV UTF-8 (Comma delimited)" and upload it again'


def parse(data: bytes) -> list[CustomerRow | ImportRowError]:
    return list(parse_customers(io.BytesIO(data), today=TODAY))


def customer(row: int, email: str, **values: object) -> CustomerRow:
    fields: dict[str, object] = {
        "first_name": None,
        "last_name": None,
        "points": None,
        "birthday": None,
        "vip_tier": None,
        "external_id": None,
    }
    fields.update(values)
    return CustomerRow(row_number=row, email=email, **fields)  # type: ignore[arg-type]


class OneWayStream(io.BytesIO):
    """A pipe-like binary stream: it says it cannot seek."""

    def seekable(self) -> bool:
        return False


# --- accepted layouts ------------------------------------------------------------------------


def test_tally_template_file_is_read_with_values_trimmed_and_emails_lowercased() -> None:
    with CustomerCsvReader(FIXTURES / "customers_tally.csv", today=TODAY) as reader:
        rows = list(reader)
        assert reader.format_name == "Tally template"
        assert reader.format.key == "tally"
        assert reader.headers == (
            "email",
            "first_name",
            "last_name",
            "points",
            "birthday",
            "vip_tier",
        )

    assert rows == [
        customer(
            2,
            "ana.souza@example.com",
            first_name="Ana",
            last_name="Souza",
            points=1250,
            birthday=date(1990, 4, 17),
            vip_tier="Gold",
        ),
        customer(3, "wei.li@example.com", first_name="Wei", last_name="Li", points=300),
        customer(
            4,
            "jordan.okafor@example.org",
            first_name="Jordan",
            last_name="Okafor, Jr.",
            points=0,
            birthday=date(1985, 11, 2),
            vip_tier="Silver",
        ),
        customer(5, "zoe.muller@example.de", first_name="Zoë", last_name="Müller"),
    ]


def test_name_email_points_file_splits_the_name_at_the_first_space() -> None:
    reader = CustomerCsvReader(FIXTURES / "customers_name_email_points.csv", today=TODAY)

    assert reader.format_name == "Name/Email/Points"
    assert list(reader) == [
        customer(2, "ana.souza@example.com", first_name="Ana", last_name="Souza", points=1250),
        customer(
            3,
            "mary.whitfield@example.com",
            first_name="Mary",
            last_name="Ann Whitfield",
            points=480,
        ),
        customer(4, "prince@example.net", first_name="Prince", points=0),
    ]


def test_smile_io_export_is_read() -> None:
    reader = CustomerCsvReader(FIXTURES / "customers_smile_io.csv", today=TODAY)

    assert reader.format_name == "Smile.io export"
    assert list(reader) == [
        customer(2, "ana.souza@example.com", points=1250),
        customer(3, "wei.li@example.com", points=300),
        customer(4, "kofi.mensah@example.com", points=0),
    ]


def test_yotpo_export_with_crlf_line_ends_is_read() -> None:
    reader = CustomerCsvReader(FIXTURES / "customers_yotpo.csv", today=TODAY)

    assert reader.format_name == "Yotpo export"
    assert list(reader) == [
        customer(
            2,
            "ana.souza@example.com",
            first_name="Ana",
            last_name="Souza",
            points=1250,
            birthday=date(1990, 4, 17),
        ),
        customer(3, "wei.li@example.com", first_name="Wei", last_name="Li", points=300),
        customer(
            4,
            "kofi.mensah@example.com",
            first_name="Kofi",
            last_name="Mensah",
            points=0,
            birthday=date(1978, 9, 30),
        ),
    ]


def test_shopify_customer_export_keeps_the_customer_id_and_ignores_other_columns() -> None:
    reader = CustomerCsvReader(FIXTURES / "customers_shopify.csv", today=TODAY)

    assert reader.format_name == "Shopify customer export"
    # The first customer's Note spans two lines: the next customer is still row 3.
    assert list(reader) == [
        customer(
            2,
            "teo.villasenor@example.com",
            first_name="Teodoro",
            last_name="Villaseñor",
            external_id="7210448301122",
            accepts_marketing=False,
        ),
        customer(
            3,
            "hollis.pettibone@example.com",
            first_name="Hollis",
            last_name="Pettibone",
            external_id="7210448301123",
            accepts_marketing=True,
        ),
        customer(
            4, "guest.buyer@example.net", external_id="7210448301124", accepts_marketing=False
        ),
    ]


def test_shipped_template_is_a_valid_tally_template_file() -> None:
    template = customer_template_csv()
    reader = CustomerCsvReader(io.BytesIO(template.encode()), today=TODAY)

    rows = list(reader)

    assert template.splitlines()[0] == "email,first_name,last_name,points,birthday,vip_tier"
    assert reader.format_name == "Tally template"
    assert len(rows) == 3
    assert all(isinstance(row, CustomerRow) for row in rows)


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        (["email", "first_name", "last_name", "points", "birthday", "vip_tier"], "tally"),
        (["vip_tier", "EMAIL"], "tally"),
        (["email"], "tally"),
        ([" Email ", "First Name", "Last_Name", "POINTS"], "tally"),
        (["Name", "Email", "Points"], "name_email_points"),
        (["Name", "Email"], "name_email_points"),
        (["email", "points"], "smile_io"),
        (["Email", "First Name", "Last Name", "Points Balance", "Birthday"], "yotpo"),
        (["Email", "Points Balance"], "yotpo"),
        (
            [
                "Customer ID",
                "First Name",
                "Last Name",
                "Email",
                "Accepts Email Marketing",
                "Default Address Company",
                "Total Spent",
                "Total Orders",
                "Tags",
                "Note",
                "Tax Exempt",
            ],
            "shopify",
        ),
        (["First Name", "Last Name", "Email", "Total Spent", "Total Orders"], "shopify"),
        (["email", "points", ""], "smile_io"),
    ],
)
def test_layout_is_detected_from_the_headers(headers: list[str], key: str) -> None:
    assert detect_customer_format(headers).key == key


def test_utf8_bom_crlf_and_quoted_commas_and_newlines_are_read() -> None:
    data = (
        b"\xef\xbb\xbfemail,first_name,last_name,vip_tier\r\n"
        b'ana@example.com,"Ana, Maria","Souza\r\nda Silva","Gold ""Plus"""\r\n'
        b"wei@example.com,Wei,Li,\r\n"
    )

    assert parse(data) == [
        customer(
            2,
            "ana@example.com",
            first_name="Ana, Maria",
            last_name="Souza\r\nda Silva",
            vip_tier='Gold "Plus"',
        ),
        customer(3, "wei@example.com", first_name="Wei", last_name="Li"),
    ]


def test_blank_rows_are_skipped_and_rows_keep_their_spreadsheet_numbers() -> None:
    data = b"email,points\n\nana@example.com,1\n,\n  ,  \nwei@example.com,2\n"

    assert parse(data) == [
        customer(3, "ana@example.com", points=1),
        customer(6, "wei@example.com", points=2),
    ]


def test_a_short_row_is_read_as_if_its_last_values_were_blank() -> None:
    assert parse(b"email,first_name,points\nana@example.com\n") == [customer(2, "ana@example.com")]


def test_a_header_without_rows_yields_nothing() -> None:
    assert parse(b"email,points\r\n") == []


def test_a_path_given_as_text_is_opened_and_read() -> None:
    rows = list(parse_customers(str(FIXTURES / "customers_smile_io.csv")))

    assert [row.email for row in rows if isinstance(row, CustomerRow)] == [
        "ana.souza@example.com",
        "wei.li@example.com",
        "kofi.mensah@example.com",
    ]


def test_a_stream_that_cannot_seek_is_read() -> None:
    stream = OneWayStream(b"email,points\nana@example.com,5\n")

    assert list(parse_customers(stream, today=TODAY)) == [customer(2, "ana@example.com", points=5)]


def test_the_callers_stream_is_left_open_after_reading_and_closing() -> None:
    stream = io.BytesIO(b"email\nana@example.com\n")
    with CustomerCsvReader(stream) as reader:
        list(reader)

    assert not stream.closed


def test_a_stream_read_from_its_current_position() -> None:
    stream = io.BytesIO(b"ignored preamble\nemail\nana@example.com\n")
    stream.seek(17)

    assert list(parse_customers(stream, today=TODAY)) == [customer(2, "ana@example.com")]


class PipeStream(io.BytesIO):
    """A stream that claims to seek but fails to say where it is, like some pipes."""

    def tell(self) -> int:
        raise OSError("illegal seek")


def test_a_stream_that_fails_to_tell_its_position_is_read() -> None:
    stream = PipeStream(b"email\nana@example.com\n")

    assert list(parse_customers(stream, today=TODAY)) == [customer(2, "ana@example.com")]


def test_a_text_mode_stream_is_refused() -> None:
    with pytest.raises(TypeError, match="binary mode"):
        CustomerCsvReader(io.StringIO("email\nana@example.com\n"))  # type: ignore[arg-type]


def test_memory_stays_flat_while_streaming_a_large_file(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    with path.open("w", encoding="utf-8", newline="") as file:
        file.write("email,first_name,last_name,points,birthday,vip_tier\n")
        for number in range(100_000):
            file.write(f"customer{number}@example.com,First,Last,{number},1990-01-01,Gold\n")

    tracemalloc.start()
    try:
        count = sum(1 for _ in parse_customers(path, today=TODAY))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert count == 100_000
    # 100,000 rows held at once would take well over 30 MB; the duplicate table takes 3 MB.
    assert peak < 6_000_000


# --- refused values --------------------------------------------------------------------------


@pytest.mark.parametrize("points", ["1,200", "1.200", "1 200", "12,000,000", "1'200", "1\u00a0200"])
def test_points_with_thousands_separators_are_refused(points: str) -> None:
    data = f'email,points\nana@example.com,"{points}"\n'.encode()

    assert parse(data) == [
        ImportRowError(2, "points", points, "a whole number without thousands separators")
    ]


def test_the_thousands_separator_message_reads_as_documented() -> None:
    (error,) = parse(b'email,points\nana@example.com,"1,200"\n')

    assert str(error) == (
        'row 2, column "points": "1,200" — expected a whole number without thousands separators'
    )


@pytest.mark.parametrize("points", ["12.5", "0.5", "1,5", "100.25", ".5"])
def test_points_with_decimals_are_refused(points: str) -> None:
    data = f'email,points\nana@example.com,"{points}"\n'.encode()

    assert parse(data) == [ImportRowError(2, "points", points, "a whole number (no decimals)")]


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ("-5", "a whole number that is not negative"),
        ("2147483648", "a whole number no larger than 2147483647"),
        ("ten", "a whole number like 250"),
        ("+5", "a whole number like 250"),
        ("\u0665", "a whole number like 250"),
    ],
)
def test_other_points_values_are_refused(points: str, expected: str) -> None:
    data = f"email,points\nana@example.com,{points}\n".encode()

    assert parse(data) == [ImportRowError(2, "points", points, expected)]


def test_the_largest_points_value_is_accepted() -> None:
    assert parse(b"email,points\nana@example.com,2147483647\n") == [
        customer(2, "ana@example.com", points=2_147_483_647)
    ]


@pytest.mark.parametrize(
    "email",
    [
        "ana",
        "ana@",
        "@example.com",
        "ana@example",
        "ana@@example.com",
        "ana@b@example.com",
        "ana souza@example.com",
        "ana@example.com.",
        "ana@.example.com",
        "ana@example..com",
    ],
)
def test_invalid_emails_are_refused(email: str) -> None:
    data = f"email,points\n{email},10\n".encode()

    assert parse(data) == [ImportRowError(2, "email", email, BAD_EMAIL)]


def test_an_overlong_email_is_refused() -> None:
    email = "a" * 250 + "@example.com"

    assert parse(f"email\n{email}\n".encode()) == [
        ImportRowError(2, "email", email, "an email address of at most 254 characters")
    ]


def test_a_row_with_values_but_no_email_is_refused() -> None:
    (error,) = parse(b"email,first_name\n,Ana\n")

    assert error == ImportRowError(2, "email", "", "an email address (required)")
    assert str(error) == 'row 2, column "email" is blank — expected an email address (required)'


@pytest.mark.parametrize(
    "birthday",
    ["04/17/1990", "17/04/1990", "17.04.1990", "1990-4-17", "19900417", "1990-W16-2", "April 1990"],
)
def test_birthdays_not_written_year_first_are_refused(birthday: str) -> None:
    data = f"email,birthday\nana@example.com,{birthday}\n".encode()

    assert parse(data) == [ImportRowError(2, "birthday", birthday, BAD_DATE)]


def test_a_birthday_that_does_not_exist_is_refused_as_not_a_real_date() -> None:
    data = b"email,birthday\nana@example.com,2023-02-29\nwei@example.com,1993/13/01\n"

    assert parse(data) == [
        ImportRowError(
            2,
            "birthday",
            "2023-02-29",
            "a real date (2023-02-29 is not one: February 2023 has 28 days)",
        ),
        ImportRowError(
            3, "birthday", "1993/13/01", "a real date (1993/13/01 is not one: there is no month 13)"
        ),
    ]


def test_a_birthday_in_the_future_is_refused_and_today_is_accepted() -> None:
    data = b"email,birthday\nana@example.com,2025-06-02\nwei@example.com,2025-06-01\n"

    assert parse(data) == [
        ImportRowError(2, "birthday", "2025-06-02", "a birthday that is not in the future"),
        customer(3, "wei@example.com", birthday=date(2025, 6, 1)),
    ]


def test_a_repeated_email_is_refused_on_each_later_row_naming_the_first() -> None:
    data = (
        b"email,points\n"
        b"ana@example.com,10\n"
        b"wei@example.com,20\n"
        b"ANA@example.com ,30\n"
        b"ana@example.com,40\n"
    )

    assert parse(data) == [
        customer(2, "ana@example.com", points=10),
        customer(3, "wei@example.com", points=20),
        ImportRowError(
            4,
            "email",
            "ANA@example.com ",
            "an email address not already used in this file (it is on row 2)",
        ),
        ImportRowError(
            5,
            "email",
            "ana@example.com",
            "an email address not already used in this file (it is on row 2)",
        ),
    ]


def test_an_email_on_a_refused_row_still_counts_as_used() -> None:
    data = b"email,points\nana@example.com,1.5\nana@example.com,2\n"

    assert parse(data) == [
        ImportRowError(2, "points", "1.5", "a whole number (no decimals)"),
        ImportRowError(
            3,
            "email",
            "ana@example.com",
            "an email address not already used in this file (it is on row 2)",
        ),
    ]


def test_names_longer_than_100_characters_are_refused() -> None:
    long_name = "N" * 101
    data = f"email,first_name,last_name\nana@example.com,{long_name},{'L' * 100}\n".encode()

    assert parse(data) == [
        ImportRowError(2, "first_name", long_name, "a name of at most 100 characters")
    ]


def test_a_full_name_whose_part_is_longer_than_100_characters_is_refused() -> None:
    name = "Ana " + "S" * 101
    data = f"Name,Email\n{name},ana@example.com\n".encode()

    assert parse(data) == [ImportRowError(2, "Name", name, "a name of at most 100 characters")]


def test_a_tier_name_longer_than_100_characters_is_refused() -> None:
    tier = "T" * 101
    data = f"email,vip_tier\nana@example.com,{tier}\n".encode()

    assert parse(data) == [
        ImportRowError(2, "vip_tier", tier, "a tier name of at most 100 characters")
    ]


def test_a_shopify_customer_id_rewritten_by_a_spreadsheet_is_refused() -> None:
    data = (
        b"Customer ID,First Name,Last Name,Email,Total Spent,Total Orders\n"
        b"7.21045E+12,Ana,Souza,ana@example.com,10.00,1\n"
    )

    assert parse(data) == [
        ImportRowError(
            2,
            "Customer ID",
            "7.21045E+12",
            "a Shopify customer ID made of digits "
            "(this one looks like a number rewritten by a spreadsheet program)",
        )
    ]


def test_every_refused_value_of_a_row_is_reported_in_one_pass() -> None:
    data = b"email,points,birthday\nnot-an-email,1.5,31/12/1990\n"

    assert parse(data) == [
        ImportRowError(2, "email", "not-an-email", BAD_EMAIL),
        ImportRowError(2, "points", "1.5", "a whole number (no decimals)"),
        ImportRowError(2, "birthday", "31/12/1990", BAD_DATE),
    ]


def test_a_value_beyond_the_header_is_refused_as_a_likely_unquoted_comma() -> None:
    data = (
        b"Name,Email,Points\nOkafor, Jordan,jordan@example.com,10\nAna Souza,ana@example.com,5,,\n"
    )

    assert parse(data) == [
        ImportRowError(
            2,
            "column 4",
            "10",
            "no value beyond the header's 3 columns "
            "(is a value containing a comma missing its quotes?)",
        ),
        customer(3, "ana@example.com", first_name="Ana", last_name="Souza", points=5),
    ]


def test_row_errors_compare_by_value_and_show_their_fields() -> None:
    error = ImportRowError(3, "points", "1,200", "a whole number without thousands separators")
    same = ImportRowError(3, "points", "1,200", "a whole number without thousands separators")

    assert error == same
    assert hash(error) == hash(same)
    assert error != ImportRowError(4, "points", "1,200", error.expected)
    assert error != "row 3"
    assert repr(error) == (
        "ImportRowError(row=3, column='points', value='1,200', "
        "expected='a whole number without thousands separators')"
    )


def test_a_long_value_is_shortened_and_its_line_breaks_shown_in_the_message() -> None:
    error = ImportRowError(7, "email", "line one\nline two " + "x" * 80, "an email address")

    assert str(error) == (
        'row 7, column "email": "line one\\nline two ' + "x" * 40 + '…" — expected an email address'
    )
    assert error.value == "line one\nline two " + "x" * 80


# --- refused files ---------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\r\n\r\n", b"\n  \n", b",,,\n"], ids=repr)
def test_an_empty_file_is_refused(data: bytes) -> None:
    with pytest.raises(ImportFileError) as caught:
        CustomerCsvReader(io.BytesIO(data))

    assert caught.value.message == "the file is empty: expected a header row and at least one row"


def test_a_file_without_an_email_column_is_refused() -> None:
    with pytest.raises(ImportFileError) as caught:
        CustomerCsvReader(io.BytesIO(b"Customer,Balance\nAna,10\n"))

    assert str(caught.value) == (
        'the file has no email column (its columns are "Customer", "Balance"); '
        "expected the Tally template (email, first_name, last_name, points, birthday, vip_tier) "
        "or an export from Smile.io, Yotpo or Shopify"
    )


def test_a_file_with_unknown_columns_is_refused() -> None:
    with pytest.raises(ImportFileError) as caught:
        CustomerCsvReader(io.BytesIO(b"email,pointz,Tier\nana@example.com,1,Gold\n"))

    assert str(caught.value) == (
        'unknown columns "pointz", "Tier": the columns of a Tally template file are '
        "email, first_name, last_name, points, birthday, vip_tier, accepts_marketing "
        "(only email is required)"
    )


def test_unknown_columns_are_named_against_the_closest_layout() -> None:
    with pytest.raises(ImportFileError) as caught:
        detect_customer_format(["Name", "Email", "Points", "Birthday"])

    assert str(caught.value) == (
        'unknown column "Birthday": the columns of a Name/Email/Points file are Name, Email, Points'
    )


def test_a_file_naming_a_column_twice_is_refused() -> None:
    with pytest.raises(ImportFileError) as caught:
        CustomerCsvReader(io.BytesIO(b"email,points,First Name,first_name\n"))

    assert str(caught.value) == ('the column "first_name" appears twice (columns 3 and 4)')


def test_a_header_of_blank_names_is_refused() -> None:
    with pytest.raises(ImportFileError, match=r"^the header row is empty$"):
        detect_customer_format(["", " "])


def test_a_file_separated_by_tabs_is_refused() -> None:
    with pytest.raises(ImportFileError) as caught:
        CustomerCsvReader(io.BytesIO(b"email\tpoints\nana@example.com\t10\n"))

    assert str(caught.value) == f"the columns are separated by tabs, not commas; {RESAVE}"


def test_a_file_separated_by_semicolons_is_refused() -> None:
    with pytest.raises(ImportFileError) as caught:
        CustomerCsvReader(io.BytesIO(b"email;points\nana@example.com;10\n"))

    assert str(caught.value) == f"the columns are separated by semicolons, not commas; {RESAVE}"


def test_a_windows_1252_file_is_refused_naming_the_row_and_byte() -> None:
    with pytest.raises(ImportFileError) as caught:
        CustomerCsvReader(FIXTURES / "customers_windows1252.csv")

    assert str(caught.value) == (
        f"the file is not UTF-8: invalid byte 0xEB on row 3 (byte offset 97); {RESAVE}"
    )


def test_a_bad_byte_far_down_the_file_is_refused_before_any_row_is_read() -> None:
    rows = b"".join(b"customer%d@example.com,1\n" % number for number in range(50_000))
    data = b"email,points\n" + rows + b"caf\xe9@example.com,1\n"

    with pytest.raises(ImportFileError) as caught:
        CustomerCsvReader(io.BytesIO(data))

    offset = data.index(b"\xe9")
    assert str(caught.value) == (
        f"the file is not UTF-8: invalid byte 0xE9 on row 50002 (byte offset {offset}); {RESAVE}"
    )


def test_a_bad_byte_inside_a_multiline_value_names_the_spreadsheet_row() -> None:
    data = b'email,first_name\nana@example.com,"Ana\nMaria"\nzoe@example.com,"Zo\n\xeb"\n'

    with pytest.raises(ImportFileError) as caught:
        CustomerCsvReader(io.BytesIO(data))

    assert str(caught.value) == (
        f"the file is not UTF-8: invalid byte 0xEB on row 3 (byte offset 65); {RESAVE}"
    )


def test_a_bad_byte_at_the_start_of_a_line_names_that_line() -> None:
    with pytest.raises(ImportFileError) as caught:
        CustomerCsvReader(io.BytesIO(b"email\r\nana@example.com\r\n\xff@example.com\r\n"))

    assert str(caught.value) == (
        f"the file is not UTF-8: invalid byte 0xFF on row 3 (byte offset 24); {RESAVE}"
    )


def test_a_bad_byte_after_an_unreadable_value_is_located_by_byte_offset_alone() -> None:
    # An unclosed quote swallows the rest of the file, past the csv module's field size limit,
    # so the row cannot be counted.
    data = b'email,first_name\nana@example.com,"' + b"a" * 200_000 + b"\xff\n"

    with pytest.raises(ImportFileError) as caught:
        CustomerCsvReader(io.BytesIO(data))

    assert str(caught.value) == (
        f"the file is not UTF-8: invalid byte 0xFF at byte offset {len(data) - 2}; {RESAVE}"
    )


def test_a_file_cut_inside_a_character_is_refused() -> None:
    data = "email,first_name\nana@example.com,Zoë".encode()[:-1]

    with pytest.raises(ImportFileError) as caught:
        CustomerCsvReader(io.BytesIO(data))

    assert str(caught.value) == (
        f"the file is not UTF-8: invalid byte 0xC3 on row 2 (byte offset {len(data) - 1}); {RESAVE}"
    )


def test_a_bad_byte_in_a_stream_that_cannot_seek_is_found_before_any_row() -> None:
    stream = OneWayStream(b"email\nana@example.com\nzo\xeb@example.com\n")

    with pytest.raises(ImportFileError) as caught:
        CustomerCsvReader(stream)

    assert str(caught.value) == (
        f"the file is not UTF-8: invalid byte 0xEB on row 3 (byte offset 24); {RESAVE}"
    )


def test_a_utf16_file_is_refused() -> None:
    data = "email,points\r\nana@example.com,10\r\n".encode("utf-16")

    with pytest.raises(ImportFileError) as caught:
        CustomerCsvReader(io.BytesIO(data))

    assert str(caught.value) == (
        'the file is encoded as UTF-16 (Excel\'s "Unicode Text"); '
        'save it as "CSV UTF-8 (Comma delimited)" and upload it again'
    )


def test_an_excel_workbook_is_refused() -> None:
    with pytest.raises(ImportFileError) as caught:
        CustomerCsvReader(io.BytesIO(b"PK\x03\x04\x14\x00\x06\x00rest of a zip"))

    assert str(caught.value) == (
        "the file is a spreadsheet workbook (.xlsx), not CSV; "
        'save it as "CSV UTF-8 (Comma delimited)" and upload it again'
    )


def test_an_unclosed_quote_stops_the_file_at_its_row() -> None:
    data = b'email,first_name\nana@example.com,Ana\nwei@example.com,"Wei\nzoe@example.com,Zoe\n'
    rows = parse_customers(io.BytesIO(data), today=TODAY)

    assert next(rows) == customer(2, "ana@example.com", first_name="Ana")
    with pytest.raises(ImportFileError) as caught:
        next(rows)
    assert str(caught.value) == (
        "row 3 is not valid CSV (unexpected end of data); check that every quoted value on it "
        "starts and ends with a double quote and that quotes inside it are doubled"
    )


def test_text_after_a_closing_quote_stops_the_file_at_its_row() -> None:
    rows = parse_customers(io.BytesIO(b'email,first_name\nana@example.com,"Ana" Maria\n'))

    with pytest.raises(ImportFileError, match=r"^row 2 is not valid CSV \(',' expected"):
        next(rows)


def test_a_broken_header_is_refused() -> None:
    with pytest.raises(ImportFileError, match=r"^row 1 is not valid CSV"):
        CustomerCsvReader(io.BytesIO(b'email,"points\n'))


# --- duplicate table -------------------------------------------------------------------------


def test_seen_keys_remember_the_first_row_of_each_key_as_the_table_grows() -> None:
    seen = SeenKeys()
    first_rows = [seen.first_row(f"customer{number}@example.com", number) for number in range(5000)]

    again = [seen.first_row(f"customer{number}@example.com", 9999) for number in range(5000)]

    assert first_rows == [None] * 5000
    assert again == list(range(5000))
    assert len(seen) == 5000


# --- hostile input ---------------------------------------------------------------------------

NUL_EXPECTED = (
    "a value without NUL characters (the invisible character shown as \\0, "
    "left by a damaged file or a faulty export: delete it)"
)


def test_a_nul_character_in_any_value_refuses_the_row_naming_the_column() -> None:
    data = (
        b"email,first_name,points\n"
        b"ana\x00@example.com,Ana,5\n"
        b"wei@example.com,W\x00ei,3\x00\n"
        b"ok@example.com,Ok,1\n"
    )

    rows = parse(data)

    assert rows == [
        ImportRowError(2, "email", "ana\x00@example.com", NUL_EXPECTED),
        ImportRowError(3, "first_name", "W\x00ei", NUL_EXPECTED),
        ImportRowError(3, "points", "3\x00", NUL_EXPECTED),
        customer(4, "ok@example.com", first_name="Ok", points=1),
    ]
    assert str(rows[0]) == f'row 2, column "email": "ana\\0@example.com" — expected {NUL_EXPECTED}'
    assert "\x00" not in str(rows[0])


def test_a_nul_character_in_a_column_the_layout_ignores_refuses_the_row_too() -> None:
    data = (
        b"Customer ID,First Name,Last Name,Email,Total Spent,Total Orders,Note\n"
        b"'1,Ana,Souza,ana@example.com,10.00,1,da\x00maged\n"
    )

    assert parse(data) == [ImportRowError(2, "Note", "da\x00maged", NUL_EXPECTED)]


def test_a_nul_character_in_the_header_refuses_the_file() -> None:
    # What a UTF-16 file without its byte order mark looks like when read as UTF-8.
    data = "email,points\nana@example.com,5\n".encode("utf-16-le")

    with pytest.raises(ImportFileError) as raised:
        parse(data)

    assert raised.value.message.startswith(
        "the header row holds a NUL character (column 1): the file is damaged or is not CSV text"
    )
    assert raised.value.message.endswith(RESAVE)


@pytest.mark.parametrize("birthday", ["1899-12-31", "0001-01-01", "0999/01/01"])
def test_a_birthday_before_1900_is_refused(birthday: str) -> None:
    data = f"email,birthday\nana@example.com,{birthday}\nwei@example.com,1900-01-01\n".encode()

    assert parse(data) == [
        ImportRowError(2, "birthday", birthday, "a birthday on or after 1900-01-01"),
        customer(3, "wei@example.com", birthday=date(1900, 1, 1)),
    ]


def test_a_birthday_in_year_0_is_not_a_real_date() -> None:
    assert parse(b"email,birthday\nana@example.com,0000-01-01\n") == [
        ImportRowError(
            2, "birthday", "0000-01-01", "a real date (0000-01-01 is not one: there is no year 0)"
        )
    ]


def test_cells_neutralised_against_formulas_are_read_as_they_were() -> None:
    # As a rejected-rows file writes them (csv_safety); other quotes are the merchant's own.
    data = (
        b"email,first_name,last_name,points\n"
        b"ana@example.com,'=Ana,O'Brien,'-50\n"
        b"wei@example.com,''+Wei,'Li,'12\n"
        b"jo@example.com,\"'@Jo, Jr\",'-,7\n"
    )

    assert parse(data) == [
        ImportRowError(2, "points", "-50", "a whole number that is not negative"),
        ImportRowError(3, "points", "'12", "a whole number like 250"),
        customer(4, "jo@example.com", first_name="@Jo, Jr", last_name="-", points=7),
    ]
    assert parse(data.replace(b"'-50", b"50").replace(b"'12", b"12"))[:2] == [
        customer(2, "ana@example.com", first_name="=Ana", last_name="O'Brien", points=50),
        customer(3, "wei@example.com", first_name="'+Wei", last_name="'Li", points=12),
    ]
