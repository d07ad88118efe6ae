"""The first pass of an import: every row parsed and checked, the valid ones spooled.

Checks the readers cannot make (they see one row at a time, no program, no database) come
here: tier names, customer IDs repeated in the file or held by another customer, balances a
replace would lower below zero, refunds larger than the order. A preview also counts here what
each customer row would do.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tally.db.engine import unit_of_work
from tally.imports import customer_writer
from tally.imports.context import ProgressCallback, RunContext
from tally.imports.customer_rows import external_ids_in_use
from tally.imports.customer_writer import (
    points_change,
    profile_change,
    reduction_error,
    tier_lookup,
)
from tally.imports.customers_csv import CustomerRow
from tally.imports.errors import ImportFileRefused
from tally.imports.formats import ImportFileError, ImportRowError, SeenKeys
from tally.imports.job_record import heartbeat
from tally.imports.options import CustomerImportOptions, PointsMode
from tally.imports.orders_csv import OrderRow
from tally.imports.orm import ImportJob, ImportKind
from tally.imports.reading import RawRecords, Reader
from tally.imports.rejected import RejectedRow, keep_errors, rejected_plain
from tally.imports.spool import (
    C_EMAIL,
    C_EXTERNAL,
    C_POINTS,
    C_ROW,
    OrdersByDate,
    Spool,
    customer_plain,
    order_plain,
)

HEARTBEAT_SECONDS = 20.0
"""How often a running import shows it is alive while it checks its file (well within
``STALE_AFTER``)."""


@dataclass
class Check:
    """What the first pass found."""

    file_format: str
    headers: list[str]
    total_rows: int = 0
    """Rows checked (those after the cursor of a resumed job)."""
    resumed_rows: int = 0
    """Rows skipped because a stopped run of the job applied them."""
    invalid_rows: int = 0
    error_count: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    # Counted by a preview only.
    new: int = 0
    updated: int = 0
    skipped: int = 0
    customers_created: int = 0
    points: int = 0
    collisions: list[dict[str, Any]] = field(default_factory=list)
    """Orders previews: rows whose order id is known for another customer or total."""

    def add_rejected(self, rejected: Sequence[RejectedRow]) -> None:
        """Count rejected rows and keep the first errors."""
        self.invalid_rows += len(rejected)
        self.error_count += keep_errors(self.errors, rejected)

    def store(self, job: ImportJob) -> None:
        """What the first pass found, on the job."""
        job.file_format = self.file_format
        job.headers = self.headers
        job.total_rows = self.total_rows + self.resumed_rows
        job.invalid_count = self.invalid_rows
        job.error_count = self.error_count
        job.errors = self.errors


def _batches(
    reader: Reader, batch_size: int, after_row: int, check: Check
) -> Iterator[tuple[list[Any], list[RejectedRow]]]:
    """The reader's rows and errors in batches of ``batch_size`` rows, after ``after_row``.

    Rows up to ``after_row`` (applied before a resume) are only counted, in ``check``.
    """
    rows: list[Any] = []
    rejected: list[RejectedRow] = []
    current: RejectedRow | None = None
    skipped_error_row = 0
    try:
        for item in reader:
            if isinstance(item, ImportRowError):
                if item.row <= after_row:
                    if item.row != skipped_error_row:
                        skipped_error_row = item.row
                        check.resumed_rows += 1
                    continue
                if current is not None and current.row == item.row:
                    current.errors.append(item)
                    continue
                current = RejectedRow(item.row, [item])
                rejected.append(current)
            else:
                if item.row_number <= after_row:
                    check.resumed_rows += 1
                    continue
                rows.append(item)
            if len(rows) + len(rejected) >= batch_size:
                yield rows, rejected
                rows, rejected, current = [], [], None
    except ImportFileError as exc:
        raise ImportFileRefused(exc.message) from exc
    if rows or rejected:
        yield rows, rejected


def _static_customer_checks(
    context: RunContext, rows: list[CustomerRow], external_seen: SeenKeys
) -> tuple[list[CustomerRow], list[RejectedRow]]:
    """Checks that need the program but not the database: tier names, repeated customer IDs."""
    labels = context.labels
    tier_ids = tier_lookup(context.program)
    tiers = context.program.settings.vip.tiers
    kept: list[CustomerRow] = []
    rejected: list[RejectedRow] = []
    for row in rows:
        errors: list[ImportRowError] = []
        if row.vip_tier is not None and row.vip_tier.strip().lower() not in tier_ids:
            names = ", ".join(tier.name for tier in tiers)
            expected = (
                f"one of this store's VIP tiers ({names}), or blank"
                if tiers
                else "blank: this store has no VIP tiers"
            )
            column = labels.get("vip_tier", "vip_tier")
            errors.append(ImportRowError(row.row_number, column, row.vip_tier, expected))
        if row.external_id is not None:
            first = external_seen.first_row(row.external_id, row.row_number)
            if first is not None:
                errors.append(
                    ImportRowError(
                        row.row_number,
                        labels.get("external_id", "external_id"),
                        row.external_id,
                        f"a customer ID not already used in this file (it is on row {first})",
                    )
                )
        if errors:
            rejected.append(RejectedRow(row.row_number, errors))
        else:
            kept.append(row)
    return kept, rejected


def _customer_checks_needing_db(context: RunContext, rows: Sequence[Sequence[Any]]) -> bool:
    options = context.options
    assert isinstance(options, CustomerImportOptions)
    replacing = context.prior_imports and options.points is PointsMode.REPLACE
    return replacing or any(row[C_EXTERNAL] is not None for row in rows)


def _db_customer_checks(
    session: Session,
    context: RunContext,
    rows: list[tuple[Any, ...]],
    *,
    preview: bool,
    check: Check,
) -> tuple[list[tuple[Any, ...]], list[RejectedRow]]:
    """Checks against the database (customer IDs held by others, balances a replace would
    lower below zero); a preview also counts what each row would do."""
    run = context.customer_run()
    labels = context.labels
    rejected: list[RejectedRow] = []
    kept = rows
    with_ids = [row[C_EXTERNAL] for row in kept if row[C_EXTERNAL] is not None]
    if with_ids:
        holders = external_ids_in_use(session, run.merchant_id, with_ids)
        still: list[tuple[Any, ...]] = []
        for row in kept:
            holder = holders.get(row[C_EXTERNAL] or "")
            if holder is not None and holder != row[C_EMAIL]:
                error = ImportRowError(
                    row[C_ROW],
                    labels.get("external_id", "external_id"),
                    row[C_EXTERNAL] or "",
                    f"a customer ID that no other customer has ({holder} has it)",
                )
                rejected.append(RejectedRow(row[C_ROW], [error]))
            else:
                still.append(row)
        kept = still

    if preview or (context.prior_imports and run.points_mode is PointsMode.REPLACE):
        existing = customer_writer.load_existing(session, run, [row[C_EMAIL] for row in kept])
        still = []
        bonus = run.create_account_points
        for row in kept:
            customer = existing.get(row[C_EMAIL])
            if customer is None:
                check.new += 1
                check.customers_created += 1
                check.points += (row[C_POINTS] or 0) + bonus
                still.append(row)
                continue
            change = points_change(run, row, customer)
            refused = reduction_error(row, labels.get("points", "points"), customer, change)
            if refused is not None:
                rejected.append(RejectedRow(row[C_ROW], [refused]))
                continue
            still.append(row)
            if change or profile_change(row, customer):
                check.updated += 1
                check.points += change
            else:
                check.skipped += 1
        kept = still
    return kept, rejected


def _check_orders(
    context: RunContext, rows: list[OrderRow]
) -> tuple[list[OrderRow], list[RejectedRow]]:
    """Checks beyond the parser's: a refund cannot exceed the order."""
    kept: list[OrderRow] = []
    rejected: list[RejectedRow] = []
    column = context.labels.get("refunded_amount", "refunded_amount")
    for row in rows:
        if row.refunded_amount is not None and row.refunded_amount > row.total:
            rejected.append(
                RejectedRow(
                    row.row_number,
                    [
                        ImportRowError(
                            row.row_number,
                            column,
                            str(row.refunded_amount),
                            f"a refunded amount no larger than the order's total ({row.total})",
                        )
                    ],
                )
            )
        else:
            kept.append(row)
    return kept, rejected


