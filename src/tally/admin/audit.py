"""The audit log page (owners and managers): who changed what, newest first, filtered, paged."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from tally.admin.web import AdminDep, AdminRoute, render
from tally.audit.service import AuditFilter, list_events

router = APIRouter(route_class=AdminRoute)

PAGE_SIZE = 50


@router.get("/audit", include_in_schema=False)
def audit_log(
    request: Request,
    admin: AdminDep,
    actor: str = "",
    target: str = "",
    action: str = "",
    page: int = 1,
) -> HTMLResponse:
    """The merchant's audit events, narrowed by actor, target and action."""
    page = max(page, 1)
    where = AuditFilter(actor=actor or None, target=target or None, action=action or None)
    with admin.unit_of_work() as session:
        events, total = list_events(
            session,
            merchant_id=admin.merchant_id,
            where=where,
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
        )
    return render(
        request,
        "audit/list.html",
        {
            "title": "Audit log",
            "nav": "audit",
            "events": events,
            "total": total,
            "filters": {"actor": actor, "target": target, "action": action},
            "current_page": page,
            "pages": max(1, math.ceil(total / PAGE_SIZE)),
        },
    )
