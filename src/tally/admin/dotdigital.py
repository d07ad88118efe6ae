"""Integrations → Dotdigital: connect, enable, field mapping, Sync now with progress, status,
the drift check with its differences and "Fix these", and the outbox deliveries to its
handlers that failed (with a retry for those that gave up)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from tally.admin.web import (
    Admin,
    AdminDep,
    AdminRoute,
    FormDep,
    error_page,
    is_htmx,
    redirect,
    render,
    text,
)
from tally.api.edge import Id
from tally.errors import DomainError, FieldProblem
from tally.integrations.dotdigital import reconcile, service
from tally.integrations.dotdigital.fields import DataFieldMapping
from tally.integrations.dotdigital.orm import SyncJobStatus
from tally.outbox import service as outbox

router = APIRouter(route_class=AdminRoute)

PAGE = "/admin/integrations/dotdigital"
MAPPING_LABELS = {
    "points_balance": "Points balance",
    "referral_url": "Referral URL",
    "birthday": "Birthday",
    "vip_tier": "VIP tier",
}
# Every Dotdigital outbox handler is named under this prefix (see integrations.dotdigital).
HANDLER_PREFIX = "dotdigital."
RECENT_DELIVERY_FAILURES = 20
RETRIED_NOTICE = "The delivery is queued again; the worker sends it shortly."
# Differences listed per page of the drift section.
DRIFT_PAGE_SIZE = 50
PAGE_NOTICES = {
    "retried": RETRIED_NOTICE,
    "checking": "Checking for drift: the worker reads every contact back from Dotdigital.",
    "fixing": "The drifted contacts are queued; the sync sends them shortly.",
}


def _status(admin: Admin) -> tuple[service.StatusView, list[outbox.FailedAttempt]]:
    with admin.unit_of_work() as session:
        view = service.status(session, merchant_id=admin.merchant_id, settings=admin.state.settings)
        failures = outbox.recent_failed_attempts(
            session,
            merchant_id=admin.merchant_id,
            handler_prefix=HANDLER_PREFIX,
            limit=RECENT_DELIVERY_FAILURES,
        )
    return view, failures


def _page(
    request: Request,
    admin: Admin,
    *,
    error: str | None = None,
    problems: list[FieldProblem] | None = None,
    form_name: str = "",
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    view, delivery_failures = _status(admin)
    running = next((j for j in view.recent_jobs if j.status == SyncJobStatus.RUNNING), None)
    extra: dict[str, Any] = _drift_context(request, admin)
    # The shared notices know nothing of this page's actions; it adds its own.
    notice = PAGE_NOTICES.get(request.query_params.get("done", ""))
    if notice is not None:
        extra["notice"] = notice
    return render(
        request,
        "integrations/dotdigital.html",
        {
            **extra,
            "title": "Dotdigital",
            "nav": "dotdigital",
            "view": view,
            "running": running,
            "delivery_failures": delivery_failures,
            "mapping_labels": MAPPING_LABELS,
            "defaults": DataFieldMapping().model_dump(),
            "error": error,
            "problems": problems or [],
            "form_name": form_name,
            "values": values or {},
        },
        status_code=status_code,
    )


@router.get("/integrations/dotdigital", include_in_schema=False)
def dotdigital_page(request: Request, admin: AdminDep) -> Response:
    """The integration's page: connection, switch, mapping, syncs and failures."""
    return _page(request, admin)


def _refused(
    request: Request,
    admin: Admin,
    error: DomainError,
    form_name: str,
    values: dict[str, str] | None = None,
) -> HTMLResponse:
    return _page(
        request,
        admin,
        error=error.detail,
        problems=error.errors,
        form_name=form_name,
        values=values,
        status_code=error.status_code,
    )


