"""Program endpoints: settings, orders and refunds, custom actions, tiers, referral links."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from tally.api.deps import CallerDep, app_state
from tally.api.edge import Id, OrderId
from tally.api.idempotency import idempotent_post
from tally.api.schemas import MoneyText, money_text, view_of
from tally.customers import service as customers
from tally.db.base import utcnow
from tally.db.engine import bind_merchant
from tally.errors import NotFound
from tally.ledger.bounds import MAX_POINTS
from tally.program import service as program_service
from tally.program import tiers
from tally.program.config_service import update_program
from tally.program.orm import Order, ReferralClick, TierChangeRecord
from tally.program.settings import VipMetric
from tally.state import AppState

router = APIRouter(prefix="/api/v1", tags=["program"])
public_router = APIRouter(tags=["referrals"])

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
Amount = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)]


class OrderIn(BaseModel):
    """An order reported by the store."""

    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=100)
    email: str | None = Field(default=None, max_length=320)
    customer_external_id: str | None = Field(default=None, max_length=100)
    subtotal: Amount | None = None
    discounts: Amount = Decimal(0)
    shipping: Amount = Decimal(0)
    tax: Amount = Decimal(0)
    total: Amount
    currency: str | None = Field(default=None, pattern="^[A-Za-z]{3}$")
    status: str = Field(default="paid", max_length=32)
    placed_at: AwareDatetime


class OrderOut(BaseModel):
    """An order and the points it earned."""

    order_id: str
    customer_id: int
    total: MoneyText
    refunded_amount: MoneyText
    currency: str
    status: str
    placed_at: datetime
    points_awarded: int
    points_clawed_back: int


class RefundIn(BaseModel):
    """A refund; without an amount, whatever is left of the order."""

    model_config = ConfigDict(extra="forbid")

    amount: Amount | None = None
    refund_id: str | None = Field(default=None, max_length=100)


class ActionIn(BaseModel):
    """A custom action a customer completed."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320)
    action_id: str = Field(max_length=64)
    points: int | None = Field(
        default=None, ge=1, le=MAX_POINTS, description="overrides the action's points"
    )


def order_out(order: Order) -> OrderOut:
    """The API view of an order."""
    return view_of(OrderOut, order)


def _etag(version: int) -> str:
    return f'"{version}"'


def _if_match_version(header: str | None) -> int | None:
    """The program version an If-Match header names; None when the client sent none (or *)."""
    if header is None or header.strip() == "*":
        return None
    tag = header.strip().removeprefix("W/").strip('"')
    # A tag that is no version of ours can never match: -1 makes the check refuse it.
    return int(tag) if tag.isdigit() and len(tag) < 19 else -1


@router.get("/program")
def get_program(caller: CallerDep, response: Response) -> dict[str, Any]:
    """The merchant's program settings (earning actions, rewards, VIP tiers, expiry).

    The ETag is the version: send it back in `If-Match` with a PATCH to refuse (412) a change
    made on top of settings that someone else changed meanwhile.
    """
    with caller.unit_of_work() as session:
        settings = program_service.load(session, caller.merchant_id).settings
    response.headers["ETag"] = _etag(settings.version)
    return settings.model_dump(mode="json")


@router.patch("/program")
def change_program(
    changes: dict[str, Any],
    caller: CallerDep,
    response: Response,
    if_match: Annotated[str | None, Header(alias="If-Match", max_length=100)] = None,
) -> dict[str, Any]:
    """Replace whole sections of the settings (e.g. {"vip": {...}}); the version goes up."""
    with caller.unit_of_work() as session:
        updated = update_program(
            session,
            merchant_id=caller.merchant_id,
            changes=changes,
            expected_version=_if_match_version(if_match),
            changed_by=caller.actor,
        )
    response.headers["ETag"] = _etag(updated.version)
    return updated.model_dump(mode="json")


