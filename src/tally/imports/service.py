"""Import use cases: preview a file, run (or resume) an import, revert one, list them.

Customers (point balances) and orders come from CSV files in the layouts ``customers_csv`` and
``orders_csv`` recognise. Every import is a job (``ImportJob``) recording who started it, the
file's name and checksum, the options, the counts, the first errors and how far it got.

This module is the package's front door; the work is done in one module per step:

- ``reading``: the file's checksum, the reader for its kind; ``checking``: the first pass
  (every row parsed and checked, the valid ones spooled); ``spool``: the rows on disk between
  the passes and the by-date sort of orders;
- ``customer_writer`` and ``order_writer`` (with ``order_planner``, which counts orders as
  ``record_order`` would, and ``customer_rows``): a spooled batch becomes customers, orders
  and ledger entries;
- ``runner``: a job run (or resumed) batch by batch; ``job_record``: the job row (claim,
  heartbeat, outcome); ``preview``, ``revert`` and ``rejected`` (the rows left out);
  ``options`` and ``errors``: what callers pass in and what they catch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from tally.audit.actor import Actor
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.imports.context import DEFAULT_BATCH_SIZE, ProgressCallback
from tally.imports.errors import (
    ImportFailed,
    ImportFileRefused,
    ImportInProgress,
    ImportRefused,
    RevertRefused,
)
from tally.imports.formats import customer_template_csv, order_template_csv
from tally.imports.job_record import STALE_AFTER, FileToImport, claim, get_import, list_imports
from tally.imports.options import (
    CustomerImportOptions,
    ImportOptions,
    OrderImportOptions,
    PointsMode,
    kind_of,
)
from tally.imports.orm import ImportJob, ImportKind
from tally.imports.preview import import_notes, preview_import
from tally.imports.reading import file_facts, open_reader
from tally.imports.rejected import rejected_csv
from tally.imports.revert import revert_import
from tally.imports.runner import run_job
from tally.program import service as program_service

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "STALE_AFTER",
    "CustomerImportOptions",
    "ImportFailed",
    "ImportFileRefused",
    "ImportInProgress",
    "ImportOptions",
    "ImportRefused",
    "OrderImportOptions",
    "PointsMode",
    "ProgressCallback",
    "RevertRefused",
    "file_facts",
    "get_import",
    "import_notes",
    "list_imports",
    "preview_import",
    "rejected_csv",
    "revert_import",
    "run_import",
    "run_job",
    "template_csv",
]


def run_import(
    factory: sessionmaker[Session],
    *,
    merchant_id: int,
    path: str | os.PathLike[str],
    options: ImportOptions,
    file_name: str | None = None,
    created_by: str = "cli",
    progress: ProgressCallback | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    after_batch: Callable[[int], None] | None = None,
    stale_after: timedelta = STALE_AFTER,
    on_claimed: Callable[[int], None] | None = None,
    job_id: int | None = None,
    actor: Actor | None = None,
) -> ImportJob:
    """Import a file, or finish the stopped import of the same file; returns the finished job.

    Raises ``ImportFileRefused`` (unreadable file, nothing recorded), ``ImportRefused`` (invalid
    rows without ``skip_invalid``: the job is recorded as failed with its errors),
    ``ImportInProgress``, and ``ImportFailed`` for an unexpected error once the job is recorded
    (the job's ``failure_reason`` then names a reference to the logged error, not the error
    itself). ``after_batch`` is called with the number of batches committed so far
    (tests stop the import there). ``on_claimed`` is called with the job's id as soon as the
    job is recorded as running (before the file is checked). ``job_id`` runs that job (the
    import queue's worker, holding the job's lease) instead of choosing one by the checksum.
    ``actor`` (who started it) records the start in the audit log: one event, not one per row.
    """
    kind = kind_of(options)
    now = utcnow()
    facts = file_facts(path)
    with factory() as session:
        zone = program_service.load(session, merchant_id).zone
    reader = open_reader(kind, path, now, zone)
    try:
        with unit_of_work(factory, merchant_id=merchant_id, actor=actor) as session:
            file = FileToImport(
                merchant_id, kind, facts.checksum, file_name or Path(path).name, options, created_by
            )
            claimed_id = claim(session, file, now=now, stale_after=stale_after, job_id=job_id).id
        if on_claimed is not None:
            on_claimed(claimed_id)
    except BaseException:
        reader.close()
        raise
    return run_job(
        factory,
        merchant_id=merchant_id,
        job_id=claimed_id,
        path=path,
        progress=progress,
        batch_size=batch_size,
        after_batch=after_batch,
        facts=facts,
        reader=reader,
    )


def template_csv(kind: ImportKind) -> str:
    """The downloadable template for a kind of file, with example rows."""
    return customer_template_csv() if kind is ImportKind.CUSTOMERS else order_template_csv()
