"""Import benchmark: 1,000,000 customers and 1,000,000 orders on SQLite, next to `sqlite3 .import`.

Run it with

    .venv/bin/python bench/import.py                          (1,000,000 rows of each)
    .venv/bin/python bench/import.py --rows 100000            (a quick look)

What it does:

1. Generates, in a temporary directory (or --dir, where files are reused when they exist), a
   customer file in the Tally template layout (email, first and last name, points, birthday
   for a third of them) and an order file in the Tally template layout (88% paid, 4% refunded,
   4% partially refunded with an amount, 2% cancelled, 2% pending; 85% of the orders by the
   imported customers, 15% by guests not in the customer file, spread over two years).
2. Creates a fresh SQLite database (`tally migrate`), a merchant whose program gives 1 point
   per currency unit on orders and has three VIP tiers on the amount spent (--no-vip leaves
   them out), with the built-in outbox handlers loaded as `tally import` loads them (so events
   for the subscribed handlers are written to the outbox too).
3. Imports the customer file, then the order file, each with the same service call
   `tally import customers|orders FILE` makes, in a child process of its own so that its peak
   RSS is its own. Each child checks afterwards that every balance equals its ledger.
4. Loads the same customer file with the `sqlite3` command-line shell, `.import` into a plain
   table of a fresh database, --sqlite-rounds times (before, between and after the imports, to
   spread the machine's noise); the median is the reference.
5. Prints seconds, rows/s, peak RSS and the ratio to `.import` for both imports, against the
   goals (customers <= 4x, orders <= 6x, peak RSS < 300 MB), and writes the figures to
   bench/results/import-<time>.json.

Exit status: 0 when every import completed with exact balances (the goals are reported, not
enforced), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BenchError, git_commit, timestamp, write_results

GOALS = {"customers": 4.0, "orders": 6.0}
RSS_GOAL_MB = 300
FIRST_NAMES = [
    "ana",
    "wei",
    "jordan",
    "zoe",
    "kofi",
    "mary",
    "hollis",
    "teodoro",
    "amara",
    "liam",
    "olga",
    "yusuf",
    "ines",
    "mateo",
    "priya",
    "noah",
    "elena",
    "omar",
    "sofia",
    "ravi",
    "lena",
    "tariq",
    "marta",
    "jonas",
    "aiko",
    "pablo",
    "nadia",
    "felix",
    "chen",
    "rosa",
]
LAST_NAMES = [
    "souza",
    "li",
    "okafor",
    "muller",
    "mensah",
    "whitfield",
    "pettibone",
    "villasenor",
    "adeyemi",
    "novak",
    "ivanova",
    "haddad",
    "garcia",
    "rossi",
    "patel",
    "kim",
    "larsen",
    "dubois",
    "silva",
    "nakamura",
    "weber",
    "costa",
    "khan",
    "moreau",
]
DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "shop.example")

PROGRAM = {
    "place_order": {"enabled": True, "points_per_unit": "1"},
    "vip": {
        "enabled": True,
        "metric": "amount_spent",
        "window": {"kind": "lifetime"},
        "tiers": [
            {"id": "silver", "name": "Silver", "threshold": "500", "entry_reward_points": 50},
            {
                "id": "gold",
                "name": "Gold",
                "threshold": "2000",
                "multiplier": "1.5",
                "entry_reward_points": 200,
            },
            {"id": "platinum", "name": "Platinum", "threshold": "6000", "multiplier": "2"},
        ],
    },
}


# --- the files ------------------------------------------------------------------------------------


def customer_email(rng: random.Random, number: int) -> str:
    """A realistic address, unique by its number (so files sort in no particular order)."""
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    return f"{first}.{last}{number}@{DOMAINS[number % len(DOMAINS)]}"


def generate(directory: Path, rows: int) -> tuple[Path, Path]:
    """The customer and order files (reused when already there with the right number of rows)."""
    customers = directory / f"customers-{rows}.csv"
    orders = directory / f"orders-{rows}.csv"
    if customers.exists() and orders.exists():
        return customers, orders
    rng = random.Random(20240305)
    emails = [customer_email(rng, number) for number in range(rows)]
    with customers.open("w", encoding="utf-8", newline="") as out:
        out.write("email,first_name,last_name,points,birthday,vip_tier\n")
        for number, email in enumerate(emails):
            first, last = email.split("@", 1)[0].split(".", 1)
            birthday = (
                f"{1950 + number % 55}-{1 + number % 12:02d}-{1 + number % 28:02d}"
                if number % 3 == 0
                else ""
            )
            points = rng.randrange(0, 5000) if number % 10 else 0
            out.write(
                f"{email},{first.title()},{last.rstrip('0123456789').title()},{points},"
                f"{birthday},\n"
            )
    guests = max(rows // 20, 1)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with orders.open("w", encoding="utf-8", newline="") as out:
        out.write(
            "order_id,email,total,subtotal,discounts,shipping,tax,currency,status,placed_at,"
            "refunded_amount\n"
        )
        for number in range(rows):
            if rng.random() < 0.85:
                email = emails[rng.randrange(rows)]
            else:
                email = f"guest{rng.randrange(guests)}@guest.example"
            subtotal = rng.randrange(500, 50000) / 100
            discounts = round(subtotal * 0.1, 2) if number % 7 == 0 else 0.0
            shipping = 4.95 if number % 3 else 0.0
            tax = round((subtotal - discounts) * 0.08, 2)
            total = round(subtotal - discounts + shipping + tax, 2)
            draw = rng.random()
            refunded = ""
            status = "paid"
            if draw < 0.04:
                status = "refunded"
            elif draw < 0.08:
                status = "partially_refunded"
                refunded = f"{total / 4:.2f}"
            elif draw < 0.10:
                status = "cancelled"
            elif draw < 0.12:
                status = "pending"
            placed = start + timedelta(seconds=rng.randrange(0, 730 * 86400))
            out.write(
                f"B{100000 + number},{email},{total:.2f},{subtotal:.2f},{discounts:.2f},"
                f"{shipping:.2f},{tax:.2f},USD,{status},{placed:%Y-%m-%dT%H:%M:%SZ},{refunded}\n"
            )
    return customers, orders


# --- children -------------------------------------------------------------------------------------


def child_setup(db: Path, vip: bool) -> dict[str, Any]:
    """Migrate a fresh database and create the merchant."""
    from tally.db import migrate
    from tally.db.engine import make_engine, make_session_factory, unit_of_work
    from tally.merchants.service import create_merchant
    from tally.program.config_service import update_program

    engine = make_engine(f"sqlite:///{db}")
    migrate.upgrade(engine)
    with unit_of_work(make_session_factory(engine)) as session:
        merchant = create_merchant(session, name="Bench", store_url="https://bench.example")
        program = dict(PROGRAM) if vip else {"place_order": PROGRAM["place_order"]}
        update_program(session, merchant_id=merchant.id, changes=program)
        return {"merchant_id": merchant.id}


def child_import(db: Path, kind: str, path: Path, merchant_id: int) -> dict[str, Any]:
    """Import one file as `tally import` does; measure it; check the ledger afterwards."""
    from sqlalchemy import func, select

    from tally.config import Settings
    from tally.db.engine import make_engine, make_session_factory
    from tally.imports import service
    from tally.ledger.service import verify_balances
    from tally.outbox.orm import OutboxMessage
    from tally.outbox.registry import load_plugins

    load_plugins(Settings(_env_file=None))  # type: ignore[call-arg]
    factory = make_session_factory(make_engine(f"sqlite:///{db}"))
    options: service.ImportOptions = (
        service.CustomerImportOptions() if kind == "customers" else service.OrderImportOptions()
    )
    with factory() as session:
        outbox_before = session.scalar(select(func.count(OutboxMessage.id))) or 0
    cpu = time.process_time()
    started = time.perf_counter()
    job = service.run_import(factory, merchant_id=merchant_id, path=path, options=options)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with factory() as session:
        mismatches = len(list(verify_balances(session, merchant_id=merchant_id)))
        outbox = (session.scalar(select(func.count(OutboxMessage.id))) or 0) - outbox_before
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "peak_rss_mb": round(rss_mb, 1),
        "status": job.status,
        "rows": job.total_rows,
        "new": job.new_count,
        "updated": job.updated_count,
        "skipped": job.skipped_count,
        "customers_created": job.customers_created,
        "invalid": job.invalid_count,
        "points_issued": job.points_issued,
        "outbox_rows": outbox,
        "balance_mismatches": mismatches,
    }


def run_child(*args: str) -> dict[str, Any]:
    """Run this script as a child with `args`; its last output line is JSON."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"child {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- sqlite3 .import ------------------------------------------------------------------------------


def sqlite_import(sqlite3: str, csv_path: Path, work: Path) -> float:
    """Seconds for the sqlite3 shell to `.import` the file into a plain table of a fresh db."""
    db = work / "plain.db"
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run(
        [sqlite3, str(db), ".mode csv", f".import {csv_path} plain"],
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - started
    count = subprocess.run(
        [sqlite3, str(db), "SELECT count(*) FROM plain"], check=True, capture_output=True, text=True
    ).stdout.strip()
    db.unlink()
    if int(count) <= 0:
        raise BenchError(".import loaded nothing")
    return seconds


# --- main -----------------------------------------------------------------------------------------


def main() -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in each file")
    parser.add_argument("--dir", type=Path, help="keep the generated files here")
    parser.add_argument("--sqlite-rounds", type=int, default=3)
    parser.add_argument("--no-vip", action="store_true", help="no VIP tiers in the program")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        role, *rest = args.child
        if role == "setup":
            print(json.dumps(child_setup(Path(rest[0]), rest[1] == "vip")))
        else:
            print(json.dumps(child_import(Path(rest[0]), role, Path(rest[1]), int(rest[2]))))
        return 0

    sqlite3 = shutil.which("sqlite3")
    if sqlite3 is None:
        raise BenchError("the sqlite3 shell is missing (Debian: apt-get install sqlite3)")
    version = subprocess.run([sqlite3, "--version"], capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory(prefix="tally-bench-import-") as tmp:
        work = Path(tmp)
        files = args.dir or work
        files.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        customers_csv, orders_csv = generate(files, args.rows)
        print(
            f"files ready in {time.perf_counter() - started:.1f} s: {customers_csv.name} "
            f"({customers_csv.stat().st_size / 1e6:.0f} MB), {orders_csv.name} "
            f"({orders_csv.stat().st_size / 1e6:.0f} MB)",
            flush=True,
        )
        db = work / "tally.db"
        merchant_id = run_child("setup", str(db), "novip" if args.no_vip else "vip")["merchant_id"]

        rounds = max(args.sqlite_rounds, 1)
        plain: list[float] = []
        # .import runs spread around the imports, so both see the machine in a similar mood.
        plain.append(sqlite_import(sqlite3, customers_csv, work))
        results: dict[str, dict[str, Any]] = {}
        for kind, path in (("customers", customers_csv), ("orders", orders_csv)):
            print(f"importing {kind} ...", flush=True)
            results[kind] = run_child(kind, str(db), str(path), str(merchant_id))
            if len(plain) < rounds:
                plain.append(sqlite_import(sqlite3, customers_csv, work))
        while len(plain) < rounds:
            plain.append(sqlite_import(sqlite3, customers_csv, work))
    reference = statistics.median(plain)

    print()
    print(f"bench/import.py on SQLite, commit {git_commit()}, {args.rows:,} rows per file")
    print(
        f"sqlite3 {version.split()[0]} .import of the customer file: "
        f"{', '.join(f'{s:.2f}' for s in plain)} s (median {reference:.2f} s, "
        f"{args.rows / reference:,.0f} rows/s)"
    )
    header = f"{'import':<10} {'seconds':>8} {'cpu s':>7} {'rows/s':>9} {'peak RSS MB':>12} {'x .import':>10} {'goal':>6}  result"
    print(header)
    ok = True
    for kind, result in results.items():
        ratio = result["seconds"] / reference
        result["rows_per_second"] = round(args.rows / result["seconds"])
        result["ratio_to_sqlite_import"] = round(ratio, 2)
        met = ratio <= GOALS[kind] and result["peak_rss_mb"] < RSS_GOAL_MB
        print(
            f"{kind:<10} {result['seconds']:>8.2f} {result['cpu_seconds']:>7.2f} "
            f"{result['rows_per_second']:>9,} {result['peak_rss_mb']:>12.1f} {ratio:>9.2f}x "
            f"{GOALS[kind]:>5.0f}x  {'met' if met else 'NOT met'}"
        )
        ok = ok and result["status"] == "completed" and result["balance_mismatches"] == 0
    for kind, result in results.items():
        print(
            f"{kind}: {result['new']:,} new, {result['updated']:,} updated, "
            f"{result['skipped']:,} skipped, {result['customers_created']:,} customers created, "
            f"{result['points_issued']:,} points, {result['outbox_rows']:,} outbox rows, "
            f"balances {'exact' if result['balance_mismatches'] == 0 else 'WRONG'}"
        )
    print(f"peak RSS goal: < {RSS_GOAL_MB} MB")
    path = write_results(
        "import",
        timestamp(),
        {
            "commit": git_commit(),
            "rows": args.rows,
            "vip": not args.no_vip,
            "sqlite_import_seconds": plain,
            "sqlite_import_median": reference,
            "results": results,
        },
    )
    print(f"results: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
