"""The demo store that `make run` opens onto."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.customers import service as customers
from tally.db.engine import bind_merchant
from tally.ledger import service as ledger
from tally.ledger.orm import EntryKind
from tally.merchants import service as merchants
from tally.merchants.orm import Merchant

DEMO_STORE_NAME = "Demo Store"
DEMO_ADMIN_EMAIL = "admin@demo.tally.local"
DEMO_ADMIN_PASSWORD = "demo-password"  # noqa: S105 - printed for the local demo only

DEMO_CUSTOMERS = [
    ("ada@example.com", "Ada", "Lovelace", date(1985, 12, 10), 1200),
    ("grace@example.com", "Grace", "Hopper", date(1990, 12, 9), 350),
    ("alan@example.com", "Alan", "Turing", date(1988, 6, 23), 80),
    ("katherine@example.com", "Katherine", "Johnson", None, 0),
    ("edsger@example.com", "Edsger", "Dijkstra", date(1979, 5, 11), 2500),
]


@dataclass(frozen=True)
class DemoStore:
    """What `tally demo` prints."""

    merchant_id: int
    api_key: str
    admin_email: str
    admin_password: str
    created: bool


def seed_demo(session: Session) -> DemoStore:
    """Create the demo store once (customers with balances); issue a fresh API key every time."""
    merchant = session.scalar(select(Merchant).where(Merchant.name == DEMO_STORE_NAME))
    created = merchant is None
    if merchant is None:
        merchant = merchants.create_merchant(
            session,
            name=DEMO_STORE_NAME,
            store_url="https://demo-store.example",
            currency="USD",
            timezone="America/New_York",
        )
        merchants.create_admin_user(
            session, merchant_id=merchant.id, email=DEMO_ADMIN_EMAIL, password=DEMO_ADMIN_PASSWORD
        )
        bind_merchant(session, merchant.id)
        for email, first, last, birthday, points in DEMO_CUSTOMERS:
            customer = customers.enroll_customer(
                session,
                merchant_id=merchant.id,
                email=email,
                first_name=first,
                last_name=last,
                birthday=birthday,
            ).customer
            if points:
                ledger.credit(
                    session,
                    customer=customer,
                    points=points,
                    kind=EntryKind.IMPORT,
                    idempotency_key=f"demo:{email}",
                    reason="Balance brought over from the previous loyalty program",
                )
    key = merchants.create_api_key(session, merchant_id=merchant.id, name="demo")
    return DemoStore(
        merchant_id=merchant.id,
        api_key=key.secret,
        admin_email=DEMO_ADMIN_EMAIL,
        admin_password=DEMO_ADMIN_PASSWORD,
        created=created,
    )
