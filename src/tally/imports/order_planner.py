"""Counting a batch of orders as ``record_order`` would, in date order, before anything is written.

Orders follow ``record_order``'s rules without the per-period limits: refunded and cancelled
orders earn nothing, partial refunds earn on what was kept (a partially refunded order without
a refunded amount earns nothing, since what was kept is unknown), an order id already known is
skipped, unknown emails become guests, and VIP tiers move with the orders' original dates as
they are counted (changing the multiplier of the next order), with their entry rewards.
Historical orders queue no "points earned" or "tier earned" emails and complete no pending
referral (the referral's qualifying order is a new one). A test imports a varied file and
records the same orders through ``record_order`` and compares balances, entries and tier moves.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Context, Decimal, Inexact
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.customers.orm import Customer
from tally.db.bulk import Bulk, chunks, utc_text
from tally.imports.customer_rows import Existing, order_customers, values_in_use
from tally.imports.spool import (
    O_DISCOUNTS,
    O_EMAIL,
    O_ID,
    O_PLACED,
    O_REFUNDED,
    O_ROW,
    O_SHIPPING,
    O_STATUS,
    O_SUBTOTAL,
    O_TAX,
    O_TOTAL,
)
from tally.program import earning, tiers
from tally.program import service as program_service
from tally.program.orm import Order
from tally.program.service import PAID_STATUSES
from tally.program.settings import OrderPointsMode, Tier, VipMetric

_ZERO = Decimal(0)


# Products of amounts, rates and multipliers are exact in 60 digits; Inexact would say otherwise.
_EXACT = Context(prec=60, rounding=ROUND_FLOOR, traps=[Inexact])


@dataclass(frozen=True)
class OrderRun:
    """What every batch of an orders import needs to know."""

    merchant_id: int
    job_id: int
    reward_points: bool
    program: program_service.Program
    now: datetime
    known_orders_possible: bool = True
    """False when the merchant had no orders when the job started: no lookups needed."""


def may_earn(status: str, refund_known: bool) -> bool:
    """Whether an imported order's status lets it earn points at all."""
    if status in {"refunded", "cancelled"}:
        return False
    return status != "partially_refunded" or refund_known


def reached_award_status(status: str, award_on_status: str) -> bool:
    """``record_order``'s test of whether an order's status earns its points."""
    if status == "cancelled":
        return False
    if award_on_status == "paid":
        return status in program_service.PAID_STATUSES
    return status == award_on_status or (
        award_on_status == "fulfilled" and status in {"partially_refunded", "refunded"}
    )


@dataclass
class TierState:
    """A customer's VIP standing while the batch's orders are counted, in date order."""

    tier: str | None
    value: Decimal
    rewarded: set[str] = field(default_factory=set)
    kept: Tier | None = None
    """A tier kept as a minimum (imported), whatever the value."""
    changes: list[tuple[str | None, str | None, Decimal, str]] = field(default_factory=list)
    """(old tier, new tier, value, UTC date text of the order that moved it)."""
    rewards: list[Tier] = field(default_factory=list)


@dataclass
class OrderPlan:
    """What a batch of orders will do, before anything is written.

    ``orders`` holds (spooled row, points, points basis, multiplier) in date order.
    """

    orders: list[tuple[Sequence[Any], int, Decimal | None, Decimal]] = field(default_factory=list)
    skipped: int = 0
    new_guests: list[str] = field(default_factory=list)
    customers: dict[str, Existing] = field(default_factory=dict)
    states: dict[str, TierState] = field(default_factory=dict)
    collisions: list[dict[str, Any]] = field(default_factory=list)
    """Skipped rows whose order id is known with another customer or total (``collisions``)."""

    @property
    def points(self) -> int:
        """Points the orders earn (tier entry rewards they bring are not counted here)."""
        return sum(order[1] for order in self.orders)


