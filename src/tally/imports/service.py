"""Import use cases: preview a file, run (or resume) an import, revert one, list them.

Customers (point balances) and orders come from CSV files in the layouts ``customers_csv`` and
``orders_csv`` recognise. Every import is a job (``ImportJob``) recording who started it, the
file's name and checksum, the options, the counts, the first errors and how far it got.

Decisions worth knowing:

- **Preview** parses and checks the whole file and counts what it would do, writing nothing
  but a job row with status ``previewed``. **Run** refuses a file with any invalid row, before
  writing anything (status ``failed``, the errors in the job), unless ``skip_invalid``: then the
  valid rows are applied and each rejected row is kept, with its values and the reason, for the
  rejected-rows CSV.
- **Batches and resume**: rows are applied one batch per transaction, the job's cursor (last
  row applied) and counts in the same transaction. A job stopped by an error or a kill (a
  ``running`` job whose heartbeat is older than ``STALE_AFTER``) is resumed by running the same
  file (same checksum) again: rows up to the cursor are skipped. The ledger keys make a repeat
  harmless even without the cursor.
- **Customers**: a new email creates a member; an existing customer is updated with the names,
  birthday and tier the file gives (an external id is filled in, never replaced; a guest
  becomes a member). The points become one ``import`` ledger entry keyed
  ``import:<first 20 hex digits of the checksum>:<customer id>`` (``:g<n>`` after the checksum
  once the file's earlier imports were reverted ``n`` times, so it can be imported again), so
  the same file imported again changes nothing. With
  ``PointsMode.REPLACE`` (the default) the file's value is the customer's *migrated* balance:
  the entry is the difference from what earlier imports credited (net of reverts), so a
  customer with points earned in Tally keeps them; lowering a migrated balance below what is
  left is refused for that row. ``PointsMode.ADD`` credits the file's value on top. Imported
  credits get expiry like any credit (per grant: they expire ``days`` after the import; rolling:
  the import is the balance's last change). Tiers named in the file are set as they are (by
  tier id or name; a name the program does not have is an error); the next tier review
  measures them again. With ``award_create_account`` each *new* customer gets the
  create-account action's points (when the action is enabled) and, if the action sends
  emails, one queued ``create_account_points`` email.
- **Events**: each committed batch (and a revert) emits one ``CustomersImported`` naming the
  customers it created or changed, instead of the per-customer events the same changes made one
  at a time would emit; receivers read the customers' current values when they run (the
  Dotdigital integration marks them all for its next send in one statement).
- **Orders** follow ``record_order``'s rules without the per-period limits: refunded and
  cancelled orders earn nothing, partial refunds earn on what was kept (a partially refunded
  order without a refunded amount earns nothing, since what was kept is unknown), an order id
  already known is skipped, unknown emails become guests, and VIP tiers move with the orders'
  original dates as they are counted. ``points_issued`` counts the orders' points (tier entry
  rewards they trigger come on top). Historical orders queue no "points earned" or "tier
  earned" emails and complete no pending referral (the referral's qualifying order is a new
  one); the only emails are the optional claim invitations to guests who received points.
- **Revert** is all or nothing: it writes a reversing entry for every credit the import made
  (import entries and create-account points; the points of the imported orders), or refuses,
  naming every customer whose balance is now lower than what is to be taken back (the points
  were spent). A failed import (stopped part way) can be reverted too: what it applied is
  taken back. Customers the import created stay. The orders of a reverted orders import are
  deleted (refused if a refund was recorded for one since) and their customers' VIP tiers
  recomputed, so the corrected file can be imported again; tier entry rewards are taken back
  with the orders' points but, given once per tier ever, are not given again by a re-import.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from tally import csv_safety
from tally.customers.orm import Customer, CustomerState
from tally.db.base import utcnow
from tally.db.bulk import chunks
from tally.db.engine import unit_of_work
from tally.errors import Conflict, DomainError, FieldProblem, NotFound, ValidationFailed
from tally.imports import jobs
from tally.imports.customers_csv import CustomerCsvReader, CustomerRow
from tally.imports.formats import (
    CsvInput,
    ImportFileError,
    ImportRowError,
    SeenKeys,
    customer_template_csv,
    normalised_headers,
    order_template_csv,
)
from tally.imports.jobs import ENGINE_BULK, ENGINE_RECORD_ORDER, PointsMode, RejectedRow
from tally.imports.orders_csv import OrderCsvReader, OrderRow
from tally.imports.orm import ImportJob, ImportKind, ImportRejectedRow, ImportStatus
from tally.ledger.batch import Transfer, post_transfers
from tally.ledger.orm import EntryKind, LedgerEntry
from tally.outbox.events import ImportFinished
from tally.outbox.service import emit
from tally.program import service as program_service
from tally.program.orm import Order, Refund

__all__ = [
    "ENGINE_BULK",
    "ENGINE_RECORD_ORDER",
    "CustomerImportOptions",
    "ImportFailed",
    "ImportFileRefused",
    "ImportInProgress",
    "ImportRefused",
    "OrderImportOptions",
    "PointsMode",
    "RevertRefused",
    "get_import",
    "import_notes",
    "list_imports",
    "preview_import",
    "rejected_csv",
    "revert_import",
    "run_import",
    "template_csv",
]

DEFAULT_BATCH_SIZE = 20_000
"""Rows per transaction."""
STALE_AFTER = timedelta(minutes=2)
"""A running job without progress for this long was stopped, and may be resumed."""
HEARTBEAT_SECONDS = 20.0
"""How often a running import shows it is alive while it checks its file (well within
``STALE_AFTER``)."""
MAX_REPORTED_ERRORS = 100
"""Errors kept in a job's report (all are counted)."""
SQLITE_CHECKPOINT_PAGES = 10_000
"""SQLite WAL pages between automatic checkpoints while an import writes (default 1,000)."""

