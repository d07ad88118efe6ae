"""Benchmark: expire the balances of 1,000,000 customers on SQLite.

Seeds N customers (default 1,000,000) with one credit each whose last balance change is older
than the rolling expiry period, then runs the expiry job and reports the time, rows per second
and the peak memory of the process. To show that memory does not grow with the number of
customers, the same run is repeated on a tenth of the customers first, and both peaks are
printed: a job that held every customer would need about ten times more for the larger run.

    .venv/bin/python bench/expiry.py                 # 1,000,000 customers
    .venv/bin/python bench/expiry.py --customers 100000

Each size runs in a fresh child process, so the peak RSS is that run's own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

SEED_CHUNK = 50_000


def seed(db_path: Path, customers: int) -> int:
    """Create the schema, a merchant with rolling expiry, and `customers` customers with credits."""
    import sqlite3

    from tally.db import migrate
    from tally.db.engine import make_engine, make_session_factory, unit_of_work
    from tally.merchants.service import create_merchant
    from tally.program.config_service import update_program

    engine = make_engine(f"sqlite:///{db_path}")
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    enabled_at = datetime.now(UTC) - timedelta(days=400)
    with unit_of_work(factory) as session:
        merchant = create_merchant(session, name="Bench", store_url="https://bench.example")
        update_program(
            session,
            merchant_id=merchant.id,
            changes={
                "expiry": {"mode": "rolling", "days": 365, "enabled_at": enabled_at.isoformat()}
            },
        )
        merchant_id = merchant.id
    engine.dispose()
    last_change = (datetime.now(UTC) - timedelta(days=366)).strftime("%Y-%m-%d %H:%M:%S.%f")
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    for start in range(0, customers, SEED_CHUNK):
        ids = range(start + 1, min(start + SEED_CHUNK, customers) + 1)
        conn.executemany(
            "INSERT INTO customers (id, merchant_id, email, state, referral_code, points_balance,"
            " created_at, updated_at, last_activity_at) VALUES (?, ?, ?, 'member', ?, ?, ?, ?, ?)",
            (
                (
                    i,
                    merchant_id,
                    f"c{i}@bench.example",
                    f"B{i:09d}",
                    100 + i % 900,
                    last_change,
                    last_change,
                    last_change,
                )
                for i in ids
            ),
        )
        conn.executemany(
            "INSERT INTO ledger_entries (merchant_id, customer_id, points, kind, reason,"
            " idempotency_key, remaining, created_at) VALUES (?, ?, ?, 'import', '', ?, ?, ?)",
            ((merchant_id, i, 100 + i % 900, f"seed:{i}", 100 + i % 900, last_change) for i in ids),
        )
        conn.commit()
    conn.close()
    return merchant_id


def run_one(customers: int) -> dict[str, float]:
    """Seed and expire in this process; returns the measurements."""
    from sqlalchemy import func, select

    from tally.config import Settings
    from tally.db.engine import make_engine, make_session_factory
    from tally.ledger.orm import EntryKind, LedgerEntry
    from tally.outbox.registry import load_plugins
    from tally.program.jobs import expire_points

    load_plugins(Settings(_env_file=None))  # type: ignore[call-arg]
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "bench.db"
        t0 = time.perf_counter()
        merchant_id = seed(db_path, customers)
        seeded = time.perf_counter() - t0
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        factory = make_session_factory(make_engine(f"sqlite:///{db_path}"))
        t1 = time.perf_counter()
        stats = expire_points(factory, merchant_id=merchant_id)
        elapsed = time.perf_counter() - t1
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with factory() as session:
            expired = session.scalar(
                select(func.count()).where(LedgerEntry.kind == EntryKind.EXPIRE)
            )
        assert stats.customers == customers == expired, (stats, expired)
        return {
            "customers": customers,
            "seed_seconds": round(seeded, 2),
            "expiry_seconds": round(elapsed, 2),
            "rows_per_second": round(customers / elapsed),
            "peak_rss_mb_before_job": round(rss_before, 1),
            "peak_rss_mb": round(rss_after, 1),
        }


def main() -> None:
    """Run both sizes in child processes and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.customers)))
        return
    results = []
    for size in (max(args.customers // 10, 1), args.customers):
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--customers", str(size)],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    small, large = results
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"bench/expiry.py on SQLite, commit {commit}")
    print(f"{'customers':>10} {'seconds':>8} {'rows/s':>9} {'peak RSS MB':>12}")
    for r in results:
        print(
            f"{r['customers']:>10} {r['expiry_seconds']:>8} {r['rows_per_second']:>9} {r['peak_rss_mb']:>12}"
        )
    growth = large["peak_rss_mb"] / small["peak_rss_mb"]
    print(
        f"memory: {large['customers'] // small['customers']}x the customers took {growth:.2f}x the "
        "peak RSS (flat memory: close to 1x)"
    )


if __name__ == "__main__":
    main()