class OrderPlanner:
    """Counts a batch of orders the way ``record_order`` would, order after order."""

    def __init__(self, run: OrderRun) -> None:
        self.run = run
        settings = run.program.settings
        self.rule = settings.place_order
        self.vip = settings.vip
        self.tiers = {tier.id: tier for tier in self.vip.tiers}
        self.ascending = sorted(self.vip.tiers, key=lambda tier: tier.threshold)
        self.window_start = tiers.window_start(run.now, run.program.zone, self.vip.window)
        self.window_text = utc_text(self.window_start) if self.window_start else None
        self.expires_at = program_service.credit_expiry(run.program, run.now)
        self.earning = run.reward_points and self.rule.enabled and settings.live

    def plan(
        self,
        session: Session,
        rows: Sequence[Sequence[Any]],
        *,
        carry: dict[str, TierState] | None = None,
        guests_seen: Any = None,
    ) -> OrderPlan:
        """Decide every order of the batch; ``carry`` holds VIP state between preview batches."""
        run = self.run
        plan = OrderPlan()
        fresh = rows
        if run.known_orders_possible:
            known = known_order_ids(session, run.merchant_id, [row[O_ID] for row in rows])
            if known:
                fresh = [row for row in rows if row[O_ID] not in known]
                plan.collisions = collisions(
                    session, run.merchant_id, [row for row in rows if row[O_ID] in known]
                )
        plan.skipped = len(rows) - len(fresh)
        emails = list(dict.fromkeys(row[O_EMAIL] for row in fresh))
        plan.customers = order_customers(session, run.merchant_id, emails, run.now)
        for email in emails:
            if email not in plan.customers and (
                guests_seen is None or guests_seen.first_row(email, 1) is None
            ):
                plan.new_guests.append(email)

        if self.vip.enabled:
            plan.states = self._states(session, plan.customers, emails, carry)
        states = plan.states
        count = self._count
        if states:
            plan.orders = [count(row, states[row[O_EMAIL]]) for row in fresh]
        else:
            plan.orders = [count(row, None) for row in fresh]
        if carry is not None:
            carry.update(plan.states)
        return plan

    def _states(
        self,
        session: Session,
        customers: dict[str, Existing],
        emails: Sequence[str],
        carry: dict[str, TierState] | None,
    ) -> dict[str, TierState]:
        ids = [customer.id for customer in customers.values()]
        values = self._values(session, ids)
        rewarded = self._rewarded(session, ids)
        states: dict[str, TierState] = {}
        for email in emails:
            if carry is not None and email in carry:
                previous = carry[email]
                states[email] = TierState(
                    previous.tier, previous.value, set(previous.rewarded), previous.kept
                )
                continue
            customer = customers.get(email)
            if customer is None:
                states[email] = TierState(None, _ZERO)
            else:
                states[email] = TierState(
                    customer.vip_tier,
                    values.get(customer.id, _ZERO),
                    rewarded.get(customer.id, set()),
                    self.tiers.get(customer.kept_tier) if customer.kept_tier else None,
                )
        return states

    def _values(self, session: Session, ids: Sequence[int]) -> dict[int, Decimal]:
        """``program_service.tier_value`` of many customers at once (read the same way)."""
        bulk = Bulk(session)
        found: dict[int, Decimal] = {}
        start = self.window_start
        amount = self.vip.metric == VipMetric.AMOUNT_SPENT
        for part in chunks(list(ids)):
            where, params = bulk.in_list("customer_id", part)
            if amount:
                statuses = ", ".join(f"'{status}'" for status in sorted(PAID_STATUSES))
                sql = (
                    "SELECT customer_id, SUM(total - refunded_amount) FROM orders "
                    f"WHERE {where} AND status IN ({statuses})"
                )
                if start is not None:
                    sql += f" AND placed_at >= {bulk.mark}"
            else:
                sql = f"SELECT customer_id, SUM(points) FROM ledger_entries WHERE {where} "
                sql += "AND kind = 'earn'"
                if start is not None:
                    sql += f" AND created_at >= {bulk.mark}"
            if start is not None:
                params = (*params, bulk.timestamp(start))
            for customer_id, total in bulk.connection.exec_driver_sql(
                sql + " GROUP BY customer_id", params
            ).all():
                if not amount:
                    found[customer_id] = Decimal(int(total or 0))
                elif isinstance(total, float):
                    # As SQLAlchemy reads a Numeric(18, 4) that SQLite summed as a float.
                    found[customer_id] = Decimal(f"{total:.4f}")
                else:
                    found[customer_id] = Decimal(str(total or 0))
        return found

    def _rewarded(self, session: Session, ids: Sequence[int]) -> dict[int, set[str]]:
        """Tiers whose entry reward each customer already had (the ledger key is taken)."""
        rewarding = [tier.id for tier in self.vip.tiers if tier.entry_reward_points > 0]
        found: dict[int, set[str]] = defaultdict(set)
        if not rewarding or not ids:
            return found
        bulk = Bulk(session)
        rules = ", ".join(f"'tier:{tier_id}'" for tier_id in rewarding)
        for part in chunks(list(ids)):
            where, params = bulk.in_list("customer_id", part)
            rows = bulk.connection.exec_driver_sql(
                "SELECT customer_id, idempotency_key FROM ledger_entries "
                f"WHERE {where} AND rule_id IN ({rules})",
                params,
            ).all()
            for customer_id, key in rows:
                prefix = f"tier-entry:{customer_id}:"
                if key.startswith(prefix):
                    found[customer_id].add(key.removeprefix(prefix))
        return found

    def _count(
        self, row: Sequence[Any], state: TierState | None
    ) -> tuple[Sequence[Any], int, Decimal | None, Decimal]:
        """An order's points, as ``record_order`` counts them; moves the customer's tier."""
        status = row[O_STATUS]
        points = 0
        basis: Decimal | None = None
        multiplier = Decimal(1)
        rule = self.rule
        if (
            self.earning
            and may_earn(status, row[O_REFUNDED] is not None)
            and reached_award_status(status, rule.award_on_status)
        ):
            if state is not None and state.tier is not None:
                multiplier = tiers.multiplier_for(self.tiers.get(state.tier))
            points, basis = self._points(row, multiplier)
        if state is not None:
            vip = self.vip
            if points > 0 and vip.metric == VipMetric.POINTS_EARNED:
                state.value += points
                self._settle(state, row[O_PLACED])
            if vip.metric == VipMetric.AMOUNT_SPENT and (
                status in program_service.PAID_STATUSES
                and (self.window_text is None or row[O_PLACED] >= self.window_text)
            ):
                state.value += Decimal(row[O_TOTAL]) - _refunded(row)
            self._settle(state, row[O_PLACED])
        return row, points, basis, multiplier

    def _points(self, row: Sequence[Any], multiplier: Decimal) -> tuple[int, Decimal]:
        """``earning.order_points`` of the order net of refunds, and its paid total."""
        total = Decimal(row[O_TOTAL])
        subtotal = Decimal(row[O_SUBTOTAL]) if row[O_SUBTOTAL] is not None else total
        discounts = Decimal(row[O_DISCOUNTS]) if row[O_DISCOUNTS] is not None else _ZERO
        shipping = Decimal(row[O_SHIPPING]) if row[O_SHIPPING] is not None else _ZERO
        tax = Decimal(row[O_TAX]) if row[O_TAX] is not None else _ZERO
        refunded = _refunded(row)
        rule = self.rule
        if refunded:
            amounts = earning.OrderAmounts(
                subtotal=subtotal, discounts=discounts, shipping=shipping, taxes=tax
            )
            net = earning.net_of_refunds(amounts, refunded)
            return earning.order_points(net, rule, multiplier), net.paid_total
        paid_total = max(subtotal - discounts + shipping + tax, _ZERO)
        basis = subtotal
        if rule.count_discounts:
            basis -= discounts
        if rule.include_shipping:
            basis += shipping
        if rule.include_taxes:
            basis += tax
        basis = max(basis, _ZERO)
        if rule.minimum_order is not None and basis < rule.minimum_order:
            return 0, paid_total
        # Decimal products in a 60-digit context are exact (it raises Inexact otherwise), so
        # rounding down gives what earning.order_points computes with fractions.
        exact = _EXACT.multiply
        try:
            if rule.mode is OrderPointsMode.FIXED_PER_ORDER:
                return int(exact(Decimal(rule.fixed_points), multiplier)), paid_total
            return int(exact(exact(basis, rule.points_per_unit), multiplier)), paid_total
        except Inexact:  # pragma: no cover - beyond 60 digits; count it the slow way
            amounts = earning.OrderAmounts(
                subtotal=subtotal, discounts=discounts, shipping=shipping, taxes=tax
            )
            return earning.order_points(amounts, rule, multiplier), paid_total

    def _settle(self, state: TierState, placed: str) -> None:
        """``recompute_tier``, including the entry rewards (which count for a points metric)."""
        while True:
            new_tier = None
            for tier in self.ascending:  # tiers.select_tier, without its sort for every order
                if tier.threshold > state.value:
                    break
                new_tier = tier
            kept = state.kept  # tiers.with_kept_tier (still kept: checked when it was read)
            if kept is not None and (new_tier is None or new_tier.threshold < kept.threshold):
                new_tier = kept
            if (new_tier.id if new_tier is not None else None) == state.tier:
                return
            change = tiers.tier_change(self.vip.tiers, state.tier, new_tier)
            if change is None:
                return
            state.changes.append((state.tier, change.new_tier_id, state.value, placed))
            state.tier = change.new_tier_id
            if (
                change.direction is not tiers.TierDirection.UP
                or new_tier is None
                or new_tier.entry_reward_points <= 0
                or new_tier.id in state.rewarded
            ):
                continue
            state.rewarded.add(new_tier.id)
            state.rewards.append(new_tier)
            if self.vip.metric == VipMetric.POINTS_EARNED:
                state.value += new_tier.entry_reward_points


