"""Program use cases: enrolment, orders and refunds, actions, VIP tiers and referrals.

Every award goes through `award()`, which applies the action's limit, the expiry policy and
records the rule and settings version on the ledger entry. Callers own the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Unpack

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from tally.customers import service as customers
from tally.customers.orm import Customer, CustomerState
from tally.db.base import utcnow
from tally.db.upsert import insert_or_find
from tally.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from tally.ledger import service as ledger
from tally.ledger.orm import EntryKind, LedgerEntry
from tally.merchants.orm import Merchant
from tally.outbox.events import PointsAwarded, ReferralRewarded, VipTierChanged
from tally.outbox.service import emit
from tally.program import earning, expiry, referrals, tiers
from tally.program.config_service import load_program, merchant_zone
from tally.program.orm import Order, Referral, Refund, TierChangeRecord
from tally.program.settings import (
    ActionLimit,
    ExpiryMode,
    ProgramSettings,
    VipMetric,
)

ORDER_STATUSES = ("pending", "paid", "fulfilled", "partially_refunded", "refunded", "cancelled")
# Statuses that mean the order was paid at some point (refunds are tracked by amount).
PAID_STATUSES = frozenset({"paid", "fulfilled", "partially_refunded", "refunded"})


@dataclass(frozen=True)
class Program:
    """A merchant and its settings, loaded once per unit of work."""

    merchant: Merchant
    settings: ProgramSettings

    @property
    def zone(self) -> Any:
        """The merchant's time zone."""
        return merchant_zone(self.merchant)


def load(session: Session, merchant_id: int) -> Program:
    """The merchant's program."""
    merchant, settings = load_program(session, merchant_id)
    return Program(merchant, settings)


# -- awarding ------------------------------------------------------------------------------


def _previous_award_times(session: Session, customer_id: int, rule_id: str) -> list[datetime]:
    return list(
        session.scalars(
            select(LedgerEntry.created_at).where(
                LedgerEntry.customer_id == customer_id,
                LedgerEntry.rule_id == rule_id,
                LedgerEntry.points > 0,
            )
        )
    )


def credit_expiry(program: Program, earned_at: datetime) -> datetime | None:
    """When a credit earned now expires under the per-grant policy (None otherwise)."""
    policy = program.settings.expiry
    if policy.mode != ExpiryMode.PER_GRANT:
        return None
    return expiry.grant_expires_at(earned_at, policy)


def award(
    session: Session,
    program: Program,
    customer: Customer,
    *,
    rule_id: str,
    points: int,
    idempotency_key: str,
    reason: str,
    limit: ActionLimit | None = None,
    source_ref: str | None = None,
    kind: EntryKind = EntryKind.EARN,
    now: datetime | None = None,
    details: dict[str, Any] | None = None,
    email: bool = False,
) -> ledger.Posting | None:
    """Credit points for a rule, within its limit; None when nothing is due (0 points, limit).

    With `email`, the customer gets a "points earned" email (queued, sent by the worker).
    Nothing is due while the program is not live.
    """
    if points <= 0 or not program.settings.live:
        return None
    now = now or utcnow()
    existing = session.scalar(
        select(LedgerEntry).where(
            LedgerEntry.merchant_id == customer.merchant_id,
            LedgerEntry.idempotency_key == idempotency_key,
        )
    )
    if existing is not None:
        return ledger.Posting(existing, replayed=True)
    if limit is not None and not earning.limit_allows(
        limit, _previous_award_times(session, customer.id, rule_id), now, program.zone
    ):
        return None
    posting = ledger.credit(
        session,
        customer=customer,
        points=points,
        kind=kind,
        idempotency_key=idempotency_key,
        reason=reason,
        source_ref=source_ref,
        rule_id=rule_id,
        rule_version=program.settings.version,
        expires_at=credit_expiry(program, now),
        details=details,
    )
    if posting.replayed:
        return posting
    emit(
        session,
        PointsAwarded(
            merchant_id=customer.merchant_id,
            customer_id=customer.id,
            entry_id=posting.entry.id,
            points=points,
            rule_id=rule_id,
            notify=email,
        ),
    )
    if program.settings.vip.metric == VipMetric.POINTS_EARNED:
        recompute_tier(session, program, customer, now=now)
    return posting


