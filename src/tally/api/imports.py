"""Import endpoints: templates, preview, run, job status, rejected rows and revert.

Uploads are multipart (``file`` plus the options as form fields). A run stores the file and a
queued job in the database and answers at once; a worker runs it (``imports/queue.py``), and
the job, read by any web process, shows how it goes. A file with invalid rows is refused with
the errors on the job (unless ``skip_invalid``); with ``wait=true`` the request runs the import
itself and answers with the finished job, or a problem response listing the errors.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from tally.api.deps import CallerDep
from tally.api.edge import Id, PagingDep
from tally.api.schemas import Page
from tally.imports import queue, service, uploads
from tally.imports.orm import ImportJob, ImportKind

router = APIRouter(prefix="/api/v1/imports", tags=["imports"])


class ImportErrorOut(BaseModel):
    """One invalid value: where it is, what it is, and what was expected."""

    row: int
    column: str
    value: str
    expected: str
    message: str


class ImportProgressOut(BaseModel):
    """Where a run is, as the worker running it last wrote it (about every second)."""

    phase: str = Field(description="checking (the first pass over the file) or importing")
    done: int = Field(description="rows checked, or applied, so far")
    total: int = Field(description="rows in all (while checking: an estimate)")


class ImportCollisionOut(BaseModel):
    """A row whose order id the store already has, for another customer or with another total."""

    row: int
    order_id: str
    reason: str


class ImportJobOut(BaseModel):
    """An import job: who started it, with what file and options, and what it did.

    ``status``: previewed, queued (stored, waiting for a worker), running, completed, failed
    or reverted.
    """

    id: int
    kind: str
    status: str
    file_name: str
    file_format: str
    checksum: str
    options: dict[str, Any]
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    reverted_at: datetime | None
    total_rows: int
    new_count: int
    updated_count: int
    skipped_count: int
    customers_created: int
    invalid_count: int
    error_count: int
    points_issued: int
    emails_queued: int
    last_row_applied: int | None = Field(
        description="Customer imports: the last row of the file applied (a resume goes on after)."
    )
    rows_applied: int | None = Field(
        description=(
            "Order imports: how many rows are applied - rejected rows first, then the orders "
            "by date, the order they are applied in."
        )
    )
    failure_reason: str | None
    progress: ImportProgressOut | None = Field(
        description="Queued and running jobs the workers run: how far the run is."
    )
    errors: list[ImportErrorOut]
    rejected_rows_url: str | None
    collisions: list[ImportCollisionOut] = Field(
        default_factory=list,
        description=(
            "Orders previews: rows whose order id is already known for another customer or "
            "with another total (skipped like every known order; a re-import of the same "
            "order is not listed). The first 100."
        ),
    )
    notes: list[str] = Field(
        default_factory=list,
        description="Previews: settings of the program that make the import do less than asked.",
    )


class ImportJobPage(Page[ImportJobOut]):
    """A page of import jobs, newest first."""


def job_out(job: ImportJob) -> ImportJobOut:
    """The API view of a job."""
    rejected = (
        f"/api/v1/imports/{job.id}/rejected.csv"
        if job.invalid_count and job.options.get("skip_invalid")
        else None
    )
    return ImportJobOut(
        id=job.id,
        kind=job.kind,
        status=job.status,
        file_name=job.file_name,
        file_format=job.file_format,
        checksum=job.checksum,
        options=job.options,
        created_by=job.created_by,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        reverted_at=job.reverted_at,
        total_rows=job.total_rows,
        new_count=job.new_count,
        updated_count=job.updated_count,
        skipped_count=job.skipped_count,
        customers_created=job.customers_created,
        invalid_count=job.invalid_count,
        error_count=job.error_count,
        points_issued=job.points_issued,
        emails_queued=job.emails_queued,
        last_row_applied=job.cursor if job.kind == ImportKind.CUSTOMERS else None,
        rows_applied=job.cursor if job.kind == ImportKind.ORDERS else None,
        failure_reason=job.failure_reason,
        progress=ImportProgressOut(
            phase=job.progress_phase, done=job.progress_done, total=job.progress_total
        )
        if job.progress_phase
        else None,
        errors=[ImportErrorOut.model_validate(error) for error in job.errors],
        collisions=[ImportCollisionOut.model_validate(found) for found in job.collisions],
        rejected_rows_url=rejected if job.status != "previewed" else None,
    )


UploadField = Annotated[UploadFile, File(description="The CSV file")]
PointsField = Annotated[
    str,
    Form(
        pattern="^(replace|add)$",
        description="customers: replace (the file's points become the migrated balance) or add",
    ),
]
FlagField = Annotated[bool, Form()]


def _form_options(
    kind: ImportKind,
    points: PointsField = "replace",
    award_create_account: FlagField = False,
    skip_invalid: FlagField = False,
    vip_only: FlagField = False,
    send_create_account_emails: FlagField = False,
) -> service.ImportOptions:
    """The import options of the form (those of the other kind of file are ignored)."""
    if kind is ImportKind.CUSTOMERS:
        return service.CustomerImportOptions(
            points=service.PointsMode(points),
            award_create_account=award_create_account,
            skip_invalid=skip_invalid,
        )
    return service.OrderImportOptions(
        vip_only=vip_only,
        send_create_account_emails=send_create_account_emails,
        skip_invalid=skip_invalid,
    )


OptionsForm = Annotated[service.ImportOptions, Depends(_form_options)]


@router.get("/templates/{kind}", response_class=Response)
def download_template(kind: ImportKind, caller: CallerDep) -> Response:
    """The CSV template of a kind of import, with example rows."""
    del caller  # authenticated like every /api/v1 route
    return Response(
        service.template_csv(kind),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="tally-{kind.value}-template.csv"'},
    )


@router.post("/{kind}/preview", response_model=ImportJobOut)
def preview(
    kind: ImportKind,
    caller: CallerDep,
    request: Request,
    file: UploadField,
    options: OptionsForm,
) -> ImportJobOut:
    """Check a file and count what importing it would do; nothing is written but the job."""
    created_by = caller.actor
    upload = uploads.spool(file.file, max_mb=caller.state.settings.import_max_upload_mb)
    try:
        job = service.preview_import(
            caller.state.session_factory,
            merchant_id=caller.merchant_id,
            path=upload.path,
            options=options,
            file_name=file.filename or "upload.csv",
            created_by=created_by,
        )
    finally:
        upload.path.unlink(missing_ok=True)
    out = job_out(job)
    with caller.state.session_factory() as session:
        out.notes = service.import_notes(session, merchant_id=caller.merchant_id, options=options)
    return out


@router.post(
    "/{kind}",
    status_code=202,
    response_model=ImportJobOut,
    responses={201: {"model": ImportJobOut, "description": "with wait=true: the finished job"}},
)
def run(
    kind: ImportKind,
    caller: CallerDep,
    request: Request,
    response: Response,
    file: UploadField,
    options: OptionsForm,
    wait: Annotated[
        bool, Query(description="Answer when the import has finished (201) instead of at once")
    ] = False,
) -> ImportJobOut:
    """Start importing a file (or finishing the stopped import of the same file).

    Answers 202 with the queued job as soon as the file and the job are stored; follow it with
    ``GET /imports/{id}`` (``Location``). A worker runs it; if that process stops, another
    worker finishes it. A file that cannot be read at all is refused at once, and so is a file
    that is being imported right now (409).
    """
    state = caller.state
    created_by = caller.actor
    upload = uploads.spool(file.file, max_mb=state.settings.import_max_upload_mb)
    try:
        # With wait the job is leased to this request, which runs it (a worker takes it over
        # if this process dies); without, any worker claims it.
        holder = queue.worker_name(f"request-{secrets.token_hex(4)}") if wait else None
        job_id = queue.enqueue_upload(
            state.session_factory,
            merchant_id=caller.merchant_id,
            upload=upload,
            options=options,
            file_name=file.filename or "upload.csv",
            created_by=created_by,
            lease_seconds=state.settings.import_lease_seconds,
            lease_to=holder,
            actor=caller.audit_actor,
        )
        if holder is not None:
            finished = queue.run_claimed(
                state.session_factory,
                job_id=job_id,
                worker_id=holder,
                settings=state.settings,
                path=upload.path,
            )
            if finished is not None:
                response.status_code = 201
                return job_out(finished)
    finally:
        upload.path.unlink(missing_ok=True)
    with caller.unit_of_work() as session:
        job = service.get_import(session, merchant_id=caller.merchant_id, job_id=job_id)
        response.headers["Location"] = f"/api/v1/imports/{job.id}"
        return job_out(job)


@router.get("", response_model=ImportJobPage)
def list_jobs(
    caller: CallerDep,
    paging: PagingDep,
) -> ImportJobPage:
    """The merchant's imports, newest first."""
    with caller.unit_of_work() as session:
        return ImportJobPage.listed(
            service.list_imports, job_out, paging, session, merchant_id=caller.merchant_id
        )


@router.get("/{job_id}", response_model=ImportJobOut)
def get_job(job_id: Id, caller: CallerDep) -> ImportJobOut:
    """One import job."""
    with caller.unit_of_work() as session:
        return job_out(service.get_import(session, merchant_id=caller.merchant_id, job_id=job_id))


@router.get("/{job_id}/rejected.csv", response_class=Response)
def rejected_rows(job_id: Id, caller: CallerDep) -> Response:
    """The rows an import left out (skip-invalid), with a ``reason`` column, as CSV."""
    # Read whole inside the unit of work: on SQLite a transaction held open while a slow client
    # downloads would hold the database's write lock.
    with caller.unit_of_work() as session:
        body = "".join(service.rejected_csv(session, merchant_id=caller.merchant_id, job_id=job_id))
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{job_id}-rejected.csv"'},
    )


@router.post("/{job_id}/revert", response_model=ImportJobOut)
def revert(job_id: Id, caller: CallerDep) -> ImportJobOut:
    """Take back the points an import credited; refused, naming the customers, if spent."""
    job = service.revert_import(
        caller.state.session_factory,
        merchant_id=caller.merchant_id,
        job_id=job_id,
        actor=caller.audit_actor,
    )
    return job_out(job)
