"""Writing a batch of orders: guests for unknown emails, the order rows, tier moves, the points."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from tally.db.bulk import Bulk
from tally.imports import consent, spool
from tally.imports.customer_rows import insert_guests, order_customers
from tally.imports.events import announce, job_source_ref
from tally.imports.job_record import BatchResult
from tally.imports.order_planner import OrderPlan, OrderPlanner, OrderRun
from tally.ledger.batch import Outcome, Transfer, post_transfers
from tally.ledger.orm import EntryKind

_ORDER_COLUMNS = (
    "id",
    "merchant_id",
    "customer_id",
    "order_id",
    "subtotal",
    "discounts",
    "shipping",
    "tax",
    "total",
    "currency",
    "status",
    "placed_at",
    "refunded_amount",
    "points_awarded",
    "points_clawed_back",
    "points_basis",
    "source",
    "import_id",
    "created_at",
    "updated_at",
)


_Earned = tuple[int, int, str, Decimal | None, Decimal]
"""An order that earned points: (customer id, points, order id, points basis, multiplier)."""


def write_orders(
    session: Session, run: OrderRun, planner: OrderPlanner, rows: Sequence[Sequence[Any]]
) -> BatchResult:
    """Record one batch of spooled orders (the caller commits, with the job's cursor)."""
    result = BatchResult()
    if not rows:
        return result
    plan = planner.plan(session, rows)
    result.skipped = plan.skipped
    bulk = Bulk(session)
    ids, result.customers_created = _customer_ids(bulk, run, plan)
    earned = _insert_orders(bulk, run, plan, ids)
    result.new = len(plan.orders)
    result.points = plan.points
    rewards = _write_tier_changes(bulk, run, planner, plan, ids)
    moved = _post_points(session, run, planner, earned, rewards)
    moved_tier = {ids[email] for email, state in plan.states.items() if state.changes}
    # After the guests exist, so a consenting guest gets a Dotdigital contact with the rest.
    consented = consent.record_consent(
        session,
        merchant_id=run.merchant_id,
        job_id=run.job_id,
        answers=[
            (row[spool.O_EMAIL], row[spool.O_CONSENT])
            for row in rows
            if row[spool.O_CONSENT] is not None
        ],
        now=run.now,
    )
    announce(session, run.merchant_id, run.job_id, moved | moved_tier | consented)
    return result


def _customer_ids(bulk: Bulk, run: OrderRun, plan: OrderPlan) -> tuple[dict[str, int], int]:
    """Email -> customer id for every order of the plan, creating guests; and guests created."""
    merchant_id, now = run.merchant_id, run.now
    ids: dict[str, int] = {email: customer.id for email, customer in plan.customers.items()}
    if not plan.new_guests:
        return ids, 0
    created = insert_guests(bulk, merchant_id, plan.new_guests, now)
    ids.update(created)
    missing = [email for email in plan.new_guests if email not in created]
    if missing:
        # Created by someone else since the plan was made: use them as they are.
        for email, customer in order_customers(bulk.session, merchant_id, missing, now).items():
            ids[email] = customer.id
            plan.customers[email] = customer
    return ids, len(created)


def _insert_orders(
    bulk: Bulk, run: OrderRun, plan: OrderPlan, ids: dict[str, int]
) -> list[_Earned]:
    """Insert the plan's orders; those that earned points."""
    merchant_id = run.merchant_id
    stamp = bulk.timestamp(run.now)
    currency = run.program.merchant.currency
    money = bulk.money_text
    placed = bulk.timestamp_text
    # Written in customer order: the indexes by customer are then filled in one sweep.
    plan.orders.sort(key=lambda order: ids[order[0][spool.O_EMAIL]])
    order_ids = bulk.allocate_ids("orders", len(plan.orders))
    order_rows = []
    earned: list[_Earned] = []
    for pk, (row, points, basis, multiplier) in zip(order_ids, plan.orders, strict=True):
        customer_id = ids[row[spool.O_EMAIL]]
        total = row[spool.O_TOTAL]
        refunded = row[spool.O_REFUNDED]
        status = row[spool.O_STATUS]
        if refunded is None:
            refunded = total if status == "refunded" else "0"
        order_rows.append(
            (
                pk,
                merchant_id,
                customer_id,
                row[spool.O_ID],
                money(row[spool.O_SUBTOTAL] if row[spool.O_SUBTOTAL] is not None else total),
                money(row[spool.O_DISCOUNTS] or "0"),
                money(row[spool.O_SHIPPING] or "0"),
                money(row[spool.O_TAX] or "0"),
                money(total),
                (row[spool.O_CURRENCY] or currency).upper(),
                status,
                placed(row[spool.O_PLACED]),
                money(refunded),
                points,
                0,
                bulk.money(basis),
                "import",
                run.job_id,
                stamp,
                stamp,
            )
        )
        if points > 0:
            earned.append((customer_id, points, row[spool.O_ID], basis, multiplier))
    bulk.insert("orders", _ORDER_COLUMNS, order_rows)
    return earned


def _post_points(
    session: Session,
    run: OrderRun,
    planner: OrderPlanner,
    earned: Sequence[_Earned],
    rewards: list[Transfer],
) -> set[int]:
    """Post the orders' points and the tier entry rewards; the customers whose balance moved."""
    source_ref = job_source_ref(run.job_id)
    version = run.program.settings.version

    def earn(earned_row: _Earned, key: str) -> Transfer:
        customer_id, points, order_id, basis, multiplier = earned_row
        return Transfer(
            customer_id=customer_id,
            points=points,
            kind=EntryKind.EARN,
            idempotency_key=key,
            reason=f"Order {order_id}",
            source_ref=source_ref,
            rule_id="place_order",
            rule_version=version,
            expires_at=planner.expires_at,
            details={"basis": str(basis), "multiplier": str(multiplier)},
        )

    first = post_transfers(
        session,
        merchant_id=run.merchant_id,
        transfers=[earn(row, f"order:{row[2]}") for row in earned] + rewards,
        now=run.now,
        announce=False,
        strict_replays=False,
    )
    # ``order:<id>`` is taken only when an earlier import of the order was reverted (a known
    # order is skipped): the order imported again gets its points under a key of this job.
    again = [
        earn(row, f"order:{row[2]}:import-{run.job_id}")
        for row, r in zip(earned, first.results, strict=False)
        if r.outcome == Outcome.REPLAYED
    ]
    second = post_transfers(
        session, merchant_id=run.merchant_id, transfers=again, now=run.now, announce=False
    )
    return {r.transfer.customer_id for r in first.written() + second.written()}


def _write_tier_changes(
    bulk: Bulk,
    run: OrderRun,
    planner: OrderPlanner,
    plan: OrderPlan,
    ids: dict[str, int],
) -> list[Transfer]:
    """Tier moves as ``recompute_tier`` records them; the entry rewards they earned, to post."""
    merchant_id = run.merchant_id
    stamp = bulk.timestamp(run.now)
    change_rows = []
    current: dict[int, str | None] = {}
    rewards: list[Transfer] = []
    for email, state in plan.states.items():
        if not state.changes:
            continue
        customer_id = ids[email]
        current[customer_id] = state.tier
        for old, new, value, placed in state.changes:
            change_rows.append(
                (merchant_id, customer_id, old, new, bulk.money(value), bulk.timestamp_text(placed))
            )
        rewards += [
            Transfer(
                customer_id=customer_id,
                points=tier.entry_reward_points,
                kind=EntryKind.EARN,
                reason=f"Welcome to {tier.name}",
                idempotency_key=f"tier-entry:{customer_id}:{tier.id}",
                # Marked with the job, so that a revert takes it back with the orders' points.
                source_ref=job_source_ref(run.job_id),
                rule_id=f"tier:{tier.id}",
                rule_version=run.program.settings.version,
                expires_at=planner.expires_at,
            )
            for tier in state.rewards
            if tier.entry_reward_points > 0 and run.program.settings.live
        ]
    bulk.insert(
        "tier_changes",
        ("merchant_id", "customer_id", "old_tier", "new_tier", "value", "changed_at"),
        change_rows,
    )
    bulk.execute_many(
        "UPDATE customers SET vip_tier = ?, updated_at = ? WHERE id = ?",
        [(tier, stamp, customer_id) for customer_id, tier in current.items()],
    )
    return rewards
