"""Scheduled program jobs: point expiry, birthday points and the daily VIP tier review; and the
tier review that follows a change of the VIP tiers (an outbox handler).

Each job streams customers in id order, one batch per transaction, so memory stays flat
whatever the number of customers, and a job stopped half-way just continues on its next run.
Expiry writes its ledger entries in bulk; its idempotency keys (the customer's last balance
change for rolling expiry, the credit for per-grant expiry) make a second or concurrent run a
no-op for what the first one already expired.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVarTuple

from sqlalchemy import ColumnElement, Row, Select, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from tally.customers.orm import Customer, CustomerState
from tally.customers.service import customers_after
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.ledger.batch import Transfer, post_transfers
from tally.ledger.orm import EntryKind, LedgerEntry
from tally.merchants.orm import Merchant
from tally.outbox.events import PointsExpiring, VipTiersChanged
from tally.outbox.registry import HandlerContext, JobContext, Registry
from tally.outbox.service import emit
from tally.program import earning, expiry, expiry_due, impact
from tally.program import service as program_service
from tally.program.settings import ExpiryMode

BATCH_SIZE = 1000
TIER_CHANGE_HANDLER = "program.review_changed_tiers"
Columns = TypeVarTuple("Columns")


@dataclass
class ExpiryStats:
    """What an expiry run did."""

    customers: int = 0
    entries: int = 0
    points: int = 0


def _merchant_ids(factory: sessionmaker[Session]) -> list[int]:
    with factory() as session:
        return list(session.scalars(select(Merchant.id).order_by(Merchant.id)))


def expire_points(
    factory: sessionmaker[Session],
    *,
    merchant_id: int,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
) -> ExpiryStats:
    """Write `expire` entries for every balance or credit whose expiry has passed."""
    now = now or utcnow()
    with factory() as session:
        settings = program_service.load(session, merchant_id).settings
    policy, version = settings.expiry, settings.version
    if not expiry_due.expiry_runs_at(policy, now):
        return ExpiryStats()
    if policy.mode == ExpiryMode.ROLLING:
        return _expire_rolling(factory, merchant_id, now, policy.days, version, batch_size)
    return _expire_grants(factory, merchant_id, now, version, batch_size)


def _lock(stmt, session: Session):  # type: ignore[no-untyped-def]
    # NO KEY UPDATE: it still keeps two expiry runs apart, without waiting on (or deadlocking
    # with) the key-share locks that every new entry takes on its customer.
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update(key_share=True)
    return stmt


def _expire_rolling(
    factory: sessionmaker[Session],
    merchant_id: int,
    now: datetime,
    days: int,
    version: int,
    batch_size: int,
) -> ExpiryStats:
    due = expiry_due.due_balances(merchant_id, days, now)

    def expire_balance(row: Row[int, int, datetime | None]) -> Transfer:
        customer_id, balance, last_activity_at = row
        assert last_activity_at is not None  # the query compared it with the cutoff
        key = f"expire:{customer_id}:{last_activity_at.isoformat()}"
        reason = f"Points expired after {days} days without activity"
        return _expiry_transfer(customer_id, balance, version, key, reason)

    return _expire_in_batches(
        factory, merchant_id, now, batch_size, due, Customer.id, expire_balance
    )


def _expire_grants(
    factory: sessionmaker[Session],
    merchant_id: int,
    now: datetime,
    version: int,
    batch_size: int,
) -> ExpiryStats:
    due = expiry_due.due_credits(merchant_id, now)

    def expire_credit(row: Row[int, int, int | None]) -> Transfer:
        credit_id, customer_id, remaining = row
        assert remaining is not None  # the query compared it with 0
        key = f"expire-grant:{credit_id}"
        reason = f"Points earned in entry {credit_id} expired"
        return _expiry_transfer(customer_id, int(remaining), version, key, reason, credit_id)

    return _expire_in_batches(
        factory, merchant_id, now, batch_size, due, LedgerEntry.id, expire_credit
    )


def _expiry_transfer(
    customer_id: int, points: int, version: int, key: str, reason: str, credit: int | None = None
) -> Transfer:
    """Expire `points` of one credit (per grant), or without `credit` all the balance (rolling)."""
    # Expiring is not activity: under a rolling policy it would restart the customer's clock.
    return Transfer(
        customer_id=customer_id,
        points=-points,
        kind=EntryKind.EXPIRE,
        idempotency_key=key,
        reason=reason,
        source_ref=None if credit is None else f"entry:{credit}",
        rule_id="expiry",
        rule_version=version,
        draws_on=credit,
        closes_credits=credit is None,
        counts_as_activity=False,
    )


def _expire_in_batches(
    factory: sessionmaker[Session],
    merchant_id: int,
    now: datetime,
    batch_size: int,
    due: Select[*Columns],
    id_column: InstrumentedAttribute[int],
    expire: Callable[[Row[*Columns]], Transfer],
) -> ExpiryStats:
    """Post `expire(row)` for each row of `due` (id first), in id order, a batch per transaction."""
    stats = ExpiryStats()
    cursor = 0
    while True:
        with unit_of_work(factory, merchant_id=merchant_id) as session:
            batch = due.where(id_column > cursor).order_by(id_column).limit(batch_size)
            rows = session.execute(_lock(batch, session)).all()
            if not rows:
                return stats
            cursor = rows[-1][0]
            written = post_transfers(
                session,
                merchant_id=merchant_id,
                now=now,
                transfers=[expire(row) for row in rows],
            ).written()
            stats.customers += len({r.transfer.customer_id for r in written})
            stats.entries += len(written)
            stats.points += sum(-r.transfer.points for r in written)


def send_expiry_reminders(
    factory: sessionmaker[Session], *, merchant_id: int, now: datetime | None = None
) -> int:
    """Queue "your points expire soon" and "last chance" emails; each once per expiry date."""
    now = now or utcnow()
    with factory() as session:
        program = program_service.load(session, merchant_id)
    policy = program.settings.expiry
    leads = [d for d in (policy.reminder_days_before, policy.last_chance_days_before) if d]
    if policy.mode == ExpiryMode.OFF or not leads or policy.enabled_at is None:
        return 0
    horizon = now + timedelta(days=max(leads))
    queued = 0
    cursor = 0
    while True:
        with unit_of_work(factory, merchant_id=merchant_id) as session:
            batch = _reminder_candidates(session, program, merchant_id, cursor, now, horizon)
            if not batch:
                return queued
            cursor = batch[-1][0].id
            for customer, expires_at, points in batch:
                kind = expiry.reminder_due(expires_at, now, policy)
                if kind is None:
                    continue
                local_date = expires_at.astimezone(program.zone).date()
                emit(
                    session,
                    PointsExpiring(
                        merchant_id=merchant_id,
                        customer_id=customer.id,
                        points=points,
                        expiry_date=local_date.isoformat(),
                        last_chance=kind == expiry.ReminderKind.LAST_CHANCE,
                    ),
                )
                queued += 1


def _reminder_candidates(
    session: Session,
    program: program_service.Program,
    merchant_id: int,
    cursor: int,
    now: datetime,
    horizon: datetime,
) -> list[tuple[Customer, datetime, int]]:
    """Customers after `cursor` whose next points expire between now and `horizon`."""
    policy = program.settings.expiry
    assert policy.enabled_at is not None
    found: list[tuple[Customer, datetime, int]] = []
    if policy.mode == ExpiryMode.ROLLING:
        days = timedelta(days=policy.days)
        expiring = (
            Customer.points_balance > 0,
            Customer.last_activity_at > now - days,
            Customer.last_activity_at <= horizon - days,
        )
        customers = customers_after(session, merchant_id, cursor, where=expiring, limit=BATCH_SIZE)
        for customer in customers:
            assert customer.last_activity_at is not None
            at = expiry.effective_expiry(customer.last_activity_at + days, policy.enabled_at)
            found.append((customer, at, customer.points_balance))
        return found
    rows = session.execute(
        select(
            LedgerEntry.customer_id,
            func.min(LedgerEntry.expires_at),
        )
        .where(
            LedgerEntry.merchant_id == merchant_id,
            LedgerEntry.customer_id > cursor,
            LedgerEntry.remaining > 0,
            LedgerEntry.expires_at > now,
            LedgerEntry.expires_at <= horizon,
        )
        .group_by(LedgerEntry.customer_id)
        .order_by(LedgerEntry.customer_id)
        .limit(BATCH_SIZE)
    ).all()
    for customer_id, soonest in rows:
        if soonest is None:
            continue
        customer = session.get_one(Customer, customer_id)
        points = session.scalar(
            select(func.sum(LedgerEntry.remaining)).where(
                LedgerEntry.customer_id == customer_id,
                LedgerEntry.remaining > 0,
                LedgerEntry.expires_at == soonest,
            )
        )
        at = expiry.effective_expiry(soonest, policy.enabled_at)
        found.append((customer, at, int(points or 0)))
    return found


def award_birthdays(
    factory: sessionmaker[Session], *, merchant_id: int, now: datetime | None = None
) -> int:
    """Give today's birthday points (once per birthday year); returns how many were given."""
    at = now or utcnow()

    def give_points(session: Session, program: program_service.Program, customer: Customer) -> bool:
        action = program.settings.birthday
        assert customer.birthday is not None
        due = earning.due_birthday(
            customer.birthday,
            customer.birthday_set_at or customer.created_at,
            earning.local_today(at, program.zone),
            None,
            tz=program.zone,
        )
        if due is None:
            return False
        posting = program_service.award(
            session,
            program,
            customer,
            rule_id="birthday",
            points=action.points,
            idempotency_key=f"birthday:{customer.id}:{due.year}",
            reason=f"Happy birthday {due.year}",
            email=action.send_email,
            limit=action.limit,
            now=at,
        )
        return posting is not None and not posting.replayed

    return _for_each_customer(
        factory,
        merchant_id,
        (Customer.birthday.is_not(None), Customer.state == CustomerState.MEMBER),
        active=lambda program: (
            program.settings.birthday.enabled and program.settings.birthday.points > 0
        ),
        step=give_points,
    )


