"""Customer and points endpoints."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from tally.api.deps import CallerDep
from tally.api.edge import Id, PagingDep
from tally.api.idempotency import IdempotencyKey, idempotent_post
from tally.api.schemas import (
    AdjustmentCreate,
    AdjustmentOut,
    CustomerCreate,
    CustomerOut,
    CustomerUpdate,
    LedgerEntryOut,
    Page,
    view_of,
)
from tally.customers import service as customers
from tally.customers.orm import Customer
from tally.ledger import service as ledger
from tally.ledger.orm import LedgerEntry
from tally.program import service as program_service
from tally.program.next_expiry import next_expiry

router = APIRouter(prefix="/api/v1", tags=["customers"])
LEDGER_KEY_LENGTH = 200


def customer_view(session: Session, customer: Customer, base_url: str) -> CustomerOut:
    """The API view of a customer, with when its next points expire under the program."""
    program = program_service.load(session, customer.merchant_id)
    upcoming = next_expiry(session, program, customer)
    return customer_out(
        customer, base_url, points_expire_at=upcoming.expires_at, points_expiring=upcoming.points
    )


def customer_out(
    customer: Customer,
    base_url: str,
    *,
    points_expire_at: datetime | None = None,
    points_expiring: int = 0,
) -> CustomerOut:
    """The API view of a customer."""
    return view_of(
        CustomerOut,
        customer,
        points_expire_at=points_expire_at,
        points_expiring=points_expiring,
        referral_url=f"{base_url}/r/{customer.referral_code}",
    )


def entry_out(entry: LedgerEntry) -> LedgerEntryOut:
    """The API view of a ledger entry."""
    return view_of(LedgerEntryOut, entry)


@router.post("/customers", status_code=201, response_model=CustomerOut)
def create_customer(
    body: CustomerCreate,
    caller: CallerDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Enrol a customer; a guest with the same email becomes a member."""
    base_url = caller.state.settings.public_base_url

    def work(session: Session) -> tuple[int, Any]:
        result = program_service.enroll_member(
            session,
            merchant_id=caller.merchant_id,
            email=body.email,
            first_name=body.first_name,
            last_name=body.last_name,
            birthday=body.birthday,
            external_id=body.external_id,
            referred_by_code=body.referred_by,
        )
        if body.accepts_marketing is not None:
            # The enrolment's event makes the sync read the customer, consent included.
            customers.record_consent(result.customer, accepts=body.accepts_marketing, source="api")
        out = customer_view(session, result.customer, base_url)
        return (201 if result.created else 200), out.model_dump(mode="json")

    return idempotent_post(caller, request, key=idempotency_key, body=body, work=work)


@router.get("/customers", response_model=Page[CustomerOut])
def list_customers(
    caller: CallerDep,
    paging: PagingDep,
    query: Annotated[str | None, Query(max_length=200, description="part of email or name")] = None,
    state: Annotated[str | None, Query(pattern="^(member|guest)$")] = None,
    tier: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[CustomerOut]:
    """Search customers by email or name, filter by state or tier, one page at a time."""
    base_url = caller.state.settings.public_base_url
    with caller.unit_of_work() as session:
        return Page[CustomerOut].listed(
            customers.search_customers,
            lambda c: customer_view(session, c, base_url),
            paging,
            session,
            merchant_id=caller.merchant_id,
            query=query,
            state=state,
            tier=tier,
        )


@router.get("/customers/by-email", response_model=CustomerOut)
def get_customer_by_email(
    caller: CallerDep, email: Annotated[str, Query(min_length=3, max_length=320)]
) -> CustomerOut:
    """The customer with this email (case-insensitive)."""
    with caller.unit_of_work() as session:
        customer = customers.get_customer_by_email(session, caller.merchant_id, email)
        return customer_view(session, customer, caller.state.settings.public_base_url)


@router.get("/customers/{customer_id}", response_model=CustomerOut)
def get_customer(customer_id: Id, caller: CallerDep) -> CustomerOut:
    """One customer."""
    with caller.unit_of_work() as session:
        customer = customers.get_customer(session, caller.merchant_id, customer_id)
        return customer_view(session, customer, caller.state.settings.public_base_url)


@router.patch("/customers/{customer_id}", response_model=CustomerOut)
def update_customer(customer_id: Id, body: CustomerUpdate, caller: CallerDep) -> CustomerOut:
    """Change name or birthday; only the fields sent change."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    with caller.unit_of_work() as session:
        customer = customers.update_customer(
            session, merchant_id=caller.merchant_id, customer_id=customer_id, **changes
        )
        return customer_view(session, customer, caller.state.settings.public_base_url)


@router.get("/customers/{customer_id}/ledger", response_model=Page[LedgerEntryOut])
def list_ledger(
    customer_id: Id,
    caller: CallerDep,
    paging: PagingDep,
) -> Page[LedgerEntryOut]:
    """A customer's ledger entries, newest first."""
    with caller.unit_of_work() as session:
        customers.get_customer(session, caller.merchant_id, customer_id)
        return Page[LedgerEntryOut].listed(
            ledger.list_entries, entry_out, paging, session, customer_id=customer_id
        )


def _ledger_key(idempotency_key: str | None) -> str:
    """The ledger's key for an API adjustment; it must fit the ledger's 200 characters."""
    key = f"api:{idempotency_key or uuid.uuid4().hex}"
    if len(key) <= LEDGER_KEY_LENGTH:
        return key
    # A client's key may be 200 characters itself; the prefix would overflow the column.
    return f"api-sha256:{hashlib.sha256(key.encode()).hexdigest()}"


@router.post("/customers/{customer_id}/adjustments", status_code=201, response_model=AdjustmentOut)
def adjust_points(
    customer_id: Id,
    body: AdjustmentCreate,
    caller: CallerDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Add or remove points by hand, with a reason."""

    def work(session: Session) -> tuple[int, Any]:
        customer = customers.get_customer(session, caller.merchant_id, customer_id)
        posting = ledger.adjust(
            session,
            customer=customer,
            points=body.points,
            reason=body.reason,
            idempotency_key=_ledger_key(idempotency_key),
            source_ref="api",
        )
        out = AdjustmentOut(entry=entry_out(posting.entry), balance=customer.points_balance)
        return 201, out.model_dump(mode="json")

    return idempotent_post(caller, request, key=idempotency_key, body=body, work=work)
