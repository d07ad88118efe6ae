"""`tally import`, run as a real process against a real SQLite database."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "imports"

RUNNER = "from tally.cli import app\napp()\n"


def tally(db_url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TALLY_DATABASE_URL": db_url,
        "TALLY_ENVIRONMENT": "test",
        "COLUMNS": "200",
    }
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
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
    tally(url, "merchant", "create", "Harbour Goods", "--store-url", "https://harbour.example")
    return url


def _row(output: str, label: str) -> str:
    match = re.search(rf"│ {re.escape(label)}\s+│ ([^│]+?)\s+│", output)
    assert match is not None, f"{label!r} not in:\n{output}"
    return match.group(1)


def test_import_customers_and_orders_from_the_command_line(cli_db: str, tmp_path: Path) -> None:
    template = tally(cli_db, "import", "template", "customers")
    assert template.stdout.splitlines()[0] == "email,first_name,last_name,points,birthday,vip_tier"
    tally(cli_db, "import", "template", "orders", "--output", str(tmp_path / "orders.csv"))
    assert (tmp_path / "orders.csv").read_text().startswith("order_id,email,total,")

    customers = tmp_path / "customers.csv"
    shutil.copy(FIXTURES / "customers_tally.csv", customers)

    # The store has no VIP tiers: the rows naming one are invalid and the file is refused.
    refused = tally(cli_db, "import", "customers", str(customers), check=False)
    assert refused.returncode == 2
    assert "2 of the 4 rows of customers.csv are not valid, so nothing was imported" in (
        " ".join(refused.stderr.split())
    )
    assert "blank: this store has no VIP tiers" in refused.stderr
    missing = tally(cli_db, "customer", "show", "wei.li@example.com", check=False)
    assert missing.returncode == 2

    # A dry run of a file the real run would refuse fails the same way, after its report.
    checked = tally(cli_db, "import", "customers", str(customers), "--dry-run", check=False)
    assert checked.returncode == 2
    assert "would be refused: 2 invalid rows" in " ".join(checked.stdout.split())
    assert _row(checked.stdout, "invalid rows") == "2"

    dry = tally(cli_db, "import", "customers", str(customers), "--dry-run", "--skip-invalid")
    assert "dry run: nothing was written" in dry.stdout
    assert _row(dry.stdout, "new customers would be created") == "2"
    assert _row(dry.stdout, "points would be issued") == "300"
    assert tally(cli_db, "customer", "show", "wei.li@example.com", check=False).returncode == 2

    done = tally(cli_db, "import", "customers", str(customers), "--skip-invalid")
    assert _row(done.stdout, "new customers created") == "2"
    assert _row(done.stdout, "invalid rows") == "2"
    assert _row(done.stdout, "points issued") == "300"
    assert "Importing" in done.stderr
    assert "rows/s" in done.stderr
    rejected = tmp_path / "customers.rejected.csv"
    assert "2 rejected rows written to" in done.stdout
    lines = rejected.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "email,first_name,last_name,points,birthday,vip_tier,reason"
    assert lines[1].startswith("ana.souza@example.com,Ana,Souza,1250,1990-04-17,Gold,")
    assert lines[2].startswith('jordan.okafor@example.org,Jordan,"Okafor, Jr.",0,1985/11/02,')
    assert len(lines) == 3
    assert "balance: 300 points" in tally(cli_db, "customer", "show", "wei.li@example.com").stdout

    # The same file again changes nothing.
    again = tally(cli_db, "import", "customers", str(customers), "--skip-invalid")
    assert _row(again.stdout, "new customers created") == "0"
    assert _row(again.stdout, "unchanged (skipped)") == "2"
    assert _row(again.stdout, "points issued") == "0"

    add = tally(
        cli_db,
        "import",
        "customers",
        str(FIXTURES / "customers_smile_io.csv"),
        "--points",
        "add",
    )
    assert _row(add.stdout, "customers updated") == "1"
    found = re.search(r"Import (\d+): customers from customers_smile_io.csv", add.stdout)
    assert found is not None
    job_id = found.group(1)
    assert "balance: 600 points" in tally(cli_db, "customer", "show", "wei.li@example.com").stdout

    orders = tally(cli_db, "import", "orders", str(FIXTURES / "orders_shopify.csv"), "--vip-only")
    assert _row(orders.stdout, "orders recorded") == "5"
    assert _row(orders.stdout, "guest customers created") == "0"
    assert "vip_only=True" in orders.stdout

    listed = tally(cli_db, "import", "list").stdout
    assert "customers.csv" in listed
    assert "orders_shopify.csv" in listed
    shown = tally(cli_db, "import", "show", job_id).stdout
    assert f"Import {job_id}: customers from customers_smile_io.csv" in shown
    assert "checksum (SHA-256):" in shown
    assert "started by cli" in shown

    reverted = tally(cli_db, "import", "revert", job_id)
    assert f"import {job_id} reverted" in reverted.stdout
    assert "balance: 300 points" in tally(cli_db, "customer", "show", "wei.li@example.com").stdout
    twice = tally(cli_db, "import", "revert", job_id, check=False)
    assert twice.returncode == 2
    assert f"import {job_id} was already reverted" in twice.stderr
    unknown = tally(cli_db, "import", "show", "99", check=False)
    assert unknown.returncode == 2
    assert "import 99 does not exist" in unknown.stderr
    assert "ok" in tally(cli_db, "ledger", "verify").stdout
