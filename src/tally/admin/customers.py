"""Customers: the searchable list, the profile with its activity tabs, manual adjustments."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tally.admin.web import (
    Admin,
    AdminDep,
    AdminRoute,
    FormDep,
    is_htmx,
    problems_by_field,
    redirect,
    render,
    text,
)
from tally.api.edge import Id
from tally.customers import service as customers
from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.errors import DomainError, FieldProblem, ValidationFailed
from tally.integrations.dotdigital.orm import DotdigitalConnection, PendingContact, SyncFailure
from tally.ledger import service as ledger
from tally.ledger.bounds import MAX_POINTS
from tally.ledger.orm import LedgerEntry
from tally.notifications import service as notifications
from tally.program import impact, tiers
from tally.program import service as program_service
from tally.program.next_expiry import next_expiry
from tally.program.orm import Order, Redemption, TierChangeRecord
from tally.program.settings import ProgramSettings, Reward

router = APIRouter(route_class=AdminRoute)

PAGE_SIZE = 25
ACTIVITY_LIMIT = 50
TABS = {
    "earning": "Earning",
    "spending": "Spending",
    "vip": "VIP",
    "orders": "Orders",
    "emails": "Emails",
}
ActivityTab = Annotated[str, Query(pattern="^(earning|spending|vip|orders|emails)$")]
SORTS: dict[str, Any] = {
    "name": (func.lower(func.coalesce(Customer.last_name, "")), Customer.first_name),
    "email": (Customer.email,),
    "points": (Customer.points_balance,),
    "tier": (Customer.vip_tier,),
    "joined": (Customer.created_at,),
    "activity": (Customer.last_activity_at,),
}
NO_TIER = "none"


@dataclass(frozen=True)
class CustomerPage:
    """One page of the customer list and how it was asked for."""

    rows: list[Customer]
    total: int
    page: int
    pages: int
    query: str
    tier: str
    state: str
    sort: str
    direction: str


def find_customers(
    session: Session,
    merchant_id: int,
    *,
    query: str,
    tier: str,
    state: str,
    sort: str,
    direction: str,
    page: int,
) -> CustomerPage:
    """Search by email or name, filter by tier and state, sort, and cut one page."""
    stmt = customers.search_customers_query(
        merchant_id, query=query or None, state=state or None, tier=None
    )
    if tier == NO_TIER:
        stmt = stmt.where(Customer.vip_tier.is_(None))
    elif tier:
        stmt = stmt.where(Customer.vip_tier == tier)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(max(page, 1), pages)
    columns = SORTS.get(sort, SORTS["joined"])
    descending = direction == "desc"
    order = [c.desc() if descending else c.asc() for c in columns]
    order.append(Customer.id.desc() if descending else Customer.id.asc())
    rows = list(
        session.scalars(stmt.order_by(*order).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE))
    )
    return CustomerPage(rows, total, page, pages, query, tier, state, sort, direction)


@router.get("/customers", include_in_schema=False)
def customer_list(
    request: Request,
    admin: AdminDep,
    q: Annotated[str, Query(max_length=200)] = "",
    tier: Annotated[str, Query(max_length=64)] = "",
    state: Annotated[str, Query(pattern="^(|member|guest)$")] = "",
    sort: Annotated[str, Query(pattern="^(name|email|points|tier|joined|activity)$")] = "joined",
    dir: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    """All customers: search, filters, sorting and pages (the table alone for htmx)."""
    with admin.unit_of_work() as session:
        found = find_customers(
            session,
            admin.merchant_id,
            query=q.strip(),
            tier=tier,
            state=state,
            sort=sort,
            direction=dir,
            page=page,
        )
        vip = program_service.load(session, admin.merchant_id).settings.vip
    context = {
        "title": "Customers",
        "nav": "customers",
        "found": found,
        "tiers": vip.tiers,
        "tier_names": {t.id: t.name for t in vip.tiers},
        "no_tier": NO_TIER,
    }
    if is_htmx(request) and request.headers.get("HX-Target") == "customer-results":
        return render(request, "customers/_results.html", context)
    return render(request, "customers/list.html", context)


# --------------------------------------------------------------------------- profile


@dataclass(frozen=True)
class TierStanding:
    """The customer's tier and the way to the next one."""

    metric: str
    value: Decimal
    current_name: str | None
    next_name: str | None
    remaining: Decimal | None
    percent: int


@dataclass(frozen=True)
class DotdigitalStanding:
    """What the Dotdigital sync knows about this contact."""

    state: str  # not-connected, off, waiting, retrying, failed, synced
    label: str
    detail: str | None = None
    at: datetime | None = None