log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_T = TypeVar("_T")

ProgressCallback = Callable[[str, int, int], None]
"""Called with a phase ("checking", "importing"), rows done and rows in all (an estimate)."""


# --- options and errors ----------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerImportOptions:
    """How to import a customer file."""

    points: PointsMode = PointsMode.REPLACE
    award_create_account: bool = False
    skip_invalid: bool = False

    def as_json(self) -> dict[str, Any]:
        """The options as stored on the job."""
        return {
            "points": self.points.value,
            "award_create_account": self.award_create_account,
            "skip_invalid": self.skip_invalid,
        }


@dataclass(frozen=True)
class OrderImportOptions:
    """How to import an order file."""

    vip_only: bool = False
    """Record the orders for VIP tiers only, without points."""
    send_create_account_emails: bool = False
    """Invite the guests who received points to create an account and claim them."""
    skip_invalid: bool = False

    def as_json(self) -> dict[str, Any]:
        """The options as stored on the job."""
        return {
            "vip_only": self.vip_only,
            "send_create_account_emails": self.send_create_account_emails,
            "skip_invalid": self.skip_invalid,
        }


ImportOptions = CustomerImportOptions | OrderImportOptions


def _kind_of(options: ImportOptions) -> ImportKind:
    if isinstance(options, CustomerImportOptions):
        return ImportKind.CUSTOMERS
    return ImportKind.ORDERS


class ImportFileRefused(ValidationFailed):
    """The file cannot be imported at all (encoding, header, broken CSV)."""

    title = "Import file refused"


class ImportRefused(ValidationFailed):
    """The file has invalid rows; nothing was imported."""

    title = "Import refused"

    def __init__(self, job: ImportJob) -> None:
        errors = [
            FieldProblem(
                f"row {error['row']}, {error['column']}",
                f"expected {error['expected']}",
                error["value"],
            )
            for error in job.errors
        ]
        super().__init__(
            f"{job.invalid_count} of the {job.total_rows} rows of {job.file_name} "
            f"{'is' if job.invalid_count == 1 else 'are'} not valid, so nothing was imported "
            f"(job {job.id}). Correct the file, or import with skip-invalid to import the valid "
            "rows and get the others back in a file.",
            errors,
        )
        self.job = job


class ImportInProgress(Conflict):
    """The same file is being imported right now."""

    title = "Import in progress"


class RevertRefused(Conflict):
    """An import cannot be reverted (not finished, already reverted, or points spent)."""

    title = "Revert refused"


class ImportFailed(DomainError):
    """An import stopped on an unexpected error: the merchant gets a reference, the log the rest.

    Raised from the original error (``__cause__``). ``job`` is the job marked failed, if any.
    """

    status_code = 500
    title = "Import failed"
    job: ImportJob | None = None


