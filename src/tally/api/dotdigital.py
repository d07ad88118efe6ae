"""REST endpoints of the Dotdigital integration (mounted under /api/v1/integrations/dotdigital)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, SecretStr

from tally.api.deps import CallerDep
from tally.api.edge import Id, Limit, Offset
from tally.api.schemas import view_of
from tally.errors import NotFound
from tally.integrations.dotdigital import reconcile, service
from tally.integrations.dotdigital.fields import DataFieldMapping
from tally.integrations.dotdigital.service import FailureView, JobView, StatusView

PREFIX = "/api/v1/integrations/dotdigital"
router = APIRouter(prefix=PREFIX, tags=["dotdigital"])


class CredentialsIn(BaseModel):
    """The Dotdigital API user (Settings > Access > API users in Dotdigital)."""

    username: str = Field(min_length=1, max_length=255, examples=["apiuser-1a2b@apiconnector.com"])
    # SecretStr keeps the password out of reprs and logs; it is never returned.
    password: SecretStr


class ConnectionOut(BaseModel):
    """The stored connection after saving credentials (never the password)."""

    api_username: str
    api_endpoint: str
    account_id: int | None
    enabled: bool
    replaced_user: bool


class EnableOut(BaseModel):
    """Syncing is on; the mapped data fields exist with the right types."""

    enabled: bool
    created_fields: list[str]
    existing_fields: list[str]


class FailureOut(BaseModel):
    """A contact Dotdigital refused for good."""

    customer_id: int | None
    email: str | None
    code: str
    reason: str
    failed_at: datetime


class JobOut(BaseModel):
    """A manual sync and its counts."""

    id: int
    status: str
    total: int
    sent: int
    created: int
    updated: int
    failed: int
    imports: int
    imports_running: int
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str | None


class StatusOut(BaseModel):
    """The integration at a glance."""

    connected: bool
    enabled: bool
    api_username: str | None
    api_endpoint: str | None
    mapping: dict[str, str | None]
    field_check: dict[str, Any] | None
    calls_per_minute: int | None
    last_successful_sync_at: datetime | None
    paused_until: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    backlog: int
    backlog_retrying: int
    failures_total: int
    recent_failures: list[FailureOut]
    recent_jobs: list[JobOut]


def failure_out(failure: FailureView) -> FailureOut:
    """The API view of a failure."""
    return view_of(FailureOut, failure)


def job_out(job: JobView) -> JobOut:
    """The API view of a manual sync."""
    return view_of(JobOut, job)


def status_out(view: StatusView) -> StatusOut:
    """The API view of the status."""
    return view_of(
        StatusOut,
        view,
        mapping=dict(view.mapping),
        recent_failures=[failure_out(f) for f in view.recent_failures],
        recent_jobs=[job_out(j) for j in view.recent_jobs],
    )


def _current_status(caller: CallerDep) -> StatusOut:
    with caller.unit_of_work() as session:
        view = service.status(
            session, merchant_id=caller.merchant_id, settings=caller.state.settings
        )
    return status_out(view)


@router.get("", response_model=StatusOut)
def get_status(caller: CallerDep) -> StatusOut:
    """Connection, whether syncing is on, backlog, recent failures and manual syncs."""
    return _current_status(caller)


@router.put("/credentials", response_model=ConnectionOut)
def put_credentials(body: CredentialsIn, caller: CallerDep) -> ConnectionOut:
    """Check the API user with Dotdigital, find the account's region, and store it."""
    saved = service.save_credentials(
        caller.unit_of_work,
        merchant_id=caller.merchant_id,
        username=body.username,
        password=body.password.get_secret_value(),
        settings=caller.state.settings,
    )
    return view_of(ConnectionOut, saved)


@router.post("/enable", response_model=EnableOut)
def post_enable(caller: CallerDep) -> EnableOut:
    """Create missing data fields and switch syncing on (422 lists fields of the wrong type)."""
    result = service.enable(
        caller.unit_of_work, merchant_id=caller.merchant_id, settings=caller.state.settings
    )
    return EnableOut(enabled=True, created_fields=result.created, existing_fields=result.existing)


