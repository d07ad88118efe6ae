"""Opening an import file: its checksum and size, the reader for its kind, its column labels."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from tally.imports.customers_csv import CustomerCsvReader
from tally.imports.errors import ImportFileRefused
from tally.imports.formats import CsvInput, ImportFileError, normalised_headers
from tally.imports.orders_csv import OrderCsvReader
from tally.imports.orm import ImportKind


@dataclass(frozen=True)
class FileFacts:
    """What one quick read of the file tells: its checksum and (about) how many rows it has."""

    checksum: str
    lines: int


def file_facts(path: str | os.PathLike[str]) -> FileFacts:
    """The SHA-256 of the file (hex) and its number of line breaks."""
    digest = hashlib.sha256()
    lines = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            lines += chunk.count(b"\n")
    return FileFacts(digest.hexdigest(), lines)


Reader = CustomerCsvReader | OrderCsvReader


def open_reader(
    kind: ImportKind, path: str | os.PathLike[str], now: datetime, zone: tzinfo = UTC
) -> Reader:
    """The reader of an import file; ``zone`` is the merchant's (for dates without a time)."""
    try:
        if kind is ImportKind.CUSTOMERS:
            return CustomerCsvReader(path, today=now.date())
        return OrderCsvReader(path, now=now, zone=zone)
    except ImportFileError as exc:
        raise ImportFileRefused(exc.message) from exc


class RawRecords:
    """The file's rows as read (lists of values), fetched by row number in increasing order."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._input = CsvInput(path)
        self._row = self._input.header_row
        self._records = iter(self._input.records)

    def get(self, row: int) -> list[str]:
        """The values of spreadsheet row ``row`` (the same numbering as the readers)."""
        for record in self._records:
            self._row += 1
            if self._row == row:
                return record
        return []

    def close(self) -> None:
        """Release the file."""
        self._input.close()


def labels(reader: Reader) -> dict[str, str]:
    """Field -> the header of its column as the file writes it."""
    positions = {name: position for position, name in enumerate(normalised_headers(reader.headers))}
    labels: dict[str, str] = {}
    for field_name, header in reader.format.columns.items():
        position = positions.get(header)
        if position is not None:
            labels[field_name] = reader.headers[position].strip()
    if "name" in labels and "first_name" not in labels:
        labels["first_name"] = labels["name"]
    return labels