def _refunded(row: Sequence[Any]) -> Decimal:
    """The refunded amount ``order_input`` records for a spooled order."""
    if row[O_REFUNDED] is not None:
        return Decimal(row[O_REFUNDED])
    return Decimal(row[O_TOTAL]) if row[O_STATUS] == "refunded" else _ZERO


def known_order_ids(session: Session, merchant_id: int, order_ids: Sequence[str]) -> set[str]:
    """Which of these order ids the merchant already has."""
    return values_in_use(session, Order, Order.order_id, merchant_id, order_ids)


def collisions(
    session: Session, merchant_id: int, rows: Sequence[Sequence[Any]]
) -> list[dict[str, Any]]:
    """The rows of known order ids that are not the known order again, by row number.

    A row with the known order's customer and total is a harmless re-import; one with another
    customer or another total is a different order under the same id (another store, another
    platform) and is skipped all the same, so the merchant is told which rows they are.
    """
    known: dict[str, tuple[str, Decimal]] = {}
    for part in chunks([row[O_ID] for row in rows]):
        for order_id, email, total in session.execute(
            select(Order.order_id, Customer.email, Order.total)
            .join(Customer, Customer.id == Order.customer_id)
            .where(Order.merchant_id == merchant_id, Order.order_id.in_(part))
        ):
            known[order_id] = (email, Decimal(total))
    found: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda row: row[O_ROW]):
        email, total = known[row[O_ID]]
        reasons = []
        if row[O_EMAIL] != email:
            reasons.append(f"recorded for another customer ({email}), the file says {row[O_EMAIL]}")
        if Decimal(row[O_TOTAL]) != total:
            cents = total.quantize(Decimal("0.01"))
            shown = cents if cents == total else total.normalize()
            reasons.append(f"recorded with total {shown}, the file says {row[O_TOTAL]}")
        if reasons:
            found.append({"row": row[O_ROW], "order_id": row[O_ID], "reason": "; ".join(reasons)})
    return found
