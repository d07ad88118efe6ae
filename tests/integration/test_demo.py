"""`tally demo` on a database that already has the demo store."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.db.engine import unit_of_work
from tally.demo import DEMO_ORDERS, seed_demo
from tally.merchants import service as merchants
from tally.program.orm import Order


def test_seeding_again_keeps_one_working_demo_key(session_factory: sessionmaker[Session]) -> None:
    with unit_of_work(session_factory) as session:
        first = seed_demo(session)
    with unit_of_work(session_factory) as session:
        second = seed_demo(session)
    assert first.created
    assert not second.created
    with session_factory() as session:
        assert merchants.resolve_api_key(session, first.api_key) is None
        assert merchants.resolve_api_key(session, second.api_key) == second.merchant_id
        live = [
            k
            for k in merchants.list_api_keys(session, merchant_id=second.merchant_id)
            if k.revoked_at is None
        ]
    assert len(live) == 1


def test_demo_orders_do_not_take_a_real_stores_first_order_numbers(
    session_factory: sessionmaker[Session],
) -> None:
    with unit_of_work(session_factory) as session:
        seed_demo(session)
    with session_factory() as session:
        ids = set(session.scalars(select(Order.order_id)))
    assert ids == {order_id for order_id, *_ in DEMO_ORDERS}
    # A Shopify store's export starts at #1001; none of those may already be "known".
    assert not ids & {f"#{n}" for n in range(1001, 1100)}
