"""VIP tiers kept from a customers import: the profile's progress respects them, and a revert
puts back what the customers had before (with the tier-changed events)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.imports import service as imports
from tally.imports.orm import ImportKind
from tally.outbox.orm import OutboxMessage
from tally.program.config_service import update_program
from tests.integration.test_admin_pages import admin_app, make_store, sign_in

TIERS = {
    "enabled": True,
    "metric": "amount_spent",
    "tiers": [
        {"id": "silver", "name": "Silver", "threshold": "100"},
        {"id": "gold", "name": "Gold", "threshold": "500"},
        {"id": "platinum", "name": "Platinum", "threshold": "2000"},
    ],
}


def _program(factory: sessionmaker[Session], merchant_id: int, **changes: Any) -> None:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        update_program(session, merchant_id=merchant_id, changes=changes)


def _sample_file(tmp_path: Path) -> Path:
    # The template the admin offers for download: Ana Gold, Wei no tier, Jordan Silver.
    path = tmp_path / "customers.csv"
    path.write_text(imports.template_csv(ImportKind.CUSTOMERS), encoding="utf-8", newline="")
    return path


def _tiers(factory: sessionmaker[Session]) -> dict[str, tuple[str | None, str | None]]:
    with factory() as session:
        return {c.email: (c.vip_tier, c.vip_tier_kept) for c in session.scalars(select(Customer))}


@pytest.fixture
def admin(
    settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[tuple[TestClient, int]]:
    store = make_store(session_factory, "owner@tiers.example")
    with TestClient(admin_app(settings, session_factory)) as client:
        assert sign_in(client, store.email) == (303, "/admin")
        yield client, store.merchant_id


def test_the_profile_shows_progress_above_a_kept_tier_never_below_it(
    admin: tuple[TestClient, int], session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    client, merchant_id = admin
    _program(session_factory, merchant_id, vip=TIERS)
    imports.run_import(
        session_factory,
        merchant_id=merchant_id,
        path=_sample_file(tmp_path),
        options=imports.CustomerImportOptions(),
    )
    with session_factory() as session:
        ids = dict(session.execute(select(Customer.email, Customer.id)).all())

    ana = client.get(f"/admin/customers/{ids['ana.souza@example.com']}").text
    assert re.search(r'data-testid="tier">Gold<', ana)
    assert "to reach Platinum" in ana
    assert "to reach Silver" not in ana
    assert "to reach Gold" not in ana
    assert "2000 USD more spent" in ana or "2,000 USD more spent" in ana, ana[-3000:]
    jordan = client.get(f"/admin/customers/{ids['jordan.okafor@example.org']}").text
    assert re.search(r'data-testid="tier">Silver<', jordan)
    assert "to reach Gold" in jordan
    assert "to reach Silver" not in jordan
    # With Gold the highest tier, Ana is at the top.
    _program(session_factory, merchant_id, vip={**TIERS, "tiers": TIERS["tiers"][:2]})
    ana = client.get(f"/admin/customers/{ids['ana.souza@example.com']}").text
    assert "Top tier reached." in ana
    assert "to reach" not in ana


def test_reverting_a_customers_import_puts_back_the_tiers_from_before(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    store = make_store(session_factory, "owner@revert.example")
    _program(session_factory, store.merchant_id, vip=TIERS)
    # Wei was kept at Silver by an earlier import; the sample file then makes Ana Gold and
    # Jordan Silver, and a third file moves Wei up to Platinum.
    earlier = tmp_path / "earlier.csv"
    earlier.write_text("email,points,vip_tier\nwei.li@example.com,0,Silver\n", encoding="utf-8")
    imports.run_import(
        session_factory,
        merchant_id=store.merchant_id,
        path=earlier,
        options=imports.CustomerImportOptions(),
    )
    with session_factory() as session:
        wei_before = session.scalars(
            select(Customer).where(Customer.email == "wei.li@example.com")
        ).one()
    sample = _sample_file(tmp_path)
    sample.write_text(
        sample.read_text(encoding="utf-8").replace("Wei,Li,300,,", "Wei,Li,300,,Platinum"),
        encoding="utf-8",
    )
    job = imports.run_import(
        session_factory,
        merchant_id=store.merchant_id,
        path=sample,
        options=imports.CustomerImportOptions(),
    )
    assert _tiers(session_factory) == {
        "ana.souza@example.com": ("gold", "gold"),
        "wei.li@example.com": ("platinum", "platinum"),
        "jordan.okafor@example.org": ("silver", "silver"),
    }
    with session_factory() as session:
        before = session.scalar(select(OutboxMessage.id).order_by(OutboxMessage.id.desc()))

    imports.revert_import(session_factory, merchant_id=store.merchant_id, job_id=job.id)

    assert _tiers(session_factory) == {
        "ana.souza@example.com": (None, None),
        "wei.li@example.com": ("silver", "silver"),
        "jordan.okafor@example.org": (None, None),
    }
    with session_factory() as session:
        wei = session.scalars(select(Customer).where(Customer.email == "wei.li@example.com")).one()
        assert wei.vip_tier_kept_until == wei_before.vip_tier_kept_until
        changed = [
            (m.payload["old_tier"], m.payload["new_tier"])
            for m in session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.id > (before or 0))
                .where(OutboxMessage.event_type == "VipTierChanged")
                .order_by(OutboxMessage.id)
            )
        ]
    # One event per customer whose tier moved (Dotdigital and webhooks each get theirs).
    assert sorted(set(changed)) == [("gold", None), ("platinum", "silver"), ("silver", None)]
    assert wei.vip_tier_kept_until is not None
    assert wei.vip_tier_kept_until > utcnow() + timedelta(days=300)


def test_with_vip_off_a_revert_still_puts_back_the_tiers(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    store = make_store(session_factory, "owner@vip-off.example")
    _program(session_factory, store.merchant_id, vip=TIERS)
    job = imports.run_import(
        session_factory,
        merchant_id=store.merchant_id,
        path=_sample_file(tmp_path),
        options=imports.CustomerImportOptions(),
    )
    _program(session_factory, store.merchant_id, vip={"enabled": False})

    imports.revert_import(session_factory, merchant_id=store.merchant_id, job_id=job.id)

    assert _tiers(session_factory) == {
        "ana.souza@example.com": (None, None),
        "wei.li@example.com": (None, None),
        "jordan.okafor@example.org": (None, None),
    }
