"""Dotdigital sync benchmark against the local emulator (run in its own process).

Run it with

    .venv/bin/python bench/sync.py                      (both parts, full size)
    .venv/bin/python bench/sync.py --customers 100000   (a smaller manual sync)
    .venv/bin/python bench/sync.py --only changes       (part b only)

(a) Manual sync: a merchant with --customers customers (1,000,000 by default, inserted in bulk,
    not timed) syncs every customer with `run_manual_sync`, the function behind
    `tally dotdigital sync --all`. Reported: API calls made (imports started, import status
    reads), wall time, contacts per second, and calls against the goal of at most 600. Then a
    random sample of contacts is read back from the emulator (not counted) and compared.
    --batch sets the contacts per import (default: Tally's, 5,000; Dotdigital's own plugins send
    about 2,000, which needs 1,000 calls per million contacts).
(b) Automatic sync: 2,000 customers, then --changes balance changes (10,000) spread evenly over
    --seconds (60) by a writer thread, each its own unit of work like an API request, while an
    in-process worker runs the outbox and the scheduled flush with production pacing (flush
    every 2 s, bulk import above 100 waiting contacts) and the installation's default call
    budget (TALLY_DOTDIGITAL_CALLS_PER_MINUTE, 30). Reported: API calls made against the goal
    of at most one per customer changed, and the time from the last change until every
    contact in the emulator holds the balance its ledger entries add up to.

Tally runs on SQLite files in a temporary directory (or on --database-url and
--changes-database-url: empty scratch databases, migrated here). The emulator runs as a separate
process (`python -m tally.devtools.dotdigital_emulator`) with imports finishing after
--import-delay seconds (1.0); its log goes to bench/results/sync-<time>-emulator.log and the
figures to bench/results/sync-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    RESULTS_DIR,
    BenchError,
    free_port,
    git_commit,
    timestamp,
    write_results,
)
from tally.integrations.dotdigital.sync import DEFAULT_OPTIONS

MANUAL_GOAL_CALLS = 600
COUNTED_ROUTES = (
    "PATCH /contacts/v3/email/{email}",
    "PUT /contacts/v3/import",
    "GET /contacts/v3/import/{import_id}",
)


# --- the emulator process --------------------------------------------------------------------


class Emulator:
    """The Dotdigital emulator in a subprocess, and its tooling endpoints."""

    def __init__(self, log_path: Path, import_delay: float) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tally.devtools.dotdigital_emulator",
                "--port",
                str(self.port),
                "--import-delay",
                str(import_delay),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=self.base_url, timeout=600)
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise BenchError("the emulator exited at start; see its log")
            try:
                self.http.get("/_emulator/calls")
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise BenchError("the emulator did not start") from None
                time.sleep(0.1)

    def counts(self) -> dict[str, int]:
        """Calls per route so far."""
        body = self.http.get("/_emulator/calls").json()
        return dict(body["callCounts"])

    def reset(self) -> None:
        """Forget contacts, fields, imports and counts."""
        self.http.post("/_emulator/reset")

    def contacts(self) -> dict[str, dict[str, Any]]:
        """Every contact of the demo account (only for small accounts: this is one response)."""
        state = self.http.get("/_emulator/state").json()
        account = next(iter(state["accounts"].values()))
        return {email: c["dataFields"] for email, c in account["contacts"].items()}

    def stop(self) -> None:
        """Terminate the process."""
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self._log.close()


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {route: after.get(route, 0) - before.get(route, 0) for route in COUNTED_ROUTES}


# --- Tally setup -----------------------------------------------------------------------------


def _tally(database_url: str, emulator_url: str, calls_per_minute: int | None) -> Any:
    """Settings and a session factory on a freshly migrated database."""
    from tally.config import Settings, WorkerMode
    from tally.db import migrate
    from tally.db.engine import make_engine, make_session_factory

    updates: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "worker_mode": WorkerMode.OFF,
        "public_base_url": "https://shop.example.com",
        "dotdigital_base_url": emulator_url,
        "worker_poll_seconds": 0.2,
    }
    if calls_per_minute is not None:
        updates["dotdigital_calls_per_minute"] = calls_per_minute
    settings = Settings(**updates, _env_file=None)
    engine = make_engine(database_url, pool_size=10)
    migrate.upgrade(engine)
    return settings, make_session_factory(engine)


def _merchant(factory: Any) -> int:
    from tally.db.engine import unit_of_work
    from tally.merchants import service as merchants
    from tally.program.config_service import update_program

    with unit_of_work(factory) as session:
        merchant = merchants.create_merchant(
            session, name="Bench store", store_url="https://shop.example.com"
        )
        tiers = [
            {"id": "silver", "name": "Silver Circle", "threshold": "100"},
            {"id": "gold", "name": "Gold Circle", "threshold": "500"},
        ]
        update_program(
            session, merchant_id=merchant.id, changes={"vip": {"enabled": True, "tiers": tiers}}
        )
        return int(merchant.id)


def _insert_customers(factory: Any, merchant_id: int, count: int, *, ledger: bool) -> None:
    """Bulk insert (with an opening ledger entry each when ``ledger``), 10,000 rows at a time."""
    from sqlalchemy import insert, select

    from tally.customers.orm import Customer
    from tally.db.base import utcnow
    from tally.db.engine import unit_of_work
    from tally.ledger.orm import LedgerEntry

    now = utcnow()
    for start in range(0, count, 10_000):
        rows = [
            {
                "merchant_id": merchant_id,
                "email": f"customer{i}@bench.example.com",
                "state": "member",
                "referral_code": f"R{i:09d}",
                "points_balance": (i * 37) % 5000,
                "birthday": date(1970 + i % 40, 1 + i % 12, 1 + i % 28) if i % 3 == 0 else None,
                "vip_tier": ("gold" if i % 10 == 0 else "silver") if i % 5 == 0 else None,
                # Consenting: the sync creates contacts only for them (a lookup each otherwise).
                "accepts_marketing": True,
                "created_at": now,
                "updated_at": now,
            }
            for i in range(start, min(count, start + 10_000))
        ]
        with unit_of_work(factory) as session:
            session.execute(insert(Customer.__table__), rows)
            if ledger:
                ids = dict(
                    session.execute(
                        select(Customer.referral_code, Customer.id).where(
                            Customer.referral_code.in_([r["referral_code"] for r in rows])
                        )
                    ).all()
                )
                entries = [
                    {
                        "merchant_id": merchant_id,
                        "customer_id": ids[r["referral_code"]],
                        "points": r["points_balance"],
                        "kind": "import",
                        "reason": "bench",
                        "idempotency_key": f"bench:{r['referral_code']}",
                        "remaining": r["points_balance"],
                        "created_at": now,
                    }
                    for r in rows
                    if r["points_balance"]
                ]
                session.execute(insert(LedgerEntry.__table__), entries)


def _connect(settings: Any, factory: Any, merchant_id: int, calls_per_minute: int | None) -> None:
    from sqlalchemy import update

    from tally.db.engine import unit_of_work
    from tally.devtools.dotdigital_emulator import DEMO_PASSWORD, DEMO_USERNAME
    from tally.integrations.dotdigital import service
    from tally.integrations.dotdigital.orm import DotdigitalConnection

    def uow() -> AbstractContextManager[Any]:
        return unit_of_work(factory, merchant_id=merchant_id)

    service.save_credentials(
        uow,
        merchant_id=merchant_id,
        username=DEMO_USERNAME,
        password=DEMO_PASSWORD,
        settings=settings,
    )
    service.enable(uow, merchant_id=merchant_id, settings=settings)
    if calls_per_minute is not None:
        with unit_of_work(factory) as session:
            session.execute(update(DotdigitalConnection).values(calls_per_minute=calls_per_minute))


def _expected(settings: Any, row: Any) -> dict[str, Any]:
    tiers = {"silver": "Silver Circle", "gold": "Gold Circle"}
    values: dict[str, Any] = {
        "LOYALTY_POINTS": row.points_balance,
        "LOYALTY_REFERRAL_URL": f"{settings.public_base_url}/r/{row.referral_code}",
    }
    if row.birthday is not None:
        values["LOYALTY_BIRTHDAY"] = f"{row.birthday.isoformat()}T00:00:00+00:00"
    if row.vip_tier is not None:
        values["LOYALTY_VIP_TIER"] = tiers[row.vip_tier]
    return values


# --- (a) manual sync -------------------------------------------------------------------------


def bench_manual(args: argparse.Namespace, emulator: Emulator, workdir: Path) -> dict[str, Any]:
    """Sync every customer once; count calls and time."""
    import dataclasses

    from sqlalchemy import func, select

    from tally.customers.orm import Customer
    from tally.db.engine import unit_of_work
    from tally.devtools.dotdigital_emulator import DEMO_PASSWORD, DEMO_USERNAME
    from tally.integrations.dotdigital import service
    from tally.integrations.dotdigital.client import HttpDotdigitalClient
    from tally.integrations.dotdigital.service import JobView
    from tally.integrations.dotdigital.sync import DEFAULT_OPTIONS, run_manual_sync

    emulator.reset()
    url = args.database_url or f"sqlite:///{workdir / 'manual.db'}"
    settings, factory = _tally(url, emulator.base_url, None)
    merchant_id = _merchant(factory)
    started = time.monotonic()
    _insert_customers(factory, merchant_id, args.customers, ledger=False)
    insert_seconds = time.monotonic() - started
    print(f"(a) inserted {args.customers:,} customers in {insert_seconds:.1f} s")
    _connect(settings, factory, merchant_id, args.manual_budget)

    with unit_of_work(factory, merchant_id=merchant_id) as session:
        job_id = service.start_manual_sync(session, merchant_id=merchant_id).id
    options = dataclasses.replace(DEFAULT_OPTIONS, import_batch_size=args.batch)
    before = emulator.counts()
    last_print = [0.0]

    def progress(view: JobView) -> None:
        now = time.monotonic()
        if now - last_print[0] >= 10:
            last_print[0] = now
            print(
                f"    {now - started:6.1f} s  sent {view.sent:>9,}  done {view.processed:>9,}"
                f"  imports running {view.imports_running}",
                flush=True,
            )

    started = time.monotonic()
    view = run_manual_sync(settings, factory, job_id, options=options, progress=progress)
    wall = time.monotonic() - started
    calls = _delta(emulator.counts(), before)
    total_calls = sum(calls.values())

    # Read a sample back from the emulator (these reads are not counted above).
    with factory() as session:
        highest = session.scalar(select(func.max(Customer.id))) or 0
        sample_ids = random.Random(7).sample(range(1, highest + 1), min(args.sample, highest))
        rows = session.execute(
            select(
                Customer.email,
                Customer.points_balance,
                Customer.birthday,
                Customer.vip_tier,
                Customer.referral_code,
            ).where(Customer.id.in_(sample_ids))
        ).all()
    mismatches = 0
    with HttpDotdigitalClient(DEMO_USERNAME, DEMO_PASSWORD, emulator.base_url, 30) as client:
        for row in rows:
            contact = client.get_contact(row.email)
            got = {
                k: v for k, v in (contact.data_fields if contact else {}).items() if v is not None
            }
            want = {k: v for k, v in _expected(settings, row).items()}
            if got != want:
                mismatches += 1
    return {
        "customers": args.customers,
        "contacts_per_import": args.batch,
        "calls_per_minute_budget": args.manual_budget,
        "job": {
            "status": view.status,
            "total": view.total,
            "sent": view.sent,
            "created": view.created,
            "updated": view.updated,
            "failed": view.failed,
            "imports": view.imports,
        },
        "calls": calls,
        "total_calls": total_calls,
        "goal_calls": MANUAL_GOAL_CALLS,
        "calls_vs_goal": total_calls / MANUAL_GOAL_CALLS,
        "wall_seconds": wall,
        "contacts_per_second": args.customers / wall if wall else None,
        "insert_seconds": insert_seconds,
        "sampled": len(rows),
        "sample_mismatches": mismatches,
    }


# --- (b) automatic sync ----------------------------------------------------------------------


def bench_changes(args: argparse.Namespace, emulator: Emulator, workdir: Path) -> dict[str, Any]:
    """Balance changes at a steady pace while the worker syncs; count calls, time to converge."""
    from sqlalchemy import func, select

    from tally.customers.orm import Customer
    from tally.db.engine import unit_of_work
    from tally.integrations.dotdigital.handlers import register
    from tally.ledger import service as ledger
    from tally.ledger.orm import LedgerEntry
    from tally.outbox.orm import OutboxMessage
    from tally.outbox.registry import default_registry
    from tally.outbox.worker import Worker

    emulator.reset()
    url = args.changes_database_url or f"sqlite:///{workdir / 'changes.db'}"
    settings, factory = _tally(url, emulator.base_url, args.auto_budget)
    merchant_id = _merchant(factory)
    _insert_customers(factory, merchant_id, args.change_customers, ledger=True)
    _connect(settings, factory, merchant_id, None)
    register(default_registry)
    with factory() as session:
        ids = list(session.scalars(select(Customer.id).where(Customer.merchant_id == merchant_id)))
    worker = Worker(settings=settings, session_factory=factory, registry=default_registry)
    thread = worker.start_thread()
    before = emulator.counts()
    rng = random.Random(11)
    changed: set[int] = set()
    errors: list[str] = []
    interval = args.seconds / args.changes

    def write() -> None:
        start = time.monotonic()
        for n in range(args.changes):
            delay = start + n * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            customer_id = rng.choice(ids)
            changed.add(customer_id)
            try:
                with unit_of_work(factory, merchant_id=merchant_id) as session:
                    customer = session.get(Customer, customer_id)
                    assert customer is not None
                    points = rng.randint(1, 50)
                    if customer.points_balance >= points and rng.random() < 0.3:
                        points = -points
                    ledger.adjust(
                        session,
                        customer=customer,
                        points=points,
                        reason="bench",
                        idempotency_key=f"bench-change:{n}",
                    )
            except Exception as error:
                errors.append(repr(error))

    print(
        f"(b) {args.changes:,} balance changes over {args.seconds:.0f} s across "
        f"{args.change_customers:,} customers; budget {settings.dotdigital_calls_per_minute} "
        "calls/min",
        flush=True,
    )
    started = time.monotonic()
    writer = threading.Thread(target=write, name="bench-writer")
    writer.start()
    writer.join()
    load_seconds = time.monotonic() - started
    ended = time.monotonic()

    def ledger_balances() -> dict[str, int]:
        with factory() as session:
            rows = session.execute(
                select(Customer.email, func.coalesce(func.sum(LedgerEntry.points), 0))
                .outerjoin(LedgerEntry, LedgerEntry.customer_id == Customer.id)
                .where(Customer.merchant_id == merchant_id)
                .group_by(Customer.email)
            ).all()
        return {email: int(total) for email, total in rows}

    def outbox_waiting() -> int:
        with factory() as session:
            return int(
                session.scalar(
                    select(func.count(OutboxMessage.id)).where(
                        OutboxMessage.status.in_(["pending", "processing"])
                    )
                )
                or 0
            )

    outbox_at_end = outbox_waiting()
    truth = ledger_balances()
    with factory() as session:
        changed_emails = set(
            session.scalars(select(Customer.email).where(Customer.id.in_(sorted(changed))))
        )
    converged_after: float | None = None
    outbox_drained_after: float | None = 0.0 if outbox_at_end == 0 else None
    deadline = ended + args.converge_timeout
    while time.monotonic() < deadline:
        if outbox_drained_after is None and outbox_waiting() == 0:
            outbox_drained_after = time.monotonic() - ended
        contacts = emulator.contacts()
        # Customers never changed were never sent: connecting does not backfill.
        behind = sum(
            1
            for email in changed_emails
            if contacts.get(email, {}).get("LOYALTY_POINTS") != truth[email]
        )
        if behind == 0:
            converged_after = time.monotonic() - ended
            break
        time.sleep(0.5)
    worker.stop()
    thread.join(30)
    calls = _delta(emulator.counts(), before)
    total_calls = sum(calls.values())
    with factory() as session:
        outbox_left = session.scalar(
            select(func.count(OutboxMessage.id)).where(OutboxMessage.status != "done")
        )
    return {
        "changes": args.changes,
        "customers": args.change_customers,
        "customers_changed": len(changed),
        "load_seconds": load_seconds,
        "write_errors": len(errors),
        "first_errors": errors[:3],
        "calls_per_minute_budget": settings.dotdigital_calls_per_minute,
        "calls": calls,
        "total_calls": total_calls,
        "goal_calls": len(changed),
        "calls_vs_goal": total_calls / len(changed) if changed else None,
        "seconds_until_emulator_matches_ledger": converged_after,
        "outbox_waiting_at_last_change": outbox_at_end,
        "seconds_until_outbox_drained": outbox_drained_after,
        "outbox_not_done_at_end": outbox_left,
    }


# --- main ------------------------------------------------------------------------------------


def _report_manual(result: dict[str, Any]) -> None:
    calls = result["calls"]
    print(
        f"(a) manual sync of {result['customers']:,} customers, "
        f"{result['contacts_per_import']:,} per import: {result['job']['status']}, "
        f"created {result['job']['created']:,}, failed {result['job']['failed']:,}"
    )
    print(
        f"    API calls {result['total_calls']:,} (imports {calls['PUT /contacts/v3/import']}, "
        f"status reads {calls['GET /contacts/v3/import/{import_id}']}, single upserts "
        f"{calls['PATCH /contacts/v3/email/{email}']}); goal <= {MANUAL_GOAL_CALLS}: ratio "
        f"{result['calls_vs_goal']:.2f}"
    )
    print(
        f"    wall time {result['wall_seconds']:.1f} s "
        f"({result['contacts_per_second']:,.0f} contacts/s); sample of {result['sampled']:,} "
        f"read back: {result['sample_mismatches']} mismatches"
    )


def _report_changes(result: dict[str, Any]) -> None:
    calls = result["calls"]
    converged = result["seconds_until_emulator_matches_ledger"]
    print(
        f"(b) {result['changes']:,} changes to {result['customers_changed']:,} customers in "
        f"{result['load_seconds']:.1f} s ({result['write_errors']} write errors)"
    )
    print(
        f"    API calls {result['total_calls']:,} (single upserts "
        f"{calls['PATCH /contacts/v3/email/{email}']}, imports {calls['PUT /contacts/v3/import']},"
        f" status reads {calls['GET /contacts/v3/import/{import_id}']}); goal <= "
        f"{result['goal_calls']:,} (one per customer): ratio {result['calls_vs_goal']:.3f}"
    )
    print(
        f"    outbox messages waiting at the last change: "
        f"{result['outbox_waiting_at_last_change']:,} (drained "
        f"{result['seconds_until_outbox_drained'] or 0:.1f} s later)"
    )
    if converged is None:
        print("    the emulator did NOT match the ledger before the timeout")
    else:
        print(f"    emulator matched the ledger {converged:.1f} s after the last change")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 when the data did not end up right."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["manual", "changes"], default=None)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_OPTIONS.import_batch_size,
        help="contacts per import",
    )
    parser.add_argument(
        "--manual-budget",
        type=int,
        default=100_000,
        help="calls per minute allowed to the manual sync (default: effectively unlimited)",
    )
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--change-customers", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--auto-budget", type=int, default=None, help="calls per minute (default: the setting)"
    )
    parser.add_argument("--converge-timeout", type=float, default=120.0)
    parser.add_argument("--import-delay", type=float, default=1.0)
    parser.add_argument("--database-url", default=None, help="scratch database for part a")
    parser.add_argument("--changes-database-url", default=None, help="scratch database for b")
    args = parser.parse_args(argv)

    stamp = timestamp()
    emulator = Emulator(RESULTS_DIR / f"sync-{stamp}-emulator.log", args.import_delay)
    results: dict[str, Any] = {"commit": git_commit(), "started": stamp, "cpus": os.cpu_count()}
    ok = True
    try:
        with tempfile.TemporaryDirectory(prefix="tally-bench-sync-") as tmp:
            if args.only in (None, "manual"):
                manual = bench_manual(args, emulator, Path(tmp))
                results["manual"] = manual
                _report_manual(manual)
                ok &= manual["job"]["status"] == "finished" and manual["sample_mismatches"] == 0
            if args.only in (None, "changes"):
                changes = bench_changes(args, emulator, Path(tmp))
                results["changes"] = changes
                _report_changes(changes)
                ok &= changes["seconds_until_emulator_matches_ledger"] is not None
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        emulator.stop()
    path = write_results("sync", stamp, results)
    print(f"results: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
