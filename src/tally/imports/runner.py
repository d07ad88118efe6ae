"""Running an import job: the first pass over the file, then its batches, one transaction each.

A run refuses a file with any invalid row before writing anything (status ``failed``, the
errors in the job), unless ``skip_invalid``: then the valid rows are applied and each rejected
row is kept, with its values and the reason, for the rejected-rows CSV. Each batch is applied
with the job's cursor (last row, or for orders the position in date order) and counts in the
same transaction, so a job stopped by an error or a kill (a ``running`` job whose heartbeat is
older than ``STALE_AFTER``) has applied whole batches, and running the same file again
continues after the cursor. The ledger keys make a repeat harmless even without the cursor.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from tally.customers.orm import Customer, CustomerState
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.errors import Conflict, DomainError
from tally.imports import customer_writer, order_writer
from tally.imports.checking import Check, first_pass
from tally.imports.context import DEFAULT_BATCH_SIZE, ProgressCallback, RunContext
from tally.imports.customer_writer import CustomerRun
from tally.imports.errors import ImportRefused, unexpected
from tally.imports.events import announce_finished
from tally.imports.job_record import has_prior_imports, mark_failed
from tally.imports.options import OrderImportOptions, options_from_json
from tally.imports.order_planner import OrderPlanner, OrderRun
from tally.imports.orm import ImportJob, ImportKind, ImportStatus
from tally.imports.reading import FileFacts, Reader, file_facts, labels, open_reader
from tally.imports.rejected import add_errors, rejected_row, store_rejected
from tally.imports.spool import OrdersByDate, Spool, order_batches
from tally.program import service as program_service
from tally.program.orm import Order

SQLITE_CHECKPOINT_PAGES = 10_000
"""SQLite WAL pages between automatic checkpoints while an import writes (default 1,000)."""


def run_job(
    factory: sessionmaker[Session],
    *,
    merchant_id: int,
    job_id: int,
    path: str | os.PathLike[str],
    progress: ProgressCallback | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    after_batch: Callable[[int], None] | None = None,
    facts: FileFacts | None = None,
    reader: Reader | None = None,
) -> ImportJob:
    """Run the claimed (``running``) import job ``job_id`` over its file; returns the finished job.

    A job stopped part-way continues after its cursor. ``facts`` and ``reader`` are what the
    caller already read of the file (``run_import`` reads it before it claims the job); the file
    must be the job's (same checksum). Raises ``ImportRefused`` (invalid rows without
    ``skip_invalid``: the job is marked failed with its errors), and ``ImportFailed`` for an
    unexpected error (the job's ``failure_reason`` then names a reference to the logged error,
    not the error itself). ``after_batch`` is called with the number of batches committed so
    far (tests stop the import there).
    """
    try:
        if facts is None:
            facts = file_facts(path)
        # Outside the job's failure handling: the wrong file leaves the job as it is.
        context, cursor = _load(factory, merchant_id, job_id, facts, batch_size)
    except BaseException:
        if reader is not None:
            reader.close()
        raise
    spool = Spool()
    orders: OrdersByDate | None = None
    try:
        if reader is None:
            reader = open_reader(context.kind, path, context.now, context.program.zone)
        context.labels = labels(reader)
        if context.kind is ImportKind.ORDERS:
            orders = OrdersByDate()
        check = first_pass(
            factory,
            context,
            reader,
            path,
            # Orders are applied by date, so their cursor is a position in that sequence (made
            # again from the whole file), not a row of the file.
            after_row=cursor if orders is None else 0,
            spool=spool,
            preview=False,
            progress=progress,
            estimate=facts.lines,
            orders=orders,
        )
        _refuse_or_record(factory, context, check)
        if orders is None:
            batches: Iterator[Any] = spool.read()
            done = check.resumed_rows
        else:
            batches = order_batches(spool, orders, batch_size, cursor)
            done = cursor
        total = check.total_rows + check.resumed_rows
        _second_pass(factory, context, batches, progress, after_batch, done, total)
        _finish(factory, context)
    except BaseException as exc:
        _fail(factory, merchant_id, job_id, exc)
        raise
    finally:
        if reader is not None:
            reader.close()
        spool.close()
        if orders is not None:
            orders.close()
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        return session.get_one(ImportJob, job_id)


def _load(
    factory: sessionmaker[Session],
    merchant_id: int,
    job_id: int,
    facts: FileFacts,
    batch_size: int,
) -> tuple[RunContext, int]:
    """The run's context (labels still to come from the reader) and the job's cursor."""
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        job = session.get_one(ImportJob, job_id)
        if job.checksum != facts.checksum:
            raise Conflict(f"job {job.id} imports another file (checksum {job.checksum})")
        kind = ImportKind(job.kind)
        had_orders = session.scalar(
            select(Order.id).where(Order.merchant_id == merchant_id).limit(1)
        )
        context = RunContext(
            merchant_id=merchant_id,
            job_id=job.id,
            kind=kind,
            options=options_from_json(kind, job.options),
            program=program_service.load(session, merchant_id),
            now=utcnow(),
            labels={},
            checksum=job.checksum,
            generation=job.generation,
            batch_size=batch_size,
            prior_imports=has_prior_imports(session, merchant_id, job.id),
            known_orders_possible=had_orders is not None,
        )
        return context, job.cursor


def _refuse_or_record(factory: sessionmaker[Session], context: RunContext, check: Check) -> None:
    """Refuse a file with invalid rows (unless ``skip_invalid``), or note what it holds."""
    with unit_of_work(factory, merchant_id=context.merchant_id) as session:
        job = session.get_one(ImportJob, context.job_id)
        if check.invalid_rows and not context.options.skip_invalid:
            check.store(job)
            job.status = ImportStatus.FAILED
            job.failure_reason = f"refused: {check.invalid_rows} invalid rows, nothing was imported"
            job.finished_at = utcnow()
        else:
            job.file_format = check.file_format
            job.headers = check.headers
            job.total_rows = check.total_rows + check.resumed_rows
            return
    raise ImportRefused(job)


def _fail(
    factory: sessionmaker[Session], merchant_id: int, job_id: int, exc: BaseException
) -> None:
    """Mark the job failed, with a reason the merchant may read; an unexpected error is hidden.

    Raises ``ImportFailed`` (from ``exc``) for an unexpected error; the caller re-raises others.
    """
    if isinstance(exc, ImportRefused):
        return
    if isinstance(exc, DomainError):
        mark_failed(factory, merchant_id, job_id, exc.detail)
    elif isinstance(exc, Exception):
        failed = unexpected(exc, job_id)
        failed.job = mark_failed(factory, merchant_id, job_id, failed.detail)
        raise failed from exc
    else:
        # Interrupted (Ctrl-C, a stopping process): nothing went wrong with the file.
        mark_failed(
            factory,
            merchant_id,
            job_id,
            "the import was interrupted; run the same file again to finish it",
        )


def _second_pass(
    factory: sessionmaker[Session],
    context: RunContext,
    batches: Iterator[Any],
    progress: ProgressCallback | None,
    after_batch: Callable[[int], None] | None,
    done: int,
    total: int,
) -> None:
    """Apply the batches, one transaction each, the cursor moving with them."""
    customer_run = context.customer_run() if context.kind is ImportKind.CUSTOMERS else None
    order_run = context.order_run() if context.kind is ImportKind.ORDERS else None
    planner = OrderPlanner(order_run) if order_run is not None else None
    bind = factory.kw.get("bind")
    assert isinstance(bind, Engine)
    # One connection for every batch: on SQLite it carries fewer, larger WAL checkpoints.
    with bind.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            _set_checkpoints(connection, SQLITE_CHECKPOINT_PAGES)
        try:
            pinned = sessionmaker(bind=connection, expire_on_commit=False)
            for committed, batch in enumerate(batches, start=1):
                done += _apply_batch(pinned, context, batch, customer_run, order_run, planner)
                if progress is not None:
                    progress("importing", done, max(total, done))
                if after_batch is not None:
                    after_batch(committed)
        finally:
            if sqlite:
                _set_checkpoints(connection, 1000)


def _set_checkpoints(connection: Connection, pages: int) -> None:
    """SQLite: WAL pages between automatic checkpoints, on this connection.

    Every batch rewrites some of the same pages (index roots, table ends); checkpointing every
    1,000 pages, SQLite's default, copies them to the database file again and again. The
    connection goes back to the pool afterwards, so the default is put back.
    """
    if connection.in_transaction():
        connection.rollback()
    connection.exec_driver_sql(f"PRAGMA wal_autocheckpoint={int(pages)}")
    connection.commit()


def _apply_batch(
    factory: sessionmaker[Session],
    context: RunContext,
    batch: Any,
    customer_run: CustomerRun | None,
    order_run: OrderRun | None,
    planner: OrderPlanner | None,
) -> int:
    """Write one spooled batch and move the job's cursor, in one transaction; its row count."""
    plain_rows, plain_rejected, last_row = batch
    rejected = [rejected_row(item) for item in plain_rejected]
    with unit_of_work(factory, merchant_id=context.merchant_id) as session:
        if customer_run is not None:
            written = customer_writer.write_customers(
                session, customer_run, plain_rows, context.labels
            )
        else:
            assert order_run is not None
            assert planner is not None
            written = order_writer.write_orders(session, order_run, planner, plain_rows)
        rejected = sorted([*rejected, *written.rejected], key=lambda item: item.row)
        store_rejected(session, context.merchant_id, context.job_id, rejected)
        job = session.get_one(ImportJob, context.job_id)
        written.add_to(job)
        add_errors(job, rejected)
        job.cursor = max(job.cursor, last_row)
        job.heartbeat_at = utcnow()
    return len(plain_rows) + len(plain_rejected)