def first_pass(
    factory: sessionmaker[Session],
    context: RunContext,
    reader: Reader,
    path: str | os.PathLike[str],
    *,
    after_row: int,
    spool: Spool | None,
    preview: bool,
    progress: ProgressCallback | None,
    estimate: int,
    orders: OrdersByDate | None = None,
) -> Check:
    """Parse and check every row (after ``after_row``); spool the batches; count for a preview.

    Orders are not counted here: valid ones go to ``orders`` (to be read back by date) and only
    their rejected rows to the spool.
    """
    check = Check(file_format=reader.format_name, headers=[h.strip() for h in reader.headers])
    external_seen = SeenKeys()
    raw: RawRecords | None = None
    want_records = spool is not None and context.options.skip_invalid
    tier_ids = tier_lookup(context.program)
    done = 0
    beat_at = time.monotonic() + HEARTBEAT_SECONDS
    try:
        for rows, parse_rejected in _batches(reader, context.batch_size, after_row, check):
            if context.kind is ImportKind.CUSTOMERS:
                kept, more = _static_customer_checks(context, rows, external_seen)
                plain = [
                    customer_plain(row, tier_ids.get(row.vip_tier.strip().lower()))
                    if row.vip_tier is not None
                    else customer_plain(row, None)
                    for row in kept
                ]
                if preview or _customer_checks_needing_db(context, plain):
                    with unit_of_work(factory, merchant_id=context.merchant_id) as session:
                        plain, refused = _db_customer_checks(
                            session, context, plain, preview=preview, check=check
                        )
                    more += refused
            else:
                kept_orders, more = _check_orders(context, rows)
                assert orders is not None
                orders.add([order_plain(row) for row in kept_orders])
                plain = []
            rejected = sorted([*parse_rejected, *more], key=lambda item: item.row)
            check.add_rejected(rejected)
            check.total_rows += len(rows) + len(parse_rejected)
            if want_records:
                if raw is None:
                    raw = RawRecords(path)
                for item in rejected:
                    item.record = raw.get(item.row)
            if spool is not None and (plain or rejected):
                last_row = max(
                    [row[0] for row in plain] + [item.row for item in rejected], default=after_row
                )
                spool.write((plain, [rejected_plain(item) for item in rejected], last_row))
            done += len(rows) + len(parse_rejected)
            if progress is not None:
                progress("checking", done, max(estimate, done))
            if spool is not None and time.monotonic() >= beat_at:
                # A long check is not a stopped import: keep the job from looking stale.
                heartbeat(factory, context.merchant_id, context.job_id)
                beat_at = time.monotonic() + HEARTBEAT_SECONDS
    finally:
        reader.close()
        if raw is not None:
            raw.close()
    if progress is not None:
        progress("checking", done, done)
    return check
