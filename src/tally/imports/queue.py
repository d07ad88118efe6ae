"""Imports as durable worker jobs: queue an uploaded file, claim a job, run it, take one over.

A request that starts an import (the API's ``POST /imports/{kind}``, the admin's "apply")
stores the upload (``uploads``) and a ``queued`` job with its options in one transaction and
answers at once. A worker (the thread inside ``tally serve`` in the in-process mode,
``tally worker`` processes otherwise) claims the job with a guarded ``UPDATE`` (status still
``queued``, or ``running`` with a lease that ran out), so two workers never run one job;
rebuilds the file from the stored chunks and runs it through ``service.run_import``, which
resumes after the job's cursor and is idempotent per row. While it runs, a thread renews the
lease about every second and writes the progress on the job row, where any web process reads
it. A process that dies mid-way stops renewing: when the lease runs out another worker takes
the job over and resumes it. A stopping worker hands its job back to the queue between two
batches. The stored upload is deleted when the job ends; revert and the rejected-rows file
read only the job, its rejected rows and the ledger.

``wait=true`` on the API queues the job already leased to the request, which runs it itself:
the same durability (a worker takes it over if the web process dies) with the synchronous
answer.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from tally.audit.actor import Actor
from tally.config import Settings
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.errors import DomainError
from tally.imports import job_record, service, uploads
from tally.imports.options import kind_of, options_from_json
from tally.imports.orm import ImportJob, ImportKind, ImportStatus, ImportUploadChunk
from tally.imports.reading import open_reader
from tally.outbox.registry import Registry, RunnerContext

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
"""Claims of one job before it is failed: a file that takes down every worker running it."""
TICK_SECONDS = 1.0
"""How often a running job's lease is renewed and its progress written (at most)."""
PREVIEW_UPLOAD_KEEP = timedelta(days=1)
"""How long the admin keeps the file of a preview that was not applied."""
TERMINAL = (ImportStatus.COMPLETED, ImportStatus.FAILED, ImportStatus.REVERTED)


class ImportStopped(BaseException):
    """Raised between two batches to stop a run: the worker is stopping or lost the lease."""


def check_readable(kind: ImportKind, path: os.PathLike[str] | str) -> None:
    """Refuse at once (``ImportFileRefused``) a file that cannot be read as this kind at all."""
    open_reader(kind, path, utcnow()).close()


