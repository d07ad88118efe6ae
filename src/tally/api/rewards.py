"""Reward endpoints: the merchant's rewards, redeeming points for them, and coupon code pools."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, File, Header, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from tally.api.deps import CallerDep
from tally.api.edge import Id, PagingDep, RewardId
from tally.api.idempotency import idempotent_post
from tally.api.schemas import Page, money_text, view_of
from tally.customers import service as customers
from tally.program import redemptions
from tally.program.config_service import load_program
from tally.program.orm import Redemption
from tally.program.rewards import MAX_POOL_FILE_BYTES, pool_lines
from tally.program.settings import Reward, VariableReward

router = APIRouter(prefix="/api/v1", tags=["rewards"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Replays of the same key and body return the first response; without a "
        "key every call is a new redemption",
    ),
]


# -- shapes -------------------------------------------------------------------------------------


class RedemptionCreate(BaseModel):
    """Spend points on a reward."""

    model_config = ConfigDict(extra="forbid")

    reward_id: str = Field(min_length=1, max_length=64)
    points: int | None = Field(
        default=None, ge=1, description="points to spend; required for variable rewards"
    )


class RedemptionOut(BaseModel):
    """A redemption and the coupon it gave."""

    id: int
    customer_id: int
    reward_id: str
    reward_name: str
    points_spent: int
    discount_value: str = Field(description="a decimal number, in discount_unit")
    discount_unit: str = Field(description="currency, percent or none")
    coupon_code: str
    expires_at: datetime | None
    created_at: datetime


class RedemptionCreated(RedemptionOut):
    """A new redemption and the customer's balance after it."""

    balance: int


class CodePoolOut(BaseModel):
    """A reward's uploaded coupon codes."""

    total: int
    available: int
    used: int


class RewardOut(BaseModel):
    """A reward as configured in the program settings; type-specific fields are null otherwise.

    `code_pool` is null when the reward's codes are generated, not uploaded.
    """

    id: str
    name: str
    type: str
    enabled: bool
    points_cost: int | None = Field(description="null for variable rewards")
    amount: str | None = Field(description="fixed_amount: the amount off")
    percent: str | None = Field(description="percentage: the percent off")
    product_id: str | None = Field(description="free_product: the product given")
    points_per_unit: int | None = Field(description="variable: points per currency unit")
    min_points: int | None
    max_points: int | None
    minimum_order: str | None
    coupon_expiry_days: int | None
    code_pool: CodePoolOut | None


class RewardList(BaseModel):
    """Every reward of the program, in settings order."""

    items: list[RewardOut]


class CodePoolUploadOut(BaseModel):
    """What an upload did to a reward's pool."""

    reward_id: str
    added: int
    skipped_existing: int
    available: int


# -- helpers ------------------------------------------------------------------------------------


def _optional_text(value: Decimal | None) -> str | None:
    return None if value is None else money_text(value)


def redemption_out(redemption: Redemption) -> RedemptionOut:
    """The API view of a redemption."""
    return view_of(RedemptionOut, redemption, discount_value=money_text(redemption.discount_value))


def reward_out(reward: Reward, pool: redemptions.PoolStatus | None) -> RewardOut:
    """The API view of a reward with its code pool."""
    variable = reward if isinstance(reward, VariableReward) else None
    return RewardOut(
        id=reward.id,
        name=reward.name,
        type=reward.type,
        enabled=reward.enabled,
        points_cost=None if variable else getattr(reward, "points_cost", None),
        amount=_optional_text(getattr(reward, "amount", None)),
        percent=_optional_text(getattr(reward, "percent", None)),
        product_id=getattr(reward, "product_id", None),
        points_per_unit=variable.points_per_unit if variable else None,
        min_points=variable.min_points if variable else None,
        max_points=variable.max_points if variable else None,
        minimum_order=_optional_text(reward.minimum_order),
        coupon_expiry_days=reward.coupon_expiry_days,
        code_pool=None
        if pool is None
        else CodePoolOut(total=pool.total, available=pool.available, used=pool.used),
    )


def _pool_lines(upload: UploadFile) -> Iterator[str]:
    """The uploaded file's lines, decoded only when read (after the reward id was checked)."""
    yield from pool_lines(upload.file.read(MAX_POOL_FILE_BYTES + 1))


# -- routes -------------------------------------------------------------------------------------


@router.get("/rewards", response_model=RewardList)
def list_rewards(caller: CallerDep) -> RewardList:
    """The program's rewards, with the state of each uploaded code pool."""
    with caller.unit_of_work() as session:
        _, settings = load_program(session, caller.merchant_id)
        pools = redemptions.pool_status(session, merchant_id=caller.merchant_id)
        return RewardList(items=[reward_out(r, pools.get(r.id)) for r in settings.rewards])


@router.post("/rewards/{reward_id}/codes", response_model=CodePoolUploadOut)
def upload_codes(
    reward_id: RewardId,
    caller: CallerDep,
    file: Annotated[UploadFile, File(description="a one-column CSV file of coupon codes")],
) -> CodePoolUploadOut:
    """Add coupon codes to a reward's pool; codes already in it are skipped and counted."""
    lines = _pool_lines(file)
    with caller.unit_of_work() as session:
        result = redemptions.upload_code_pool(
            session, merchant_id=caller.merchant_id, reward_id=reward_id, lines=lines
        )
        pool = redemptions.pool_status(session, merchant_id=caller.merchant_id)[reward_id]
        return CodePoolUploadOut(
            reward_id=reward_id,
            added=result.added,
            skipped_existing=result.skipped_existing,
            available=pool.available,
        )


@router.post(
    "/customers/{customer_id}/redemptions", status_code=201, response_model=RedemptionCreated
)
def redeem(
    customer_id: Id,
    body: RedemptionCreate,
    caller: CallerDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Spend the customer's points on a reward and return the coupon code."""

    def work(session: Session) -> tuple[int, Any]:
        redemption = redemptions.redeem_reward(
            session,
            merchant_id=caller.merchant_id,
            customer_id=customer_id,
            reward_id=body.reward_id,
            points=body.points,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
        )
        customer = customers.get_customer(session, caller.merchant_id, customer_id)
        out = RedemptionCreated(
            **redemption_out(redemption).model_dump(), balance=customer.points_balance
        )
        return 201, out.model_dump(mode="json")

    return idempotent_post(caller, request, key=idempotency_key, body=body, work=work)


@router.get("/customers/{customer_id}/redemptions", response_model=Page[RedemptionOut])
def list_customer_redemptions(
    customer_id: Id,
    caller: CallerDep,
    paging: PagingDep,
) -> Page[RedemptionOut]:
    """A customer's redemptions, newest first."""
    with caller.unit_of_work() as session:
        customers.get_customer(session, caller.merchant_id, customer_id)
        return Page[RedemptionOut].listed(
            redemptions.list_redemptions,
            redemption_out,
            paging,
            session,
            merchant_id=caller.merchant_id,
            customer_id=customer_id,
        )
