"""The dashboard: members, points over the last 30 days, outstanding points, tiers, activity."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from tally.admin.golive import checklist
from tally.admin.web import AdminDep, render
from tally.customers.orm import Customer, CustomerState
from tally.db.base import utcnow
from tally.ledger.orm import EntryKind, LedgerEntry
from tally.program import service as program_service

DAYS = 30
RECENT_ACTIVITY = 12


@dataclass(frozen=True)
class DayPoints:
    """Points issued, redeemed and expired on one day (in the merchant's time zone)."""

    day: date
    issued: int = 0
    redeemed: int = 0
    expired: int = 0


@dataclass(frozen=True)
class TierCount:
    """How many members are in a tier (id None: no tier)."""

    tier_id: str | None
    name: str
    members: int


@dataclass(frozen=True)
class Activity:
    """One recent ledger entry and whose it is."""

    created_at: datetime
    customer_id: int
    email: str
    name: str
    points: int
    kind: str
    reason: str


@dataclass(frozen=True)
class DashboardStats:
    """Everything the dashboard shows."""

    members: int
    guests: int
    outstanding: int
    days: list[DayPoints]
    tiers: list[TierCount]
    vip_enabled: bool
    recent: list[Activity] = field(default_factory=list)

    @property
    def issued(self) -> int:
        """Points issued over the whole window."""
        return sum(d.issued for d in self.days)

    @property
    def redeemed(self) -> int:
        """Points redeemed over the whole window."""
        return sum(d.redeemed for d in self.days)

    @property
    def expired(self) -> int:
        """Points expired over the whole window."""
        return sum(d.expired for d in self.days)

    def chart_data(self) -> dict[str, Any]:
        """The numbers the charts draw (read by admin.js from a JSON script block)."""
        return {
            "days": [d.day.isoformat() for d in self.days],
            "issued": [d.issued for d in self.days],
            "redeemed": [d.redeemed for d in self.days],
            "expired": [d.expired for d in self.days],
            "tiers": {
                "labels": [t.name for t in self.tiers],
                "counts": [t.members for t in self.tiers],
            },
        }


def _hour(session: Session, column: Any) -> ColumnElement[Any]:
    """The timestamp truncated to the hour (UTC), on either backend."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc("hour", column)
    return func.strftime("%Y-%m-%d %H:00:00", column)


def _as_utc(value: datetime | str) -> datetime:
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def window_start(now: datetime, zone: tzinfo, days: int) -> datetime:
    """Midnight (merchant's zone) at the start of the first of the last `days` days, in UTC."""
    today = now.astimezone(zone).date()
    first = today - timedelta(days=days - 1)
    return datetime(first.year, first.month, first.day, tzinfo=zone).astimezone(UTC)


def points_by_day(
    session: Session, merchant_id: int, zone: tzinfo, now: datetime, days: int = DAYS
) -> list[DayPoints]:
    """Points issued, redeemed and expired on each of the last `days` local days.

    Summed per UTC hour in the database and put into local days here, so the days follow the
    merchant's time zone on both backends (zones with half-hour offsets blur by 30 minutes).
    """
    start = window_start(now, zone, days)
    hour = _hour(session, LedgerEntry.created_at)
    issued = func.sum(case((LedgerEntry.points > 0, LedgerEntry.points), else_=0))
    redeemed = func.sum(
        case((LedgerEntry.kind == EntryKind.SPEND.value, -LedgerEntry.points), else_=0)
    )
    expired = func.sum(
        case((LedgerEntry.kind == EntryKind.EXPIRE.value, -LedgerEntry.points), else_=0)
    )
    rows = session.execute(
        select(hour, issued, redeemed, expired)
        .where(LedgerEntry.merchant_id == merchant_id, LedgerEntry.created_at >= start)
        .group_by(hour)
    ).all()
    first = start.astimezone(zone).date()
    totals = {first + timedelta(days=i): [0, 0, 0] for i in range(days)}
    for at, i, r, e in rows:
        local_day = _as_utc(at).astimezone(zone).date()
        bucket = totals.get(local_day)
        if bucket is not None:
            bucket[0] += int(i or 0)
            bucket[1] += int(r or 0)
            bucket[2] += int(e or 0)
    return [DayPoints(day, *values) for day, values in sorted(totals.items())]


def dashboard_stats(session: Session, merchant_id: int, now: datetime) -> DashboardStats:
    """The dashboard's numbers for one merchant (the session is bound to it)."""
    program = program_service.load(session, merchant_id)
    zone = ZoneInfo(program.merchant.timezone)
    counts = dict(
        session.execute(
            select(Customer.state, func.count(Customer.id))
            .where(Customer.merchant_id == merchant_id)
            .group_by(Customer.state)
        ).all()
    )
    outstanding = session.scalar(
        select(func.coalesce(func.sum(Customer.points_balance), 0)).where(
            Customer.merchant_id == merchant_id
        )
    )
    by_tier = dict(
        session.execute(
            select(Customer.vip_tier, func.count(Customer.id))
            .where(
                Customer.merchant_id == merchant_id,
                Customer.state == CustomerState.MEMBER.value,
            )
            .group_by(Customer.vip_tier)
        ).all()
    )
    vip = program.settings.vip
    tiers = [TierCount(None, "No tier", int(by_tier.pop(None, 0)))]
    for tier in vip.tiers:
        tiers.append(TierCount(tier.id, tier.name, int(by_tier.pop(tier.id, 0))))
    for tier_id, count in sorted(by_tier.items(), key=lambda item: str(item[0])):
        tiers.append(TierCount(tier_id, f"{tier_id} (no longer configured)", int(count)))
    recent = [
        Activity(
            created_at=entry.created_at,
            customer_id=customer.id,
            email=customer.email,
            name=customer.full_name,
            points=entry.points,
            kind=entry.kind,
            reason=entry.reason,
        )
        for entry, customer in session.execute(
            select(LedgerEntry, Customer)
            .join(Customer, Customer.id == LedgerEntry.customer_id)
            .where(LedgerEntry.merchant_id == merchant_id)
            .order_by(LedgerEntry.id.desc())
            .limit(RECENT_ACTIVITY)
        ).all()
    ]
    return DashboardStats(
        members=int(counts.get(CustomerState.MEMBER.value, 0)),
        guests=int(counts.get(CustomerState.GUEST.value, 0)),
        outstanding=int(outstanding or 0),
        days=points_by_day(session, merchant_id, zone, now),
        tiers=tiers,
        vip_enabled=vip.enabled,
        recent=recent,
    )


def dashboard(request: Request, admin: AdminDep) -> Response:
    """The dashboard."""
    with admin.unit_of_work() as session:
        stats = dashboard_stats(session, admin.merchant_id, utcnow())
        golive = checklist(session, admin)
    return render(
        request,
        "dashboard.html",
        {"title": "Dashboard", "nav": "dashboard", "stats": stats, "days": DAYS, "golive": golive},
    )
