"""Storefront settings: made on first need, the secret rotated with a 24-hour overlap, origins
checked on save."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.errors import ValidationFailed
from tally.storefront import service
from tally.storefront.appearance import Appearance
from tally.storefront.orm import StorefrontSettings
from tests.support.factories import make_merchant


def _row(factory: sessionmaker[Session], config: Settings, merchant_id: int) -> tuple[str, ...]:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        row = service.settings_for(session, config=config, merchant_id=merchant_id)
        return (
            row.widget_id,
            row.secret_encrypted,
            str(row.allowed_origins),
            str(row.appearance),
        )


def test_settings_are_made_once_per_merchant_with_their_own_widget_id_and_secret(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    a, b = make_merchant(session_factory), make_merchant(session_factory)
    first = _row(session_factory, settings, a.id)
    assert _row(session_factory, settings, a.id) == first
    other = _row(session_factory, settings, b.id)
    assert first[0] != other[0]
    assert first[0].startswith("wid_")
    assert len(first[0]) == 26
    with unit_of_work(session_factory) as session:
        count = session.scalar(select(func.count()).select_from(StorefrontSettings))
        rows = {r.merchant_id: r for r in session.scalars(select(StorefrontSettings))}
        secret = service.reveal_secret(settings, rows[a.id])
        assert len(secret) == 64
        assert int(secret, 16) >= 0
        assert secret not in rows[a.id].secret_encrypted
        assert secret != service.reveal_secret(settings, rows[b.id])
        assert service.appearance_of(rows[a.id]) == Appearance()
        assert service.find_widget(session, first[0]) is rows[a.id]
        assert service.find_widget(session, "wid_unknown") is None
    assert count == 2


def test_a_rotated_secret_still_verifies_for_24_hours(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    with unit_of_work(session_factory, merchant_id=merchant.id) as session:
        row = service.settings_for(session, config=settings, merchant_id=merchant.id)
        old = service.reveal_secret(settings, row)
        assert service.verifying_secrets(settings, row) == [old]
        new = service.rotate_secret(session, config=settings, merchant_id=merchant.id)
        assert service.reveal_secret(settings, row) == new != old
        now = utcnow()
        assert service.verifying_secrets(settings, row, now=now) == [new, old]
        later = now + timedelta(hours=24, seconds=1)
        assert service.verifying_secrets(settings, row, now=later) == [new]


def test_origins_are_checked_and_a_refusal_changes_nothing(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    with unit_of_work(session_factory, merchant_id=merchant.id) as session:
        saved = service.set_origins(
            session,
            config=settings,
            merchant_id=merchant.id,
            origins=["https://Shop.example.com/", "http://localhost:8000"],
        )
    assert saved == ["https://shop.example.com", "http://localhost:8000"]
    before = _row(session_factory, settings, merchant.id)
    with (
        pytest.raises(ValidationFailed) as refused,
        unit_of_work(session_factory, merchant_id=merchant.id) as session,
    ):
        service.set_origins(
            session,
            config=settings,
            merchant_id=merchant.id,
            origins=["https://ok.example", "https://shop.example.com/cart"],
        )
    assert [p.field for p in refused.value.errors] == ["allowed_origins.1"]
    assert _row(session_factory, settings, merchant.id) == before


def test_the_appearance_is_replaced_and_the_widget_can_be_switched_off(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    chosen = Appearance(primary_colour="#112233", title="Club points", position="left")
    with unit_of_work(session_factory, merchant_id=merchant.id) as session:
        service.update_appearance(
            session, config=settings, merchant_id=merchant.id, appearance=chosen
        )
        service.set_enabled(session, config=settings, merchant_id=merchant.id, enabled=False)
    with unit_of_work(session_factory, merchant_id=merchant.id) as session:
        row = service.settings_for(session, config=settings, merchant_id=merchant.id)
        assert service.appearance_of(row) == chosen
        assert service.find_widget(session, row.widget_id) is None