@router.post("/orders", status_code=201, response_model=OrderOut)
def post_order(
    body: OrderIn, caller: CallerDep, request: Request, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Record an order (or its new status); points are awarded when it reaches the set status."""

    def work(session: Session) -> tuple[int, Any]:
        result = program_service.record_order(
            session,
            merchant_id=caller.merchant_id,
            data=program_service.OrderInput(
                order_id=body.order_id,
                email=body.email,
                external_customer_id=body.customer_external_id,
                subtotal=body.subtotal,
                discounts=body.discounts,
                shipping=body.shipping,
                tax=body.tax,
                total=body.total,
                currency=body.currency,
                status=body.status,
                placed_at=body.placed_at,
            ),
        )
        return (201 if result.created else 200), order_out(result.order).model_dump(mode="json")

    return idempotent_post(caller, request, key=idempotency_key, body=body, work=work)


@router.get("/orders/{order_id}", response_model=OrderOut)
def get_order(order_id: OrderId, caller: CallerDep) -> OrderOut:
    """One order."""
    from sqlalchemy import select

    with caller.unit_of_work() as session:
        order = session.scalar(
            select(Order).where(Order.merchant_id == caller.merchant_id, Order.order_id == order_id)
        )
        if order is None:
            raise NotFound(f"order {order_id!r} does not exist")
        return order_out(order)


@router.post("/orders/{order_id}/refunds", status_code=201)
def post_refund(
    order_id: OrderId,
    body: RefundIn,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Refund part or all of an order; proportional points are taken back."""
    refund_id = body.refund_id or idempotency_key or uuid.uuid4().hex
    with caller.unit_of_work() as session:
        result = program_service.refund_order(
            session,
            merchant_id=caller.merchant_id,
            order_id=order_id,
            amount=body.amount,
            refund_id=refund_id,
        )
        order = session.get_one(Order, result.refund.order_pk)
        return {
            "refund_id": result.refund.refund_id,
            "amount": money_text(result.refund.amount),
            "points_clawed_back": result.refund.points_clawed_back,
            "shortfall": result.refund.shortfall,
            "replayed": result.replayed,
            "order": order_out(order).model_dump(mode="json"),
        }


@router.post("/actions", status_code=201)
def post_action(
    body: ActionIn, caller: CallerDep, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """Award a custom action (e.g. a review or a social follow) to a customer."""
    with caller.unit_of_work() as session:
        posting = program_service.complete_custom_action(
            session,
            merchant_id=caller.merchant_id,
            email=body.email,
            action_id=body.action_id,
            points=body.points,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
        )
        if posting is None:
            return {"awarded": 0, "reason": "the action's limit is reached"}
        return {"awarded": posting.entry.points, "entry_id": posting.entry.id}


@router.get("/customers/{customer_id}/tier")
def get_tier(customer_id: Id, caller: CallerDep) -> dict[str, Any]:
    """The customer's VIP tier, progress to the next one, and tier history."""
    from sqlalchemy import select

    with caller.unit_of_work() as session:
        customer = customers.get_customer(session, caller.merchant_id, customer_id)
        program = program_service.load(session, caller.merchant_id)
        vip = program.settings.vip
        value = program_service.tier_value(session, program, customer.id, now=utcnow())
        held = next((t for t in vip.tiers if t.id == customer.vip_tier), None)
        progress = tiers.progress_to_next(vip.tiers, value, held=held) if vip.enabled else None
        history = session.scalars(
            select(TierChangeRecord)
            .where(TierChangeRecord.customer_id == customer.id)
            .order_by(TierChangeRecord.id.desc())
            .limit(50)
        )
        # Money as money (two places at least), points as a whole number.
        shown = money_text if vip.metric == VipMetric.AMOUNT_SPENT else _whole
        return {
            "tier": customer.vip_tier,
            "metric": vip.metric,
            "value": shown(value),
            "next_tier": progress.next.id if progress and progress.next else None,
            "remaining": shown(progress.remaining) if progress and progress.remaining else None,
            "history": [
                {"from": h.old_tier, "to": h.new_tier, "at": h.changed_at.isoformat()}
                for h in history
            ],
        }


@public_router.get("/r/{code}", include_in_schema=False)
def referral_redirect(
    code: str, state: Annotated[AppState, Depends(app_state)]
) -> RedirectResponse:
    """Record a click on a referral link and send the visitor to the store with ?ref=CODE."""
    with state.session_factory() as session:
        found = program_service.customer_for_referral_code(session, code)
        if found is None:
            raise NotFound(f"referral code {code!r} does not exist")
        referrer, merchant = found
        bind_merchant(session, merchant.id)
        session.add(ReferralClick(merchant_id=merchant.id, referrer_id=referrer.id))
        session.commit()
        target = f"{merchant.store_url}/?ref={referrer.referral_code}"
    return RedirectResponse(target, status_code=302)


def _whole(value: Decimal) -> str:
    return str(int(value))
