"""`GET /api/v1/audit-events`: the merchant's audit log, newest first."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from tally.api.deps import CallerDep
from tally.api.edge import Limit, Offset
from tally.api.schemas import Page
from tally.audit.service import AuditFilter, event_json, list_events

router = APIRouter(prefix="/api/v1", tags=["audit"])


class AuditEventOut(BaseModel):
    """One recorded change: who, when, what, and the changed values before and after."""

    id: int
    occurred_at: str
    actor: str
    actor_kind: str
    actor_id: str | None
    action: str
    target_type: str
    target_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None
    address: str | None


Filter = Annotated[str | None, Query(max_length=320)]


@router.get("/audit-events", response_model=Page[AuditEventOut])
def list_audit_events(
    caller: CallerDep,
    actor: Filter = None,
    target: Filter = None,
    action: Filter = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[AuditEventOut]:
    """The audit log, newest first, narrowed by actor, target (`type` or `type:id`) and action."""
    with caller.unit_of_work() as session:
        events, total = list_events(
            session,
            merchant_id=caller.merchant_id,
            where=AuditFilter(actor=actor, target=target, action=action),
            limit=limit,
            offset=offset,
        )
        items = [AuditEventOut(**event_json(e)) for e in events]
    return Page[AuditEventOut](items=items, total=total, limit=limit, offset=offset)
