"""Shared pieces of the CSV import formats: errors, streaming input, headers, templates.

The customer and order parsers (``customers_csv`` and ``orders_csv``) build on this module and
on ``values`` (the value checks). Everything here is pure: no database, no settings, nothing
global beyond compiled patterns.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import shutil
import tempfile
from array import array
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from types import TracebackType
from typing import IO, Generic, NamedTuple, Self, TypeAlias, TypeVar

from tally.csv_safety import may_hold_neutralised, restore_cell

BinarySource: TypeAlias = IO[bytes] | str | os.PathLike[str]
"""A file opened in binary mode, or the path of one."""

MAX_TEXT_LENGTH = 100
"""Longest accepted name, tier name or order id, in characters."""


_CHUNK_SIZE = 1 << 20
# Non-seekable input is copied to a temporary file first (so the encoding can be checked before
# any row is read); up to this size the copy stays in memory.
_SPOOL_SIZE = 4 << 20
_MESSAGE_VALUE_LIMIT = 60

NUL = "\x00"
"""PostgreSQL cannot store this character in text, and no one types it: it comes from a damaged
file or a faulty export. A value holding it is refused."""
NUL_EXPECTED = (
    "a value without NUL characters (the invisible character shown as \\0, "
    "left by a damaged file or a faulty export: delete it)"
)


class CsvImportError(Exception):
    """Base class of the errors found while reading an import file."""


class ImportFileError(CsvImportError):
    """The file as a whole cannot be imported (encoding, header, broken CSV)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ImportRowError(CsvImportError):
    """One value on one row is not acceptable; other rows can still be imported.

    ``row`` is the row number a spreadsheet shows (the header is row 1), ``column`` the header
    as written in the file, ``value`` the raw value and ``expected`` what would be accepted.
    Parsers yield these rather than raise them, so a file's errors can be listed together.
    """

    def __init__(self, row: int, column: str, value: str, expected: str) -> None:
        super().__init__(row, column, value, expected)
        self.row = row
        self.column = column
        self.value = value
        self.expected = expected

    @property
    def message(self) -> str:
        """The error as one sentence for the merchant."""
        where = f'row {self.row}, column "{self.column}"'
        if not self.value.strip():
            return f"{where} is blank — expected {self.expected}"
        shown = self.value.replace("\r\n", "\n").replace("\n", "\\n").replace(NUL, "\\0")
        if len(shown) > _MESSAGE_VALUE_LIMIT:
            shown = shown[: _MESSAGE_VALUE_LIMIT - 1] + "…"
        # The message is stored as text (a rejected row's reason): never with a NUL in it.
        return f'{where}: "{shown}" — expected {self.expected}'.replace(NUL, "\\0")

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"ImportRowError(row={self.row!r}, column={self.column!r}, "
            f"value={self.value!r}, expected={self.expected!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImportRowError):
            return NotImplemented
        return self.args == other.args

    def __hash__(self) -> int:
        return hash(self.args)


# --- reading ---------------------------------------------------------------------------------


class _Borrowed(io.BufferedIOBase):
    """A read-only view of a caller's binary stream that never closes it."""

    def __init__(self, stream: IO[bytes], limit: int | None = None) -> None:
        super().__init__()
        self._stream = stream
        self._left = limit

    @property
    def name(self) -> object:
        return getattr(self._stream, "name", repr(self._stream))

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        if self._left is None:
            return self._stream.read(-1 if size is None else size)
        wanted = self._left if size is None or size < 0 else min(size, self._left)
        data = self._stream.read(wanted)
        self._left -= len(data)
        return data

    def read1(self, size: int = -1, /) -> bytes:
        return self.read(size)


def _is_seekable(stream: IO[bytes]) -> bool:
    try:
        return stream.seekable() and stream.tell() >= 0
    except (AttributeError, OSError, ValueError):
        return False


