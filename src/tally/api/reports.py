"""Reports over the API: the points liability, and the customer and ledger CSV exports."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from tally.api.deps import CallerDep
from tally.api.schemas import money_text
from tally.db.base import utcnow
from tally.reports import exports
from tally.reports.liability import points_liability

router = APIRouter(prefix="/api/v1", tags=["reports"])

CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "CSV, streamed"}
}


def csv_download(pieces: Iterator[str], name: str) -> StreamingResponse:
    """A CSV attachment sent as its pieces are produced (`name-<date>.csv`)."""
    filename = f"{name}-{utcnow().date().isoformat()}.csv"
    return StreamingResponse(
        pieces,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


class RewardRateOut(BaseModel):
    """One enabled reward's money rate and the outstanding points' worth at it."""

    reward_id: str
    name: str
    type: str
    value_per_point: str | None
    value: str | None
    explanation: str


class LiabilityOut(BaseModel):
    """Outstanding points, their worth, and what the expiry job would expire soon."""

    outstanding_points: int
    customers_with_points: int
    currency: str
    value: str | None  # at the best rate; None when no enabled reward has a money value
    best_reward_id: str | None
    rewards: list[RewardRateOut]
    expiry_mode: str
    expiring_within_days: dict[int, int]


@router.get("/points-liability", response_model=LiabilityOut)
def get_points_liability(caller: CallerDep) -> LiabilityOut:
    """The merchant's points liability now."""
    with caller.unit_of_work() as session:
        report = points_liability(session, merchant_id=caller.merchant_id)
    return LiabilityOut(
        outstanding_points=report.outstanding_points,
        customers_with_points=report.customers_with_points,
        currency=report.currency,
        value=money_text(report.value) if report.value is not None else None,
        best_reward_id=report.best.reward_id if report.best else None,
        rewards=[
            RewardRateOut(
                reward_id=rate.reward_id,
                name=rate.name,
                type=rate.reward_type,
                value_per_point=str(rate.rate) if rate.rate is not None else None,
                value=money_text(rate.value) if rate.value is not None else None,
                explanation=rate.explanation,
            )
            for rate in report.rewards
        ],
        expiry_mode=report.expiry_mode,
        expiring_within_days=report.expiring,
    )


@router.get("/exports/customers", response_class=StreamingResponse, responses=CSV_RESPONSE)
def export_customers(caller: CallerDep) -> StreamingResponse:
    """Every customer as CSV (balance, tier, next expiry), streamed."""
    pieces = exports.export_customers(caller.unit_of_work, merchant_id=caller.merchant_id)
    return csv_download(pieces, "customers")


@router.get("/exports/ledger", response_class=StreamingResponse, responses=CSV_RESPONSE)
def export_ledger(caller: CallerDep) -> StreamingResponse:
    """Every ledger entry as CSV (customer by customer, with the balance after), streamed."""
    pieces = exports.export_ledger(caller.unit_of_work, merchant_id=caller.merchant_id)
    return csv_download(pieces, "ledger")
