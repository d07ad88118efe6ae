"""Ledger postings on both backends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.ledger import service as ledger
from tally.ledger.errors import IdempotencyKeyReused, InsufficientPoints, InvalidPoints
from tally.ledger.orm import EntryKind, LedgerEntry
from tally.outbox.orm import OutboxMessage
from tally.outbox.registry import default_registry
from tests.support.factories import load_customer, make_customer, make_merchant


def _entries(factory: sessionmaker[Session], customer_id: int) -> list[tuple[int, str]]:
    with factory() as session:
        return [
            (e.points, e.kind)
            for e in session.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.customer_id == customer_id)
                .order_by(LedgerEntry.id)
            )
        ]


def _balance(factory: sessionmaker[Session], customer_id: int) -> int:
    with factory() as session:
        return session.get_one(Customer, customer_id).points_balance


def test_credit_and_debit_move_the_cached_balance(session_factory: sessionmaker[Session]) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        customer = load_customer(session, m.id, cid)
        ledger.credit(
            session, customer=customer, points=100, kind=EntryKind.EARN, idempotency_key="a"
        )
        ledger.debit(
            session, customer=customer, points=30, kind=EntryKind.SPEND, idempotency_key="b"
        )
        assert customer.points_balance == 70
    assert _balance(session_factory, cid) == 70
    assert _entries(session_factory, cid) == [(100, "earn"), (-30, "spend")]


def test_debit_beyond_balance_is_refused_and_changes_nothing(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id, points=50)
    with (
        pytest.raises(InsufficientPoints) as info,
        unit_of_work(session_factory, merchant_id=m.id) as session,
    ):
        customer = load_customer(session, m.id, cid)
        ledger.debit(
            session, customer=customer, points=51, kind=EntryKind.SPEND, idempotency_key="x"
        )
    assert info.value.balance == 50
    assert "50 points; 51 cannot be taken" in str(info.value)
    assert _balance(session_factory, cid) == 50
    assert _entries(session_factory, cid) == [(50, "adjust")]


def test_replay_with_same_key_changes_nothing(session_factory: sessionmaker[Session]) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    for _ in range(3):
        with unit_of_work(session_factory, merchant_id=m.id) as session:
            customer = load_customer(session, m.id, cid)
            posting = ledger.adjust(
                session, customer=customer, points=25, reason="goodwill", idempotency_key="k1"
            )
    assert posting.replayed is True
    assert _balance(session_factory, cid) == 25
    assert _entries(session_factory, cid) == [(25, "adjust")]


def test_same_key_for_a_different_movement_is_a_conflict(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        ledger.adjust(
            session,
            customer=load_customer(session, m.id, cid),
            points=5,
            reason="r",
            idempotency_key="k",
        )
    with (
        pytest.raises(IdempotencyKeyReused),
        unit_of_work(session_factory, merchant_id=m.id) as session,
    ):
        ledger.adjust(
            session,
            customer=load_customer(session, m.id, cid),
            points=6,
            reason="r",
            idempotency_key="k",
        )
    assert _balance(session_factory, cid) == 5


def test_idempotency_keys_are_per_merchant(session_factory: sessionmaker[Session]) -> None:
    a, b = make_merchant(session_factory), make_merchant(session_factory)
    ca, cb = make_customer(session_factory, a.id), make_customer(session_factory, b.id)
    for merchant, cid in ((a, ca), (b, cb)):
        with unit_of_work(session_factory, merchant_id=merchant.id) as session:
            ledger.adjust(
                session,
                customer=load_customer(session, merchant.id, cid),
                points=7,
                reason="r",
                idempotency_key="shared-key",
            )
    assert _balance(session_factory, ca) == 7
    assert _balance(session_factory, cb) == 7


def test_zero_points_and_blank_reason_are_refused(session_factory: sessionmaker[Session]) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    with (
        pytest.raises(InvalidPoints, match="must not be zero"),
        unit_of_work(session_factory, merchant_id=m.id) as session,
    ):
        ledger.adjust(
            session,
            customer=load_customer(session, m.id, cid),
            points=0,
            reason="r",
            idempotency_key="z",
        )
    with (
        pytest.raises(InvalidPoints, match="needs a reason"),
        unit_of_work(session_factory, merchant_id=m.id) as session,
    ):
        ledger.adjust(
            session,
            customer=load_customer(session, m.id, cid),
            points=3,
            reason="  ",
            idempotency_key="z",
        )
    assert _entries(session_factory, cid) == []


def test_debits_consume_soonest_expiring_credits_first(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    now = utcnow()
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        customer = load_customer(session, m.id, cid)
        never = ledger.credit(
            session, customer=customer, points=10, kind=EntryKind.EARN, idempotency_key="never"
        ).entry
        late = ledger.credit(
            session,
            customer=customer,
            points=10,
            kind=EntryKind.EARN,
            idempotency_key="late",
            expires_at=now + timedelta(days=60),
        ).entry
        soon = ledger.credit(
            session,
            customer=customer,
            points=10,
            kind=EntryKind.EARN,
            idempotency_key="soon",
            expires_at=now + timedelta(days=5),
        ).entry
        ledger.debit(
            session, customer=customer, points=15, kind=EntryKind.SPEND, idempotency_key="spend"
        )
        ids = (never.id, late.id, soon.id)
    with session_factory() as session:
        remaining = {
            e.id: e.remaining
            for e in session.scalars(select(LedgerEntry).where(LedgerEntry.id.in_(ids)))
        }
    assert remaining == {soon.id: 0, late.id: 5, never.id: 10}


def test_postings_emit_balance_events_in_the_same_transaction(
    session_factory: sessionmaker[Session],
) -> None:
    default_registry.subscribe("PointsBalanceChanged", "test-probe", lambda _c, _p: None)
    try:
        m = make_merchant(session_factory)
        cid = make_customer(session_factory, m.id)
        with unit_of_work(session_factory, merchant_id=m.id) as session:
            ledger.adjust(
                session,
                customer=load_customer(session, m.id, cid),
                points=9,
                reason="r",
                idempotency_key="e1",
            )
        with (
            pytest.raises(InsufficientPoints),
            unit_of_work(session_factory, merchant_id=m.id) as session,
        ):
            customer = load_customer(session, m.id, cid)
            ledger.adjust(session, customer=customer, points=4, reason="r", idempotency_key="e2")
            ledger.adjust(session, customer=customer, points=-100, reason="r", idempotency_key="e3")
        with session_factory() as session:
            payloads = [
                m.payload
                for m in session.scalars(
                    select(OutboxMessage).where(OutboxMessage.handler == "test-probe")
                )
            ]
        # The rolled-back transaction left no event behind, not even for its successful +4.
        assert len(payloads) == 1
        assert payloads[0]["balance"] == 9
        assert payloads[0]["points"] == 9
        assert payloads[0]["customer_id"] == cid
    finally:
        default_registry.handlers["PointsBalanceChanged"].pop("test-probe")


def test_verify_reports_a_tampered_balance(session_factory: sessionmaker[Session]) -> None:
    m = make_merchant(session_factory)
    good = make_customer(session_factory, m.id, points=10)
    bad = make_customer(session_factory, m.id, points=20)
    with unit_of_work(session_factory) as session:
        assert list(ledger.verify_balances(session)) == []
        session.get_one(Customer, bad).points_balance = 25
    with session_factory() as session:
        mismatches = list(ledger.verify_balances(session))
        count = session.scalar(select(func.count()).select_from(Customer))
    assert count == 2
    assert [(x.customer_id, x.cached, x.computed) for x in mismatches] == [(bad, 25, 20)]
    assert good not in [x.customer_id for x in mismatches]
