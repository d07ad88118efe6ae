"""Email marketing consent from import files: reading the column, recording it on customers.

Shopify's customer export has ``Accepts Email Marketing`` (older exports and the orders export:
``Accepts Marketing``), written ``yes``/``no``; Tally's template takes ``accepts_marketing``.
``true``/``false`` are read too, in any letter case; a blank cell states nothing. A stated
answer is recorded with the source ``import:<job id>`` and the time of the import, and replaces
an earlier one (the latest statement wins); the same answer again changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.customers.orm import Customer
from tally.db.bulk import Bulk, chunks
from tally.imports.formats import ImportRowError

_ANSWERS = {"yes": True, "true": True, "no": False, "false": False}
EXPECTED = "yes, no, true or false (or blank when the file does not say)"


def read_consent(row: int, column: str, raw: str, errors: list[ImportRowError]) -> bool | None:
    """The answer in a cell (None when blank); a row error in ``errors`` for anything else."""
    text = raw.strip()
    if not text:
        return None
    answer = _ANSWERS.get(text.lower())
    if answer is None:
        errors.append(ImportRowError(row, column, raw, EXPECTED))
    return answer


def consent_source(job_id: int) -> str:
    """Where consent read from an import file was stated."""
    return f"import:{job_id}"


def record_consent(
    session: Session,
    *,
    merchant_id: int,
    job_id: int,
    answers: Iterable[tuple[str, bool]],
    now: datetime,
) -> set[int]:
    """Record (email, answer) pairs on the merchant's customers; the ids whose answer changed."""
    wanted = dict(answers)
    if not wanted:
        return set()
    bulk = Bulk(session)
    changes: list[tuple[bool, int]] = []
    for part in chunks(list(wanted)):
        found = bulk.connection.execute(
            select(Customer.id, Customer.email, Customer.accepts_marketing).where(
                Customer.merchant_id == merchant_id, Customer.email.in_(part)
            )
        )
        for customer_id, email, stored in found:
            answer = wanted[email]
            if stored is None or bool(stored) is not answer:
                changes.append((answer, customer_id))
    stamp = bulk.timestamp(now)
    source = consent_source(job_id)
    bulk.execute_many(
        "UPDATE customers SET accepts_marketing = ?, marketing_consent_source = ?, "
        "marketing_consent_at = ?, updated_at = ? WHERE id = ?",
        [(answer, source, stamp, stamp, customer_id) for answer, customer_id in changes],
    )
    return {customer_id for _answer, customer_id in changes}