# -- enrolment -----------------------------------------------------------------------------


def enroll_member(
    session: Session,
    *,
    merchant_id: int,
    email: str,
    award_create_account: bool = True,
    **profile: Unpack[customers.Profile],
) -> customers.EnrollResult:
    """Enrol a customer, give the create-account points, and record a referral if any."""
    program = load(session, merchant_id)
    existing = customers.find_by_email(session, merchant_id, email)
    had_orders = existing is not None and _has_paid_orders(session, existing.id)
    result = customers.enroll_customer(session, merchant_id=merchant_id, email=email, **profile)
    customer = result.customer
    action = program.settings.create_account
    if award_create_account and action.enabled:
        award(
            session,
            program,
            customer,
            rule_id="create_account",
            points=action.points,
            idempotency_key=f"create_account:{customer.id}",
            reason="Created an account",
            email=action.send_email,
        )
    if profile.get("referred_by_code") and customer.referred_by_id is not None:
        _record_referral(session, program, customer, had_orders_before=had_orders)
    return result


def _has_paid_orders(session: Session, customer_id: int) -> bool:
    return bool(
        session.scalar(
            select(func.count(Order.id)).where(
                Order.customer_id == customer_id, Order.status.in_(PAID_STATUSES)
            )
        )
    )


def _record_referral(
    session: Session, program: Program, friend: Customer, *, had_orders_before: bool
) -> Referral:
    referrer = session.get_one(Customer, friend.referred_by_id)
    reason = referrals.referral_refusal(
        referrer.email, referrer.id, friend.email, friend.id, had_orders_before
    )
    referral = Referral(
        merchant_id=friend.merchant_id,
        referrer_id=referrer.id,
        friend_id=friend.id,
        status="refused" if reason else "pending",
        refusal_reason=str(reason) if reason else None,
    )
    session.add(referral)
    session.flush()
    return referral


# -- orders and refunds --------------------------------------------------------------------


@dataclass(frozen=True)
class OrderInput:
    """An order as the store reports it."""

    order_id: str
    total: Decimal
    placed_at: datetime
    email: str | None = None
    external_customer_id: str | None = None
    subtotal: Decimal | None = None
    discounts: Decimal = Decimal(0)
    shipping: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)
    currency: str | None = None
    status: str = "paid"
    refunded_amount: Decimal = Decimal(0)


@dataclass(frozen=True)
class OrderResult:
    """The stored order, whether it was new, and the points it earned in this call."""

    order: Order
    created: bool
    points_awarded_now: int


def _validate_order(data: OrderInput) -> None:
    problems = []
    if not data.order_id.strip():
        problems.append(FieldProblem("order_id", "must not be empty"))
    if data.status not in ORDER_STATUSES:
        problems.append(
            FieldProblem("status", f"expected one of {', '.join(ORDER_STATUSES)}", data.status)
        )
    for name in ("total", "discounts", "shipping", "tax", "refunded_amount"):
        value = getattr(data, name)
        if value < 0:
            problems.append(FieldProblem(name, "must not be negative", str(value)))
    if data.subtotal is not None and data.subtotal < 0:
        problems.append(FieldProblem("subtotal", "must not be negative", str(data.subtotal)))
    if data.refunded_amount > data.total:
        problems.append(
            FieldProblem("refunded_amount", "must not exceed the total", str(data.refunded_amount))
        )
    if data.placed_at.tzinfo is None:
        problems.append(FieldProblem("placed_at", "must include a time zone offset"))
    if not data.email and not data.external_customer_id:
        problems.append(FieldProblem("email", "an email or a customer external id is required"))
    if problems:
        raise ValidationFailed(f"order {data.order_id!r} is not valid", problems)