def _hiding_unexpected_errors(function: Callable[_P, _T]) -> Callable[_P, _T]:
    """``function`` raising ``ImportFailed`` for an unexpected error (domain errors pass)."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return function(*args, **kwargs)
        except DomainError:
            raise
        except Exception as exc:
            raise _unexpected(exc, None) from exc

    return wrapper


def _unexpected(exc: Exception, job_id: int | None) -> ImportFailed:
    """Log ``exc`` (call it while handling it) and make the merchant's side of it.

    A driver's message can carry SQL and the file's values, and a merchant can do nothing with
    it; the operator finds it in the log by the reference.
    """
    reference = secrets.token_hex(4)
    log.exception(
        "import %s failed unexpectedly (reference %s)",
        job_id if job_id is not None else "preview",
        reference,
        exc_info=exc,
    )
    return ImportFailed(
        f"the import failed unexpectedly (reference {reference}); "
        "the operator's log has the details"
    )


def template_csv(kind: ImportKind) -> str:
    """The downloadable template for a kind of file, with example rows."""
    return customer_template_csv() if kind is ImportKind.CUSTOMERS else order_template_csv()


# --- reading the file ------------------------------------------------------------------------


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


def _open(kind: ImportKind, path: str | os.PathLike[str], now: datetime) -> Reader:
    try:
        if kind is ImportKind.CUSTOMERS:
            return CustomerCsvReader(path, today=now.date())
        return OrderCsvReader(path, now=now)
    except ImportFileError as exc:
        raise ImportFileRefused(exc.message) from exc


class _RawRecords:
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


def _labels(reader: Reader) -> dict[str, str]:
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


# --- the first pass: checking ------------------------------------------------------------------


@dataclass
class _Check:
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

    def add_rejected(self, rejected: Sequence[RejectedRow]) -> None:
        """Count rejected rows and keep the first errors."""
        for item in rejected:
            self.invalid_rows += 1
            self.error_count += len(item.errors)
            for error in item.errors:
                if len(self.errors) < MAX_REPORTED_ERRORS:
                    self.errors.append(jobs.error_dict(error))


def _batches(
    reader: Reader, batch_size: int, after_row: int, check: _Check
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


@dataclass
class _Context:
    """One import run: the job, the options, and what the batches need."""

    merchant_id: int
    job_id: int
    kind: ImportKind
    options: ImportOptions
    program: program_service.Program
    now: datetime
    labels: dict[str, str]
    checksum: str
    generation: int
    batch_size: int
    engine: str = ENGINE_BULK
    prior_imports: bool = True
    known_orders_possible: bool = True

    def customer_run(self) -> jobs.CustomerRun:
        """The customer-batch context."""
        options = self.options
        assert isinstance(options, CustomerImportOptions)
        # 20 hex digits (80 bits) of the checksum tell files apart; the job keeps all 64.
        prefix = f"import:{self.checksum[:20]}"
        if self.generation:
            prefix += f":g{self.generation}"
        return jobs.CustomerRun(
            merchant_id=self.merchant_id,
            job_id=self.job_id,
            key_prefix=prefix,
            points_mode=options.points,
            award_create_account=options.award_create_account,
            program=self.program,
            now=self.now,
        )

    def order_run(self) -> jobs.OrderRun:
        """The order-batch context."""
        options = self.options
        assert isinstance(options, OrderImportOptions)
        return jobs.OrderRun(
            merchant_id=self.merchant_id,
            job_id=self.job_id,
            reward_points=not options.vip_only,
            program=self.program,
            now=self.now,
            engine=self.engine,
            known_orders_possible=self.known_orders_possible,
        )


def _static_customer_checks(
    context: _Context, rows: list[CustomerRow], external_seen: SeenKeys
) -> tuple[list[CustomerRow], list[RejectedRow]]:
    """Checks that need the program but not the database: tier names, repeated customer IDs."""
    labels = context.labels
    tier_ids = jobs.tier_lookup(context.program)
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


def _customer_checks_needing_db(context: _Context, rows: Sequence[Sequence[Any]]) -> bool:
    options = context.options
    assert isinstance(options, CustomerImportOptions)
    replacing = context.prior_imports and options.points is PointsMode.REPLACE
    return replacing or any(row[jobs.C_EXTERNAL] is not None for row in rows)


def _db_customer_checks(
    session: Session,
    context: _Context,
    rows: list[tuple[Any, ...]],
    *,
    preview: bool,
    check: _Check,
) -> tuple[list[tuple[Any, ...]], list[RejectedRow]]:
    """Checks against the database (customer IDs held by others, balances a replace would
    lower below zero); a preview also counts what each row would do."""
    run = context.customer_run()
    labels = context.labels
    rejected: list[RejectedRow] = []
    kept = rows
    with_ids = [row[jobs.C_EXTERNAL] for row in kept if row[jobs.C_EXTERNAL] is not None]
    if with_ids:
        holders = jobs.external_ids_in_use(session, run.merchant_id, with_ids)
        still: list[tuple[Any, ...]] = []
        for row in kept:
            holder = holders.get(row[jobs.C_EXTERNAL] or "")
            if holder is not None and holder != row[jobs.C_EMAIL]:
                error = ImportRowError(
                    row[jobs.C_ROW],
                    labels.get("external_id", "external_id"),
                    row[jobs.C_EXTERNAL] or "",
                    f"a customer ID that no other customer has ({holder} has it)",
                )
                rejected.append(RejectedRow(row[jobs.C_ROW], [error]))
            else:
                still.append(row)
        kept = still

    if preview or (context.prior_imports and run.points_mode is PointsMode.REPLACE):
        existing = jobs.load_existing(session, run, [row[jobs.C_EMAIL] for row in kept])
        still = []
        bonus = run.create_account_points
        for row in kept:
            customer = existing.get(row[jobs.C_EMAIL])
            if customer is None:
                check.new += 1
                check.customers_created += 1
                check.points += (row[jobs.C_POINTS] or 0) + bonus
                still.append(row)
                continue
            change = jobs.points_change(run, row, customer)
            refused = jobs.reduction_error(row, labels.get("points", "points"), customer, change)
            if refused is not None:
                rejected.append(RejectedRow(row[jobs.C_ROW], [refused]))
                continue
            still.append(row)
            if change or jobs.profile_change(row, customer):
                check.updated += 1
                check.points += change
            else:
                check.skipped += 1
        kept = still
    return kept, rejected


def _check_orders(
    context: _Context, rows: list[OrderRow]
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


def _first_pass(
    factory: sessionmaker[Session],
    context: _Context,
    reader: Reader,
    path: str | os.PathLike[str],
    *,
    after_row: int,
    spool: jobs.Spool | None,
    preview: bool,
    progress: ProgressCallback | None,
    estimate: int,
    orders: jobs.OrdersByDate | None = None,
) -> _Check:
    """Parse and check every row (after ``after_row``); spool the batches; count for a preview.

    Orders are not counted here: valid ones go to ``orders`` (to be read back by date) and only
    their rejected rows to the spool.
    """
    check = _Check(file_format=reader.format_name, headers=[h.strip() for h in reader.headers])
    external_seen = SeenKeys()
    raw: _RawRecords | None = None
    want_records = spool is not None and context.options.skip_invalid
    tier_ids = jobs.tier_lookup(context.program)
    done = 0
    beat_at = time.monotonic() + HEARTBEAT_SECONDS
    try:
        for rows, parse_rejected in _batches(reader, context.batch_size, after_row, check):
            if context.kind is ImportKind.CUSTOMERS:
                kept, more = _static_customer_checks(context, rows, external_seen)
                plain = [
                    jobs.customer_plain(row, tier_ids.get(row.vip_tier.strip().lower()))
                    if row.vip_tier is not None
                    else jobs.customer_plain(row, None)
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
                orders.add([jobs.order_plain(row) for row in kept_orders])
                plain = []
            rejected = sorted([*parse_rejected, *more], key=lambda item: item.row)
            check.add_rejected(rejected)
            check.total_rows += len(rows) + len(parse_rejected)
            if want_records:
                if raw is None:
                    raw = _RawRecords(path)
                for item in rejected:
                    item.record = raw.get(item.row)
            if spool is not None and (plain or rejected):
                last_row = max(
                    [row[0] for row in plain] + [item.row for item in rejected], default=after_row
                )
                spool.write((plain, [jobs.rejected_plain(item) for item in rejected], last_row))
            done += len(rows) + len(parse_rejected)
            if progress is not None:
                progress("checking", done, max(estimate, done))
            if spool is not None and time.monotonic() >= beat_at:
                # A long check is not a stopped import: keep the job from looking stale.
                _heartbeat(factory, context)
                beat_at = time.monotonic() + HEARTBEAT_SECONDS
    finally:
        reader.close()
        if raw is not None:
            raw.close()
    if progress is not None:
        progress("checking", done, done)
    return check


def _heartbeat(factory: sessionmaker[Session], context: _Context) -> None:
    with unit_of_work(factory, merchant_id=context.merchant_id) as session:
        session.execute(
            update(ImportJob)
            .where(ImportJob.id == context.job_id)
            .values(heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        )


# --- jobs ------------------------------------------------------------------------------------


def _load_program(session: Session, merchant_id: int) -> program_service.Program:
    return program_service.load(session, merchant_id)


def _new_job(
    session: Session,
    *,
    merchant_id: int,
    kind: ImportKind,
    status: ImportStatus,
    file_name: str,
    checksum: str,
    options: ImportOptions,
    created_by: str,
    now: datetime,
) -> ImportJob:
    reverted = (
        session.scalar(
            select(func.count(ImportJob.id)).where(
                ImportJob.merchant_id == merchant_id,
                ImportJob.kind == kind,
                ImportJob.checksum == checksum,
                ImportJob.status == ImportStatus.REVERTED,
            )
        )
        or 0
    )
    job = ImportJob(
        merchant_id=merchant_id,
        kind=kind.value,
        status=status.value,
        file_name=file_name[:255],
        checksum=checksum,
        options=options.as_json(),
        created_by=created_by[:100],
        generation=reverted,
        created_at=now,
    )
    session.add(job)
    session.flush()
    return job


@_hiding_unexpected_errors
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
    kind = _kind_of(options)
    now = utcnow()
    facts = file_facts(path)
    reader = _open(kind, path, now)
    try:
        with factory() as session:
            program = _load_program(session, merchant_id)
        context = _Context(
            merchant_id=merchant_id,
            job_id=0,
            kind=kind,
            options=options,
            program=program,
            now=now,
            labels=_labels(reader),
            checksum=facts.checksum,
            generation=0,
            batch_size=batch_size,
        )
        orders = jobs.OrdersByDate() if kind is ImportKind.ORDERS else None
        try:
            check = _first_pass(
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
        job = _new_job(
            session,
            merchant_id=merchant_id,
            kind=kind,
            status=ImportStatus.PREVIEWED,
            file_name=file_name or Path(path).name,
            checksum=facts.checksum,
            options=options,
            created_by=created_by,
            now=now,
        )
        _store_check(job, check)
        job.new_count = check.new
        job.updated_count = check.updated
        job.skipped_count = check.skipped
        job.customers_created = check.customers_created
        job.points_issued = check.points
        job.finished_at = utcnow()
    return job


def _preview_orders(
    factory: sessionmaker[Session], context: _Context, orders: jobs.OrdersByDate, check: _Check
) -> None:
    """Count what the checked orders would do, in date order as the import applies them."""
    planner = jobs.OrderPlanner(context.order_run())
    carry: dict[str, jobs.TierState] = {}
    guests_seen = SeenKeys()
    for batch in _date_batches(orders, context.batch_size, 0):
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


def _date_batches(
    orders: jobs.OrdersByDate, size: int, applied: int
) -> Iterator[list[Sequence[Any]]]:
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


def _order_batches(
    spool: jobs.Spool, orders: jobs.OrdersByDate, size: int, applied: int
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
    for batch in _date_batches(orders, size, max(applied - position, 0)):
        position = max(position, applied) + len(batch)
        yield batch, [], position


def import_notes(session: Session, *, merchant_id: int, options: ImportOptions) -> list[str]:
    """What about the program makes an import do less than a merchant may expect, in words."""
    settings = program_service.load(session, merchant_id).settings
    notes: list[str] = []
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


def _store_check(job: ImportJob, check: _Check) -> None:
    job.file_format = check.file_format
    job.headers = check.headers
    job.total_rows = check.total_rows + check.resumed_rows
    job.invalid_count = check.invalid_rows
    job.error_count = check.error_count
    job.errors = check.errors


def _claim(
    session: Session,
    *,
    merchant_id: int,
    kind: ImportKind,
    checksum: str,
    file_name: str,
    options: ImportOptions,
    created_by: str,
    now: datetime,
    stale_after: timedelta,
) -> ImportJob:
    """The job to run: a stopped one of the same file (resumed), a preview of it, or a new one."""
    stmt = (
        select(ImportJob)
        .where(
            ImportJob.merchant_id == merchant_id,
            ImportJob.kind == kind,
            ImportJob.checksum == checksum,
            ImportJob.status.in_(
                [ImportStatus.RUNNING, ImportStatus.FAILED, ImportStatus.PREVIEWED]
            ),
        )
        .order_by(ImportJob.id.desc())
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    candidates = list(session.scalars(stmt))
    for job in candidates:
        if job.status == ImportStatus.RUNNING and (
            job.heartbeat_at is not None and job.heartbeat_at > now - stale_after
        ):
            raise ImportInProgress(
                f"this file is being imported right now (job {job.id}, last progress at "
                f"{job.heartbeat_at.isoformat(timespec='seconds')}); if that import was stopped, "
                f"run it again after {int(stale_after.total_seconds())} seconds without progress"
            )
    chosen = next(
        (job for job in candidates if job.status != ImportStatus.PREVIEWED and job.cursor > 0),
        None,
    )
    if chosen is not None:
        if chosen.options != options.as_json():
            raise Conflict(
                f"job {chosen.id} imported this file part-way with other options "
                f"({_describe(chosen.options)}); run it again with the same options to finish it"
            )
    else:
        chosen = next(iter(candidates), None)
        if chosen is None:
            chosen = _new_job(
                session,
                merchant_id=merchant_id,
                kind=kind,
                status=ImportStatus.RUNNING,
                file_name=file_name,
                checksum=checksum,
                options=options,
                created_by=created_by,
                now=now,
            )
        chosen.options = options.as_json()
        chosen.created_by = created_by[:100]
        chosen.file_name = file_name[:255]
        _reset_counts(chosen)
    chosen.status = ImportStatus.RUNNING
    chosen.started_at = chosen.started_at or now
    chosen.heartbeat_at = now
    chosen.failure_reason = None
    chosen.finished_at = None
    session.flush()
    return chosen


def _reset_counts(job: ImportJob) -> None:
    """A job started over from its first row (a preview, or a refused run) counts afresh."""
    job.new_count = job.updated_count = job.skipped_count = job.customers_created = 0
    job.invalid_count = job.error_count = job.emails_queued = job.points_issued = 0
    job.errors = []


def _describe(options: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in sorted(options.items()))


def _mark_failed(
    factory: sessionmaker[Session], merchant_id: int, job_id: int, reason: str
) -> ImportJob | None:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        job = session.get(ImportJob, job_id)
        if job is not None and job.status == ImportStatus.RUNNING:
            job.status = ImportStatus.FAILED
            job.failure_reason = reason[:2000]
            job.finished_at = utcnow()
            _announce_finished(session, job)
        return job


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
    engine: Literal["bulk", "record_order"] = ENGINE_BULK,
    on_claimed: Callable[[int], None] | None = None,
) -> ImportJob:
    """Import a file, or finish the stopped import of the same file; returns the finished job.

    Raises ``ImportFileRefused`` (unreadable file, nothing recorded), ``ImportRefused`` (invalid
    rows without ``skip_invalid``: the job is recorded as failed with its errors),
    ``ImportInProgress``, and ``ImportFailed`` for an unexpected error once the job is recorded
    (the job's ``failure_reason`` then names a reference to the logged error, not the error
    itself). ``after_batch`` is called with the number of batches committed so far
    (tests stop the import there); ``engine="record_order"`` records orders one at a time
    through ``record_order`` (to check the bulk writes against it). ``on_claimed`` is called with
    the job's id as soon as the job is recorded as running (before the file is checked).
    """
    kind = _kind_of(options)
    now = utcnow()
    facts = file_facts(path)
    name = file_name or Path(path).name
    reader = _open(kind, path, now)
    try:
        with unit_of_work(factory, merchant_id=merchant_id) as session:
            job = _claim(
                session,
                merchant_id=merchant_id,
                kind=kind,
                checksum=facts.checksum,
                file_name=name,
                options=options,
                created_by=created_by,
                now=now,
                stale_after=stale_after,
            )
            program = _load_program(session, merchant_id)
            prior_imports = _has_prior_imports(session, merchant_id, job.id)
            had_orders = session.scalar(
                select(Order.id).where(Order.merchant_id == merchant_id).limit(1)
            )
            job_id, after_row, generation = job.id, job.cursor, job.generation
    except BaseException:
        reader.close()
        raise
    if on_claimed is not None:
        on_claimed(job_id)
    context = _Context(
        merchant_id=merchant_id,
        job_id=job_id,
        kind=kind,
        options=options,
        program=program,
        now=now,
        labels=_labels(reader),
        checksum=facts.checksum,
        generation=generation,
        batch_size=batch_size,
        engine=engine,
        prior_imports=prior_imports,
        known_orders_possible=had_orders is not None,
    )
    spool = jobs.Spool()
    orders = jobs.OrdersByDate() if kind is ImportKind.ORDERS else None
    try:
        check = _first_pass(
            factory,
            context,
            reader,
            path,
            # Orders are applied by date, so their cursor is a position in that sequence (made
            # again from the whole file), not a row of the file.
            after_row=after_row if orders is None else 0,
            spool=spool,
            preview=False,
            progress=progress,
            estimate=facts.lines,
            orders=orders,
        )
        if check.invalid_rows and not options.skip_invalid:
            with unit_of_work(factory, merchant_id=merchant_id) as session:
                job = session.get_one(ImportJob, job_id)
                _store_check(job, check)
                job.status = ImportStatus.FAILED
                job.failure_reason = (
                    f"refused: {check.invalid_rows} invalid rows, nothing was imported"
                )
                job.finished_at = utcnow()
            raise ImportRefused(job)
        with unit_of_work(factory, merchant_id=merchant_id) as session:
            job = session.get_one(ImportJob, job_id)
            job.file_format = check.file_format
            job.headers = check.headers
            job.total_rows = check.total_rows + check.resumed_rows
        if orders is None:
            batches: Iterator[Any] = spool.read()
            done = check.resumed_rows
        else:
            batches = _order_batches(spool, orders, batch_size, after_row)
            done = after_row
        _second_pass(factory, context, batches, progress, after_batch, done, job.total_rows)
        _finish(factory, context)
    except ImportRefused:
        raise
    except DomainError as exc:
        _mark_failed(factory, merchant_id, job_id, exc.detail)
        raise
    except Exception as exc:
        failed = _unexpected(exc, job_id)
        failed.job = _mark_failed(factory, merchant_id, job_id, failed.detail)
        raise failed from exc
    except BaseException:
        # Interrupted (Ctrl-C, a stopping process): nothing went wrong with the file.
        _mark_failed(
            factory,
            merchant_id,
            job_id,
            "the import was interrupted; run the same file again to finish it",
        )
        raise
    finally:
        spool.close()
        if orders is not None:
            orders.close()
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        return session.get_one(ImportJob, job_id)


def _has_prior_imports(session: Session, merchant_id: int, job_id: int) -> bool:
    """Whether an earlier customer import may have credited points (replace measures them)."""
    found = session.scalar(
        select(ImportJob.id)
        .where(
            ImportJob.merchant_id == merchant_id,
            ImportJob.kind == ImportKind.CUSTOMERS,
            ImportJob.status.in_(
                [
                    ImportStatus.RUNNING,
                    ImportStatus.FAILED,
                    ImportStatus.COMPLETED,
                    ImportStatus.REVERTED,
                ]
            ),
            (ImportJob.id != job_id) | (ImportJob.cursor > 0),
        )
        .limit(1)
    )
    return found is not None


def _second_pass(
    factory: sessionmaker[Session],
    context: _Context,
    batches: Iterator[Any],
    progress: ProgressCallback | None,
    after_batch: Callable[[int], None] | None,
    done: int,
    total: int,
) -> None:
    """Apply the batches, one transaction each, the cursor moving with them."""
    customer_run = context.customer_run() if context.kind is ImportKind.CUSTOMERS else None
    order_run = context.order_run() if context.kind is ImportKind.ORDERS else None
    planner = jobs.OrderPlanner(order_run) if order_run is not None else None
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
    context: _Context,
    batch: Any,
    customer_run: jobs.CustomerRun | None,
    order_run: jobs.OrderRun | None,
    planner: jobs.OrderPlanner | None,
) -> int:
    """Write one spooled batch and move the job's cursor, in one transaction; its row count."""
    plain_rows, plain_rejected, last_row = batch
    rejected = [jobs.rejected_row(item) for item in plain_rejected]
    with unit_of_work(factory, merchant_id=context.merchant_id) as session:
        counts: dict[str, int] = defaultdict(int)
        if customer_run is not None:
            written = jobs.write_customers(session, customer_run, plain_rows, context.labels)
            counts.update(
                new=written.new,
                customers_created=written.new,
                updated=written.updated,
                skipped=written.skipped,
                points=written.points,
                emails=written.emails,
            )
            rejected = sorted([*rejected, *written.rejected], key=lambda item: item.row)
        else:
            assert order_run is not None
            assert planner is not None
            result = jobs.write_orders(session, order_run, planner, plain_rows)
            counts.update(
                new=result.new,
                customers_created=result.guests,
                skipped=result.skipped,
                points=result.points,
            )
        _store_rejected(session, context, rejected)
        job = session.get_one(ImportJob, context.job_id)
        job.new_count += counts["new"]
        job.updated_count += counts["updated"]
        job.skipped_count += counts["skipped"]
        job.customers_created += counts["customers_created"]
        job.points_issued += counts["points"]
        job.emails_queued += counts["emails"]
        _add_errors(job, rejected)
        job.cursor = max(job.cursor, last_row)
        job.heartbeat_at = utcnow()
    return len(plain_rows) + len(plain_rejected)


