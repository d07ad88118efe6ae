"""Import job tables: one row per import (its options, progress and outcome) and its rejected rows.

Also declares the index on ``orders.import_id`` (the column belongs to the program's ``orders``
table; the imports are what look orders up by it, to revert an import).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tally.audit.registry import audited
from tally.db.base import Base, CreatedAt, IdKey, TenantScoped, parent_key
from tally.program.orm import Order


class ImportKind(StrEnum):
    """What a file holds."""

    CUSTOMERS = "customers"
    ORDERS = "orders"


class ImportStatus(StrEnum):
    """Life cycle of an import job.

    ``previewed``: the file was checked, nothing written. ``queued``: the upload is stored and a
    worker will run it. ``running``: batches are being written (by the worker holding the
    lease; if that worker dies, another one takes the job over when the lease runs out; a job
    the CLI ran is resumed by running the same file again). ``failed``: stopped
    by an error, or refused because the file has errors; running the same file again resumes
    it. ``completed``: every row was applied. ``reverted``: its points were taken back.
    """

    PREVIEWED = "previewed"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    REVERTED = "reverted"


# Only the job's start, apply and revert (its status) are recorded, never its rows or progress.
@audited("import", only=("status", "kind", "file_name", "options"), on=("created", "updated"))
class ImportJob(IdKey, TenantScoped, CreatedAt, Base):
    """One import of one file: who started it, with which options, how far it got, what it did."""

    __tablename__ = "import_jobs"
    __table_args__ = (
        Index("ix_import_jobs_file", "merchant_id", "kind", "checksum"),
        # What the workers poll: queued jobs, and running ones whose lease ran out.
        Index("ix_import_jobs_status", "status"),
    )

    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    file_name: Mapped[str] = mapped_column(String(255))
    # SHA-256 of the file's bytes, hex: the same file resumes the same job.
    checksum: Mapped[str] = mapped_column(String(64))
    file_format: Mapped[str] = mapped_column(String(64), default="")
    headers: Mapped[list[str]] = mapped_column(JSON, default=list)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # "cli", or "api-key:<id>" for the API key that started it.
    created_by: Mapped[str] = mapped_column(String(100))
    total_rows: Mapped[int] = mapped_column(Integer, default=0)
    new_count: Mapped[int] = mapped_column(Integer, default=0)
    updated_count: Mapped[int] = mapped_column(Integer, default=0)
    skipped_count: Mapped[int] = mapped_column(Integer, default=0)
    # Customers the import created (members from a customer file, guests from an order file).
    customers_created: Mapped[int] = mapped_column(Integer, default=0)
    invalid_count: Mapped[int] = mapped_column(Integer, default=0)
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    points_issued: Mapped[int] = mapped_column(BigInteger, default=0)
    emails_queued: Mapped[int] = mapped_column(Integer, default=0)
    # The first errors found (row, column, value, expected, message), for the report.
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Orders previews: the first rows (row, order_id, reason) whose order id is already known
    # for another customer or with another total; skipped like any known order.
    collisions: Mapped[list[dict[str, Any]]] = mapped_column(
        JSON, default=list, server_default="[]"
    )
    # The spreadsheet row number of the last row whose effects are committed (0: none yet).
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    # How many earlier imports of the same file were reverted: part of the ledger keys, so a
    # file imported again after a revert is credited again.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    failure_reason: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    # Moved forward with every committed batch: a running job whose heartbeat is old was
    # stopped (killed, crashed) and may be resumed.
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    reverted_at: Mapped[datetime | None] = mapped_column(default=None)
    # The lease of the worker running a queued job (``imports/queue.py``): renewed while it
    # runs, so a job whose lease ran out was left by a process that died.
    locked_by: Mapped[str | None] = mapped_column(String(200), default=None)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    # Times a worker claimed the job: a file that kills every worker that runs it is failed.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Where the run is, as the running worker last wrote it (any web process shows it).
    progress_phase: Mapped[str | None] = mapped_column(String(16), default=None)
    progress_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    progress_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ImportRejectedRow(IdKey, TenantScoped, Base):
    """A row left out by an import run with skip-invalid: its values as read, and why."""

    __tablename__ = "import_rejected_rows"
    __table_args__ = (UniqueConstraint("job_id", "row_number"),)

    job_id: Mapped[int] = parent_key("import_jobs.id")
    row_number: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    record: Mapped[list[str]] = mapped_column(JSON, default=list)


class ImportUploadChunk(IdKey, TenantScoped, Base):
    """A piece (about 1 MiB) of an uploaded file a worker is to import, in order.

    The database is the one store every web and worker process shares: the request that
    receives a file writes it here with its queued job, and the worker that runs the job reads
    it back. The chunks are deleted when the job finishes (revert and the rejected-rows file
    need only the job, its rejected rows and the ledger).
    """

    __tablename__ = "import_upload_chunks"
    __table_args__ = (UniqueConstraint("job_id", "position"),)

    job_id: Mapped[int] = parent_key("import_jobs.id")
    position: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ImportKeptTier(IdKey, TenantScoped, Base):
    """A VIP tier a customers import kept for a customer, and what the customer had before.

    A revert puts the previous tier and kept tier back (``imports/kept_tiers.py``).
    """

    __tablename__ = "import_kept_tiers"
    __table_args__ = (Index("ix_import_kept_tiers_job", "job_id", "id"),)

    job_id: Mapped[int] = parent_key("import_jobs.id")
    customer_id: Mapped[int] = parent_key("customers.id")
    tier: Mapped[str] = mapped_column(String(64))
    old_tier: Mapped[str | None] = mapped_column(String(64), default=None)
    old_kept: Mapped[str | None] = mapped_column(String(64), default=None)
    old_kept_until: Mapped[datetime | None] = mapped_column(default=None)


# Reverting an orders import finds its orders by import id.
ORDERS_IMPORT_INDEX = Index("ix_orders_import_id", Order.import_id)