def review_tiers(
    factory: sessionmaker[Session], *, merchant_id: int, now: datetime | None = None
) -> int:
    """Recompute the tier of every customer in a tier (rolling windows make them drop)."""
    at = now or utcnow()
    return _for_each_customer(
        factory,
        merchant_id,
        (Customer.vip_tier.is_not(None),),
        active=lambda program: program.settings.vip.enabled,
        step=lambda session, program, customer: bool(
            program_service.recompute_tier(session, program, customer, now=at)
        ),
    )


def review_changed_tiers(
    factory: sessionmaker[Session], *, merchant_id: int, now: datetime | None = None
) -> int:
    """After a VIP tier change: move every customer it concerns, through the tier engine.

    ``impact.tier_moves`` finds them in one streamed read (customers without a tier included,
    which the daily review skips); each is then recomputed by ``recompute_tier`` a batch per
    transaction, which reads the value again, so a customer who changed meanwhile is still put
    right and a second delivery of the event moves nobody twice.
    """
    at = now or utcnow()
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        program = program_service.load(session, merchant_id)
        movers = [move.customer_id for move in impact.tier_moves(session, program, now=at)]
    moved = 0
    for start in range(0, len(movers), BATCH_SIZE):
        with unit_of_work(factory, merchant_id=merchant_id) as session:
            program = program_service.load(session, merchant_id)
            batch = session.scalars(
                select(Customer)
                .where(Customer.id.in_(movers[start : start + BATCH_SIZE]))
                .order_by(Customer.id)
            )
            for customer in batch:
                if program_service.recompute_tier(session, program, customer, now=at):
                    moved += 1
    return moved