def _add_errors(job: ImportJob, rejected: Sequence[RejectedRow]) -> None:
    if not rejected:
        return
    errors = list(job.errors)
    for item in rejected:
        job.invalid_count += 1
        job.error_count += len(item.errors)
        for error in item.errors:
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(jobs.error_dict(error))
    job.errors = errors


def _store_rejected(session: Session, context: _Context, rejected: Sequence[RejectedRow]) -> None:
    if not rejected:
        return
    session.execute(
        insert(ImportRejectedRow),
        [
            {
                "merchant_id": context.merchant_id,
                "job_id": context.job_id,
                "row_number": item.row,
                "reason": item.reason,
                "record": item.record or [],
            }
            for item in rejected
        ],
    )


def _finish(factory: sessionmaker[Session], context: _Context) -> None:
    """After the last batch: the claim emails of an orders import, then the job is completed."""
    options = context.options
    if isinstance(options, OrderImportOptions) and options.send_create_account_emails:
        _invite_guests(factory, context)
    with unit_of_work(factory, merchant_id=context.merchant_id) as session:
        job = session.get_one(ImportJob, context.job_id)
        job.status = ImportStatus.COMPLETED
        job.finished_at = utcnow()
        job.failure_reason = None
        _announce_finished(session, job)


def _announce_finished(session: Session, job: ImportJob) -> None:
    """Emit ImportFinished for a job that just completed or failed (webhooks announce it)."""
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


