"""`tally storefront show | rotate-secret | origins set`, and the demo store's widget."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tally.cli import main as cli
from tally.config import Settings
from tally.db.engine import unit_of_work
from tally.demo import DEMO_STORE_ORIGINS, seed_demo
from tally.storefront import service
from tests.support.factories import make_merchant

runner = CliRunner()


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point the CLI's own Settings() at the test database."""
    monkeypatch.setenv("TALLY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TALLY_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("TALLY_ENVIRONMENT", "test")
    monkeypatch.setenv("TALLY_PUBLIC_BASE_URL", "http://tally.test")
    monkeypatch.setattr(cli.console, "_width", 400)
    return settings


def _stored(factory: sessionmaker[Session], settings: Settings, merchant_id: int) -> tuple:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        row = service.settings_for(session, config=settings, merchant_id=merchant_id)
        return row.widget_id, service.reveal_secret(settings, row), list(row.allowed_origins)


def test_show_prints_the_widget_and_the_secret_only_when_asked(
    cli_env: Settings, session_factory: sessionmaker[Session]
) -> None:
    merchant = make_merchant(session_factory)
    shown = runner.invoke(cli.app, ["storefront", "show"])
    assert shown.exit_code == 0, shown.output
    widget_id, secret, origins = _stored(session_factory, cli_env, merchant.id)
    assert f"widget id: {widget_id}" in shown.output
    assert f"hosted page: http://tally.test/p/{widget_id}" in shown.output
    assert "allowed origins: (none)" in shown.output
    assert secret not in shown.output
    revealed = runner.invoke(cli.app, ["storefront", "show", "--reveal-secret"])
    assert f"signing secret: {secret}" in revealed.output
    assert origins == []


def test_rotate_secret_prints_the_new_one_and_keeps_the_old_one_a_day(
    cli_env: Settings, session_factory: sessionmaker[Session]
) -> None:
    merchant = make_merchant(session_factory)
    _, old, _ = _stored(session_factory, cli_env, merchant.id)
    rotated = runner.invoke(cli.app, ["storefront", "rotate-secret"])
    assert rotated.exit_code == 0, rotated.output
    _, new, _ = _stored(session_factory, cli_env, merchant.id)
    assert new != old
    assert f"signing secret: {new}" in rotated.output
    with unit_of_work(session_factory, merchant_id=merchant.id) as session:
        row = service.settings_for(session, config=cli_env, merchant_id=merchant.id)
        assert service.verifying_secrets(cli_env, row) == [new, old]


def test_origins_set_checks_every_origin_and_a_refusal_changes_nothing(
    cli_env: Settings, session_factory: sessionmaker[Session]
) -> None:
    merchant = make_merchant(session_factory)
    saved = runner.invoke(
        cli.app, ["storefront", "origins", "set", "https://Shop.example/", "http://localhost:3000"]
    )
    assert saved.exit_code == 0, saved.output
    assert "allowed origins: https://shop.example, http://localhost:3000" in saved.output
    before = _stored(session_factory, cli_env, merchant.id)
    refused = runner.invoke(
        cli.app, ["storefront", "origins", "set", "https://ok.example", "shop.example/cart"]
    )
    assert refused.exit_code == 2
    assert "allowed_origins.1" in refused.output
    assert _stored(session_factory, cli_env, merchant.id) == before


def test_the_demo_store_has_a_widget_for_local_pages(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with unit_of_work(session_factory) as session:
        store = seed_demo(session, settings)
    with unit_of_work(session_factory) as session:
        again = seed_demo(session, settings)
    assert store.widget_id is not None
    assert again.widget_id == store.widget_id
    widget_id, _, origins = _stored(session_factory, settings, store.merchant_id)
    assert widget_id == store.widget_id
    assert origins == list(DEMO_STORE_ORIGINS)
