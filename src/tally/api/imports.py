"""Import endpoints: templates, preview, run, job status, rejected rows and revert.

Uploads are multipart (``file`` plus the options as form fields). An import runs inside the
request for now and answers with the finished job; a file with invalid rows is refused with a
problem response listing them (unless ``skip_invalid``), and the job keeps its report.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.api.deps import CallerDep
from tally.api.edge import Id, Limit, Offset
from tally.errors import DomainError, TooLarge
from tally.imports import service
from tally.imports.orm import ImportJob, ImportKind
from tally.merchants.orm import ApiKey
from tally.merchants.service import API_KEY_PREFIX

router = APIRouter(prefix="/api/v1/imports", tags=["imports"])


class ImportErrorOut(BaseModel):
    """One invalid value: where it is, what it is, and what was expected."""

    row: int
    column: str
    value: str
    expected: str
    message: str


class ImportJobOut(BaseModel):
    """An import job: who started it, with what file and options, and what it did."""

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
    errors: list[ImportErrorOut]
    rejected_rows_url: str | None
    notes: list[str] = Field(
        default_factory=list,
        description="Previews: settings of the program that make the import do less than asked.",
    )


class ImportJobPage(BaseModel):
    """A page of import jobs, newest first."""

    items: list[ImportJobOut]
    total: int
    limit: int
    offset: int


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
        errors=[ImportErrorOut.model_validate(error) for error in job.errors],
        rejected_rows_url=rejected if job.status != "previewed" else None,
    )


def _caller_label(request: Request, session: Session) -> str:
    """``api-key:<id>`` for the key that authenticated the request."""
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    parts = token.split("_", 2)
    if len(parts) == 3 and parts[0] == API_KEY_PREFIX:
        key_id = session.scalar(select(ApiKey.id).where(ApiKey.prefix == parts[1]))
        if key_id is not None:
            return f"api-key:{key_id}"
    return "api"


def _kept(upload: UploadFile, max_mb: int) -> Path:
    """The upload copied to a temporary file the caller deletes; ``TooLarge`` over the limit."""
    handle, name = tempfile.mkstemp(prefix="tally-upload-", suffix=".csv")
    try:
        with os.fdopen(handle, "wb") as out:
            size = 0
            while chunk := upload.file.read(1 << 20):
                size += len(chunk)
                if size > max_mb * 1024 * 1024:
                    raise TooLarge(
                        f"the file is larger than {max_mb} MB (TALLY_IMPORT_MAX_UPLOAD_MB); "
                        "split it, or import it with the CLI (`tally import`)"
                    )
                out.write(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


@contextmanager
def _saved(upload: UploadFile, max_mb: int) -> Iterator[Path]:
    """The upload as a file on disk (an import reads it twice), deleted afterwards."""
    path = _kept(upload, max_mb)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _options(
    kind: ImportKind,
    *,
    points: str,
    award_create_account: bool,
    skip_invalid: bool,
    vip_only: bool,
    send_create_account_emails: bool,
) -> service.ImportOptions:
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


UploadField = Annotated[UploadFile, File(description="The CSV file")]
PointsField = Annotated[
    str,
    Form(
        pattern="^(replace|add)$",
        description="customers: replace (the file's points become the migrated balance) or add",
    ),
]
FlagField = Annotated[bool, Form()]


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
    points: PointsField = "replace",
    award_create_account: FlagField = False,
    skip_invalid: FlagField = False,
    vip_only: FlagField = False,
    send_create_account_emails: FlagField = False,
) -> ImportJobOut:
    """Check a file and count what importing it would do; nothing is written but the job."""
    options = _options(
        kind,
        points=points,
        award_create_account=award_create_account,
        skip_invalid=skip_invalid,
        vip_only=vip_only,
        send_create_account_emails=send_create_account_emails,
    )
    with caller.state.session_factory() as session:
        created_by = _caller_label(request, session)
    with _saved(file, caller.state.settings.import_max_upload_mb) as path:
        job = service.preview_import(
            caller.state.session_factory,
            merchant_id=caller.merchant_id,
            path=path,
            options=options,
            file_name=file.filename or "upload.csv",
            created_by=created_by,
        )
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
    points: PointsField = "replace",
    award_create_account: FlagField = False,
    skip_invalid: FlagField = False,
    vip_only: FlagField = False,
    send_create_account_emails: FlagField = False,
    wait: Annotated[
        bool, Query(description="Answer when the import has finished (201) instead of at once")
    ] = False,
) -> ImportJobOut:
    """Start importing a file (or finishing the stopped import of the same file).

    Answers 202 with the running job as soon as it is recorded; follow it with
    ``GET /imports/{id}`` (``Location``). A file that cannot be read at all is refused at once.
    The import runs in this server process: if the process stops, the job can be finished by
    uploading the same file again (after two minutes without progress).
    """
    options = _options(
        kind,
        points=points,
        award_create_account=award_create_account,
        skip_invalid=skip_invalid,
        vip_only=vip_only,
        send_create_account_emails=send_create_account_emails,
    )
    with caller.state.session_factory() as session:
        created_by = _caller_label(request, session)
    start = partial(
        service.run_import,
        caller.state.session_factory,
        merchant_id=caller.merchant_id,
        options=options,
        file_name=file.filename or "upload.csv",
        created_by=created_by,
    )
    if wait:
        with _saved(file, caller.state.settings.import_max_upload_mb) as path:
            job = start(path=path)
        response.status_code = 201
        return job_out(job)

    path = _kept(file, caller.state.settings.import_max_upload_mb)
    claimed = threading.Event()
    outcome: dict[str, Any] = {}

    def on_claimed(job_id: int) -> None:
        outcome["job_id"] = job_id
        claimed.set()

    def work() -> None:
        try:
            start(path=path, on_claimed=on_claimed)
        except BaseException as error:  # recorded on the job once claimed; else answered
            outcome.setdefault("error", error)
        finally:
            path.unlink(missing_ok=True)
            claimed.set()

    threading.Thread(target=work, name="tally-api-import", daemon=True).start()
    claimed.wait()
    if "job_id" not in outcome:
        error = outcome.get("error")
        if isinstance(error, DomainError):
            raise error
        raise RuntimeError("the import did not start") from error
    with caller.unit_of_work() as session:
        job = service.get_import(session, merchant_id=caller.merchant_id, job_id=outcome["job_id"])
        response.headers["Location"] = f"/api/v1/imports/{job.id}"
        return job_out(job)


@router.get("", response_model=ImportJobPage)
def list_jobs(
    caller: CallerDep,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ImportJobPage:
    """The merchant's imports, newest first."""
    with caller.unit_of_work() as session:
        jobs, total = service.list_imports(
            session, merchant_id=caller.merchant_id, limit=limit, offset=offset
        )
        return ImportJobPage(
            items=[job_out(job) for job in jobs], total=total, limit=limit, offset=offset
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
        caller.state.session_factory, merchant_id=caller.merchant_id, job_id=job_id
    )
    return job_out(job)