@router.post("/integrations/dotdigital/connect", include_in_schema=False)
def connect(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Check the API user's credentials with Dotdigital and save them (password encrypted)."""
    username = text(form, "username")
    password = form.get("password")
    try:
        service.save_credentials(
            admin.uow,
            merchant_id=admin.merchant_id,
            username=username,
            password=password if isinstance(password, str) else "",
            settings=admin.state.settings,
        )
    except DomainError as error:
        return _refused(request, admin, error, "connect", {"username": username})
    return redirect(f"{PAGE}?done=connected")


@router.post("/integrations/dotdigital/enable", include_in_schema=False)
def enable(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Create missing data fields and switch the automatic sync on."""
    del form
    try:
        service.enable(admin.uow, merchant_id=admin.merchant_id, settings=admin.state.settings)
    except DomainError as error:
        return _refused(request, admin, error, "enable")
    return redirect(f"{PAGE}?done=enabled")


def _act(
    request: Request, admin: Admin, action: Callable[[Session], object], done: str, form: str
) -> Response:
    """Run one change in a unit of work, then show the page with its notice (or the refusal)."""
    try:
        with admin.unit_of_work() as session:
            action(session)
    except DomainError as error:
        return _refused(request, admin, error, form)
    return redirect(f"{PAGE}?done={done}")


@router.post("/integrations/dotdigital/disable", include_in_schema=False)
def disable(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Switch the automatic sync off (credentials and mapping stay)."""
    del form
    return _act(
        request,
        admin,
        lambda session: service.disable(session, merchant_id=admin.merchant_id),
        "disabled",
        "enable",
    )


@router.post("/integrations/dotdigital/disconnect", include_in_schema=False)
def disconnect(admin: AdminDep, form: FormDep) -> Response:
    """Forget the credentials and the backlog (history stays)."""
    del form
    with admin.unit_of_work() as session:
        service.disconnect(session, merchant_id=admin.merchant_id)
    return redirect(f"{PAGE}?done=disconnected")


@router.post("/integrations/dotdigital/mapping", include_in_schema=False)
def save_mapping(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Choose which Dotdigital data field each loyalty fact goes to (blank: not synced)."""
    values = {name: text(form, f"mapping.{name}") for name in MAPPING_LABELS}
    try:
        mapping = service.parse_mapping({k: (v or None) for k, v in values.items()})
        service.update_mapping(
            admin.uow, merchant_id=admin.merchant_id, mapping=mapping, settings=admin.state.settings
        )
    except DomainError as error:
        return _refused(request, admin, error, "mapping", values)
    return redirect(f"{PAGE}?done=mapping")


@router.post("/integrations/dotdigital/sync", include_in_schema=False)
def sync_now(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Start a manual sync of every customer; the worker runs it and the page follows along."""
    del form
    try:
        with admin.unit_of_work() as session:
            job = service.start_manual_sync(session, merchant_id=admin.merchant_id)
            job_id = job.id
    except DomainError as error:
        if is_htmx(request):
            return error_page(request, error.status_code, error.title, error.detail)
        return _refused(request, admin, error, "sync")
    if is_htmx(request):
        return sync_progress(request, admin, job_id)
    return redirect(f"{PAGE}#sync")


@router.get("/integrations/dotdigital/sync/{job_id}", include_in_schema=False)
def sync_progress(request: Request, admin: AdminDep, job_id: Id) -> Response:
    """A manual sync's progress (the fragment polls itself while the sync runs)."""
    with admin.unit_of_work() as session:
        job = service.get_sync_job(session, merchant_id=admin.merchant_id, job_id=job_id)
        view = service.job_view(session, job)
        connection = service.find_connection(session, admin.merchant_id)
    context: dict[str, Any] = {"job": view, "title": "Dotdigital sync", "nav": "dotdigital"}
    if view.status != "running" and connection is not None:
        context["last_sync_at"] = connection.last_successful_sync_at
    if is_htmx(request):
        return render(request, "integrations/_sync_progress.html", context)
    return redirect(f"{PAGE}#sync")


@router.post("/integrations/dotdigital/deliveries/{message_id}/retry", include_in_schema=False)
def retry_delivery(request: Request, admin: AdminDep, form: FormDep, message_id: Id) -> Response:
    """Queue a delivery that failed for good again (only this merchant's own messages)."""
    del form
    try:
        with admin.unit_of_work() as session:
            outbox.retry_message(
                session,
                message_id=message_id,
                merchant_id=admin.merchant_id,
                handler_prefix=HANDLER_PREFIX,
            )
    except DomainError as error:
        return _refused(request, admin, error, "deliveries")
    return redirect(f"{PAGE}?done=retried#deliveries")


def _drift_context(request: Request, admin: Admin) -> dict[str, Any]:
    """The latest drift check and one page of its differences (``?drift_page=``)."""
    raw = request.query_params.get("drift_page", "1")
    number = max(1, int(raw)) if raw.isdigit() else 1
    with admin.unit_of_work() as session:
        drift = reconcile.latest_reconcile(session, merchant_id=admin.merchant_id)
        found = (
            reconcile.list_differences(
                session,
                merchant_id=admin.merchant_id,
                reconcile_id=drift.id,
                limit=DRIFT_PAGE_SIZE,
                offset=(number - 1) * DRIFT_PAGE_SIZE,
            )
            if drift is not None
            else []
        )
    return {
        "drift": drift,
        "drift_differences": found,
        "drift_page": number,
        "drift_page_size": DRIFT_PAGE_SIZE,
    }


@router.get("/integrations/dotdigital/drift", include_in_schema=False)
def drift_fragment(request: Request, admin: AdminDep) -> Response:
    """The drift section (it polls itself while a check runs)."""
    if not is_htmx(request):
        return redirect(f"{PAGE}#drift")
    with admin.unit_of_work() as session:
        view = service.status(session, merchant_id=admin.merchant_id, settings=admin.state.settings)
    context = {"title": "Dotdigital", "nav": "dotdigital", "view": view}
    context.update(_drift_context(request, admin))
    return render(request, "integrations/_drift.html", context)


# The drift section's two buttons: what each does, and the notice it leaves.
DRIFT_ACTIONS: dict[str, tuple[Callable[..., object], str]] = {
    "check": (reconcile.start_reconcile, "checking"),
    "fix": (reconcile.queue_fixes, "fixing"),
}


@router.post("/integrations/dotdigital/drift/{action}", include_in_schema=False)
def drift_action(request: Request, admin: AdminDep, form: FormDep, action: str) -> Response:
    """Check for drift (or go on with the running check; the worker runs it), or queue the
    latest check's drifted contacts for the sync, which sends only them."""
    del form
    if action not in DRIFT_ACTIONS:
        return error_page(request, 404, "Not found", f"no drift action {action!r}")
    use_case, done = DRIFT_ACTIONS[action]
    return _act(
        request,
        admin,
        lambda session: use_case(session, merchant_id=admin.merchant_id),
        f"{done}#drift",
        "drift",
    )
