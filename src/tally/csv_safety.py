"""CSV that is safe to open in a spreadsheet: every CSV file Tally writes goes through here.

Excel, LibreOffice and Google Sheets run a cell that starts with ``=``, ``+``, ``-`` or ``@``
(and, in some versions, a tab or carriage return followed by one) as a formula, so a value a
shopper typed into a form could run when a merchant opens a report (CSV injection). As OWASP
recommends, such a cell is written with a single quote in front, which spreadsheets read as
"this is text". A cell that already starts with quotes before one of those characters gets one
more, so ``restore_cell`` gives back exactly what was written: Tally's import readers call it on
every cell, so a rejected-rows file can be imported again as it is.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Protocol

FORMULA_STARTS = frozenset("=+-@\t\r")
"""First characters that make a spreadsheet read a cell as a formula."""

_NEUTRALISED = re.compile(r"'+[=+\-@\t\r]")
_NEUTRALISED_BYTES = re.compile(rb"'[=+\-@\t\r]")


class _Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


def neutralise_cell(value: object) -> str:
    """The cell as text, with a ``'`` in front when a spreadsheet would run it as a formula.

    A number Tally itself holds (an int or a Decimal, such as -30 points) is written as it is:
    a spreadsheet reads ``-30`` as the number, never as a formula, and a quote would turn
    every debit in a ledger export into text.
    """
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return str(value)
    text = "" if value is None else str(value)
    if text and (text[0] in FORMULA_STARTS or _NEUTRALISED.match(text)):
        return "'" + text
    return text


def restore_cell(text: str) -> str:
    """The value ``neutralise_cell`` was given, from the cell it wrote (other text unchanged)."""
    if text.startswith("'") and _NEUTRALISED.match(text):
        return text[1:]
    return text


def may_hold_neutralised(data: bytes) -> bool:
    """Whether bytes of a CSV file may contain a cell ``restore_cell`` would change.

    A quick test over the raw bytes, so a reader can skip ``restore_cell`` for whole files.
    """
    return _NEUTRALISED_BYTES.search(data) is not None


class SafeWriter:
    """A ``csv.writer`` whose every cell goes through ``neutralise_cell``."""

    def __init__(self, stream: _Writable, **options: Any) -> None:
        self._writer = csv.writer(stream, **options)

    def writerow(self, row: Iterable[object]) -> None:
        """Write one row."""
        self._writer.writerow([neutralise_cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        """Write several rows."""
        for row in rows:
            self.writerow(row)


def writer(stream: _Writable, **options: Any) -> SafeWriter:
    """A CSV writer on ``stream`` (options as for ``csv.writer``) that neutralises formulas."""
    return SafeWriter(stream, **options)