def dotdigital_standing(session: Session, merchant_id: int, customer_id: int) -> DotdigitalStanding:
    """This customer's Dotdigital sync status: waiting, retrying, refused, or sent."""
    connection = session.scalar(
        select(DotdigitalConnection).where(DotdigitalConnection.merchant_id == merchant_id)
    )
    if connection is None:
        return DotdigitalStanding("not-connected", "Dotdigital is not connected")
    pending = session.scalar(
        select(PendingContact).where(
            PendingContact.merchant_id == merchant_id, PendingContact.customer_id == customer_id
        )
    )
    failure = session.scalar(
        select(SyncFailure)
        .where(SyncFailure.merchant_id == merchant_id, SyncFailure.customer_id == customer_id)
        .order_by(SyncFailure.failed_at.desc(), SyncFailure.id.desc())
        .limit(1)
    )
    if not connection.enabled:
        return DotdigitalStanding("off", "Syncing is off", at=connection.updated_at)
    if pending is not None and pending.attempts > 0:
        return DotdigitalStanding(
            "retrying",
            f"Retrying after {pending.attempts} failed attempt(s)",
            pending.last_error,
            pending.next_attempt_at,
        )
    if pending is not None:
        return DotdigitalStanding(
            "waiting", "Changes waiting to be sent", None, pending.first_marked_at
        )
    if failure is not None:
        return DotdigitalStanding(
            "failed",
            "Refused by Dotdigital",
            f"{failure.reason} ({failure.code})",
            failure.failed_at,
        )
    return DotdigitalStanding("synced", "Up to date", None, connection.last_successful_sync_at)


def _tier_standing(
    session: Session, program: program_service.Program, customer: Customer
) -> TierStanding | None:
    vip = program.settings.vip
    if not vip.enabled:
        return None
    value = program_service.tier_value(session, program, customer.id, now=utcnow())
    stored = next((t for t in vip.tiers if t.id == customer.vip_tier), None)
    progress = tiers.progress_to_next(vip.tiers, value, held=stored)
    return TierStanding(
        metric=vip.metric.value,
        value=value,
        current_name=stored.name if stored else customer.vip_tier,
        next_name=progress.next.name if progress.next else None,
        remaining=progress.remaining,
        percent=progress.percent,
    )


def _activity(session: Session, customer_id: int, tab: str) -> list[Any]:
    if tab == "emails":
        customer = session.get_one(Customer, customer_id)
        return notifications.list_emails(
            session, merchant_id=customer.merchant_id, customer_id=customer_id, limit=ACTIVITY_LIMIT
        )[0]
    if tab == "orders":
        return list(
            session.scalars(
                select(Order)
                .where(Order.customer_id == customer_id)
                .order_by(Order.placed_at.desc(), Order.id.desc())
                .limit(ACTIVITY_LIMIT)
            )
        )
    if tab == "vip":
        return list(
            session.scalars(
                select(TierChangeRecord)
                .where(TierChangeRecord.customer_id == customer_id)
                .order_by(TierChangeRecord.id.desc())
                .limit(ACTIVITY_LIMIT)
            )
        )
    sign = LedgerEntry.points > 0 if tab == "earning" else LedgerEntry.points < 0
    return list(
        session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.customer_id == customer_id, sign)
            .order_by(LedgerEntry.id.desc())
            .limit(ACTIVITY_LIMIT)
        )
    )


def _coupons(session: Session, activity: list[Any]) -> dict[int, Redemption]:
    """The redemptions behind the spending tab's entries, by ledger entry id."""
    entry_ids = [entry.id for entry in activity]
    if not entry_ids:
        return {}
    rows = session.scalars(select(Redemption).where(Redemption.ledger_entry_id.in_(entry_ids)))
    return {row.ledger_entry_id: row for row in rows}


def affordable_rewards(settings: ProgramSettings, balance: int) -> list[Reward]:
    """The enabled rewards a balance pays for (a variable reward: its minimum)."""
    return [r for r in settings.rewards if r.enabled and impact.lowest_cost(r) <= balance]