def _invite_guests(factory: sessionmaker[Session], context: _Context) -> None:
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
                variables=lambda customer, points=points: {  # type: ignore[misc]
                    "points": points[customer.id],
                    "claim_url": claim_url,
                },
                where=[Customer.id.in_(list(points))],
            )
            job = session.get_one(ImportJob, context.job_id)
            job.emails_queued += queued.queued


# --- reading jobs ----------------------------------------------------------------------------


def get_import(session: Session, *, merchant_id: int, job_id: int) -> ImportJob:
    """One of the merchant's import jobs (another merchant's is not found)."""
    job = session.scalar(
        select(ImportJob).where(ImportJob.merchant_id == merchant_id, ImportJob.id == job_id)
    )
    if job is None:
        raise NotFound(f"import {job_id} does not exist")
    return job


def list_imports(
    session: Session, *, merchant_id: int, limit: int = 50, offset: int = 0
) -> tuple[list[ImportJob], int]:
    """A page of the merchant's import jobs, newest first, and how many there are."""
    base = select(ImportJob).where(ImportJob.merchant_id == merchant_id)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.scalars(base.order_by(ImportJob.id.desc()).limit(limit).offset(offset))
    return list(rows), total


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


# --- revert ----------------------------------------------------------------------------------


@dataclass
class _Credit:
    id: int
    customer_id: int
    points: int
    kind: str
    remaining: int | None