def _finish(factory: sessionmaker[Session], context: RunContext) -> None:
    """After the last batch: the claim emails of an orders import, then the job is completed."""
    options = context.options
    if isinstance(options, OrderImportOptions) and options.send_create_account_emails:
        _invite_guests(factory, context)
    with unit_of_work(factory, merchant_id=context.merchant_id) as session:
        job = session.get_one(ImportJob, context.job_id)
        job.status = ImportStatus.COMPLETED
        job.finished_at = utcnow()
        job.failure_reason = None
        announce_finished(session, job)


def _invite_guests(factory: sessionmaker[Session], context: RunContext) -> None:
    """Invite each guest who earned points from the import's orders to claim them."""
    from tally.notifications import service as notifications
    from tally.notifications.templates import EmailType

    claim_url = f"{context.program.merchant.store_url}/account/register"
    after = 0
    while True:
        with unit_of_work(factory, merchant_id=context.merchant_id) as session:
            page = session.execute(
                select(Order.customer_id, func.sum(Order.points_awarded))
                .join(Customer, Customer.id == Order.customer_id)
                .where(
                    Order.merchant_id == context.merchant_id,
                    Order.import_id == context.job_id,
                    Order.customer_id > after,
                    Customer.state == CustomerState.GUEST,
                )
                .group_by(Order.customer_id)
                .having(func.sum(Order.points_awarded) > 0)
                .order_by(Order.customer_id)
                .limit(500)
            ).all()
            if not page:
                return
            after = page[-1][0]
            points = {int(customer_id): int(total) for customer_id, total in page}
            queued = notifications.queue_bulk(
                session,
                merchant_id=context.merchant_id,
                email_type=EmailType.CLAIM_POINTS_INVITATION,
                dedupe_key_prefix=f"claim_points_invitation:import-{context.job_id}",
                # The points to claim are the whole balance: the orders' points and the tier
                # entry rewards they brought (and anything credited before).
                variables=lambda customer: {
                    "points": customer.points_balance,
                    "claim_url": claim_url,
                },
                where=[Customer.id.in_(list(points))],
            )
            job = session.get_one(ImportJob, context.job_id)
            job.emails_queued += queued.queued
