"""Reports (owners and managers): the points liability and the CSV exports, streamed."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from tally.admin.web import Admin, AdminDep, AdminRoute, render
from tally.api.reports import csv_download
from tally.reports import exports
from tally.reports.liability import points_liability

router = APIRouter(route_class=AdminRoute)

EXPORTS: dict[str, Callable[..., Iterator[str]]] = {
    "customers": exports.export_customers,
    "ledger": exports.export_ledger,
}


@router.get("/reports/liability", include_in_schema=False)
def liability(request: Request, admin: AdminDep) -> Response:
    """Outstanding points, their worth at the rewards' rates, and what expires soon."""
    with admin.unit_of_work() as session:
        report = points_liability(session, merchant_id=admin.merchant_id)
    context = {"title": "Points liability", "nav": "reports-liability", "report": report}
    return render(request, "reports/liability.html", context)


def _download(admin: Admin, name: str) -> StreamingResponse:
    # Each chunk is its own short unit of work (see reports.exports), so a long download holds
    # no lock; the response goes out as the rows are read.
    pieces = EXPORTS[name](admin.unit_of_work, merchant_id=admin.merchant_id)
    return csv_download(pieces, name)


@router.get("/reports/export/customers.csv", include_in_schema=False)
def export_customers(admin: AdminDep) -> Response:
    """Every customer as CSV: balance, tier, next expiry."""
    return _download(admin, "customers")


@router.get("/reports/export/ledger.csv", include_in_schema=False)
def export_ledger(admin: AdminDep) -> Response:
    """Every ledger entry as CSV, with the balance after each."""
    return _download(admin, "ledger")
