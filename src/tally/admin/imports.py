"""Customers → Import customers / Import orders: template download, options, upload, preview
with the errors of each row, apply with a live progress bar, and the history with revert.

An upload is kept under ``var_dir/imports/<merchant>/<sha256>.csv`` (named by its content, as the
import jobs identify a file by its checksum), previewed with ``preview_import`` and applied with
``run_import`` using the options the preview recorded. Applying runs in a background thread of
the web process that received it; its progress is kept in that process's memory and shown by a
fragment that polls itself. If the process stops mid-way the job stays ``running``/``failed``
in the history and applying the same file again resumes it (the service resumes by checksum).
"""

from __future__ import annotations

import hashlib
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

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
from tally.errors import DomainError, NotFound
from tally.imports import service as imports
from tally.imports.customers_csv import CustomerCsvReader
from tally.imports.formats import ImportFileError, ImportRowError
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
    stored = job.options or {}
    if job.kind == ImportKind.CUSTOMERS:
        return imports.CustomerImportOptions(
            points=imports.PointsMode(stored.get("points", imports.PointsMode.REPLACE.value)),
            award_create_account=bool(stored.get("award_create_account")),
            skip_invalid=bool(stored.get("skip_invalid")),
        )
    return imports.OrderImportOptions(
        vip_only=bool(stored.get("vip_only")),
        send_create_account_emails=bool(stored.get("send_create_account_emails")),
        skip_invalid=bool(stored.get("skip_invalid")),
    )


# --------------------------------------------------------------------------- uploads


def upload_dir(admin: Admin) -> Path:
    """Where this merchant's uploaded import files are kept until imported."""
    return Path(admin.state.settings.var_dir) / "imports" / str(admin.merchant_id)


def upload_path(admin: Admin, checksum: str) -> Path:
    """The stored upload with this SHA-256."""
    if len(checksum) != 64 or not all(c in "0123456789abcdef" for c in checksum):
        raise NotFound("no such upload")
    return upload_dir(admin) / f"{checksum}.csv"


class UploadTooLarge(Exception):
    """The upload is over the size limit."""


def store_upload(admin: Admin, stream: IO[bytes]) -> Path:
    """Copy an upload to the merchant's directory, named by its SHA-256."""
    directory = upload_dir(admin)
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".part", delete=False) as out:
        temporary = Path(out.name)
        try:
            while chunk := stream.read(1 << 20):
                size += len(chunk)
                if size > admin.state.settings.import_max_upload_mb * 1024 * 1024:
                    raise UploadTooLarge
                digest.update(chunk)
                out.write(chunk)
        except BaseException:
            out.close()
            temporary.unlink(missing_ok=True)
            raise
    final = directory / f"{digest.hexdigest()}.csv"
    temporary.replace(final)
    return final


