"""CSV Tally writes: formulas neutralised for spreadsheets, and read back as they were."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.csv_safety import neutralise_cell, restore_cell, writer


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ('=HYPERLINK("https://evil.example","x")', '\'=HYPERLINK("https://evil.example","x")'),
        ("+1+1", "'+1+1"),
        ("-50", "'-50"),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("'=1", "''=1"),
        ("''-2", "'''-2"),
    ],
)
def test_a_cell_a_spreadsheet_would_run_gets_a_quote_in_front(value: str, written: str) -> None:
    assert neutralise_cell(value) == written
    assert restore_cell(written) == value


@pytest.mark.parametrize(
    "value", ["", "Ana", "O'Brien", "'123", "'", "''", "50", "a=b", " =1", "ana@example.com"]
)
def test_other_cells_are_written_and_read_as_they_are(value: str) -> None:
    assert neutralise_cell(value) == value
    assert restore_cell(value) == value


def test_values_that_are_not_text_are_written_as_text() -> None:
    assert [neutralise_cell(value) for value in (None, 12, 1.5, True)] == ["", "12", "1.5", "True"]


def test_negative_numbers_stay_numbers_but_negative_text_is_quoted() -> None:
    # A spreadsheet reads the number -3 as a number; only text can smuggle a formula in.
    values = (-3, Decimal("-1.50"), "-3", -1.5)
    assert [neutralise_cell(value) for value in values] == ["-3", "-1.50", "'-3", "'-1.5"]


@given(st.text(alphabet=st.sampled_from("'=+-@\t\r\nax,\"")))
def test_restore_gives_back_what_was_neutralised(value: str) -> None:
    written = neutralise_cell(value)

    assert restore_cell(written) == value
    assert written[:1] not in {"=", "+", "-", "@", "\t", "\r"}


def test_the_writer_neutralises_every_cell_and_quotes_as_csv_does() -> None:
    out = io.StringIO()
    rows = [["name", "points"], ["=1+1", "-50"], ['say "hi", @you', "one\r\ntwo"]]

    writer(out, lineterminator="\r\n").writerows(rows)

    assert out.getvalue() == ('name,points\r\n\'=1+1,\'-50\r\n"say ""hi"", @you","one\r\ntwo"\r\n')
    read = [[restore_cell(cell) for cell in row] for row in csv.reader(io.StringIO(out.getvalue()))]
    assert read == [["name", "points"], ["=1+1", "-50"], ['say "hi", @you', "one\r\ntwo"]]