@router.post("/disable", response_model=StatusOut)
def post_disable(caller: CallerDep) -> StatusOut:
    """Stop syncing; credentials and mapping are kept."""
    with caller.unit_of_work() as session:
        service.disable(session, merchant_id=caller.merchant_id)
    return _current_status(caller)


@router.delete("", status_code=204)
def delete_connection(caller: CallerDep) -> Response:
    """Forget the credentials and the backlog (404 when not connected)."""
    with caller.unit_of_work() as session:
        removed = service.disconnect(session, merchant_id=caller.merchant_id)
    if not removed:
        raise NotFound("Dotdigital is not connected")
    return Response(status_code=204)


@router.put("/mapping", response_model=DataFieldMapping)
def put_mapping(body: DataFieldMapping, caller: CallerDep) -> DataFieldMapping:
    """Choose the data fields (null leaves a fact out); checked with Dotdigital when enabled."""
    return service.update_mapping(
        caller.unit_of_work,
        merchant_id=caller.merchant_id,
        mapping=body,
        settings=caller.state.settings,
    )


@router.post("/sync", status_code=202, response_model=JobOut)
def post_sync(caller: CallerDep) -> JSONResponse:
    """Start a manual sync of every customer; the worker runs it (poll the Location)."""
    with caller.unit_of_work() as session:
        job = service.start_manual_sync(session, merchant_id=caller.merchant_id)
        out = job_out(service.job_view(session, job))
    return JSONResponse(
        out.model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"{PREFIX}/sync/{out.id}"},
    )


@router.get("/sync/{job_id}", response_model=JobOut)
def get_sync(job_id: Id, caller: CallerDep) -> JobOut:
    """Progress and counts of a manual sync."""
    with caller.unit_of_work() as session:
        job = service.get_sync_job(session, merchant_id=caller.merchant_id, job_id=job_id)
        return job_out(service.job_view(session, job))


class ReconcileOut(BaseModel):
    """A drift check (progress and figures) and, on GET, a page of its differences: each a
    customer whose contact differs (``fields``: field, Tally's value, Dotdigital's) or is
    missing in Dotdigital."""

    check: reconcile.ReconcileView
    drifted: int = Field(description="contacts that differ or are missing")
    compared: int = Field(description="customers expected in Dotdigital")
    differences: list[reconcile.DifferenceView] = []


def _reconcile_out(
    view: reconcile.ReconcileView, found: list[reconcile.DifferenceView] | None = None
) -> ReconcileOut:
    return ReconcileOut(
        check=view, drifted=view.drifted, compared=view.compared, differences=found or []
    )


@router.post("/reconcile", status_code=202, response_model=ReconcileOut)
def post_reconcile(caller: CallerDep) -> JSONResponse:
    """Start a drift check (or answer the running one); the worker reads every contact back."""
    with caller.unit_of_work() as session:
        reconcile.start_reconcile(session, merchant_id=caller.merchant_id)
        view = reconcile.latest_reconcile(session, merchant_id=caller.merchant_id)
    assert view is not None
    out = _reconcile_out(view)
    return JSONResponse(
        out.model_dump(mode="json"), status_code=202, headers={"Location": f"{PREFIX}/reconcile"}
    )


@router.get("/reconcile", response_model=ReconcileOut)
def get_reconcile(caller: CallerDep, limit: Limit = 50, offset: Offset = 0) -> ReconcileOut:
    """The latest drift check with a page of its differences (404 before the first check)."""
    with caller.unit_of_work() as session:
        view = reconcile.latest_reconcile(session, merchant_id=caller.merchant_id)
        if view is None:
            raise NotFound("no drift check yet: POST to start one")
        found = reconcile.list_differences(
            session,
            merchant_id=caller.merchant_id,
            reconcile_id=view.id,
            limit=limit,
            offset=offset,
        )
    return _reconcile_out(view, found)


@router.post("/reconcile/fix", response_model=ReconcileOut)
def post_reconcile_fix(caller: CallerDep) -> ReconcileOut:
    """Queue the latest check's drifted contacts for the sync, which sends only them."""
    with caller.unit_of_work() as session:
        reconcile.queue_fixes(session, merchant_id=caller.merchant_id)
        view = reconcile.latest_reconcile(session, merchant_id=caller.merchant_id)
    assert view is not None
    return _reconcile_out(view)