def _profile_context(admin: Any, session: Session, customer_id: int, tab: str) -> dict[str, Any]:
    customer = customers.get_customer(session, admin.merchant_id, customer_id)
    program = program_service.load(session, admin.merchant_id)
    expiry = next_expiry(session, program, customer)
    tier_names = {t.id: t.name for t in program.settings.vip.tiers}
    orders_count = session.scalar(
        select(func.count(Order.id)).where(Order.customer_id == customer.id)
    )
    activity = _activity(session, customer.id, tab)
    return {
        "coupons": _coupons(session, activity) if tab == "spending" else {},
        "rewards": affordable_rewards(program.settings, customer.points_balance),
        "now": utcnow(),
        "title": customer.full_name or customer.email,
        "nav": "customers",
        "customer": customer,
        "expiry": expiry,
        "expiry_mode": program.settings.expiry.mode.value,
        "standing": _tier_standing(session, program, customer),
        "tier_names": tier_names,
        "referral_url": f"{admin.state.settings.public_base_url}/r/{customer.referral_code}",
        "tab": tab,
        "tabs": TABS,
        "activity": activity,
        "activity_limit": ACTIVITY_LIMIT,
        "orders_count": int(orders_count or 0),
        "dotdigital": dotdigital_standing(session, admin.merchant_id, customer.id),
        "currency": admin.currency,
    }


def _new_adjustment_key() -> str:
    return secrets.token_urlsafe(16)


@router.get("/customers/{customer_id}", include_in_schema=False)
def customer_profile(
    request: Request,
    admin: AdminDep,
    customer_id: Id,
    tab: ActivityTab = "earning",
) -> Response:
    """A customer's profile (another merchant's customer is a 404, like a missing one)."""
    return profile_page(request, admin, customer_id, tab=tab)


def profile_page(
    request: Request,
    admin: Admin,
    customer_id: int,
    *,
    tab: str = "earning",
    status_code: int = 200,
    **extra: Any,
) -> Response:
    """The profile page; ``extra`` carries a refused form's errors and typed values."""
    with admin.unit_of_work() as session:
        context = _profile_context(admin, session, customer_id, tab)
    context |= {
        "adjust_key": _new_adjustment_key(),
        "redeem_key": _new_adjustment_key(),
        "errors": {},
        "values": {},
    }
    context |= extra
    return render(request, "customers/profile.html", context, status_code=status_code)


@router.get("/customers/{customer_id}/activity", include_in_schema=False)
def customer_activity(
    request: Request,
    admin: AdminDep,
    customer_id: Id,
    tab: ActivityTab = "earning",
) -> Response:
    """One activity tab's panel (htmx), or the whole profile on that tab."""
    if not is_htmx(request):
        return redirect(f"/admin/customers/{customer_id}?tab={tab}")
    with admin.unit_of_work() as session:
        context = _profile_context(admin, session, customer_id, tab)
    return render(request, "customers/_activity.html", context)


def form_refused(
    request: Request, admin: Admin, customer_id: int, error: DomainError, shown: dict[str, Any]
) -> Response:
    """The profile again showing a refused form (``shown``: its error, typed values, token).

    A missing customer stays a 404 page.
    """
    if error.status_code == 404 and not error.errors:
        raise error
    return profile_page(request, admin, customer_id, status_code=error.status_code, **shown)


def _parse_points(raw: str) -> int:
    try:
        points = int(raw.replace(",", "").replace("+", "").strip())
    except ValueError:
        raise ValidationFailed(
            "the points are not a whole number",
            [FieldProblem("points", "enter a whole number, e.g. 50 or -20", raw)],
        ) from None
    if points == 0:
        raise ValidationFailed(
            "the points must not be zero", [FieldProblem("points", "must not be 0", raw)]
        )
    if abs(points) > MAX_POINTS:
        raise ValidationFailed(
            "the points are too large", [FieldProblem("points", f"at most {MAX_POINTS:,}", raw)]
        )
    return points


@router.post("/customers/{customer_id}/adjustments", include_in_schema=False)
def adjust_points(request: Request, admin: AdminDep, form: FormDep, customer_id: Id) -> Response:
    """Add or take away points by hand, with a reason (a double submit posts once)."""
    raw_points, reason = text(form, "points"), text(form, "reason")
    key = text(form, "adjust_key") or _new_adjustment_key()
    try:
        if not reason:
            raise ValidationFailed(
                "a manual adjustment needs a reason",
                [FieldProblem("reason", "say why, e.g. 'Goodwill for a late delivery'")],
            )
        points = _parse_points(raw_points)
        with admin.unit_of_work() as session:
            customer = customers.get_customer(session, admin.merchant_id, customer_id)
            ledger.adjust(
                session,
                customer=customer,
                points=points,
                reason=reason[:500],
                idempotency_key=f"admin:{key}"[:200],
                source_ref=f"admin-user:{admin.user_id}",
            )
    except DomainError as error:
        shown = {
            "adjust_key": key,
            "errors": problems_by_field(error.errors) or {"points": error.detail},
            "adjust_error": error.detail,
            "values": {"points": raw_points, "reason": reason},
        }
        return form_refused(request, admin, customer_id, error, shown)
    return redirect(f"/admin/customers/{customer_id}?done=adjusted")