def _job_entries(session: Session, job: ImportJob) -> list[_Credit]:
    """What the import credited: the entries it wrote are marked with the job."""
    stmt = select(
        LedgerEntry.id,
        LedgerEntry.customer_id,
        LedgerEntry.points,
        LedgerEntry.kind,
        LedgerEntry.remaining,
    ).where(
        LedgerEntry.merchant_id == job.merchant_id,
        LedgerEntry.source_ref == jobs.job_source_ref(job.id),
    )
    return [_Credit(*row) for row in session.execute(stmt.order_by(LedgerEntry.id))]


def _refunded_since(session: Session, job: ImportJob) -> list[str]:
    """Order ids of the import's orders that had a refund recorded after the import."""
    return list(
        session.scalars(
            select(Order.order_id)
            .join(Refund, Refund.order_pk == Order.id)
            .where(Order.merchant_id == job.merchant_id, Order.import_id == job.id)
            .distinct()
            .order_by(Order.order_id)
            .limit(MAX_REPORTED_ERRORS)
        )
    )


def _remove_orders(session: Session, job: ImportJob, now: datetime) -> None:
    """Delete a reverted import's orders and move their customers' tiers back.

    The orders go (rather than stay, marked) so that they stop counting toward VIP tiers and
    the corrected file can be imported again.
    """
    customer_ids = list(
        session.scalars(
            select(Order.customer_id)
            .where(Order.merchant_id == job.merchant_id, Order.import_id == job.id)
            .distinct()
        )
    )
    session.execute(
        delete(Order)
        .where(Order.merchant_id == job.merchant_id, Order.import_id == job.id)
        .execution_options(synchronize_session=False)
    )
    program = program_service.load(session, job.merchant_id)
    if not program.settings.vip.enabled:
        return
    for part in chunks(customer_ids):
        for customer in session.scalars(select(Customer).where(Customer.id.in_(part))):
            program_service.recompute_tier(session, program, customer, now=now)


