"""The demo store that `make run` opens onto."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.config import Settings
from tally.customers import service as customers
from tally.db.base import utcnow
from tally.db.engine import bind_merchant
from tally.ledger import service as ledger
from tally.ledger.orm import EntryKind
from tally.merchants import service as merchants
from tally.merchants.orm import Merchant
from tally.program import service as program_service
from tally.program.config_service import update_program
from tally.storefront import service as storefront

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


DEMO_PROGRAM: dict[str, Any] = {
    "create_account": {"enabled": True, "points": 100, "send_email": False},
    "place_order": {"enabled": True, "points_per_unit": "1", "send_email": False},
    "birthday": {"enabled": True, "points": 200},
    "referral": {"enabled": True, "sender_points": 500, "receiver_points": 250},
    "custom_actions": [
        {
            "id": "follow-us",
            "name": "Follow us on Instagram",
            "points": 50,
            "storefront_claimable": True,
            "limit": {"max_count": 1, "period": "ever"},
        }
    ],
    "rewards": [
        {
            "type": "fixed_amount",
            "id": "five-off",
            "name": "$5 off",
            "points_cost": 500,
            "amount": "5",
        },
        {
            "type": "free_shipping",
            "id": "free-shipping",
            "name": "Free shipping",
            "points_cost": 300,
        },
    ],
    "vip": {
        "enabled": True,
        "metric": "amount_spent",
        "window": {"kind": "rolling", "days": 365},
        "tiers": [
            {"id": "silver", "name": "Silver", "threshold": "100", "entry_reward_points": 50},
            {
                "id": "gold",
                "name": "Gold",
                "threshold": "500",
                "multiplier": "1.5",
                "entry_reward_points": 200,
            },
        ],
    },
}

# (order id, customer email, total, days ago). Not Shopify's #1001…: a real store's export
# starts with those numbers, and importing it would find them "already known".
DEMO_ORDERS = [
    ("DEMO-1001", "ada@example.com", "120.00", 40),
    ("DEMO-1002", "ada@example.com", "415.50", 12),
    ("DEMO-1003", "grace@example.com", "64.90", 30),
    ("DEMO-1004", "edsger@example.com", "230.00", 5),
    ("DEMO-1005", "shopper@example.com", "45.00", 2),
]


def _demo_orders(session: Session, merchant_id: int) -> None:
    now = utcnow()
    for order_id, email, total, days_ago in DEMO_ORDERS:
        program_service.record_order(
            session,
            merchant_id=merchant_id,
            data=program_service.OrderInput(
                order_id=order_id,
                email=email,
                total=Decimal(total),
                placed_at=now - timedelta(days=days_ago),
            ),
        )


@dataclass(frozen=True)
class DemoStore:
    """What `tally demo` prints."""

    merchant_id: int
    api_key: str
    admin_email: str
    admin_password: str
    created: bool
    widget_id: str | None = None


# A store page served on the usual local ports may embed the widget; Tally's own public base
# URL (the hosted page) is always allowed besides these.
DEMO_STORE_ORIGINS = (
    "http://localhost:8000",
    "http://127.0.0.1:8000",
    "http://localhost:8001",
    "http://127.0.0.1:8001",
)


def seed_demo(session: Session, config: Settings | None = None) -> DemoStore:
    """Create the demo store once (customers with balances); issue a fresh API key every time,
    revoking the one issued before. With the application's settings, the storefront widget is
    set up too (its secret is encrypted under them)."""
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
        update_program(
            session, merchant_id=merchant.id, changes=DEMO_PROGRAM, changed_by="tally demo"
        )
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
        _demo_orders(session, merchant.id)
    # One demo key at a time: the previous one (its secret was printed once) stops working.
    for previous in merchants.list_api_keys(session, merchant_id=merchant.id):
        if previous.name == "demo" and previous.revoked_at is None:
            merchants.revoke_api_key(session, merchant_id=merchant.id, key_id=previous.id)
    key = merchants.create_api_key(session, merchant_id=merchant.id, name="demo")
    widget_id = None
    if config is not None:
        bind_merchant(session, merchant.id)
        row = storefront.settings_for(session, config=config, merchant_id=merchant.id)
        if not row.allowed_origins:
            storefront.set_origins(
                session, config=config, merchant_id=merchant.id, origins=DEMO_STORE_ORIGINS
            )
        widget_id = row.widget_id
    return DemoStore(
        merchant_id=merchant.id,
        api_key=key.secret,
        admin_email=DEMO_ADMIN_EMAIL,
        admin_password=DEMO_ADMIN_PASSWORD,
        created=created,
        widget_id=widget_id,
    )
