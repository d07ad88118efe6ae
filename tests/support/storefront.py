"""A store with a program and a storefront, and signed shopper requests, for the storefront
API tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.engine import unit_of_work
from tally.ledger.orm import LedgerEntry
from tally.program.orm import Redemption
from tally.storefront import service
from tally.storefront.identity import hmac_signature
from tests.support.factories import MerchantFixture, make_merchant

STORE_ORIGIN = "https://shop.example"
PROGRAM: dict[str, Any] = {
    "create_account": {"enabled": True, "points": 50, "send_email": False},
    "birthday": {"enabled": True, "points": 20},
    "referral": {"enabled": True, "sender_points": 30, "receiver_points": 10},
    "custom_actions": [
        {
            "id": "follow",
            "name": "Follow us",
            "points": 15,
            "storefront_claimable": True,
            "limit": {"max_count": 1, "period": "ever"},
        },
        {"id": "review", "name": "Write a review", "points": 40},
    ],
    "rewards": [
        {
            "id": "five-off",
            "name": "5 off",
            "type": "fixed_amount",
            "points_cost": 100,
            "amount": "5",
        }
    ],
    "vip": {
        "enabled": True,
        "metric": "points_earned",
        "tiers": [
            {"id": "silver", "name": "Silver", "threshold": "100"},
            {"id": "gold", "name": "Gold", "threshold": "500", "multiplier": "1.5"},
        ],
    },
}


@dataclass(frozen=True)
class Store:
    """A merchant with its program, storefront widget id and signing secret."""

    merchant: MerchantFixture
    widget_id: str
    secret: str

    def url(self, path: str) -> str:
        """The storefront URL of `path` (e.g. `/me`)."""
        return f"/storefront/v1/{self.widget_id}{path}"

    def signed(self, customer_id: str, email: str, secret: str | None = None) -> dict[str, str]:
        """The headers a store's theme sends for a signed-in customer."""
        return {
            "X-Tally-Customer-Id": customer_id,
            "X-Tally-Customer-Email": email,
            "X-Tally-Signature": hmac_signature(secret or self.secret, customer_id, email),
        }

    def bearer(self, customer_id: str, email: str | None, *, lifetime: int = 300) -> dict[str, str]:
        """The header of a headless store's backend-minted token."""
        issued = int(datetime.now(UTC).timestamp())
        claims: dict[str, Any] = {"sub": customer_id, "iat": issued, "exp": issued + lifetime}
        if email is not None:
            claims["email"] = email
        return {"Authorization": "Bearer " + jwt.encode(claims, self.secret, algorithm="HS256")}


def make_store(
    client: TestClient,
    factory: sessionmaker[Session],
    settings: Settings,
    program: dict[str, Any] | None = None,
) -> Store:
    """A merchant with the test program and a storefront allowing STORE_ORIGIN."""
    merchant = make_merchant(factory)
    response = client.patch("/api/v1/program", json=program or PROGRAM, headers=merchant.headers)
    assert response.status_code == 200, response.text
    with unit_of_work(factory, merchant_id=merchant.id) as session:
        row = service.settings_for(session, config=settings, merchant_id=merchant.id)
        service.set_origins(
            session, config=settings, merchant_id=merchant.id, origins=[STORE_ORIGIN]
        )
        return Store(merchant, row.widget_id, service.reveal_secret(settings, row))


def ledger_state(factory: sessionmaker[Session], merchant_id: int) -> tuple[Any, ...]:
    """Every customer (email, store id, state, balance, birthday), entry and redemption."""
    with factory() as session:
        customers = sorted(
            (c.email, c.external_id, c.state, c.points_balance, c.birthday)
            for c in session.scalars(select(Customer).where(Customer.merchant_id == merchant_id))
        )
        entries = sorted(
            (e.customer_id, e.kind, e.points, e.rule_id or "")
            for e in session.scalars(
                select(LedgerEntry).where(LedgerEntry.merchant_id == merchant_id)
            )
        )
        redemptions = session.scalar(
            select(func.count())
            .select_from(Redemption)
            .where(Redemption.merchant_id == merchant_id)
        )
    return customers, entries, redemptions