def revert_import(factory: sessionmaker[Session], *, merchant_id: int, job_id: int) -> ImportJob:
    """Take back every point a completed (or part-applied, failed) import credited, all or nothing.

    Refuses (``RevertRefused``, naming each customer) when a customer's balance is now lower
    than what the import credited them: those points were spent.
    """
    now = utcnow()
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        job = get_import(session, merchant_id=merchant_id, job_id=job_id)
        if job.status == ImportStatus.REVERTED:
            raise RevertRefused(f"import {job.id} was already reverted")
        if job.status not in (ImportStatus.COMPLETED, ImportStatus.FAILED):
            raise RevertRefused(
                f"import {job.id} is {job.status}: only a completed import, or one that stopped "
                "part way (failed), can be reverted"
            )
        if job.kind == ImportKind.ORDERS and (refunded := _refunded_since(session, job)):
            raise RevertRefused(
                f"import {job.id} cannot be reverted: refunds were recorded for some of its "
                "orders since it ran, and reverting would delete those orders; nothing was "
                f"changed (orders: {', '.join(refunded)})"
            )
        credits = _job_entries(session, job)
        per_customer: dict[int, int] = defaultdict(int)
        for credit in credits:
            per_customer[credit.customer_id] += credit.points
        balances = _lock_balances(session, list(per_customer))
        short = [
            (customer_id, amount)
            for customer_id, amount in per_customer.items()
            if amount > balances.get(customer_id, (0, ""))[0]
        ]
        if short:
            listed = (
                ""
                if len(short) <= MAX_REPORTED_ERRORS
                else f" (the first {MAX_REPORTED_ERRORS} are listed)"
            )
            raise RevertRefused(
                f"import {job.id} cannot be reverted: "
                + (
                    "1 customer has already spent points it credited (the balance is"
                    if len(short) == 1
                    else f"{len(short)} customers have already spent points it credited (their "
                    "balance is"
                )
                + " lower than what it would take back); "
                f"nothing was changed{listed}",
                [
                    FieldProblem(
                        balances[customer_id][1],
                        f"balance {balances[customer_id][0]} is lower than the {amount} "
                        "points to take back",
                        balances[customer_id][0],
                    )
                    for customer_id, amount in short[:MAX_REPORTED_ERRORS]
                ],
            )
        _write_reversals(session, job, credits, per_customer, now)
        if job.kind == ImportKind.ORDERS:
            _remove_orders(session, job, now)
        job.status = ImportStatus.REVERTED
        job.reverted_at = now
        session.flush()
        return job


