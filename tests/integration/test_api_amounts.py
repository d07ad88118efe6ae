"""Amounts read the same however they are reached: the POST, a repeat of it, the GET."""

from __future__ import annotations

from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tally.api.schemas import money_text
from tests.support.factories import make_merchant


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("120"), "120.00"),
        (Decimal("120.0000"), "120.00"),
        (Decimal("0"), "0.00"),
        (Decimal("19.5"), "19.50"),
        (Decimal("1.2340"), "1.234"),
        (Decimal("0.0001"), "0.0001"),
        (Decimal("1E+3"), "1000.00"),
    ],
)
def test_money_text_has_two_places_at_least_and_no_idle_zeros(value: Decimal, text: str) -> None:
    assert money_text(value) == text


def test_an_order_reads_the_same_from_its_post_its_repeat_and_its_get(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    order = {
        "order_id": "A-1",
        "email": "amounts@example.com",
        "total": "120.00",
        "placed_at": "2026-11-30T10:00:00Z",
    }
    first = client.post("/api/v1/orders", headers=m.headers, json=order)
    again = client.post("/api/v1/orders", headers=m.headers, json=order)
    read = client.get("/api/v1/orders/A-1", headers=m.headers)
    assert (first.status_code, again.status_code, read.status_code) == (201, 200, 200)
    assert first.json()["total"] == again.json()["total"] == read.json()["total"] == "120.00"
    assert read.json()["refunded_amount"] == "0.00"

    refund = client.post(
        "/api/v1/orders/A-1/refunds", headers=m.headers, json={"amount": "20.5", "refund_id": "r1"}
    )
    assert refund.status_code in (200, 201), refund.text
    assert refund.json()["amount"] == "20.50"
    assert refund.json()["order"]["refunded_amount"] == "20.50"