class _Scan(NamedTuple):
    """What a first pass over the bytes found."""

    problem: tuple[int, int] | str | None
    """The first byte that is not UTF-8 as (offset, value), a known wrong format, or None."""
    lines: int
    """Line breaks seen: an upper bound on the number of rows, less one."""
    has_nul: bool = False
    """Whether a NUL character occurs anywhere."""
    may_be_neutralised: bool = False
    """Whether a cell may carry the quote ``csv_safety`` puts before a formula character."""


def _scan(stream: IO[bytes]) -> _Scan:
    """Check that the stream is UTF-8 and count its lines; leaves it at an undefined position."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    chunk = stream.read(_CHUNK_SIZE)
    if chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _Scan(
            'the file is encoded as UTF-16 (Excel\'s "Unicode Text"); '
            'save it as "CSV UTF-8 (Comma delimited)" and upload it again',
            0,
        )
    if chunk.startswith(b"PK\x03\x04"):
        return _Scan(
            "the file is a spreadsheet workbook (.xlsx), not CSV; "
            'save it as "CSV UTF-8 (Comma delimited)" and upload it again',
            0,
        )
    offset = 0
    lines = 0
    has_nul = neutralised = False
    tail = b""
    while chunk:
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            # exc.object is the decoder's pending bytes followed by this chunk.
            bad_at = offset + len(chunk) - len(exc.object) + exc.start
            return _Scan((bad_at, exc.object[exc.start]), lines)
        offset += len(chunk)
        lines += chunk.count(b"\n")
        # Both are rare, and knowing a file has neither lets the readers skip their checks.
        has_nul = has_nul or b"\x00" in chunk
        neutralised = neutralised or may_hold_neutralised(tail + chunk)
        tail = chunk[-1:]
        chunk = stream.read(_CHUNK_SIZE)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        return _Scan((offset - len(exc.object) + exc.start, exc.object[exc.start]), lines)
    return _Scan(None, lines, has_nul, neutralised)


def _lines_with_sentinel(lines: Iterator[str]) -> Iterator[str]:
    """Yield lines, adding one character where the text ends so its last row is never empty."""
    previous = next(lines, "")
    for line in lines:
        yield previous
        previous = line
    if previous.endswith(("\n", "\r")):
        yield previous
        yield "?"
    else:
        yield previous + "?"


def _row_at_offset(stream: IO[bytes], start: int, offset: int) -> int | None:
    """The spreadsheet row holding the byte at ``offset`` (bytes before it must be UTF-8)."""
    stream.seek(start)
    text = io.TextIOWrapper(_Borrowed(stream, limit=offset), encoding="utf-8-sig", newline="")
    try:
        return sum(1 for _ in csv.reader(_lines_with_sentinel(iter(text))))
    except csv.Error:
        return None
    finally:
        text.close()


def _restored(records: Iterator[list[str]]) -> Iterator[list[str]]:
    """The records with the quote ``csv_safety`` wrote before a formula character taken off."""
    for record in records:
        yield [restore_cell(cell) if cell[:1] == "'" else cell for cell in record]


class CsvInput:
    """A CSV file opened for streaming, its encoding checked and its header row read.

    Building block of the format readers. Raises ``ImportFileError`` for an empty file, a file
    that is not UTF-8 or a broken header; ``records`` then yields each following row's values.
    A cell written ``'=…`` (``'`` before ``=``, ``+``, ``-``, ``@``, a tab or a carriage return,
    as ``csv_safety`` writes them) is read without its quote, so a rejected-rows file imports as
    it is. ``has_nul`` tells whether any row may hold a NUL character (readers refuse those).
    """

    def __init__(self, source: BinarySource) -> None:
        self._owned: IO[bytes] | None = None
        self._text: io.TextIOWrapper[_Borrowed] | None = None
        stream = self._open(source)
        try:
            start = stream.tell()
            scan = _scan(stream)
            if scan.problem is not None:
                raise ImportFileError(_encoding_message(stream, start, scan.problem))
            self.line_count = scan.lines + 1
            self.has_nul = scan.has_nul
            stream.seek(start)
            self._text = io.TextIOWrapper(_Borrowed(stream), encoding="utf-8-sig", newline="")
            self.records: Iterator[list[str]] = csv.reader(self._text, strict=True)
            if scan.may_be_neutralised:
                self.records = _restored(self.records)
            self.header_row, self.headers = self._read_header()
        except BaseException:
            self.close()
            raise
        self.width = len(self.headers)

    def _open(self, source: BinarySource) -> IO[bytes]:
        if isinstance(source, str | os.PathLike):
            self._owned = open(source, "rb")  # noqa: SIM115 - closed by close()
            return self._owned
        probe: object = source.read(0)
        if not isinstance(probe, bytes):
            raise TypeError("open the import file in binary mode ('rb'), not text mode")
        if _is_seekable(source):
            return source
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_SIZE)  # noqa: SIM115
        self._owned = spool
        shutil.copyfileobj(source, spool, _CHUNK_SIZE)
        spool.seek(0)
        return spool

    def _read_header(self) -> tuple[int, tuple[str, ...]]:
        row = 0
        try:
            for record in self.records:
                row += 1
                if any(cell.strip() for cell in record):
                    headers = tuple(cell.strip() for cell in record)
                    _check_separator(headers)
                    _check_nul(headers)
                    return row, headers
        except csv.Error as exc:
            raise self.malformed(exc, row + 1) from exc
        raise ImportFileError("the file is empty: expected a header row and at least one row")

    def malformed(self, exc: csv.Error, row: int) -> ImportFileError:
        """The error for CSV that cannot be read past ``row``."""
        return ImportFileError(
            f"row {row} is not valid CSV ({exc}); check that every quoted value on it "
            "starts and ends with a double quote and that quotes inside it are doubled"
        )

    def close(self) -> None:
        """Release the file (a stream passed in by the caller is left open)."""
        if self._text is not None:
            self._text.close()
            self._text = None
        if self._owned is not None:
            self._owned.close()
            self._owned = None


@dataclass(frozen=True, kw_only=True)
class FileLayout:
    """A file layout recognised from its header row: what every kind of import file has."""

    key: str
    name: str
    """Human name of the layout, for messages."""
    columns: Mapping[str, str]
    """Field → normalised header holding it."""
    required: frozenset[str]
    """Normalised headers that must all be present for the file to have this layout."""
    ignores_other_columns: bool = False
    """Whether a file of this layout may have columns the layout does not read."""

    def matches(self, headers: set[str]) -> bool:
        """Whether a file with these normalised headers has this layout."""
        if not self.required <= headers:
            return False
        return self.ignores_other_columns or headers <= set(self.columns.values())


_Row = TypeVar("_Row")
_Layout = TypeVar("_Layout", bound=FileLayout)


class CsvReader(Generic[_Row, _Layout]):
    """An import file read row by row in constant memory: the part every kind of file shares.

    Opening it reads the header and detects the layout (``format``) with ``detect``, which
    raises ``ImportFileError`` for a file that cannot be imported. Iterating yields what the
    subclass's ``_parse`` makes of the rows. Iterate once; use as a context manager (or call
    ``close``) to release a file opened by path.
    """

    def __init__(self, source: BinarySource, detect: Callable[[tuple[str, ...]], _Layout]) -> None:
        self._input = CsvInput(source)
        try:
            self.format = detect(self._input.headers)
        except BaseException:
            self._input.close()
            raise
        self.headers = self._input.headers
        self._rows = self._parse()

    @property
    def format_name(self) -> str:
        """Human name of the detected layout, e.g. ``"Yotpo export"``."""
        return self.format.name

    def __iter__(self) -> Iterator[_Row | ImportRowError]:
        return self._rows

    def close(self) -> None:
        """Stop reading and release the file."""
        self._rows.close()
        self._input.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _field_columns(self, fields: Sequence[str]) -> tuple[list[int], dict[str, str]]:
        """Each field's position in a record, and the header to name it by in messages.

        A field the file lacks reads position ``width``: readers append one blank value after a
        record's last, so it reads as blank; it is named by the field itself.
        """
        width = self._input.width
        position = {name: index for index, name in enumerate(normalised_headers(self.headers))}
        columns = self.format.columns
        indexes = [position.get(columns.get(field, ""), width) for field in fields]
        label = {
            field: self.headers[index] if index < width else field
            for field, index in zip(fields, indexes, strict=True)
        }
        return indexes, label

    def _records(
        self, skip: Callable[[list[str]], bool] | None = None
    ) -> Iterator[tuple[int, list[str] | ImportRowError]]:
        """(row number, values) of each row after the header but blank ones, or its errors.

        The values are as many as the headers (``fit_record``) and one blank more, at the
        position ``_field_columns`` gives a field the file lacks. A row with values beyond the
        header, or with a NUL character, comes as its errors instead, after ``skip`` (a row it
        returns True for is left out unread). Releases the file once read.
        """
        source = self._input
        width = source.width
        has_nul = source.has_nul
        headers = self.headers
        row = source.header_row
        try:
            for record in source.records:
                row += 1
                if len(record) != width:
                    fitted = fit_record(record, width, row)
                    if fitted is None:
                        continue
                    if isinstance(fitted, ImportRowError):
                        yield row, fitted
                        continue
                    record = fitted
                record.append("")
                if skip is not None and skip(record):
                    continue
                if has_nul and NUL in "".join(record):
                    for error in nul_errors(record[:-1], row, headers):
                        yield row, error
                    continue
                yield row, record
        except csv.Error as exc:
            raise source.malformed(exc, row + 1) from exc
        finally:
            source.close()

    def _parse(self) -> Generator[_Row | ImportRowError, None, None]:
        raise NotImplementedError


def _encoding_message(stream: IO[bytes], start: int, problem: tuple[int, int] | str) -> str:
    if isinstance(problem, str):
        return problem
    offset, byte = problem
    row = _row_at_offset(stream, start, offset)
    where = (
        f"on row {row} (byte offset {offset})" if row is not None else f"at byte offset {offset}"
    )
    return (
        f"the file is not UTF-8: invalid byte 0x{byte:02X} {where}; "
        'save the file as "CSV UTF-8 (Comma delimited)" and upload it again'
    )


def _check_separator(headers: tuple[str, ...]) -> None:
    if len(headers) != 1:
        return
    for separator, name in ((";", "semicolons"), ("\t", "tabs")):
        if separator in headers[0]:
            raise ImportFileError(
                f"the columns are separated by {name}, not commas; "
                'save the file as "CSV UTF-8 (Comma delimited)" and upload it again'
            )


def _check_nul(headers: tuple[str, ...]) -> None:
    for position, header in enumerate(headers):
        if NUL in header:
            raise ImportFileError(
                f"the header row holds a NUL character (column {position + 1}): the file is "
                "damaged or is not CSV text (UTF-16 without a byte order mark looks like "
                'this); save the file as "CSV UTF-8 (Comma delimited)" and upload it again'
            )


def nul_errors(record: Sequence[str], row: int, headers: Sequence[str]) -> list[ImportRowError]:
    """An error for each value of the row holding a NUL character.

    Every value is checked, read or not: a NUL means the row cannot be trusted (and the rejected
    row is stored whole).
    """
    return [
        ImportRowError(
            row,
            headers[position] if position < len(headers) else f"column {position + 1}",
            value,
            NUL_EXPECTED,
        )
        for position, value in enumerate(record)
        if NUL in value
    ]


def fit_record(record: list[str], width: int, row: int) -> list[str] | ImportRowError | None:
    """Make a row exactly ``width`` values long: None for a blank row, an error for extra values.

    Short rows are padded with blanks (some tools drop trailing empty cells); values beyond the
    header are an error because they usually mean a comma inside an unquoted value.
    """
    if len(record) < width:
        if not any(cell.strip() for cell in record):
            return None
        return record + [""] * (width - len(record))
    for position in range(width, len(record)):
        if record[position].strip():
            return ImportRowError(
                row,
                f"column {position + 1}",
                record[position],
                f"no value beyond the header's {width} columns "
                "(is a value containing a comma missing its quotes?)",
            )
    return record[:width]


def is_blank(record: Iterable[str]) -> bool:
    """True when every value of the row is empty or whitespace."""
    return not any(cell.strip() for cell in record)


# --- headers and formats ---------------------------------------------------------------------


REJECTED_REASON_HEADERS = frozenset({"reason", "import reason"})
"""Normalised headers of the column a rejected-rows file adds: ignored when the corrected file
is imported again."""


def normalise_header(header: str) -> str:
    """Header text compared across formats: trimmed, lowercase, ``_`` read as a space."""
    return " ".join(header.replace("_", " ").split()).lower()


def normalised_headers(headers: Sequence[str]) -> list[str]:
    """Normalise every header, refusing a file that names a column twice."""
    normalised = [normalise_header(header) for header in headers]
    if not any(normalised):
        raise ImportFileError("the header row is empty")
    first_position: dict[str, int] = {}
    for position, name in enumerate(normalised):
        if not name:
            continue
        if name in first_position:
            raise ImportFileError(
                f'the column "{headers[position].strip()}" appears twice '
                f"(columns {first_position[name] + 1} and {position + 1})"
            )
        first_position[name] = position
    return normalised


def quoted_list(names: Iterable[str]) -> str:
    """Names as ``"a", "b"`` for messages."""
    return ", ".join(f'"{name}"' for name in names)


# --- duplicate detection ---------------------------------------------------------------------


class SeenKeys:
    """Remembers which keys were used on which row, in about 12 bytes per key.

    Keys are kept as 64-bit hashes in an open-addressing table of two arrays, not as strings in
    a set: a million keys take 25 MB. Sizing it for the file's line count up front avoids
    rehashing as it fills. Two distinct keys sharing a hash would be reported as a
    duplicate; with 64 bits that is about one chance in 10^7 for a million keys.
    """

    __slots__ = ("_hashes", "_limit", "_mask", "_rows", "_size")

    def __init__(self, expected: int = 0) -> None:
        """Start with room for ``expected`` keys (it grows past that if needed)."""
        slots = 1 << 10
        while slots < 2 * expected:
            slots *= 2
        self._allocate(slots)
        self._size = 0

    def _allocate(self, slots: int) -> None:
        self._hashes = array("q", bytes(8 * slots))
        self._rows = array("I", bytes(4 * slots))
        self._mask = slots - 1
        self._limit = slots // 2

    def __len__(self) -> int:
        return self._size

    def first_row(self, key: str, row: int) -> int | None:
        """Record ``key`` as used on ``row``; return the row that used it first, or None."""
        # hash() of a str is a keyed 64-bit SipHash, stable within the process; 0 marks a free
        # slot, so it is moved to 1.
        digest = hash(key) or 1
        hashes = self._hashes
        mask = self._mask
        slot = digest & mask
        while True:
            found = hashes[slot]
            if found == digest:
                return self._rows[slot]
            if found == 0:
                hashes[slot] = digest
                self._rows[slot] = row
                self._size += 1
                if self._size > self._limit:
                    self._grow()
                return None
            slot = (slot + 1) & mask

    def _grow(self) -> None:
        old_hashes, old_rows = self._hashes, self._rows
        self._allocate(2 * len(old_hashes))
        hashes, rows, mask = self._hashes, self._rows, self._mask
        for digest, row in zip(old_hashes, old_rows, strict=True):
            if digest:
                slot = digest & mask
                while hashes[slot]:
                    slot = (slot + 1) & mask
                hashes[slot] = digest
                rows[slot] = row


# --- templates -------------------------------------------------------------------------------


def _template(name: str) -> str:
    return resources.files("tally.imports").joinpath("templates", name).read_text(encoding="utf-8")


def customer_template_csv() -> str:
    """The customer import template offered for download, with example rows.

    Serve it with a UTF-8 byte order mark (``"\\ufeff"``) if Excel must show accents correctly.
    """
    return _template("customers.csv")


def order_template_csv() -> str:
    """The order import template offered for download, with example rows."""
    return _template("orders.csv")
