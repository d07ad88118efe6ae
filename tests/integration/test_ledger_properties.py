"""A Hypothesis state machine: random credits, debits, adjustments and replays on a real database.

Invariants after every step: each balance equals the sum of its entries, never goes below zero,
equals the model's expectation, and replaying a request that was applied changes nothing. A
request that was refused (insufficient points) stored nothing under its key, so replaying it is a
fresh attempt that may succeed once the balance allows it.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tally.customers.orm import Customer
from tally.db.engine import unit_of_work
from tally.ledger import service as ledger
from tally.ledger.errors import InsufficientPoints
from tally.ledger.orm import EntryKind, LedgerEntry
from tests.support.factories import load_customer, make_customer, make_merchant

CUSTOMERS = 3


def run_machine(factory: sessionmaker[Session], max_examples: int) -> None:
    merchant = make_merchant(factory)
    customer_ids = [make_customer(factory, merchant.id) for _ in range(CUSTOMERS)]

    class LedgerMachine(RuleBasedStateMachine):
        requests = Bundle("requests")

        def __init__(self) -> None:
            super().__init__()
            self.expected = dict.fromkeys(customer_ids, 0)
            self.counter = 0
            self.applied: set[str] = set()
            with unit_of_work(factory) as session:
                # Each example starts from empty balances.
                session.query(LedgerEntry).delete()
                session.query(Customer).update({Customer.points_balance: 0})

        def _post(self, index: int, points: int, key: str) -> bool:
            cid = customer_ids[index]
            try:
                with unit_of_work(factory, merchant_id=merchant.id) as session:
                    customer = load_customer(session, merchant.id, cid)
                    if points > 0:
                        ledger.credit(
                            session,
                            customer=customer,
                            points=points,
                            kind=EntryKind.EARN,
                            idempotency_key=key,
                        )
                    else:
                        ledger.debit(
                            session,
                            customer=customer,
                            points=-points,
                            kind=EntryKind.SPEND,
                            idempotency_key=key,
                        )
            except InsufficientPoints:
                return False
            return True

        @rule(target=requests, index=st.integers(0, CUSTOMERS - 1), points=st.integers(1, 500))
        def credit(self, index: int, points: int) -> tuple[int, int, str]:
            self.counter += 1
            key = f"c{self.counter}"
            assert self._post(index, points, key)
            self.applied.add(key)
            self.expected[customer_ids[index]] += points
            return (index, points, key)

        @rule(target=requests, index=st.integers(0, CUSTOMERS - 1), points=st.integers(1, 500))
        def debit(self, index: int, points: int) -> tuple[int, int, str]:
            self.counter += 1
            key = f"d{self.counter}"
            cid = customer_ids[index]
            ok = self._post(index, -points, key)
            assert ok == (self.expected[cid] >= points)
            if ok:
                self.applied.add(key)
                self.expected[cid] -= points
            return (index, -points, key)

        @rule(index=st.integers(0, CUSTOMERS - 1), points=st.integers(-300, 300).filter(bool))
        def adjust(self, index: int, points: int) -> None:
            self.counter += 1
            cid = customer_ids[index]
            try:
                with unit_of_work(factory, merchant_id=merchant.id) as session:
                    ledger.adjust(
                        session,
                        customer=load_customer(session, merchant.id, cid),
                        points=points,
                        reason="property test",
                        idempotency_key=f"a{self.counter}",
                    )
            except InsufficientPoints:
                assert self.expected[cid] + points < 0
                return
            self.expected[cid] += points

        @rule(request=requests)
        def replay(self, request: tuple[int, int, str]) -> None:
            index, points, key = request
            cid = customer_ids[index]
            ok = self._post(index, points, key)
            if key in self.applied:
                assert ok  # a replay of an applied request answers with the original entry
                return
            assert ok == (self.expected[cid] + points >= 0)
            if ok:
                self.applied.add(key)
                self.expected[cid] += points

        @invariant()
        def balances_match(self) -> None:
            with factory() as session:
                sums = dict(
                    session.execute(
                        select(LedgerEntry.customer_id, func.sum(LedgerEntry.points)).group_by(
                            LedgerEntry.customer_id
                        )
                    ).all()
                )
                cached = dict(session.execute(select(Customer.id, Customer.points_balance)).all())
            for cid in customer_ids:
                assert cached[cid] == sums.get(cid, 0) == self.expected[cid]
                assert cached[cid] >= 0

    LedgerMachine.TestCase.settings = settings(
        max_examples=max_examples,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    LedgerMachine.TestCase().runTest()


@pytest.mark.slow
def test_ledger_state_machine(session_factory: sessionmaker[Session], backend: str) -> None:
    run_machine(session_factory, max_examples=30 if backend == "sqlite" else 20)
