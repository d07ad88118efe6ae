"""The rows an import leaves out: their errors, kept on the job and as rows to download as CSV."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from tally import csv_safety
from tally.imports.formats import ImportRowError
from tally.imports.job_record import get_import
from tally.imports.orm import ImportJob, ImportRejectedRow

MAX_REPORTED_ERRORS = 100
"""Errors kept in a job's report (all are counted)."""


def error_dict(error: ImportRowError) -> dict[str, Any]:
    """An error as stored in a job's report and returned by the API."""
    return {
        "row": error.row,
        "column": error.column,
        "value": error.value,
        "expected": error.expected,
        "message": error.message,
    }


@dataclass
class RejectedRow:
    """Every error of one row, and its values as read when they are wanted (skip-invalid)."""

    row: int
    errors: list[ImportRowError]
    record: list[str] | None = None

    @property
    def reason(self) -> str:
        """The errors as one text for the ``reason`` column of the rejected rows file."""
        return "; ".join(error.message for error in self.errors)


def rejected_plain(rejected: RejectedRow) -> tuple[Any, ...]:
    """A rejected row as spooled."""
    return (
        rejected.row,
        [(e.column, e.value, e.expected) for e in rejected.errors],
        rejected.record,
    )


def rejected_row(plain: Sequence[Any]) -> RejectedRow:
    """The inverse of ``rejected_plain``."""
    row = plain[0]
    return RejectedRow(
        row, [ImportRowError(row, c, v, e) for c, v, e in plain[1]], plain[2] or None
    )


def add_errors(job: ImportJob, rejected: Sequence[RejectedRow]) -> None:
    """Count a batch's rejected rows on the job and keep the first errors."""
    if not rejected:
        return
    errors = list(job.errors)
    job.error_count += keep_errors(errors, rejected)
    job.invalid_count += len(rejected)
    job.errors = errors


def keep_errors(errors: list[dict[str, Any]], rejected: Sequence[RejectedRow]) -> int:
    """Add the errors of ``rejected`` to ``errors``, up to ``MAX_REPORTED_ERRORS``; how many."""
    count = 0
    for item in rejected:
        count += len(item.errors)
        for error in item.errors:
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(error_dict(error))
    return count


def store_rejected(
    session: Session, merchant_id: int, job_id: int, rejected: Sequence[RejectedRow]
) -> None:
    """Keep the rejected rows (values and reason) for the rejected-rows file."""
    if not rejected:
        return
    session.execute(
        insert(ImportRejectedRow),
        [
            {
                "merchant_id": merchant_id,
                "job_id": job_id,
                "row_number": item.row,
                "reason": item.reason,
                "record": item.record or [],
            }
            for item in rejected
        ],
    )


def rejected_csv(session: Session, *, merchant_id: int, job_id: int) -> Iterator[str]:
    """The rows an import left out, as CSV: the file's own columns and a ``reason`` column.

    A value a spreadsheet would run as a formula is written with a ``'`` in front
    (``csv_safety``); the readers take it off, so the file imports again as it is.
    """
    job = get_import(session, merchant_id=merchant_id, job_id=job_id)
    headers = list(job.headers)
    reason_header = "reason" if "reason" not in {h.lower() for h in headers} else "import_reason"
    width = len(headers)
    buffer = io.StringIO()
    # The values are the merchant's customers' own, opened in a spreadsheet: no formulas.
    writer = csv_safety.writer(buffer, lineterminator="\r\n")
    writer.writerow([*headers, reason_header])
    yield buffer.getvalue()
    after = 0
    while True:
        page = list(
            session.scalars(
                select(ImportRejectedRow)
                .where(
                    ImportRejectedRow.merchant_id == merchant_id,
                    ImportRejectedRow.job_id == job.id,
                    ImportRejectedRow.row_number > after,
                )
                .order_by(ImportRejectedRow.row_number)
                .limit(1000)
            )
        )
        if not page:
            return
        buffer.seek(0)
        buffer.truncate()
        for item in page:
            record = list(item.record)[:width]
            record += [""] * (width - len(record))
            writer.writerow([*record, item.reason])
        yield buffer.getvalue()
        after = page[-1].row_number
