"""The admin's router: every page, under /admin."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from tally.admin import auth, customers, dashboard, dotdigital, imports, settings, webhooks
from tally.admin.web import AdminDep, AdminRoute, redirect
from tally.errors import NotFound

router = APIRouter(prefix="/admin", route_class=AdminRoute, include_in_schema=False)
router.add_api_route("", dashboard.dashboard, methods=["GET"], include_in_schema=False)
router.include_router(auth.router)
router.include_router(customers.router)
router.include_router(settings.router)
router.include_router(dotdigital.router)
router.include_router(imports.router)
router.include_router(webhooks.router)


@router.get("/{path:path}", include_in_schema=False)
def page_not_found(admin: AdminDep, path: str) -> Response:
    """Any other admin address: an HTML 404 inside the admin (after signing in)."""
    del admin
    if not path:
        return redirect("/admin")
    raise NotFound(f"there is no admin page /admin/{path}")
