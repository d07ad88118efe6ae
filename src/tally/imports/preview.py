"""Previewing an import: the file checked and its effect counted, writing only a ``previewed`` job.

Also ``import_notes``: what about the program makes an import do less than a merchant expects.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.imports.checking import Check, first_pass
from tally.imports.context import DEFAULT_BATCH_SIZE, ProgressCallback, RunContext
from tally.imports.errors import hiding_unexpected_errors
from tally.imports.formats import SeenKeys
from tally.imports.job_record import FileToImport, new_job
from tally.imports.options import CustomerImportOptions, ImportOptions, kind_of
from tally.imports.order_planner import OrderPlanner, TierState
from tally.imports.orm import ImportJob, ImportKind, ImportStatus
from tally.imports.reading import file_facts, labels, open_reader
from tally.imports.rejected import MAX_REPORTED_ERRORS
from tally.imports.spool import OrdersByDate, date_batches
from tally.program import service as program_service


@hiding_unexpected_errors
def preview_import(
    factory: sessionmaker[Session],
    *,
    merchant_id: int,
    path: str | os.PathLike[str],
    options: ImportOptions,
    file_name: str | None = None,
    created_by: str = "cli",
    progress: ProgressCallback | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ImportJob:
    """Check a whole file and count what importing it would do; writes only a ``previewed`` job.

    Raises ``ImportFileRefused`` for a file that cannot be read as an import file at all.
    """
    kind = kind_of(options)
    now = utcnow()
    facts = file_facts(path)
    with factory() as session:
        program = program_service.load(session, merchant_id)
    reader = open_reader(kind, path, now, program.zone)
    try:
        context = RunContext(
            merchant_id=merchant_id,
            job_id=0,
            kind=kind,
            options=options,
            program=program,
            now=now,
            labels=labels(reader),
            checksum=facts.checksum,
            generation=0,
            batch_size=batch_size,
        )
        orders = OrdersByDate() if kind is ImportKind.ORDERS else None
        try:
            check = first_pass(
                factory,
                context,
                reader,
                path,
                after_row=0,
                spool=None,
                preview=True,
                progress=progress,
                estimate=facts.lines,
                orders=orders,
            )
            if orders is not None:
                _preview_orders(factory, context, orders, check)
        finally:
            if orders is not None:
                orders.close()
    finally:
        reader.close()
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        file = FileToImport(
            merchant_id, kind, facts.checksum, file_name or Path(path).name, options, created_by
        )
        job = new_job(session, file, status=ImportStatus.PREVIEWED, now=now)
        check.store(job)
        job.new_count = check.new
        job.updated_count = check.updated
        job.skipped_count = check.skipped
        job.customers_created = check.customers_created
        job.points_issued = check.points
        job.collisions = check.collisions
        job.finished_at = utcnow()
    return job


def _preview_orders(
    factory: sessionmaker[Session], context: RunContext, orders: OrdersByDate, check: Check
) -> None:
    """Count what the checked orders would do, in date order as the import applies them."""
    planner = OrderPlanner(context.order_run())
    carry: dict[str, TierState] = {}
    guests_seen = SeenKeys()
    for batch in date_batches(orders, context.batch_size, 0):
        with unit_of_work(factory, merchant_id=context.merchant_id) as session:
            plan = planner.plan(
                session,
                batch,
                carry=carry if planner.vip.enabled else None,
                guests_seen=guests_seen,
            )
        check.new += len(plan.orders)
        check.skipped += plan.skipped
        check.customers_created += len(plan.new_guests)
        check.points += plan.points
        room = MAX_REPORTED_ERRORS - len(check.collisions)
        check.collisions += plan.collisions[: max(room, 0)]


def import_notes(session: Session, *, merchant_id: int, options: ImportOptions) -> list[str]:
    """What about the program makes an import do less than a merchant may expect, in words."""
    settings = program_service.load(session, merchant_id).settings
    notes: list[str] = []
    if not settings.live:
        notes.append(
            "the program is not live yet: the import earns no points (imported balances are "
            "kept); go live on the dashboard first if the orders or new customers should earn"
        )
    if isinstance(options, CustomerImportOptions):
        if options.award_create_account and not settings.create_account.enabled:
            notes.append(
                "create-account points are asked for, but the create-account action is off in "
                "the program: new customers would get none"
            )
        return notes
    if not options.vip_only:
        rule = settings.place_order
        if not rule.enabled:
            notes.append(
                "the place-order rule is off in the program: the orders would earn no points "
                "(they still count toward VIP tiers)"
            )
        elif rule.award_on_status != "paid":
            notes.append(
                f"the program awards order points at status {rule.award_on_status!r}: orders "
                "in the file with another status earn nothing"
            )
    if not settings.vip.enabled:
        notes.append("VIP tiers are off in the program: the orders move no tiers")
    return notes