def sample_rows(kind: ImportKind, path: Path) -> list[Any]:
    """The first valid rows of a file, to show what it holds."""
    rows: list[Any] = []
    try:
        reader: CustomerCsvReader | OrderCsvReader = (
            CustomerCsvReader(path) if kind is ImportKind.CUSTOMERS else OrderCsvReader(path)
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


@dataclass
class Run:
    """An import being applied in a background thread, as its progress callback reports it."""

    token: str
    merchant_id: int
    kind: ImportKind
    file_name: str
    phase: str = "starting"
    done: int = 0
    total: int = 0
    finished: bool = False
    job_id: int | None = None
    error: str | None = None
    problems: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def percent(self) -> int:
        """How far along, 0 to 100 (checking counts as the first tenth)."""
        if self.finished and self.error is None:
            return 100
        if not self.total:
            return 0
        share = min(self.done / self.total, 1.0)
        return int(10 * share) if self.phase == "checking" else 10 + int(90 * share)


class Runs:
    """The imports this process is applying, by token (kept for an hour after they end)."""

    KEEP_SECONDS = 3600.0

    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()

    def add(self, run: Run) -> None:
        """Track a new run (and forget old finished ones)."""
        with self._lock:
            now = time.monotonic()
            for token, old in list(self._runs.items()):
                if old.finished and now - old.started > self.KEEP_SECONDS:
                    del self._runs[token]
            self._runs[run.token] = run

    def get(self, token: str, merchant_id: int) -> Run:
        """A run of this merchant (another merchant's is not found)."""
        with self._lock:
            run = self._runs.get(token)
        if run is None or run.merchant_id != merchant_id:
            raise NotFound("that import run is not known to this server")
        return run


_runs_lock = threading.Lock()


def runs_of(request: Request) -> Runs:
    """The application's import runs."""
    with _runs_lock:
        runs: Runs | None = getattr(request.app.state, "tally_admin_import_runs", None)
        if runs is None:
            runs = Runs()
            request.app.state.tally_admin_import_runs = runs
        return runs


def _apply_in_background(
    admin: Admin, run: Run, path: Path, options: imports.ImportOptions
) -> None:
    def progress(phase: str, done: int, total: int) -> None:
        run.phase, run.done, run.total = phase, done, total

    def work() -> None:
        try:
            job = imports.run_import(
                admin.state.session_factory,
                merchant_id=admin.merchant_id,
                path=path,
                options=options,
                file_name=run.file_name,
                created_by=f"admin:{admin.email}"[:CREATED_BY_LIMIT],
                progress=progress,
            )
            run.job_id = job.id
            path.unlink(missing_ok=True)
        except DomainError as error:
            run.error = error.detail
            run.problems = [f"{p.field}: {p.message}" for p in error.errors[:20]]
            failed = getattr(error, "job", None)
            run.job_id = failed.id if isinstance(failed, ImportJob) else None
        except Exception as error:  # the thread must record every outcome
            run.error = f"the import stopped: {error}"
        finally:
            run.finished = True

    threading.Thread(target=work, name=f"tally-import-{run.token}", daemon=True).start()


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
    found = runs_of(request).get(run, admin.merchant_id) if run else None
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
        path = store_upload(admin, upload.file)
    except UploadTooLarge:
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
        job = imports.preview_import(
            admin.state.session_factory,
            merchant_id=admin.merchant_id,
            path=path,
            options=options,
            file_name=file_name,
            created_by=f"admin:{admin.email}"[:CREATED_BY_LIMIT],
        )
    except DomainError as error:
        path.unlink(missing_ok=True)
        return _page(
            request,
            admin,
            import_kind,
            file_error=error.detail,
            options=options,
            status_code=error.status_code,
        )
    status = 422 if job.invalid_count and not options.skip_invalid else 200
    with admin.state.session_factory() as session:
        notes = imports.import_notes(session, merchant_id=admin.merchant_id, options=options)
    return _page(
        request,
        admin,
        import_kind,
        job=job,
        sample=sample_rows(import_kind, path),
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
        checksum, file_name, options = job.checksum, job.file_name, options_of(job)
        if job.kind != import_kind.value:
            raise NotFound(f"import {job_id} is not an import of {kind}")
    path = upload_path(admin, checksum)
    if not path.exists():
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
            "server was cleaned up). Upload it again.",
            status_code=409,
        )
    run = Run(
        token=secrets.token_urlsafe(12),
        merchant_id=admin.merchant_id,
        kind=import_kind,
        file_name=file_name,
    )
    runs_of(request).add(run)
    _apply_in_background(admin, run, path, options)
    if is_htmx(request):
        return render(request, "imports/_run.html", {"run": run, "kind": kind})
    return redirect(f"/admin/imports/{kind}?run={run.token}")


@router.get("/imports/{kind}/runs/{token}", include_in_schema=False)
def import_run(request: Request, admin: AdminDep, kind: str, token: str) -> Response:
    """A run's progress (the fragment polls itself until the import ends)."""
    _kind(kind)
    run = runs_of(request).get(token, admin.merchant_id)
    if not is_htmx(request):
        return redirect(f"/admin/imports/{kind}?run={token}")
    context: dict[str, Any] = {"run": run, "kind": kind}
    if run.finished:
        history, total = _history(admin)
        context |= {"history": history, "history_total": total, "refresh_history": True}
    return render(request, "imports/_run.html", context)


@router.post("/imports/jobs/{job_id}/revert", include_in_schema=False)
def import_revert(request: Request, admin: AdminDep, form: FormDep, job_id: Id) -> Response:
    """Take back every point a completed import credited, or say whose points were spent."""
    kind = ImportKind(text(form, "kind")) if text(form, "kind") in KINDS else ImportKind.CUSTOMERS
    try:
        imports.revert_import(
            admin.state.session_factory, merchant_id=admin.merchant_id, job_id=job_id
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
