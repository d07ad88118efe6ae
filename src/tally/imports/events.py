"""What an import leaves for others to find: its mark on ledger entries, one event per batch.

Each committed batch (and a revert) emits one ``CustomersImported`` naming the customers it
created or changed, instead of the per-customer events the same changes made one at a time
would emit; receivers read the customers' current values when they run (the Dotdigital
integration marks them all for its next send in one statement).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from tally.imports.orm import ImportJob
from tally.outbox.events import CustomersImported, ImportFinished
from tally.outbox.registry import default_registry
from tally.outbox.service import emit


def job_source_ref(job_id: int) -> str:
    """The ``source_ref`` of the ledger entries an import job writes directly."""
    return f"import-job:{job_id}"


def announce(session: Session, merchant_id: int, import_id: int, customer_ids: set[int]) -> None:
    """One ``CustomersImported`` for the customers a batch created or changed, in its transaction.

    It stands in for the per-customer events (``CustomerEnrolled``, ``PointsBalanceChanged``,
    ``VipTierChanged``, ``CustomerUpdated``) the same changes made one at a time would emit:
    receivers read the customers' current values when they run.
    """
    if not customer_ids or not default_registry.handler_names(CustomersImported.event_type):
        return
    emit(
        session,
        CustomersImported(
            merchant_id=merchant_id,
            import_id=import_id,
            customer_ids=tuple(sorted(customer_ids)),
        ),
    )


def announce_finished(session: Session, job: ImportJob) -> None:
    """``ImportFinished`` for a job that just completed or failed (webhooks announce it)."""
    emit(
        session,
        ImportFinished(
            merchant_id=job.merchant_id,
            import_id=job.id,
            kind=job.kind,
            status=job.status,
            total_rows=job.total_rows,
            new_count=job.new_count,
            updated_count=job.updated_count,
            skipped_count=job.skipped_count,
            invalid_count=job.invalid_count,
            points_issued=job.points_issued,
        ),
    )
