"""Factories for test data: build through the services, as production code does."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from tally.customers import service as customers
from tally.customers.orm import Customer, CustomerState
from tally.db.engine import bind_merchant, unit_of_work
from tally.ledger import service as ledger
from tally.ledger.orm import EntryKind
from tally.merchants import service as merchants

_counter = itertools.count(1)


@dataclass(frozen=True)
class MerchantFixture:
    """A merchant and a working API key."""

    id: int
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        """Authorization headers for this merchant's key."""
        return {"Authorization": f"Bearer {self.api_key}"}


def make_merchant(factory: sessionmaker[Session], name: str | None = None) -> MerchantFixture:
    """Create a merchant with an API key."""
    with unit_of_work(factory) as session:
        merchant = merchants.create_merchant(
            session, name=name or f"Store {next(_counter)}", store_url="https://shop.example"
        )
        key = merchants.create_api_key(session, merchant_id=merchant.id)
        return MerchantFixture(merchant.id, key.secret)


def make_customer(
    factory: sessionmaker[Session],
    merchant_id: int,
    *,
    email: str | None = None,
    points: int = 0,
    state: CustomerState = CustomerState.MEMBER,
    accepts_marketing: bool | None = None,
    **fields: object,
) -> int:
    """Create a customer (with an opening credit when points > 0) and return its id.

    ``accepts_marketing`` records the customer's email marketing consent (source ``api``).
    """
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        customer = customers.enroll_customer(
            session,
            merchant_id=merchant_id,
            email=email or f"customer{next(_counter)}@example.com",
            state=state,
            **fields,  # type: ignore[arg-type]
        ).customer
        if accepts_marketing is not None:
            customers.record_consent(customer, accepts=accepts_marketing, source="api")
        if points:
            ledger.credit(
                session,
                customer=customer,
                points=points,
                kind=EntryKind.ADJUST,
                idempotency_key=f"factory:{customer.id}",
                reason="opening balance",
            )
        return customer.id


def load_customer(session: Session, merchant_id: int, customer_id: int) -> Customer:
    """Load a customer through a merchant-bound session."""
    bind_merchant(session, merchant_id)
    return customers.get_customer(session, merchant_id, customer_id)
