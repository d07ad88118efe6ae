"""An orders preview names the rows whose order id is already known for another customer or
total, apart from harmless re-imports of the same order: service, API, CLI and admin."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tally.api.app import create_app
from tally.config import Settings
from tally.imports import service as imports
from tally.state import AppState
from tests.integration.test_admin_pages import admin_app, csrf_of, make_store, sign_in, token
from tests.integration.test_imports_hostile import _cli
from tests.support.factories import make_merchant

KNOWN = (
    "order_id,email,total,placed_at\n"
    "K1,ana@example.com,40.00,2025-01-05\n"
    "K2,bea@example.com,25.00,2025-01-06\n"
    "K3,ana@example.com,60.00,2025-01-07\n"
)
# Row 2 is K1 again (harmless), row 3 gives K2 to Ana, row 4 gives K3 another total, row 5 is new.
AGAIN = (
    "order_id,email,total,placed_at\n"
    "K1,ana@example.com,40.00,2025-01-05\n"
    "K2,ana@example.com,25.00,2025-01-06\n"
    "K3,ana@example.com,61.50,2025-01-07\n"
    "K4,ana@example.com,10.00,2025-01-08\n"
)
EXPECTED = [
    {
        "row": 3,
        "order_id": "K2",
        "reason": "recorded for another customer (bea@example.com), the file says ana@example.com",
    },
    {"row": 4, "order_id": "K3", "reason": "recorded with total 60.00, the file says 61.50"},
]


def _known(factory: sessionmaker[Session], merchant_id: int, tmp_path: Path) -> Path:
    first = tmp_path / "known.csv"
    first.write_text(KNOWN, encoding="utf-8")
    job = imports.run_import(
        factory, merchant_id=merchant_id, path=first, options=imports.OrderImportOptions()
    )
    assert job.status == "completed"
    again = tmp_path / "again.csv"
    again.write_text(AGAIN, encoding="utf-8")
    return again


def test_the_preview_lists_colliding_rows_by_number(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    again = _known(session_factory, m.id, tmp_path)
    job = imports.preview_import(
        session_factory, merchant_id=m.id, path=again, options=imports.OrderImportOptions()
    )
    assert (job.new_count, job.skipped_count) == (1, 3)
    assert job.collisions == EXPECTED
    # The same file imported: the collisions are skipped like every known order.
    run = imports.run_import(
        session_factory, merchant_id=m.id, path=again, options=imports.OrderImportOptions()
    )
    assert (run.new_count, run.skipped_count) == (1, 3)


def test_the_api_preview_and_the_cli_dry_run_show_them(
    session_factory: sessionmaker[Session],
    settings: Settings,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = make_merchant(session_factory)
    again = _known(session_factory, m.id, tmp_path)
    app = create_app(settings, AppState(settings=settings, session_factory=session_factory))
    with TestClient(app) as api:
        preview = api.post(
            "/api/v1/imports/orders/preview",
            files={"file": ("again.csv", again.read_bytes(), "text/csv")},
            headers=m.headers,
        )
    assert preview.status_code == 200, preview.text
    assert preview.json()["collisions"] == EXPECTED

    dry = _cli(monkeypatch, database_url, tmp_path, "import", "orders", str(again), "--dry-run")
    assert dry.exit_code == 0, dry.output
    text = " ".join(dry.output.split())
    assert "Order ids already known for another customer or total" in text
    assert "recorded for another customer (bea@example.com)" in text
    assert re.search(r"\b3\b.*K2", text)
    assert re.search(r"\b4\b.*K3", text)
    assert "K1" not in text.split("Order ids already known")[1]


def test_the_admin_preview_shows_them_in_a_table(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    store = make_store(session_factory, "owner@collide.example")
    again = _known(session_factory, store.merchant_id, tmp_path)
    with TestClient(admin_app(settings, session_factory)) as client:
        assert sign_in(client, store.email) == (303, "/admin")
        page = client.post(
            "/admin/imports/orders/preview",
            data={"csrf_token": token(client)},
            files={"file": ("again.csv", again.read_bytes(), "text/csv")},
        )
    assert page.status_code == 200, page.text[-2000:]
    assert csrf_of(page.text)
    table = page.text.split('data-testid="order-collisions"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>\s*<td[^>]*>(\d+)</td>\s*<td[^>]*>([^<]+)</td>", table)
    assert rows == [("3", "K2"), ("4", "K3")]