def _order_customer(session: Session, merchant_id: int, data: OrderInput) -> Customer:
    customer = None
    if data.external_customer_id:
        customer = session.scalar(
            select(Customer).where(
                Customer.merchant_id == merchant_id,
                Customer.external_id == data.external_customer_id,
            )
        )
    if customer is None and data.email:
        customer = customers.find_by_email(session, merchant_id, data.email)
    if customer is None:
        if not data.email:
            raise NotFound(f"no customer with external id {data.external_customer_id!r}")
        try:
            customer = customers.enroll_customer(
                session,
                merchant_id=merchant_id,
                email=data.email,
                external_id=data.external_customer_id,
                state=CustomerState.GUEST,
            ).customer
        except Conflict:
            # A concurrent order (or enrolment) created this customer after we looked: it is
            # the customer we wanted, not a reason to refuse the order.
            customer = customers.find_by_email(session, merchant_id, data.email)
            if customer is None:
                raise
    return customer


def _locked_order(session: Session, merchant_id: int, order_id: str) -> Order | None:
    """The order, row-locked until the end of the transaction (PostgreSQL).

    Refunds and status changes read running totals (refunded amount, points clawed back) and
    write them back; without the lock, concurrent refunds of one order each see the old totals
    and together take back more than was paid or awarded. SQLite needs no lock: its
    transactions start with BEGIN IMMEDIATE, so writers already run one at a time.
    """
    return session.scalar(
        select(Order)
        .where(Order.merchant_id == merchant_id, Order.order_id == order_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )


def _insert_order(
    session: Session,
    program: Program,
    data: OrderInput,
    *,
    source: str,
    import_id: int | None,
    now: datetime,
) -> tuple[Order, bool]:
    """The new order and True, or the row of a concurrent report of the same order and False."""
    customer = _order_customer(session, program.merchant.id, data)
    order = Order(
        merchant_id=program.merchant.id,
        customer_id=customer.id,
        order_id=data.order_id.strip(),
        subtotal=data.subtotal if data.subtotal is not None else data.total,
        discounts=data.discounts,
        shipping=data.shipping,
        tax=data.tax,
        total=data.total,
        currency=(data.currency or program.merchant.currency).upper(),
        status=data.status,
        placed_at=data.placed_at,
        refunded_amount=data.refunded_amount,
        source=source,
        import_id=import_id,
        created_at=now,
        updated_at=now,
    )
    # Losing the race carries on as an update of the winner's row, which answers what a retry
    # after it would have answered.
    return insert_or_find(
        session, order, lambda: _locked_order(session, order.merchant_id, order.order_id)
    )


def _amounts(order: Order) -> earning.OrderAmounts:
    subtotal = order.subtotal
    return earning.OrderAmounts(
        subtotal=subtotal, discounts=order.discounts, shipping=order.shipping, taxes=order.tax
    )


def _reached_award_status(order: Order, award_on_status: str) -> bool:
    if order.status == "cancelled":
        return False
    if award_on_status == "paid":
        return order.status in PAID_STATUSES
    return order.status == award_on_status or (
        award_on_status == "fulfilled" and order.status in {"partially_refunded", "refunded"}
    )


def record_order(
    session: Session,
    *,
    merchant_id: int,
    data: OrderInput,
    award_points: bool = True,
    apply_limits: bool = True,
    source: str = "api",
    import_id: int | None = None,
    now: datetime | None = None,
) -> OrderResult:
    """Store or update an order (idempotent by order id) and award points when it is due."""
    _validate_order(data)
    program = load(session, merchant_id)
    now = now or utcnow()
    order_id = data.order_id.strip()
    order = _locked_order(session, merchant_id, order_id)
    created = False
    if order is None:
        order, created = _insert_order(
            session, program, data, source=source, import_id=import_id, now=now
        )
    customer = session.get_one(Customer, order.customer_id)
    if not created:
        if order.status != data.status:
            order.status = data.status
            order.updated_at = now
        if data.refunded_amount > order.refunded_amount:
            order.refunded_amount = data.refunded_amount
            order.updated_at = now
    awarded = 0
    rule = program.settings.place_order
    if (
        award_points
        and rule.enabled
        and order.points_basis is None
        and _reached_award_status(order, rule.award_on_status)
    ):
        awarded = _award_order(
            session, program, customer, order, apply_limits=apply_limits, now=now
        )
    elif order.status == "cancelled" and order.points_awarded > order.points_clawed_back:
        _claw_back(session, customer, order, refund_id="cancelled", owed=None)
    if _reached_award_status(order, "paid"):
        _complete_referral(session, program, customer, order, now=now)
    recompute_tier(session, program, customer, now=now)
    return OrderResult(order, created, awarded)


def _award_order(
    session: Session,
    program: Program,
    customer: Customer,
    order: Order,
    *,
    apply_limits: bool,
    now: datetime,
) -> int:
    rule = program.settings.place_order
    net = earning.net_of_refunds(_amounts(order), order.refunded_amount)
    multiplier = tiers.multiplier_for(_current_tier(program, customer))
    points = earning.order_points(net, rule, multiplier)
    order.points_basis = net.paid_total
    if points <= 0:
        return 0
    posting = award(
        session,
        program,
        customer,
        rule_id="place_order",
        points=points,
        idempotency_key=f"order:{order.order_id}",
        reason=f"Order {order.order_id}",
        limit=rule.limit if apply_limits else None,
        source_ref=f"order:{order.order_id}",
        now=now,
        details={"basis": str(net.paid_total), "multiplier": str(multiplier)},
        email=rule.send_email,
    )
    if posting is None:
        return 0
    order.points_awarded = posting.entry.points
    return posting.entry.points


def _claw_back(
    session: Session, customer: Customer, order: Order, *, refund_id: str, owed: int | None
) -> tuple[int, int]:
    """Take back `owed` points (all remaining when None); returns (taken, shortfall)."""
    if owed is None:
        owed = order.points_awarded - order.points_clawed_back
    order.points_clawed_back += owed
    if owed <= 0:
        return 0, 0
    session.refresh(customer, ["points_balance"])
    taken = min(owed, customer.points_balance)
    shortfall = owed - taken
    if taken > 0:
        ledger.debit(
            session,
            customer=customer,
            points=taken,
            kind=EntryKind.REFUND,
            idempotency_key=f"refund:{order.order_id}:{refund_id}",
            reason=f"Refund of order {order.order_id}",
            source_ref=f"order:{order.order_id}",
            details={"owed": owed, "shortfall": shortfall} if shortfall else None,
        )
    return taken, shortfall


@dataclass(frozen=True)
class RefundResult:
    """What a refund did to the order and the customer's points."""

    refund: Refund
    replayed: bool


def refund_order(
    session: Session,
    *,
    merchant_id: int,
    order_id: str,
    amount: Decimal | None,
    refund_id: str,
    now: datetime | None = None,
) -> RefundResult:
    """Refund part or all of an order; claws back proportional points, even beyond the balance."""
    program = load(session, merchant_id)
    now = now or utcnow()
    order = _locked_order(session, merchant_id, order_id)
    if order is None:
        raise NotFound(f"order {order_id!r} does not exist")
    previous = session.scalar(
        select(Refund).where(Refund.order_pk == order.id, Refund.refund_id == refund_id)
    )
    if previous is not None:
        if amount is not None and previous.amount != amount:
            raise Conflict(
                f"refund {refund_id!r} of order {order_id!r} was already recorded "
                f"for {previous.amount}, not {amount}"
            )
        return RefundResult(previous, replayed=True)
    left = order.total - order.refunded_amount
    amount = left if amount is None else amount
    if amount <= 0 or amount > left:
        raise ValidationFailed(
            f"order {order_id!r} has {left} left to refund",
            [FieldProblem("amount", f"must be more than 0 and at most {left}", str(amount))],
        )
    if order.status == "cancelled":
        raise Conflict(f"order {order_id!r} is cancelled")
    order.refunded_amount += amount
    order.status = "refunded" if order.refunded_amount >= order.total else "partially_refunded"
    order.updated_at = now
    customer = session.get_one(Customer, order.customer_id)
    owed = 0
    if order.points_awarded:
        basis = order.total
        owed = earning.refund_clawback(
            order.points_awarded, basis, order.refunded_amount, order.points_clawed_back
        )
    taken, shortfall = _claw_back(session, customer, order, refund_id=refund_id, owed=owed)
    refund = Refund(
        merchant_id=merchant_id,
        order_pk=order.id,
        refund_id=refund_id,
        amount=amount,
        points_clawed_back=taken,
        shortfall=shortfall,
        created_at=now,
    )
    session.add(refund)
    session.flush()
    recompute_tier(session, program, customer, now=now)
    return RefundResult(refund, replayed=False)


# -- custom actions ------------------------------------------------------------------------


def complete_custom_action(
    session: Session,
    *,
    merchant_id: int,
    email: str,
    action_id: str,
    idempotency_key: str,
    points: int | None = None,
) -> ledger.Posting | None:
    """Award a merchant-defined action; None when its limit is reached."""
    program = load(session, merchant_id)
    action = program.settings.custom_action(action_id)
    if action is None or not action.enabled:
        raise NotFound(f"custom action {action_id!r} does not exist or is disabled")
    if points is not None and points <= 0:
        raise ValidationFailed(
            "points override must be positive", [FieldProblem("points", "must be > 0", points)]
        )
    customer = customers.get_customer_by_email(session, merchant_id, email)
    return award(
        session,
        program,
        customer,
        rule_id=f"custom:{action.id}",
        points=points if points is not None else action.points,
        idempotency_key=f"action:{action.id}:{idempotency_key}",
        reason=action.name,
        limit=action.limit,
        email=action.send_email,
    )


# -- VIP tiers -----------------------------------------------------------------------------


def _current_tier(program: Program, customer: Customer) -> Any:
    if not program.settings.vip.enabled or customer.vip_tier is None:
        return None
    return next((t for t in program.settings.vip.tiers if t.id == customer.vip_tier), None)


def tier_values_query(program: Program, *, now: datetime) -> Select[int, Any]:
    """(customer id, VIP metric value) for every customer with any value in the window.

    The one definition of what the tier engine measures: `tier_value` reads it for one
    customer and the tier-change preview (`program/impact.py`) for all of them at once.
    """
    vip = program.settings.vip
    start = tiers.window_start(now, program.zone, vip.window)
    if vip.metric == VipMetric.AMOUNT_SPENT:
        amount_stmt = (
            select(Order.customer_id, func.sum(Order.total - Order.refunded_amount).label("value"))
            .where(Order.merchant_id == program.merchant.id, Order.status.in_(PAID_STATUSES))
            .group_by(Order.customer_id)
        )
        if start is not None:
            amount_stmt = amount_stmt.where(Order.placed_at >= start)
        return amount_stmt
    points_stmt = (
        select(LedgerEntry.customer_id, func.sum(LedgerEntry.points).label("value"))
        .where(LedgerEntry.merchant_id == program.merchant.id, LedgerEntry.kind == EntryKind.EARN)
        .group_by(LedgerEntry.customer_id)
    )
    if start is not None:
        points_stmt = points_stmt.where(LedgerEntry.created_at >= start)
    return points_stmt


def metric_value(raw: object) -> Decimal:
    """A summed metric (a SUM, None for no rows) as the tier engine compares it."""
    return Decimal(str(raw or 0))


def tier_value(session: Session, program: Program, customer_id: int, *, now: datetime) -> Decimal:
    """The customer's amount spent or points earned in the program's window."""
    stmt = tier_values_query(program, now=now)
    customer_column = stmt.selected_columns[0]
    row = session.execute(stmt.where(customer_column == customer_id)).first()
    return metric_value(row[1] if row else 0)


def recompute_tier(
    session: Session, program: Program, customer: Customer, *, now: datetime | None = None
) -> tiers.TierChange | None:
    """Put the customer in the tier its spending or earning reaches; reward first entries."""
    vip = program.settings.vip
    if not vip.enabled:
        return None
    now = now or utcnow()
    value = tier_value(session, program, customer.id, now=now)
    new_tier = tiers.with_kept_tier(
        vip.tiers,
        tiers.select_tier(vip.tiers, value),
        customer.vip_tier_kept,
        customer.vip_tier_kept_until,
        now,
    )
    change = tiers.tier_change(vip.tiers, customer.vip_tier, new_tier)
    if change is None:
        return None
    old = customer.vip_tier
    customer.vip_tier = new_tier.id if new_tier else None
    customer.updated_at = now
    session.add(
        TierChangeRecord(
            merchant_id=customer.merchant_id,
            customer_id=customer.id,
            old_tier=old,
            new_tier=customer.vip_tier,
            value=value,
            changed_at=now,
        )
    )
    session.flush()
    earned = None
    if change.direction == tiers.TierDirection.UP and new_tier is not None:
        # The ledger key makes the entry reward once per tier ever: re-entering finds it taken.
        award(
            session,
            program,
            customer,
            rule_id=f"tier:{new_tier.id}",
            points=new_tier.entry_reward_points,
            idempotency_key=f"tier-entry:{customer.id}:{new_tier.id}",
            reason=f"Welcome to {new_tier.name}",
            now=now,
        )
        earned = new_tier.name if new_tier.send_email else None
    emit(
        session,
        VipTierChanged(
            merchant_id=customer.merchant_id,
            customer_id=customer.id,
            old_tier=old,
            new_tier=customer.vip_tier,
            earned=earned,
        ),
    )
    return change


# -- referrals -----------------------------------------------------------------------------


def _complete_referral(
    session: Session, program: Program, friend: Customer, order: Order, *, now: datetime
) -> None:
    rule = program.settings.referral
    if not rule.enabled:
        return
    referral = session.scalar(
        select(Referral).where(Referral.friend_id == friend.id, Referral.status == "pending")
    )
    if referral is None:
        return
    if not referrals.qualifies(order.total - order.refunded_amount, rule.minimum_order):
        return
    referral.status = "completed"
    referral.order_id = order.order_id
    referral.completed_at = now
    referrer = session.get_one(Customer, referral.referrer_id)
    sent = award(
        session,
        program,
        referrer,
        rule_id="referral_sender",
        points=rule.sender_points,
        idempotency_key=f"referral-sender:{referral.id}",
        reason=f"Referred {friend.email}",
        limit=rule.limit,
        now=now,
    )
    received = award(
        session,
        program,
        friend,
        rule_id="referral_receiver",
        points=rule.receiver_points,
        idempotency_key=f"referral-receiver:{referral.id}",
        reason="Joined through a referral",
        now=now,
    )
    for who, posting, role in ((referrer, sent, "sender"), (friend, received, "receiver")):
        if posting is not None and not posting.replayed:
            emit(
                session,
                ReferralRewarded(
                    merchant_id=who.merchant_id,
                    customer_id=who.id,
                    referral_id=referral.id,
                    role=role,
                    points=posting.entry.points,
                    notify=rule.send_email,
                ),
            )
    session.flush()
    successful = (
        session.scalar(
            select(func.count(Referral.id)).where(
                Referral.referrer_id == referrer.id, Referral.status == "completed"
            )
        )
        or 0
    )
    if referrals.milestone_reached(successful, rule.milestone):
        assert rule.milestone is not None
        award(
            session,
            program,
            referrer,
            rule_id="referral_milestone",
            points=rule.milestone.bonus_points,
            idempotency_key=f"referral-milestone:{referrer.id}:{successful}",
            reason=f"{successful} successful referrals",
            now=now,
        )


def customer_for_referral_code(session: Session, code: str) -> tuple[Customer, Merchant] | None:
    """The referrer and its merchant for a referral code (codes are unique across merchants)."""
    customer = session.scalar(select(Customer).where(Customer.referral_code == code.upper()))
    if customer is None:
        return None
    return customer, session.get_one(Merchant, customer.merchant_id)