def _review_after_change(context: HandlerContext, payload: dict[str, Any]) -> None:
    review_changed_tiers(context.session_factory, merchant_id=int(payload["merchant_id"]))


def _for_each_customer(
    factory: sessionmaker[Session],
    merchant_id: int,
    where: tuple[ColumnElement[bool], ...],
    *,
    active: Callable[[program_service.Program], bool],
    step: Callable[[Session, program_service.Program, Customer], bool],
) -> int:
    """How many customers matching `where` `step` did something for, a batch per transaction.

    The program is read again for each batch, and the walk stops once it is no longer `active`.
    """
    done = 0
    cursor = 0
    while True:
        with unit_of_work(factory, merchant_id=merchant_id) as session:
            program = program_service.load(session, merchant_id)
            if not active(program):
                return done
            batch = customers_after(session, merchant_id, cursor, where=where, limit=BATCH_SIZE)
            if not batch:
                return done
            cursor = batch[-1].id
            for customer in batch:
                if step(session, program, customer):
                    done += 1


def _each_merchant(run: Callable[..., object]) -> Callable[[JobContext], None]:
    def job(context: JobContext) -> None:
        for merchant_id in _merchant_ids(context.session_factory):
            run(context.session_factory, merchant_id=merchant_id)

    return job


def register(registry: Registry) -> None:
    """Schedule the program's periodic jobs."""
    registry.schedule("program.expiry", timedelta(hours=1), _each_merchant(expire_points))
    registry.schedule("program.birthdays", timedelta(hours=1), _each_merchant(award_birthdays))
    registry.schedule(
        "program.expiry_reminders", timedelta(hours=6), _each_merchant(send_expiry_reminders)
    )
    registry.schedule("program.tier_review", timedelta(hours=24), _each_merchant(review_tiers))
    registry.subscribe(VipTiersChanged.event_type, TIER_CHANGE_HANDLER, _review_after_change)
