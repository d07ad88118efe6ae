"""Checked rows kept on disk between an import's two passes: the spool and the sort by date.

The first pass writes each batch of checked rows as plain tuples (the layouts below) with
``marshal``, which reads back several times faster than the CSV parses; the second pass reads
them back. Orders go through an external merge sort instead, so they are applied by date.
"""

from __future__ import annotations

import heapq
import marshal
import os
import struct
import tempfile
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import IO, Any

from tally.db.bulk import utc_text
from tally.imports.customers_csv import CustomerRow
from tally.imports.orders_csv import OrderRow

# Positions in a spooled customer: (row, email, first name, last name, points, birthday as
# YYYY-MM-DD, tier id, external id).
C_ROW, C_EMAIL, C_FIRST, C_LAST, C_POINTS, C_BIRTHDAY, C_TIER, C_EXTERNAL, C_CONSENT = range(9)


# Positions in a spooled order: amounts are decimal text, the date UTC "YYYY-MM-DD HH:MM:SS.ffffff".
(
    O_ROW,
    O_ID,
    O_EMAIL,
    O_TOTAL,
    O_SUBTOTAL,
    O_DISCOUNTS,
    O_SHIPPING,
    O_TAX,
    O_CURRENCY,
    O_STATUS,
    O_PLACED,
    O_REFUNDED,
    O_CONSENT,
) = range(13)


class Spool:
    """Batches of checked rows on a temporary file, written once and read back once.

    Rows are plain tuples of text and numbers written with ``marshal``, which reads back
    several times faster than the CSV parses.
    """

    _HEADER = struct.Struct("<I")

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="tally-import-")  # noqa: SIM115

    def write(self, batch: Any) -> None:
        """Append one batch."""
        blob = marshal.dumps(batch)
        self._file.write(self._HEADER.pack(len(blob)))
        self._file.write(blob)

    def read(self) -> Iterator[Any]:
        """Every batch, in the order written."""
        self._file.flush()
        self._file.seek(0)
        size = self._HEADER.size
        while header := self._file.read(size):
            (length,) = self._HEADER.unpack(header)
            yield marshal.loads(self._file.read(length))  # noqa: S302 - our own temp file

    def close(self) -> None:
        """Delete the temporary file."""
        self._file.close()


def _date_order(row: Sequence[Any]) -> tuple[str, int]:
    return row[O_PLACED], row[O_ROW]


class OrdersByDate:
    """Checked orders read back by date (then file row), whatever order the file has them in.

    Orders must be counted in the order they were placed - a VIP tier reached by an early order
    multiplies the later ones - and stores export newest first. An external merge sort keeps
    memory flat: each batch is sorted and written as a run of small blocks to a temporary file,
    and reading merges the runs with one block of each in memory.
    """

    BLOCK = 1000

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="tally-orders-")  # noqa: SIM115
        self._runs: list[list[tuple[int, int]]] = []
        self.count = 0

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        """One batch of spooled orders."""
        ordered = sorted(rows, key=_date_order)
        blocks = []
        self._file.seek(0, os.SEEK_END)
        for start in range(0, len(ordered), self.BLOCK):
            blob = marshal.dumps(ordered[start : start + self.BLOCK])
            blocks.append((self._file.tell(), len(blob)))
            self._file.write(blob)
        if blocks:
            self._runs.append(blocks)
        self.count += len(ordered)

    def _run(self, blocks: list[tuple[int, int]]) -> Iterator[Sequence[Any]]:
        for offset, length in blocks:
            self._file.seek(offset)
            yield from marshal.loads(self._file.read(length))  # noqa: S302 - our own temp file

    def __iter__(self) -> Iterator[Sequence[Any]]:
        self._file.flush()
        return heapq.merge(*(self._run(blocks) for blocks in self._runs), key=_date_order)

    def close(self) -> None:
        """Delete the temporary file."""
        self._file.close()


def customer_plain(row: CustomerRow, tier_id: str | None) -> tuple[Any, ...]:
    """A checked customer row as spooled (the tier already resolved to its id)."""
    return (
        row.row_number,
        row.email,
        row.first_name,
        row.last_name,
        row.points,
        row.birthday.isoformat() if row.birthday is not None else None,
        tier_id,
        row.external_id,
        row.accepts_marketing,
    )


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def order_plain(row: OrderRow) -> tuple[Any, ...]:
    """A checked order row as spooled."""
    return (
        row.row_number,
        row.order_id,
        row.email,
        str(row.total),
        _text(row.subtotal),
        _text(row.discounts),
        _text(row.shipping),
        _text(row.tax),
        row.currency,
        row.status.value,
        utc_text(row.placed_at),
        _text(row.refunded_amount),
        row.accepts_marketing,
    )


def date_batches(orders: OrdersByDate, size: int, applied: int) -> Iterator[list[Sequence[Any]]]:
    """The orders by date in lists of ``size``, leaving out the first ``applied``."""
    batch: list[Sequence[Any]] = []
    for position, row in enumerate(orders, start=1):
        if position <= applied:
            continue
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def order_batches(
    spool: Spool, orders: OrdersByDate, size: int, applied: int
) -> Iterator[tuple[list[Any], list[Any], int]]:
    """What an orders import applies, as spooled batches: (rows, rejected, position after).

    The rejected rows first (in file order), then the valid orders by date. A position counts
    both; the job's cursor is the position reached, so a resumed import leaves out the first
    ``applied`` of the same sequence (the same file and checks give the same sequence).
    """
    position = 0
    for _rows, rejected, _last_row in spool.read():
        end = position + len(rejected)
        if end > applied:
            yield [], rejected[max(applied - position, 0) :], end
        position = end
    for batch in date_batches(orders, size, max(applied - position, 0)):
        position = max(position, applied) + len(batch)
        yield batch, [], position
