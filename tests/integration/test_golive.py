"""A new store's starting program: clear and working, but earning nothing until it goes live."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from tally.cli import main as cli
from tally.config import Settings
from tally.db.engine import unit_of_work
from tally.imports.options import OrderImportOptions
from tally.imports.preview import import_notes
from tally.merchants import service as merchants
from tally.program.config_service import load_program
from tests.integration.test_admin_pages import PASSWORD, admin_app, sign_in, token

runner = CliRunner()


@pytest.fixture
def tally(settings: Settings, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TALLY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TALLY_ENVIRONMENT", "test")
    monkeypatch.setattr(cli.console, "_width", 300)

    def run(*args: str) -> Result:
        return runner.invoke(cli.app, list(args))

    return run


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    return admin_app(settings, session_factory)


@pytest.fixture
def new_store(tally: Any, session_factory: sessionmaker[Session]) -> tuple[int, str]:
    """A store made by `tally merchant create`, with an owner: (merchant id, API key)."""
    created = tally("merchant", "create", "New Shop", "--store-url", "https://new.example")
    assert created.exit_code == 0, created.output
    merchant_id = int(re.search(r"merchant id:\s+(\d+)", created.output).group(1))  # type: ignore[union-attr]
    key = re.search(r"API key:\s+(\S+)", created.output).group(1)  # type: ignore[union-attr]
    with unit_of_work(session_factory) as session:
        merchants.create_admin_user(
            session, merchant_id=merchant_id, email="new@shop.example", password=PASSWORD
        )
    return merchant_id, key


def _join_and_buy(api: TestClient, key: str, email: str, order_id: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    joined = api.post("/api/v1/customers", json={"email": email}, headers=headers)
    assert joined.status_code == 201, joined.text
    order = api.post(
        "/api/v1/orders",
        json={
            "order_id": order_id,
            "email": email,
            "total": "42.00",
            "status": "paid",
            "placed_at": "2026-11-30T10:00:00Z",
        },
        headers=headers,
    )
    assert order.status_code == 201, order.text
    again = api.get(f"/api/v1/customers/{joined.json()['id']}", headers=headers)
    return int(again.json()["points_balance"])


def test_a_new_store_starts_with_a_working_program_that_is_not_live(
    new_store: tuple[int, str], session_factory: sessionmaker[Session]
) -> None:
    merchant_id, _ = new_store
    with session_factory() as session:
        _, program = load_program(session, merchant_id)
        notes = import_notes(session, merchant_id=merchant_id, options=OrderImportOptions())
    assert program.live is False
    assert (program.create_account.enabled, program.create_account.points) == (True, 100)
    assert program.place_order.enabled
    assert program.place_order.points_per_unit == 1
    assert [(r.id, r.points_cost) for r in program.rewards] == [("five-off", 500)]
    assert any("not live" in note for note in notes)


def test_nothing_is_earned_before_going_live_and_everything_after(
    app: FastAPI,
    client: TestClient,
    new_store: tuple[int, str],
    session_factory: sessionmaker[Session],
) -> None:
    merchant_id, key = new_store
    admin = TestClient(app)
    assert sign_in(admin, "new@shop.example") == (303, "/admin")

    before = _join_and_buy(client, key, "early@example.com", "E-1")
    checklist_shown = admin.get("/admin").text
    went_live = admin.post(
        "/admin/go-live", data={"csrf_token": token(admin)}, follow_redirects=False
    )
    after = _join_and_buy(client, key, "later@example.com", "L-1")
    dashboard = admin.get("/admin").text

    assert before == 0
    assert 'data-testid="golive-checklist"' in checklist_shown
    assert "Your program is not live yet" in checklist_shown
    assert went_live.status_code == 303
    assert after == 100 + 42
    assert 'data-testid="golive-checklist"' not in dashboard
    with session_factory() as session:
        _, program = load_program(session, merchant_id)
    assert program.live is True


def test_show_then_apply_keeps_the_live_flag_and_changes_nothing(
    tally: Any, new_store: tuple[int, str], tmp_path: Path
) -> None:
    merchant_id, _ = new_store
    shown = tally("program", "show", "--merchant", str(merchant_id))
    assert "live: false" in shown.output
    path = tmp_path / "program.yaml"
    path.write_text(shown.output, encoding="utf-8")

    applied = tally("program", "apply", str(path), "--merchant", str(merchant_id))
    assert applied.exit_code == 0, applied.output
    assert "nothing to change" in applied.output

    path.write_text(shown.output.replace("live: false", "live: true"), encoding="utf-8")
    live = tally("program", "apply", str(path), "--merchant", str(merchant_id))
    assert live.exit_code == 0, live.output
    assert "live" in live.output
