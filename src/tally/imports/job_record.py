"""The import job row: claimed to run a file (new or resumed), its heartbeat, outcome, listing.

A file is run by the job of the same file that stopped part-way (resumed after its cursor), or
else by its preview's job, or by a new one; a ``running`` job whose heartbeat is older than
``STALE_AFTER`` was stopped and may be taken over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.db.rows import merchant_row
from tally.errors import Conflict
from tally.imports.errors import ImportInProgress
from tally.imports.events import announce_finished
from tally.imports.options import ImportOptions
from tally.imports.orm import ImportJob, ImportKind, ImportStatus

if TYPE_CHECKING:  # rejected.py reads jobs through this module
    from tally.imports.rejected import RejectedRow

STALE_AFTER = timedelta(minutes=2)
"""A running job without progress for this long was stopped, and may be resumed."""


@dataclass(frozen=True)
class FileToImport:
    """A merchant's file and how to import it: what its job records of it."""

    merchant_id: int
    kind: ImportKind
    checksum: str
    file_name: str
    options: ImportOptions
    created_by: str

    def of_this_file(self) -> list[ColumnElement[bool]]:
        """The conditions that pick this file's jobs (any status)."""
        return [
            ImportJob.merchant_id == self.merchant_id,
            ImportJob.kind == self.kind,
            ImportJob.checksum == self.checksum,
        ]

    def write_to(self, job: ImportJob) -> None:
        """Record the file's name, options and who asked on the job that will run it."""
        job.options = self.options.as_json()
        job.created_by = self.created_by[:100]
        job.file_name = self.file_name[:255]


def new_job(
    session: Session, file: FileToImport, *, status: ImportStatus, now: datetime
) -> ImportJob:
    """A new job for the file; its generation counts the file's reverted imports."""
    reverted = (
        session.scalar(
            select(func.count(ImportJob.id)).where(
                *file.of_this_file(), ImportJob.status == ImportStatus.REVERTED
            )
        )
        or 0
    )
    job = ImportJob(
        merchant_id=file.merchant_id,
        kind=file.kind.value,
        status=status.value,
        checksum=file.checksum,
        generation=reverted,
        created_at=now,
    )
    file.write_to(job)
    session.add(job)
    session.flush()
    return job


def file_jobs(
    session: Session,
    file: FileToImport,
    *,
    statuses: Iterable[ImportStatus],
    job_id: int | None = None,
) -> list[ImportJob]:
    """This file's jobs in ``statuses`` (only ``job_id``, if given), newest first.

    Locked on PostgreSQL, so two requests choosing a job for the same file take turns.
    """
    stmt = (
        select(ImportJob)
        .where(*file.of_this_file(), ImportJob.status.in_(list(statuses)))
        .order_by(ImportJob.id.desc())
    )
    if job_id is not None:
        stmt = stmt.where(ImportJob.id == job_id)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return list(session.scalars(stmt))


def stopped_part_way(candidates: Iterable[ImportJob], options: ImportOptions) -> ImportJob | None:
    """The job that stopped part-way through this file, to be resumed (``None``: none did).

    Raises ``Conflict`` when it ran with other options: resuming would mix the two.
    """
    stopped = next(
        (job for job in candidates if job.status != ImportStatus.PREVIEWED and job.cursor > 0),
        None,
    )
    if stopped is not None and stopped.options != options.as_json():
        raise Conflict(
            f"job {stopped.id} imported this file part-way with other options "
            f"({_describe(stopped.options)}); run it again with the same options to finish it"
        )
    return stopped


def claim(
    session: Session,
    file: FileToImport,
    *,
    now: datetime,
    stale_after: timedelta,
    job_id: int | None = None,
) -> ImportJob:
    """The job to run: a stopped one of the same file (resumed), a preview of it, or a new one.

    With ``job_id``: that job, which the import queue leased to the caller.
    """
    candidates = file_jobs(
        session,
        file,
        statuses=[ImportStatus.RUNNING, ImportStatus.FAILED, ImportStatus.PREVIEWED],
        job_id=job_id,
    )
    if job_id is not None and not candidates:
        raise Conflict(f"job {job_id} is not an import of this file that can run now")
    if job_id is None:
        _refuse_if_running(candidates, now=now, stale_after=stale_after)
    chosen = stopped_part_way(candidates, file.options)
    if chosen is None:
        chosen = next(iter(candidates), None) or new_job(
            session, file, status=ImportStatus.RUNNING, now=now
        )
        file.write_to(chosen)
        reset_counts(chosen)
    chosen.status = ImportStatus.RUNNING
    chosen.started_at = chosen.started_at or now
    chosen.heartbeat_at = now
    chosen.failure_reason = None
    chosen.finished_at = None
    session.flush()
    return chosen


def _refuse_if_running(
    candidates: Iterable[ImportJob], *, now: datetime, stale_after: timedelta
) -> None:
    for job in candidates:
        if job.status == ImportStatus.RUNNING and (
            job.heartbeat_at is not None and job.heartbeat_at > now - stale_after
        ):
            raise ImportInProgress(
                f"this file is being imported right now (job {job.id}, last progress at "
                f"{job.heartbeat_at.isoformat(timespec='seconds')}); if that import was stopped, "
                f"run it again after {int(stale_after.total_seconds())} seconds without progress"
            )


def reset_counts(job: ImportJob) -> None:
    """A job started over from its first row (a preview, or a refused run) counts afresh."""
    job.new_count = job.updated_count = job.skipped_count = job.customers_created = 0
    job.invalid_count = job.error_count = job.emails_queued = job.points_issued = 0
    job.errors = []


def _describe(options: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in sorted(options.items()))


@dataclass
class BatchResult:
    """What writing one batch did, as its job counts it."""

    new: int = 0
    updated: int = 0
    skipped: int = 0
    customers_created: int = 0
    points: int = 0
    emails: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    """Rows refused while writing (their checks need the rows written before them)."""

    def add_to(self, job: ImportJob) -> None:
        """Add the batch's counts to the job's."""
        job.new_count += self.new
        job.updated_count += self.updated
        job.skipped_count += self.skipped
        job.customers_created += self.customers_created
        job.points_issued += self.points
        job.emails_queued += self.emails


def heartbeat(factory: sessionmaker[Session], merchant_id: int, job_id: int) -> None:
    """Show that the job is alive (a running job silent for ``STALE_AFTER`` may be taken over)."""
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        session.execute(
            update(ImportJob)
            .where(ImportJob.id == job_id)
            .values(heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        )


def mark_failed(
    factory: sessionmaker[Session], merchant_id: int, job_id: int, reason: str
) -> ImportJob | None:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        job = session.get(ImportJob, job_id)
        if job is not None and job.status == ImportStatus.RUNNING:
            job.status = ImportStatus.FAILED
            job.failure_reason = reason[:2000]
            job.finished_at = utcnow()
            announce_finished(session, job)
        return job


def has_prior_imports(session: Session, merchant_id: int, job_id: int) -> bool:
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


def get_import(session: Session, *, merchant_id: int, job_id: int) -> ImportJob:
    """One of the merchant's import jobs (another merchant's is not found)."""
    return merchant_row(session, ImportJob, job_id, merchant_id, "import")


def list_imports(
    session: Session, *, merchant_id: int, limit: int = 50, offset: int = 0
) -> tuple[list[ImportJob], int]:
    """A page of the merchant's import jobs, newest first, and how many there are."""
    base = select(ImportJob).where(ImportJob.merchant_id == merchant_id)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.scalars(base.order_by(ImportJob.id.desc()).limit(limit).offset(offset))
    return list(rows), total
