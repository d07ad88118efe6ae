"""`tally webhooks`: add (secret once), list, deliveries, show, replay, remove; the guard."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tally.cli import main as cli
from tally.config import Settings
from tally.webhooks.orm import WebhookDelivery, WebhookEndpoint
from tally.webhooks.signing import verify
from tests.integration.test_webhooks import FAST, _worker
from tests.support.factories import make_customer, make_merchant
from tests.support.webhook_receiver import webhook_receiver

runner = CliRunner()


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point the CLI's own Settings() at the test database."""
    monkeypatch.setenv("TALLY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TALLY_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("TALLY_ENVIRONMENT", "test")
    monkeypatch.setattr(cli.console, "_width", 400)
    return settings


def test_add_list_deliveries_replay_and_remove(
    cli_env: Settings, session_factory: sessionmaker[Session]
) -> None:
    merchant = make_merchant(session_factory)
    with webhook_receiver() as receiver:
        added = runner.invoke(
            cli.app,
            ["webhooks", "add", receiver.url, "--events", "customer.enrolled,points.changed"],
        )
        assert added.exit_code == 0, added.output
        secret = re.search(r"signing secret: (whsec_\S+)", added.output)
        assert secret is not None
        with session_factory() as session:
            endpoint_id = session.scalars(select(WebhookEndpoint.id)).one()
        listed = runner.invoke(cli.app, ["webhooks", "list"])
        assert listed.exit_code == 0
        assert receiver.url in listed.output
        assert secret.group(1) not in listed.output

        receiver.answer(404)
        make_customer(session_factory, merchant.id)
        _worker(cli_env, session_factory, FAST).drain()
        shown = runner.invoke(cli.app, ["webhooks", "deliveries", str(endpoint_id)])
        assert shown.exit_code == 0
        assert "customer.enrolled" in shown.output
        assert "failed" in shown.output
        with session_factory() as session:
            failed = session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.response_status == 404)
            ).one()
        detail = runner.invoke(cli.app, ["webhooks", "show", str(failed.id)])
        assert "answered HTTP 404" in detail.output

        replayed = runner.invoke(cli.app, ["webhooks", "replay", str(failed.id)])
        assert replayed.exit_code == 0, replayed.output
        again = runner.invoke(cli.app, ["webhooks", "replay", str(failed.id)])
        assert again.exit_code == 2
        assert "only failed or delivered" in again.output
        _worker(cli_env, session_factory, FAST).drain()
    assert [r.answered for r in receiver.requests] == [404, 200]
    assert receiver.requests[0].body == receiver.requests[1].body
    for request in receiver.requests:
        verify(secret.group(1), request.headers["tally-signature"], request.body)

    removed = runner.invoke(cli.app, ["webhooks", "remove", str(endpoint_id)])
    assert removed.exit_code == 0
    assert runner.invoke(cli.app, ["webhooks", "remove", str(endpoint_id)]).exit_code == 2


@pytest.mark.parametrize("url", ["https://127.0.0.1/x", "https://10.0.0.1/x", "http://8.8.8.8/x"])
def test_production_refuses_private_and_plain_http_urls(
    cli_env: Settings,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
) -> None:
    make_merchant(session_factory)
    monkeypatch.setenv("TALLY_ENVIRONMENT", "production")
    result = runner.invoke(cli.app, ["webhooks", "add", url, "--events", "points.changed"])
    assert result.exit_code == 2
    with session_factory() as session:
        assert session.scalars(select(WebhookEndpoint)).all() == []
