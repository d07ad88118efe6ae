"""Customers → Import customers / Import orders: template download, options, upload, preview
with the errors of each row, apply with a live progress bar, and the history with revert.

A preview spools the upload to a temporary file, checks it with ``preview_import`` and keeps
the file in the database with the previewed job (``imports.queue.store_preview_upload``), so
whichever web process receives "apply" can queue it (``enqueue_previewed``) with the options
the preview recorded. A worker runs the job; the progress bar is a fragment that polls itself
and reads the job row, where the worker writes its progress, so any web process can show it
and a web process that stops loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile

from tally.admin.web import (
    Admin,
    AdminDep,
    AdminRoute,
    FormDep,
    checkbox,
    error_page,
    is_htmx,
    redirect,
    render,
    text,
)
from tally.api.edge import Id
from tally.errors import DomainError, NotFound, TooLarge
from tally.imports import queue, uploads
from tally.imports import service as imports
from tally.imports.customers_csv import CustomerCsvReader
from tally.imports.formats import ImportFileError, ImportRowError
from tally.imports.options import options_from_json
from tally.imports.orders_csv import OrderCsvReader
from tally.imports.orm import ImportJob, ImportKind, ImportStatus

router = APIRouter(route_class=AdminRoute)

KINDS = {"customers": "Import customers", "orders": "Import orders"}
SAMPLE_ROWS = 10
HISTORY_SIZE = 20
CREATED_BY_LIMIT = 100
POINTS_MODES = {
    "replace": "Set the balance to the file's points (a corrected file only moves the difference)",
    "add": "Add the file's points to the current balance",
}


def _kind(kind: str) -> ImportKind:
    if kind not in KINDS:
        raise NotFound(f"there is no import of {kind!r}")
    return ImportKind(kind)


# --------------------------------------------------------------------------- options


def options_from_form(kind: ImportKind, form: FormData) -> imports.ImportOptions:
    """The import options ticked on the upload form."""
    skip = checkbox(form, "skip_invalid")
    if kind is ImportKind.CUSTOMERS:
        mode = text(form, "points_mode")
        return imports.CustomerImportOptions(
            points=imports.PointsMode(mode) if mode in POINTS_MODES else imports.PointsMode.REPLACE,
            award_create_account=checkbox(form, "award_create_account"),
            skip_invalid=skip,
        )
    return imports.OrderImportOptions(
        vip_only=checkbox(form, "vip_only"),
        send_create_account_emails=checkbox(form, "send_create_account_emails"),
        skip_invalid=skip,
    )


def options_of(job: ImportJob) -> imports.ImportOptions:
    """The options a job was previewed (or run) with."""
    return options_from_json(job.kind, job.options or {})


# --------------------------------------------------------------------------- uploads


def sample_rows(kind: ImportKind, path: Path, zone: tzinfo) -> list[Any]:
    """The first valid rows of a file, to show what it holds."""
    rows: list[Any] = []
    try:
        reader: CustomerCsvReader | OrderCsvReader = (
            CustomerCsvReader(path)
            if kind is ImportKind.CUSTOMERS
            else OrderCsvReader(path, zone=zone)
        )
    except ImportFileError:
        return rows
    with reader:
        try:
            for item in reader:
                if not isinstance(item, ImportRowError):
                    rows.append(item)
                    if len(rows) >= SAMPLE_ROWS:
                        break
        except ImportFileError:
            pass
    return rows


# --------------------------------------------------------------------------- runs in progress


FINISHED = (ImportStatus.COMPLETED, ImportStatus.FAILED, ImportStatus.REVERTED)


@dataclass(frozen=True)
class Run:
    """An import the workers run, as its job row shows it (progress written by the worker)."""

    token: str
    file_name: str
    status: str
    phase: str = "starting"
    done: int = 0
    total: int = 0
    finished: bool = False
    job_id: int | None = None
    error: str | None = None
    problems: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, job: ImportJob) -> Run:
        """The run of a job."""
        failed = job.status == ImportStatus.FAILED
        return cls(
            token=str(job.id),
            file_name=job.file_name,
            status=job.status,
            phase=job.progress_phase
            or ("queued" if job.status == ImportStatus.QUEUED else "starting"),
            done=job.progress_done,
            total=job.progress_total,
            finished=job.status in FINISHED,
            job_id=job.id,
            error=(job.failure_reason or "the import stopped") if failed else None,
            problems=[
                f"row {error['row']}, {error['column']}: expected {error['expected']}"
                for error in job.errors[:20]
            ]
            if failed
            else [],
        )

    @property
    def percent(self) -> int:
        """How far along, 0 to 100 (checking counts as the first tenth)."""
        if self.finished and self.error is None:
            return 100
        if not self.total:
            return 0
        share = min(self.done / self.total, 1.0)
        return int(10 * share) if self.phase == "checking" else 10 + int(90 * share)


def _run_of(admin: Admin, token: str) -> Run:
    """The run of one of this merchant's jobs (another merchant's is not found)."""
    if not token.isdigit() or len(token) > 18:
        raise NotFound("that import run is not known")
    with admin.unit_of_work() as session:
        return Run.of(imports.get_import(session, merchant_id=admin.merchant_id, job_id=int(token)))


# --------------------------------------------------------------------------- pages


def history(session: Session, merchant_id: int) -> tuple[list[ImportJob], int]:
    """The latest imports that were run (previews are not imports), and how many there are."""
    base = select(ImportJob).where(
        ImportJob.merchant_id == merchant_id, ImportJob.status != ImportStatus.PREVIEWED
    )
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.scalars(base.order_by(ImportJob.id.desc()).limit(HISTORY_SIZE))
    return list(rows), int(total)


def _history(admin: Admin) -> tuple[list[ImportJob], int]:
    with admin.unit_of_work() as session:
        return history(session, admin.merchant_id)


def _page(
    request: Request,
    admin: Admin,
    kind: ImportKind,
    *,
    job: ImportJob | None = None,
    file_error: str | None = None,
    sample: list[Any] | None = None,
    options: imports.ImportOptions | None = None,
    run: Run | None = None,
    history_error: str | None = None,
    history_problems: list[str] | None = None,
    notes: list[str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    history, total = _history(admin)
    chosen = options or (
        imports.CustomerImportOptions()
        if kind is ImportKind.CUSTOMERS
        else imports.OrderImportOptions()
    )
    return render(
        request,
        "imports/page.html",
        {
            "title": KINDS[kind.value],
            "nav": f"import-{kind.value}",
            "kind": kind.value,
            "job": job,
            "file_error": file_error,
            "sample": sample or [],
            "options": chosen.as_json(),
            "points_modes": POINTS_MODES,
            "run": run,
            "history": history,
            "history_total": total,
            "history_error": history_error,
            "history_problems": history_problems or [],
            "currency": admin.currency,
            "notes": notes or [],
        },
        status_code=status_code,
    )


@router.get("/imports", include_in_schema=False)
def imports_home(admin: AdminDep) -> Response:
    """Imports start with customers."""
    del admin
    return redirect("/admin/imports/customers")


@router.get("/imports/{kind}", include_in_schema=False)
def import_page(request: Request, admin: AdminDep, kind: str, run: str | None = None) -> Response:
    """The import page of one kind: template, options, upload, history (and a run's progress)."""
    found = _run_of(admin, run) if run else None
    return _page(request, admin, _kind(kind), run=found)


@router.get("/imports/{kind}/template.csv", include_in_schema=False)
def import_template(admin: AdminDep, kind: str) -> Response:
    """The sample file to fill in (UTF-8 with a byte order mark, so Excel shows accents)."""
    del admin
    body = imports.template_csv(_kind(kind))
    return Response(
        "\ufeff" + body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="tally-{kind}-template.csv"'},
    )


@router.post("/imports/{kind}/preview", include_in_schema=False)
def import_preview(request: Request, admin: AdminDep, form: FormDep, kind: str) -> Response:
    """Check an uploaded file and show what importing it would do, with every row's errors."""
    import_kind = _kind(kind)
    options = options_from_form(import_kind, form)
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return _page(
            request,
            admin,
            import_kind,
            file_error="Choose a CSV file to upload.",
            options=options,
            status_code=422,
        )
    try:
        spooled = uploads.spool(upload.file, max_mb=admin.state.settings.import_max_upload_mb)
    except TooLarge:
        return _page(
            request,
            admin,
            import_kind,
            file_error=(
                f"The file is larger than {admin.state.settings.import_max_upload_mb} MB "
                "(TALLY_IMPORT_MAX_UPLOAD_MB); split it, or import it with the CLI."
            ),
            options=options,
            status_code=413,
        )
    file_name = Path(upload.filename).name[:255]
    try:
        try:
            job = imports.preview_import(
                admin.state.session_factory,
                merchant_id=admin.merchant_id,
                path=spooled.path,
                options=options,
                file_name=file_name,
                created_by=f"admin:{admin.email}"[:CREATED_BY_LIMIT],
            )
        except DomainError as error:
            return _page(
                request,
                admin,
                import_kind,
                file_error=error.detail,
                options=options,
                status_code=error.status_code,
            )
        status = 422 if job.invalid_count and not options.skip_invalid else 200
        if status == 200:
            # Kept for "apply", which any web process may receive.
            queue.store_preview_upload(
                admin.state.session_factory,
                merchant_id=admin.merchant_id,
                job_id=job.id,
                path=spooled.path,
            )
        with admin.state.session_factory() as session:
            notes = imports.import_notes(session, merchant_id=admin.merchant_id, options=options)
        sample = sample_rows(import_kind, spooled.path, ZoneInfo(admin.timezone))
    finally:
        spooled.path.unlink(missing_ok=True)
    return _page(
        request,
        admin,
        import_kind,
        job=job,
        sample=sample,
        options=options,
        notes=notes,
        status_code=status,
    )


@router.post("/imports/{kind}/apply", include_in_schema=False)
def import_apply(request: Request, admin: AdminDep, form: FormDep, kind: str) -> Response:
    """Apply a previewed file in the background; the page follows its progress."""
    import_kind = _kind(kind)
    try:
        job_id = int(text(form, "job_id"))
    except ValueError:
        raise NotFound("no such import") from None
    with admin.unit_of_work() as session:
        job = imports.get_import(session, merchant_id=admin.merchant_id, job_id=job_id)
        if job.kind != import_kind.value:
            raise NotFound(f"import {job_id} is not an import of {kind}")
    try:
        queued = queue.enqueue_previewed(
            admin.state.session_factory,
            merchant_id=admin.merchant_id,
            job_id=job_id,
            created_by=f"admin:{admin.email}"[:CREATED_BY_LIMIT],
            lease_seconds=admin.state.settings.import_lease_seconds,
            actor=admin.actor,
        )
    except uploads.UploadMissing:
        if is_htmx(request):
            return error_page(
                request,
                409,
                "File gone",
                "The uploaded file is no longer here (it was imported already). Upload it again.",
            )
        return _page(
            request,
            admin,
            import_kind,
            file_error="The uploaded file is no longer here (it was imported already, or the "
            "preview is too old). Upload it again.",
            status_code=409,
        )
    except DomainError as error:
        if error.status_code == 404:
            raise
        return _page(
            request,
            admin,
            import_kind,
            file_error=error.detail,
            status_code=error.status_code,
        )
    if is_htmx(request):
        return render(request, "imports/_run.html", _run_context(admin, str(queued), kind))
    return redirect(f"/admin/imports/{kind}?run={queued}")


def _run_context(admin: Admin, token: str, kind: str) -> dict[str, Any]:
    """What the progress fragment shows; with the history once the run has ended, which may
    already be so when "apply" answers (a worker can finish a small file first)."""
    run = _run_of(admin, token)
    context: dict[str, Any] = {"run": run, "kind": kind}
    if run.finished:
        history, total = _history(admin)
        context |= {"history": history, "history_total": total, "refresh_history": True}
    return context


@router.get("/imports/{kind}/runs/{token}", include_in_schema=False)
def import_run(request: Request, admin: AdminDep, kind: str, token: str) -> Response:
    """A run's progress (the fragment polls itself until the import ends)."""
    _kind(kind)
    if not is_htmx(request):
        return redirect(f"/admin/imports/{kind}?run={token}")
    context = _run_context(admin, token, kind)
    return render(request, "imports/_run.html", context)


@router.post("/imports/jobs/{job_id}/revert", include_in_schema=False)
def import_revert(request: Request, admin: AdminDep, form: FormDep, job_id: Id) -> Response:
    """Take back every point a completed import credited, or say whose points were spent."""
    kind = ImportKind(text(form, "kind")) if text(form, "kind") in KINDS else ImportKind.CUSTOMERS
    try:
        imports.revert_import(
            admin.state.session_factory,
            merchant_id=admin.merchant_id,
            job_id=job_id,
            actor=admin.actor,
        )
    except DomainError as error:
        if error.status_code == 404:
            raise
        problems = [f"{p.field}: {p.message}" for p in error.errors[:10]]
        return _page(
            request,
            admin,
            kind,
            history_error=error.detail,
            history_problems=problems,
            status_code=error.status_code,
        )
    return redirect(f"/admin/imports/{kind.value}?done=reverted")


@router.get("/imports/jobs/{job_id}/rejected.csv", include_in_schema=False)
def import_rejected(admin: AdminDep, job_id: Id) -> Response:
    """The rows an import left out (skip invalid rows), with the reason for each."""
    with admin.unit_of_work() as session:
        lines = list(imports.rejected_csv(session, merchant_id=admin.merchant_id, job_id=job_id))

    def body() -> Iterator[str]:
        yield "\ufeff"
        yield from lines

    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{job_id}-rejected.csv"'},
    )