def worker_name(role: str) -> str:
    """A lease holder's name: host, process and what it is."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}"[:200]


# --- queueing --------------------------------------------------------------------------------


def _choose(
    session: Session, file: job_record.FileToImport, *, now: datetime, preferred: int | None
) -> ImportJob | None:
    """The job that imports this file: a stopped one (resumed), ``preferred``, or the latest.

    The same choice ``run_import`` makes by checksum, for the queue: refused while the file is
    queued or being run. ``None`` when a new job is needed.
    """
    candidates = job_record.file_jobs(
        session,
        file,
        statuses=[
            ImportStatus.QUEUED,
            ImportStatus.RUNNING,
            ImportStatus.FAILED,
            ImportStatus.PREVIEWED,
        ],
    )
    for job in candidates:
        running = job.status == ImportStatus.RUNNING and (
            # A worker holds it, or will take it over when the lease runs out.
            job.locked_by is not None
            or (job.heartbeat_at is not None and job.heartbeat_at > now - service.STALE_AFTER)
        )
        if job.status == ImportStatus.QUEUED or running:
            raise service.ImportInProgress(
                f"this file is being imported right now (job {job.id}, {job.status}); "
                f"follow it at /api/v1/imports/{job.id}"
            )
    stopped = job_record.stopped_part_way(candidates, file.options)
    if stopped is not None:
        return stopped
    return next((job for job in candidates if job.id == preferred), next(iter(candidates), None))


def _queue(
    session: Session,
    file: job_record.FileToImport,
    *,
    lease_to: str | None,
    lease_seconds: float,
    preferred: int | None = None,
) -> ImportJob:
    """Queue (or, with ``lease_to``, lease at once) the job ``_choose`` picks, or a new one."""
    now = utcnow()
    job = _choose(session, file, now=now, preferred=preferred) or job_record.new_job(
        session, file, status=ImportStatus.QUEUED, now=now
    )
    if job.cursor == 0:
        job_record.reset_counts(job)
    file.write_to(job)
    job.failure_reason = None
    job.finished_at = None
    job.progress_phase, job.progress_done, job.progress_total = None, 0, 0
    job.attempts = 0
    if lease_to is None:
        job.status = ImportStatus.QUEUED
        job.locked_by = job.locked_until = None
    else:
        job.status = ImportStatus.RUNNING
        job.locked_by = lease_to
        job.locked_until = now + timedelta(seconds=lease_seconds)
        job.heartbeat_at = now
        job.attempts = 1
    session.flush()
    return job


def enqueue_upload(
    factory: sessionmaker[Session],
    *,
    merchant_id: int,
    upload: uploads.SpooledUpload,
    options: service.ImportOptions,
    file_name: str,
    created_by: str,
    lease_seconds: float,
    lease_to: str | None = None,
    actor: Actor | None = None,
) -> int:
    """Store the upload and its queued job (one transaction); the job's id.

    With ``lease_to`` the job is claimed for that holder at once (``wait=true``), which then
    runs it with ``run_claimed``. Raises ``ImportFileRefused`` for a file that cannot be read
    as an import at all, ``ImportInProgress`` while the same file is queued or running.
    """
    kind = kind_of(options)
    check_readable(kind, upload.path)
    file = job_record.FileToImport(
        merchant_id, kind, upload.checksum, file_name, options, created_by
    )
    with unit_of_work(factory, merchant_id=merchant_id, actor=actor) as session:
        job = _queue(session, file, lease_to=lease_to, lease_seconds=lease_seconds)
        uploads.store(session, merchant_id=merchant_id, job_id=job.id, path=upload.path)
        return job.id


def store_preview_upload(
    factory: sessionmaker[Session], *, merchant_id: int, job_id: int, path: os.PathLike[str]
) -> None:
    """Keep a previewed file (the admin's), so any web process can apply it later."""
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        uploads.store(session, merchant_id=merchant_id, job_id=job_id, path=Path(path))


def enqueue_previewed(
    factory: sessionmaker[Session],
    *,
    merchant_id: int,
    job_id: int,
    created_by: str,
    lease_seconds: float,
    actor: Actor | None = None,
) -> int:
    """Queue the import of a previewed file with the options of its preview; the job's id.

    The job is the preview's, or a stopped import of the same file (resumed), which then gets
    the stored file. Raises ``UploadMissing`` when the preview's file is no longer kept.
    """
    with unit_of_work(factory, merchant_id=merchant_id, actor=actor) as session:
        preview = service.get_import(session, merchant_id=merchant_id, job_id=job_id)
        if preview.status != ImportStatus.PREVIEWED or not uploads.has_upload(
            session, job_id=preview.id
        ):
            raise uploads.UploadMissing(
                "the uploaded file is no longer here (it was imported already, or the preview "
                "is too old); upload it again"
            )
        kind = ImportKind(preview.kind)
        options = options_from_json(kind, preview.options)
        file = job_record.FileToImport(
            merchant_id, kind, preview.checksum, preview.file_name, options, created_by
        )
        job = _queue(
            session, file, lease_to=None, lease_seconds=lease_seconds, preferred=preview.id
        )
        uploads.move(session, from_job=preview.id, to_job=job.id)
        return job.id


# --- claiming --------------------------------------------------------------------------------


def _claimable(now: datetime) -> Any:
    return or_(
        ImportJob.status == ImportStatus.QUEUED,
        and_(ImportJob.status == ImportStatus.RUNNING, ImportJob.locked_until < now),
    )


def claim_next(
    factory: sessionmaker[Session], *, worker_id: str, lease_seconds: float
) -> int | None:
    """Lease the oldest queued job (or one whose worker died) to ``worker_id``; its id.

    The ``UPDATE`` repeats the condition the job was picked by: of two workers picking the same
    job, one changes the row and the other changes nothing (on PostgreSQL it waits for the
    first to commit and then finds the condition false; SQLite runs one writer at a time).
    """
    now = utcnow()
    with unit_of_work(factory) as session:
        stmt = select(ImportJob.id).where(_claimable(now)).order_by(ImportJob.id).limit(10)
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        for job_id in list(session.scalars(stmt)):
            claimed = session.execute(
                update(ImportJob)
                .where(ImportJob.id == job_id, _claimable(now))
                .values(
                    status=ImportStatus.RUNNING,
                    locked_by=worker_id,
                    locked_until=now + timedelta(seconds=lease_seconds),
                    heartbeat_at=now,
                    attempts=ImportJob.attempts + 1,
                )
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount:  # type: ignore[attr-defined]
                return int(job_id)
    return None


# --- running ---------------------------------------------------------------------------------


def _update_held(
    session: Session,
    job_id: int,
    worker_id: str,
    *,
    while_status: ImportStatus | None = None,
    **values: Any,
) -> bool:
    """Set ``values`` on the job only while ``worker_id`` holds its lease (and it is in
    ``while_status``).

    Whether it did: a worker whose lease was taken over changes nothing.
    """
    held = [ImportJob.id == job_id, ImportJob.locked_by == worker_id]
    if while_status is not None:
        held.append(ImportJob.status == while_status)
    result = session.execute(
        update(ImportJob).where(*held).values(**values).execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


class _Lease:
    """Renews a job's lease and writes its progress from a thread, until stopped."""

    def __init__(
        self, factory: sessionmaker[Session], job_id: int, worker_id: str, lease_seconds: float
    ) -> None:
        self._factory = factory
        self._job_id = job_id
        self._worker_id = worker_id
        self._lease_seconds = lease_seconds
        self._interval = min(TICK_SECONDS, lease_seconds / 4)
        self._progress: tuple[str, int, int] | None = None
        self._done = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"tally-import-lease-{job_id}", daemon=True
        )

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(timeout=30)
        self._write_last_progress()

    def _write_last_progress(self) -> None:
        progress = self._progress
        if progress is None:
            return
        try:
            with unit_of_work(self._factory) as session:
                _update_held(
                    session,
                    self._job_id,
                    self._worker_id,
                    progress_phase=progress[0],
                    progress_done=progress[1],
                    progress_total=progress[2],
                )
        except Exception:  # only the progress bar's last step
            log.warning("could not write the progress of import %s", self._job_id, exc_info=True)

    def report(self, phase: str, done: int, total: int) -> None:
        """Remember where the run is (written by the next renewal)."""
        self._progress = (phase, done, total)

    def _beat(self) -> None:
        while not self._done.wait(self._interval):
            self.renew()

    def renew(self) -> None:
        """Push the lease forward and write the progress, if the job is still this worker's."""
        now = utcnow()
        values: dict[str, Any] = {
            "locked_until": now + timedelta(seconds=self._lease_seconds),
            "heartbeat_at": now,
        }
        progress = self._progress
        if progress is not None:
            values.update(
                progress_phase=progress[0], progress_done=progress[1], progress_total=progress[2]
            )
        try:
            with unit_of_work(self._factory) as session:
                if not _update_held(
                    session,
                    self._job_id,
                    self._worker_id,
                    while_status=ImportStatus.RUNNING,
                    **values,
                ):
                    self.lost.set()
        except Exception:  # a database hiccup: the next renewal tries again
            log.warning("could not renew the lease of import %s", self._job_id, exc_info=True)


def _load(factory: sessionmaker[Session], job_id: int) -> tuple[job_record.FileToImport, int]:
    """The leased job's file, and how many times it was claimed."""
    with factory() as session:
        job = session.get_one(ImportJob, job_id)
        kind = ImportKind(job.kind)
        options = options_from_json(job.kind, job.options)
        file = job_record.FileToImport(
            job.merchant_id, kind, job.checksum, job.file_name, options, job.created_by
        )
        return file, job.attempts


def _fail(factory: sessionmaker[Session], job_id: int, worker_id: str, reason: str) -> None:
    """Mark the job failed, if it is still running under this worker's lease."""
    with unit_of_work(factory) as session:
        _update_held(
            session,
            job_id,
            worker_id,
            while_status=ImportStatus.RUNNING,
            status=ImportStatus.FAILED,
            failure_reason=reason[:2000],
            finished_at=utcnow(),
        )


def _hand_back(factory: sessionmaker[Session], job_id: int, worker_id: str) -> None:
    """After a stop between batches (``run_import`` marked the job failed, "interrupted").

    A job still this worker's goes back to the queue, due now. One another worker took over
    (this one lost its lease) is put back to running, as that worker is running it.
    """
    with unit_of_work(factory) as session:
        _update_held(
            session,
            job_id,
            worker_id,
            while_status=ImportStatus.FAILED,
            status=ImportStatus.QUEUED,
            locked_by=None,
            locked_until=None,
            failure_reason=None,
            finished_at=None,
            attempts=ImportJob.attempts - 1,
        )
        session.execute(
            update(ImportJob)
            .where(
                ImportJob.id == job_id,
                ImportJob.locked_by != worker_id,
                ImportJob.status == ImportStatus.FAILED,
                ImportJob.locked_until > utcnow(),
            )
            .values(status=ImportStatus.RUNNING, failure_reason=None, finished_at=None)
            .execution_options(synchronize_session=False)
        )


def _release(factory: sessionmaker[Session], job_id: int, worker_id: str) -> None:
    """The run ended: drop the lease and, once the job is finished, its stored upload."""
    with unit_of_work(factory) as session:
        _update_held(session, job_id, worker_id, locked_by=None, locked_until=None)
        status = session.scalar(select(ImportJob.status).where(ImportJob.id == job_id))
        if status in TERMINAL:
            uploads.discard(session, job_id=job_id)


@contextmanager
def _file(
    factory: sessionmaker[Session], job_id: int, checksum: str, path: Path | None
) -> Iterator[Path]:
    if path is not None:
        yield path
        return
    with uploads.restored(factory, job_id=job_id, checksum=checksum) as restored:
        yield restored


def run_claimed(
    factory: sessionmaker[Session],
    *,
    job_id: int,
    worker_id: str,
    settings: Settings,
    stopping: threading.Event | None = None,
    path: Path | None = None,
) -> ImportJob | None:
    """Run (or resume) a job leased to ``worker_id``; the finished job.

    Raises what ``run_import`` raises (the job records it). ``None`` when the run was stopped
    between batches (``stopping`` set, or the lease lost): the job is back in the queue, or
    with the worker that took it over. ``path``: the file, when the caller has it at hand (the
    request that stored it); otherwise it is rebuilt from the stored upload.
    """
    file, attempts = _load(factory, job_id)
    if attempts > MAX_ATTEMPTS:
        _fail(
            factory,
            job_id,
            worker_id,
            f"the import was started {MAX_ATTEMPTS} times and each time the process running "
            "it stopped; upload the file again to try once more",
        )
        _release(factory, job_id, worker_id)
        return None
    try:
        with _Lease(factory, job_id, worker_id, settings.import_lease_seconds) as lease:

            def progress(phase: str, done: int, total: int) -> None:
                lease.report(phase, done, total)
                if lease.lost.is_set() or (stopping is not None and stopping.is_set()):
                    raise ImportStopped

            with _file(factory, job_id, file.checksum, path) as source:
                return service.run_import(
                    factory,
                    merchant_id=file.merchant_id,
                    path=source,
                    options=file.options,
                    file_name=file.file_name,
                    created_by=file.created_by,
                    progress=progress,
                    batch_size=settings.import_batch_size,
                    job_id=job_id,
                )
    except ImportStopped:
        _hand_back(factory, job_id, worker_id)
        return None
    except DomainError as exc:
        # Refusals before the job was running (an unreadable or missing file) are recorded
        # here; the others are on the job already.
        _fail(factory, job_id, worker_id, exc.detail)
        raise
    except Exception as exc:
        reference = secrets.token_hex(4)
        log.exception("import %s failed unexpectedly (reference %s)", job_id, reference)
        reason = (
            f"the import failed unexpectedly (reference {reference}); "
            "the operator's log has the details"
        )
        _fail(factory, job_id, worker_id, reason)
        failed = service.ImportFailed(reason)
        raise failed from exc
    finally:
        _release(factory, job_id, worker_id)


def run_next(context: RunnerContext) -> bool:
    """The workers' runner: claim one queued (or abandoned) import and run it; whether any."""
    settings = context.settings
    job_id = claim_next(
        context.session_factory,
        worker_id=context.worker_id,
        lease_seconds=settings.import_lease_seconds,
    )
    if job_id is None:
        return False
    log.info("import %s claimed by %s", job_id, context.worker_id)
    try:
        run_claimed(
            context.session_factory,
            job_id=job_id,
            worker_id=context.worker_id,
            settings=settings,
            stopping=context.stopping,
        )
    except DomainError as exc:  # recorded on the job, for the merchant
        log.info("import %s ended: %s", job_id, exc.detail)
    return True


def work(settings: Settings, factory: sessionmaker[Session], *, worker_id: str = "") -> int:
    """Run queued imports in this thread until none is left (tests, ``tally worker --once``)."""
    context = RunnerContext(
        settings=settings,
        session_factory=factory,
        worker_id=worker_id or worker_name("work"),
        stopping=threading.Event(),
    )
    ran = 0
    while run_next(context):
        ran += 1
    return ran


# --- housekeeping ----------------------------------------------------------------------------


def prune_uploads(factory: sessionmaker[Session], *, now: datetime | None = None) -> None:
    """Delete stored files no job needs: of finished jobs, and of old unapplied previews."""
    now = now or utcnow()
    idle = select(ImportJob.id).where(
        or_(
            ImportJob.status.in_(TERMINAL),
            and_(
                ImportJob.status == ImportStatus.PREVIEWED,
                ImportJob.created_at < now - PREVIEW_UPLOAD_KEEP,
            ),
        )
    )
    with unit_of_work(factory) as session:
        session.execute(
            delete(ImportUploadChunk)
            .where(ImportUploadChunk.job_id.in_(idle))
            .execution_options(synchronize_session=False)
        )


def register(registry: Registry) -> None:
    """Run queued imports in every worker, and prune stored files hourly."""
    registry.run_long("imports", run_next)
    registry.schedule(
        "imports.prune_uploads",
        timedelta(hours=1),
        lambda context: prune_uploads(context.session_factory),
    )
