"""The `tally` command, run as a real process against a real database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.server import free_port

REPO = Path(__file__).resolve().parents[2]


def tally(db_url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TALLY_DATABASE_URL": db_url,
        "TALLY_ENVIRONMENT": "test",
        "COLUMNS": "200",
    }
    result = subprocess.run(
        [sys.executable, "-c", "from tally.cli import app; app()", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"tally {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture
def cli_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    tally(url, "migrate")
    return url


def test_merchant_customer_points_and_verify(cli_db: str) -> None:
    created = tally(
        cli_db, "merchant", "create", "Acme Shop", "--store-url", "https://acme.example"
    )
    key = re.search(r"API key:\s+(\S+)", created.stdout)
    assert key is not None
    assert key.group(1).startswith("tly_")
    assert "Acme Shop" in tally(cli_db, "merchant", "list").stdout

    # No customer yet: a clear error, exit code 2.
    missing = tally(cli_db, "customer", "show", "nobody@example.com", check=False)
    assert missing.returncode == 2
    assert "no customer with email 'nobody@example.com'" in missing.stderr

    demo = tally(cli_db, "demo")
    assert "API key:" in demo.stdout
    # Two merchants now: --merchant is required. (Ada: 1,200 imported + orders and tier rewards.)
    ambiguous = tally(
        cli_db, "points", "adjust", "ada@example.com", "10", "--reason", "x", check=False
    )
    assert ambiguous.returncode == 2
    assert "pass --merchant" in ambiguous.stderr

    adjusted = tally(
        cli_db, "points", "adjust", "ada@example.com", "-200", "--reason", "fix", "--merchant", "2"
    )
    assert "balance 1785" in adjusted.stdout
    refused = tally(
        cli_db,
        "points",
        "adjust",
        "ada@example.com",
        "-5000",
        "--reason",
        "x",
        "--merchant",
        "2",
        check=False,
    )
    assert refused.returncode == 2
    assert "the customer has 1785 points; 5000 cannot be taken" in refused.stderr
    shown = tally(cli_db, "customer", "show", "ADA@example.com", "--merchant", "2")
    assert "balance: 1785 points" in shown.stdout
    assert "fix" in shown.stdout
    assert "ok: 6 balances equal" in tally(cli_db, "ledger", "verify").stdout


def test_ledger_verify_fails_on_a_tampered_balance(cli_db: str) -> None:
    import sqlite3

    tally(cli_db, "demo")
    with sqlite3.connect(cli_db.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "UPDATE customers SET points_balance = points_balance + 7 WHERE email = 'alan@example.com'"
        )
    result = tally(cli_db, "ledger", "verify", check=False)
    assert result.returncode == 1
    assert "alan@example.com" in result.stdout
    assert "+7" in result.stdout
    assert "1 of 6 balances do not match" in result.stderr


def test_serve_then_create_a_customer_and_adjust_points(cli_db: str, tmp_path: Path) -> None:
    demo = tally(cli_db, "demo")
    key = re.search(r"API key:\s+(\S+)", demo.stdout).group(1)  # type: ignore[union-attr]
    port = free_port()
    env = {
        **os.environ,
        "TALLY_DATABASE_URL": cli_db,
        "TALLY_ENVIRONMENT": "test",
        "TALLY_PORT": str(port),
    }
    server = subprocess.Popen(
        [sys.executable, "-c", "from tally.cli import app; app()", "serve"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a safety net for a busy machine, not a speed test
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {key}"}
        created = httpx.post(
            f"{base}/api/v1/customers", json={"email": "new@example.com"}, headers=headers
        )
        assert created.status_code == 201
        # The demo program gives 100 points for creating an account.
        assert created.json()["points_balance"] == 100
        adjusted = httpx.post(
            f"{base}/api/v1/customers/{created.json()['id']}/adjustments",
            json={"points": 75, "reason": "welcome"},
            headers=headers,
        )
        assert adjusted.status_code == 201
        assert adjusted.json()["balance"] == 175
    finally:
        server.terminate()
        server.wait(15)


def test_production_refuses_the_placeholder_secret(cli_db: str) -> None:
    env = {**os.environ, "TALLY_DATABASE_URL": cli_db, "TALLY_ENVIRONMENT": "production"}
    result = subprocess.run(
        [sys.executable, "-c", "from tally.cli import app; app()", "serve"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "TALLY_SECRET_KEY is the development placeholder" in result.stderr


def test_a_cli_adjustment_and_the_demo_reach_the_outbox(cli_db: str) -> None:
    """Events emitted from a command are delivered like the API's (Dotdigital, emails)."""
    import sqlite3

    tally(cli_db, "demo")
    path = cli_db.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        queued_mail = conn.execute(
            "SELECT count(*) FROM email_messages WHERE status = 'queued'"
        ).fetchone()[0]
        sends = conn.execute(
            "SELECT count(*) FROM outbox_messages WHERE handler LIKE 'notifications.%'"
        ).fetchone()[0]
    # Every queued email has a delivery waiting for the worker, or it would stay queued forever.
    assert queued_mail > 0
    assert sends >= queued_mail

    tally(cli_db, "points", "adjust", "ada@example.com", "25", "--reason", "goodwill")
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT handler, payload FROM outbox_messages WHERE event_type = 'PointsBalanceChanged'"
            " AND payload LIKE '%\"points\": 25%'"
        ).fetchall()
    assert "dotdigital.mark_contact" in {handler for handler, _ in rows}, rows