def _lock_balances(session: Session, ids: Sequence[int]) -> dict[int, tuple[int, str]]:
    """Balance and email of each customer, locked until the end of the transaction."""
    found: dict[int, tuple[int, str]] = {}
    postgres = session.get_bind().dialect.name == "postgresql"
    for part in chunks(list(ids)):
        stmt = select(Customer.id, Customer.points_balance, Customer.email).where(
            Customer.id.in_(part)
        )
        if postgres:
            stmt = stmt.with_for_update()
        for customer_id, balance, email in session.execute(stmt):
            found[customer_id] = (int(balance), email)
    return found


def _write_reversals(
    session: Session,
    job: ImportJob,
    credits: Sequence[_Credit],
    per_customer: dict[int, int],
    now: datetime,
) -> None:
    program = program_service.load(session, job.merchant_id)
    expires_at = program_service.credit_expiry(program, now)
    # Each reversal draws first on the credit it reverses; what was already spent from that
    # credit comes out of the customer's other credits, soonest-expiring first (as a spend).
    post_transfers(
        session,
        merchant_id=job.merchant_id,
        now=now,
        announce=False,
        transfers=[
            Transfer(
                customer_id=credit.customer_id,
                points=-credit.points,
                kind=EntryKind.IMPORT if credit.kind == EntryKind.IMPORT else EntryKind.ADJUST,
                reason=f"Import {job.id} reverted",
                idempotency_key=f"import-revert:{job.id}:{credit.id}",
                source_ref=f"import-revert:{job.id}",
                expires_at=expires_at,
                draws_on=credit.id if credit.points > 0 else None,
            )
            for credit in credits
        ],
    )
    jobs.announce(
        session, job.merchant_id, job.id, {cid for cid, amount in per_customer.items() if amount}
    )
