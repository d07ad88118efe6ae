"""The admin's router: every page, under /admin."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from tally.admin import (
    audit,
    auth,
    code_pools,
    customer_edits,
    customers,
    dashboard,
    dotdigital,
    email_templates,
    golive,
    imports,
    mail,
    passwords,
    program_edits,
    reports,
    settings,
    storefront,
    team,
    webhooks,
)
from tally.admin.permissions import Permission, requires
from tally.admin.web import AdminDep, AdminRoute, redirect
from tally.errors import NotFound

# Every page that needs a signed-in admin declares its permission here or on its route
# (admin/permissions.py); the sign-in and set-password pages need none.
router = APIRouter(prefix="/admin", route_class=AdminRoute, include_in_schema=False)
router.add_api_route(
    "",
    dashboard.dashboard,
    methods=["GET"],
    include_in_schema=False,
    # Support has no dashboard: its start page is the customer list.
    dependencies=[requires(Permission.DASHBOARD, otherwise="/admin/customers")],
)
router.include_router(auth.router)
router.include_router(passwords.router)
router.include_router(customers.router, dependencies=[requires(Permission.CUSTOMERS)])
router.include_router(customer_edits.router, dependencies=[requires(Permission.CUSTOMERS)])
# Before settings: its POST /settings/rewards/{reward_id}/{action} would take .../edit, /codes.
router.include_router(program_edits.router, dependencies=[requires(Permission.PROGRAM)])
router.include_router(code_pools.router, dependencies=[requires(Permission.PROGRAM)])
router.include_router(email_templates.router, dependencies=[requires(Permission.PROGRAM)])
router.include_router(settings.router, dependencies=[requires(Permission.PROGRAM)])
router.include_router(dotdigital.router, dependencies=[requires(Permission.INTEGRATIONS)])
router.include_router(webhooks.router, dependencies=[requires(Permission.INTEGRATIONS)])
# The widget's secret, origins and look: an integration of the store (owners and managers).
router.include_router(storefront.router, dependencies=[requires(Permission.INTEGRATIONS)])
router.include_router(imports.router, dependencies=[requires(Permission.IMPORTS)])
router.include_router(team.router, dependencies=[requires(Permission.TEAM)])
router.include_router(reports.router, dependencies=[requires(Permission.REPORTS)])
# The mail log needs REPORTS and the SMTP settings MAIL_SETTINGS: declared per route.
router.include_router(mail.router)
router.include_router(golive.router)
router.include_router(audit.router, dependencies=[requires(Permission.AUDIT)])


@router.get("/{path:path}", include_in_schema=False, dependencies=[requires()])
def page_not_found(admin: AdminDep, path: str) -> Response:
    """Any other admin address: an HTML 404 inside the admin (after signing in)."""
    del admin
    if not path:
        return redirect("/admin")
    raise NotFound(f"there is no admin page /admin/{path}")
