"""Ledger benchmark: "adjust points" over HTTP on PostgreSQL, next to pgbench on the same server.

Run it with

    make bench                                              (the defaults below)
    .venv/bin/python bench/ledger.py                        (3 rounds x 20 s per side)
    .venv/bin/python bench/ledger.py --rounds 1 --seconds 5 (a quick look)

What it does:

1. PostgreSQL: TALLY_BENCH_POSTGRES_URL, or the private server `scripts/postgres.sh` starts. On it
   the database `tally_bench` is dropped and created again, and `pgbench_bench` is created (if
   missing) and loaded with `pgbench -i -s <clients>`. Nothing else on the server is touched.
2. Tally: `tally migrate`, then a merchant, an API key and 1,000 customers with 1,000 points each
   (through the services), then `tally serve --workers 2` in a subprocess with
   TALLY_WORKER_MODE=separate (no worker runs, so the outbox only fills up) and
   TALLY_ENVIRONMENT=development. Its log goes to bench/results/ledger-<time>-server.log.
3. Rounds, interleaved (the order alternates so that neither side always runs on a warmer
   machine): 8 client threads, each with its own keep-alive httpx connection, POST
   /api/v1/customers/{id}/adjustments for random customers with small positive or negative points
   and a unique Idempotency-Key, as fast as they can for --seconds; and
   `pgbench -b tpcb-like -c 8 -j 2 -T <seconds> -n` on pgbench_bench, with a per-transaction log
   for its percentiles.
4. A table of every round and the medians: Tally tps, p50/p99 latency, 409s (insufficient points,
   expected now and then), errors (anything else that is not 2xx), the CPU used by the load
   generator and the server; pgbench tps, average/p50/p99 latency; the ratio Tally tps / pgbench
   tps (goal >= 0.5). Then a check that every balance still equals the sum of its ledger entries.
   The results go to bench/results/ledger-<time>.json (git-ignored).

Both load generators share the machine's CPUs with the servers they measure; the Python client
costs far more CPU per request than pgbench does, and that CPU is reported so the figures can be
read with it in mind. On a shared, noisy machine compare medians of several rounds, not one run.
Exit status: 0, or 1 when requests failed (not counting 409s) or a balance does not match.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    RESULTS_DIR,
    BenchError,
    Server,
    ensure_database,
    free_port,
    git_commit,
    libpq_url,
    machine_cpu_seconds,
    median,
    percentile,
    pg_program,
    postgres_url,
    postmaster_pid,
    process_tree_cpu_seconds,
    recreate_database,
    redact,
    run_tally,
    server_version,
    timestamp,
    write_results,
)

TALLY_DB = "tally_bench"
PGBENCH_DB = "pgbench_bench"
# Small movements with a zero mean: a balance of 1,000 points practically never runs out.
STEPS = [p for p in range(-10, 11) if p != 0]
GOAL_RATIO = 0.5


# --- setup ----------------------------------------------------------------------------------------


def seed_tally(db_url: str, customers: int, balance: int) -> tuple[str, list[int]]:
    """A merchant, an API key and customers with a starting balance; returns (key, customer ids)."""
    from tally.customers import service as customer_service
    from tally.db.engine import make_engine, make_session_factory, unit_of_work
    from tally.ledger import service as ledger
    from tally.ledger.orm import EntryKind
    from tally.merchants import service as merchants

    engine = make_engine(db_url)
    try:
        factory = make_session_factory(engine)
        with unit_of_work(factory) as session:
            merchant = merchants.create_merchant(
                session, name="Bench store", store_url="https://bench.example"
            )
            key = merchants.create_api_key(session, merchant_id=merchant.id, name="bench")
        ids: list[int] = []
        with unit_of_work(factory, merchant_id=merchant.id) as session:
            for n in range(customers):
                customer = customer_service.enroll_customer(
                    session, merchant_id=merchant.id, email=f"bench{n:05d}@example.com"
                ).customer
                ledger.credit(
                    session,
                    customer=customer,
                    points=balance,
                    kind=EntryKind.IMPORT,
                    idempotency_key=f"bench-seed:{n}",
                    reason="starting balance",
                )
                ids.append(customer.id)
        return key.secret, ids
    finally:
        engine.dispose()


def verify_ledger(db_url: str) -> tuple[int, int]:
    """(customers checked, balances that differ from the sum of their entries)."""
    from sqlalchemy import func, select

    from tally.customers.orm import Customer
    from tally.db.engine import make_engine, make_session_factory
    from tally.ledger import service as ledger

    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as session:
            checked = session.scalar(select(func.count(Customer.id))) or 0
            mismatches = sum(1 for _ in ledger.verify_balances(session))
        return checked, mismatches
    finally:
        engine.dispose()


# --- the HTTP side --------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds used so far by the parties of a run; two snapshots give the cores each kept busy.

    self: this process (the HTTP load generator); children: reaped subprocesses (pgbench);
    server: tally serve and its workers; postgres: the PostgreSQL server, when it runs here;
    all: the whole machine, whoever runs; stolen: what the hypervisor gave to other machines.
    """

    def __init__(self, server_pid: int | None, postgres_pid: int | None) -> None:
        self.server_pid = server_pid
        self.postgres_pid = postgres_pid

    def snapshot(self) -> dict[str, float | None]:
        """The counters now."""
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        machine = machine_cpu_seconds()
        return {
            "self": own.ru_utime + own.ru_stime,
            "children": kids.ru_utime + kids.ru_stime,
            "server": process_tree_cpu_seconds(self.server_pid) if self.server_pid else None,
            "postgres": process_tree_cpu_seconds(self.postgres_pid) if self.postgres_pid else None,
            "all": machine[0] if machine else None,
            "stolen": machine[1] if machine else None,
        }

    @staticmethod
    def cores(
        before: dict[str, float | None], after: dict[str, float | None], wall: float
    ) -> dict[str, float | None]:
        """Average cores busy between two snapshots taken `wall` seconds apart."""
        out: dict[str, float | None] = {}
        for key, first in before.items():
            last = after[key]
            out[key] = None if first is None or last is None else (last - first) / wall
        return out


@dataclass
class TallyRound:
    """One round of adjustments over HTTP; CPU figures are cores busy on average."""

    seconds: float
    ok: int
    insufficient: int
    errors: int
    tps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    cpu_client: float | None
    cpu_server: float | None
    cpu_postgres: float | None
    cpu_all: float | None
    cpu_stolen: float | None
    error_samples: dict[str, int] = field(default_factory=dict)


def drive_tally(
    base_url: str,
    api_key: str,
    customer_ids: list[int],
    *,
    clients: int,
    seconds: float,
    seed: int,
    meter: CpuMeter,
) -> TallyRound:
    """`clients` threads adjust points as fast as they can for `seconds`."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    counts: list[Counter[str]] = [Counter() for _ in range(clients)]
    samples: list[Counter[str]] = [Counter() for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(n: int) -> None:
        rng = random.Random(seed * 1_000 + n)
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
            start.wait()
            while time.perf_counter() < deadline[0]:
                customer = rng.choice(customer_ids)
                body = {"points": rng.choice(STEPS), "reason": "bench"}
                t0 = time.perf_counter()
                try:
                    response = http.post(
                        f"/api/v1/customers/{customer}/adjustments",
                        json=body,
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                    )
                except httpx.HTTPError as exc:
                    counts[n]["error"] += 1
                    samples[n][f"{type(exc).__name__}: {exc}"[:300]] += 1
                    continue
                elapsed = time.perf_counter() - t0
                if 200 <= response.status_code < 300:
                    counts[n]["ok"] += 1
                    latencies[n].append(elapsed)
                elif response.status_code == 409 and "insufficient" in response.text.lower():
                    counts[n]["insufficient"] += 1
                else:
                    counts[n]["error"] += 1
                    samples[n][f"{response.status_code}: {response.text[:300]}"] += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    before = meter.snapshot()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    start.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    cpu = CpuMeter.cores(before, meter.snapshot(), wall)

    total = sum(counts, Counter())
    flat = [x * 1000 for chunk in latencies for x in chunk]
    return TallyRound(
        seconds=round(wall, 2),
        ok=total["ok"],
        insufficient=total["insufficient"],
        errors=total["error"],
        tps=total["ok"] / wall,
        p50_ms=percentile(flat, 50),
        p99_ms=percentile(flat, 99),
        mean_ms=sum(flat) / len(flat) if flat else float("nan"),
        cpu_client=cpu["self"],
        cpu_server=cpu["server"],
        cpu_postgres=cpu["postgres"],
        cpu_all=cpu["all"],
        cpu_stolen=cpu["stolen"],
        error_samples=dict(sum(samples, Counter()).most_common(5)),
    )


# --- the pgbench side -----------------------------------------------------------------------------


@dataclass
class PgbenchRound:
    """One pgbench run; CPU figures are cores busy on average."""

    seconds: float
    transactions: int
    failed: int
    tps: float
    avg_ms: float
    p50_ms: float
    p99_ms: float
    cpu_client: float | None
    cpu_postgres: float | None
    cpu_all: float | None
    cpu_stolen: float | None


def run_pgbench(
    pgbench: str, db_url: str, *, clients: int, threads: int, seconds: int, meter: CpuMeter
) -> PgbenchRound:
    """`pgbench -b tpcb-like` for `seconds`; percentiles from its per-transaction log."""
    with tempfile.TemporaryDirectory(prefix="tally-pgbench-") as logdir:
        command = [
            pgbench,
            "-b",
            "tpcb-like",
            "-c",
            str(clients),
            "-j",
            str(threads),
            "-T",
            str(seconds),
            "-n",
            "-l",
            f"--log-prefix={logdir}/tx",
            libpq_url(db_url),
        ]
        before = meter.snapshot()
        t0 = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        cpu = CpuMeter.cores(before, meter.snapshot(), wall)
        if done.returncode != 0:
            raise BenchError(f"pgbench failed ({done.returncode}):\n{done.stderr}{done.stdout}")
        latencies = []
        for log in Path(logdir).glob("tx.*"):
            for line in log.read_text().splitlines():
                parts = line.split()
                # client_id transaction_no time script_no time_epoch time_us; time is in us
                if len(parts) >= 3 and parts[2].isdigit():
                    latencies.append(int(parts[2]) / 1000)
    out = done.stdout

    def number(pattern: str, default: float = float("nan")) -> float:
        match = re.search(pattern, out, re.MULTILINE)
        return float(match.group(1)) if match else default

    return PgbenchRound(
        seconds=round(wall, 2),
        transactions=int(number(r"^number of transactions actually processed: (\d+)", 0)),
        failed=int(number(r"^number of failed transactions: (\d+)", 0)),
        tps=number(r"^tps = ([\d.]+)"),
        avg_ms=number(r"^latency average = ([\d.]+) ms"),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        cpu_client=cpu["children"],
        cpu_postgres=cpu["postgres"],
        cpu_all=cpu["all"],
        cpu_stolen=cpu["stolen"],
    )


# --- report ---------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


# (side, key, heading, width, decimals); decimals None = an integer count
TALLY_COLUMNS = [
    ("tally", "tps", "tps", 7, 1),
    ("tally", "p50_ms", "p50 ms", 7, 2),
    ("tally", "p99_ms", "p99 ms", 7, 2),
    ("tally", "insufficient", "409s", 4, None),
    ("tally", "errors", "errors", 6, None),
    ("tally", "cpu_client", "client", 6, 2),
    ("tally", "cpu_server", "server", 6, 2),
    ("tally", "cpu_postgres", "pg", 4, 2),
    ("tally", "cpu_all", "all", 4, 2),
]
PGBENCH_COLUMNS = [
    ("pgbench", "tps", "tps", 7, 1),
    ("pgbench", "avg_ms", "avg ms", 6, 2),
    ("pgbench", "p50_ms", "p50 ms", 6, 2),
    ("pgbench", "p99_ms", "p99 ms", 6, 2),
    ("pgbench", "failed", "failed", 6, None),
    ("pgbench", "cpu_client", "client", 6, 2),
    ("pgbench", "cpu_postgres", "pg", 4, 2),
    ("pgbench", "cpu_all", "all", 4, 2),
]


def print_table(rounds: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Every round, then the medians; CPU columns are cores busy on average during the run."""

    def cells(row: dict[str, Any], columns: list[tuple[str, str, str, int, int | None]]) -> str:
        out = []
        for side, key, _, width, digits in columns:
            value = row[side][key]
            out.append(f"{value if digits is None else _f(value, digits):>{width}}")
        return " ".join(out)

    def headings(columns: list[tuple[str, str, str, int, int | None]]) -> str:
        return " ".join(f"{heading:>{width}}" for _, _, heading, width, _ in columns)

    tally_width = len(headings(TALLY_COLUMNS))
    pg_width = len(headings(PGBENCH_COLUMNS))
    print(
        f"{'':>6} | {'Tally adjust points (CPU in cores)':^{tally_width}} | "
        f"{'pgbench tpcb-like (CPU in cores)':^{pg_width}} |"
    )
    print(f"{'round':>6} | {headings(TALLY_COLUMNS)} | {headings(PGBENCH_COLUMNS)} | ratio")
    print("-" * (6 + tally_width + pg_width + 14))
    for row in [*rounds, summary]:
        print(
            f"{row['label']:>6} | {cells(row, TALLY_COLUMNS)} | {cells(row, PGBENCH_COLUMNS)} | "
            f"{_f(row['ratio'], 2):>5}"
        )


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of each measure over the rounds; counts are summed."""
    medians: dict[str, dict[str, Any]] = {}
    for side, counts in (("tally", ("ok", "insufficient", "errors")), ("pgbench", ("failed",))):
        medians[side] = {}
        for key, value in rounds[0][side].items():
            if key in counts:
                medians[side][key] = sum(r[side][key] for r in rounds)
            elif isinstance(value, float | int) or value is None:
                values = [r[side][key] for r in rounds if r[side][key] is not None]
                medians[side][key] = median(values) if values else None
    ratio = medians["tally"]["tps"] / medians["pgbench"]["tps"]
    return {"label": "median", **medians, "ratio": ratio}


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Adjust points over HTTP vs pgbench tpcb-like on the same PostgreSQL.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side, interleaved")
    parser.add_argument("--seconds", type=int, default=20, help="length of each run")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients, both sides")
    parser.add_argument(
        "--web-workers", "--workers", type=int, default=2, help="tally serve --workers"
    )
    parser.add_argument("--pgbench-threads", type=int, default=2, help="pgbench -j")
    parser.add_argument(
        "--pgbench-scale", type=int, default=None, help="pgbench -i -s (default: --clients)"
    )
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--balance", type=int, default=1000, help="starting points per customer")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of unrecorded load before round 1"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the clients")
    args = parser.parse_args(argv)
    if min(args.rounds, args.seconds, args.clients, args.web_workers, args.pgbench_threads) < 1:
        parser.error(
            "--rounds, --seconds, --clients, --web-workers, --pgbench-threads must be >= 1"
        )
    args.pgbench_scale = args.pgbench_scale or args.clients
    args.pgbench_threads = min(args.pgbench_threads, args.clients)
    return args


def main(argv: list[str] | None = None) -> int:
    """Set up, run the rounds, print and save the results."""
    args = parse_args(argv)
    stamp = timestamp()
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    commit = git_commit()
    cpus = os.cpu_count() or 1
    print(f"command:  {command}")
    print(f"commit:   {commit}")

    pgbench = pg_program("pgbench")
    server_url = postgres_url()
    version = server_version(server_url)
    print(f"postgres: {redact(server_url)} (PostgreSQL {version}); pgbench: {pgbench}")
    print(f"machine:  {cpus} CPUs, load average {os.getloadavg()[0]:.2f} at start")

    print(f"setup:    pgbench -i -s {args.pgbench_scale} {PGBENCH_DB} ...", flush=True)
    pg_url = ensure_database(server_url, PGBENCH_DB)
    init = subprocess.run(
        [pgbench, "-i", "-q", "-s", str(args.pgbench_scale), libpq_url(pg_url)],
        capture_output=True,
        text=True,
        check=False,
    )
    if init.returncode != 0:
        raise BenchError(f"pgbench -i failed:\n{init.stderr}")

    tally_url = recreate_database(server_url, TALLY_DB)
    port = free_port()
    var_dir = tempfile.mkdtemp(prefix="tally-bench-var-")
    env = {
        **os.environ,
        "TALLY_DATABASE_URL": tally_url,
        "TALLY_WORKER_MODE": "separate",
        "TALLY_ENVIRONMENT": "development",
        "TALLY_PORT": str(port),
        "TALLY_HOST": "127.0.0.1",
        "TALLY_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "TALLY_VAR_DIR": var_dir,
    }
    print(
        f"setup:    tally migrate; {args.customers} customers x {args.balance} points", flush=True
    )
    run_tally(["migrate"], env)
    api_key, customer_ids = seed_tally(tally_url, args.customers, args.balance)

    base_url = f"http://127.0.0.1:{port}"
    server_log = RESULTS_DIR / f"ledger-{stamp}-server.log"
    serve_args = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(args.web_workers)]
    print(f"setup:    tally serve {' '.join(serve_args)} (TALLY_WORKER_MODE=separate)", flush=True)
    server = Server(serve_args, env, server_log)
    meter = CpuMeter(server.process.pid, postmaster_pid(server_url))
    rounds: list[dict[str, Any]] = []
    try:
        server.wait_healthy(base_url)
        if args.warmup > 0:
            drive_tally(
                base_url,
                api_key,
                customer_ids,
                clients=args.clients,
                seconds=args.warmup,
                seed=0,
                meter=meter,
            )
        print(
            f"running:  {args.rounds} round(s) x {args.seconds} s per side, {args.clients} clients",
            flush=True,
        )
        for n in range(1, args.rounds + 1):
            row: dict[str, Any] = {"label": str(n), "load_average": os.getloadavg()[0]}
            sides = ["tally", "pgbench"] if n % 2 else ["pgbench", "tally"]
            for side in sides:
                if side == "tally":
                    result: TallyRound | PgbenchRound = drive_tally(
                        base_url,
                        api_key,
                        customer_ids,
                        clients=args.clients,
                        seconds=args.seconds,
                        seed=n,
                        meter=meter,
                    )
                else:
                    result = run_pgbench(
                        pgbench,
                        pg_url,
                        clients=args.clients,
                        threads=args.pgbench_threads,
                        seconds=args.seconds,
                        meter=meter,
                    )
                row[side] = asdict(result)
                print(f"  round {n}: {side:<7} {result.tps:8.1f} tps", flush=True)
            row["ratio"] = row["tally"]["tps"] / row["pgbench"]["tps"]
            rounds.append(row)
    finally:
        server.stop()
        shutil.rmtree(var_dir, ignore_errors=True)

    checked, mismatches = verify_ledger(tally_url)
    log_text = server_log.read_text(errors="replace")
    server_problems = [
        line for line in log_text.splitlines() if " ERROR " in line or "Traceback" in line
    ]
    summary = summarize(rounds)

    print()
    print(
        f"Tally 'adjust points' (POST /api/v1/customers/{{id}}/adjustments, {args.clients} "
        f"keep-alive httpx clients, tally serve --workers {args.web_workers}) vs "
        f"pgbench -b tpcb-like -c {args.clients} -j {args.pgbench_threads} "
        f"(scale {args.pgbench_scale}), {args.seconds} s per run"
    )
    print()
    print_table(rounds, summary)
    print()
    ratio = summary["ratio"]
    verdict = "met" if ratio >= GOAL_RATIO else "NOT met"
    print(
        f"ratio (median Tally tps / median pgbench tps) = {ratio:.2f}; "
        f"goal >= {GOAL_RATIO} {verdict}"
    )
    print(
        "latencies are per request (Tally) and per transaction (pgbench log); "
        "tps counts 2xx responses only; 409s = insufficient points (expected now and then)"
    )
    print(
        f"note: the load generators run on the same {cpus} CPUs as the servers they measure. "
        "CPU columns are cores busy on average: client = the load generator (this Python "
        "process / pgbench), server = tally serve and its workers, pg = the PostgreSQL server "
        "(all its databases), all = the whole machine (including anything else running on it)"
    )
    t, p = summary["tally"], summary["pgbench"]

    def per_op(cores: float | None, tps: float) -> str:
        return "-" if cores is None or not tps else f"{cores / tps * 1000:.2f}"

    print(
        "CPU per operation (ms, medians): Tally request: client "
        f"{per_op(t['cpu_client'], t['tps'])}, server {per_op(t['cpu_server'], t['tps'])}, "
        f"PostgreSQL {per_op(t['cpu_postgres'], t['tps'])}; pgbench transaction: client "
        f"{per_op(p['cpu_client'], p['tps'])}, PostgreSQL {per_op(p['cpu_postgres'], p['tps'])}"
    )
    stolen = [summary["tally"]["cpu_stolen"], summary["pgbench"]["cpu_stolen"]]
    if any(x is not None and x >= 0.05 for x in stolen):
        print(
            f"noise: the hypervisor stole {_f(stolen[0], 2)} (Tally runs) and {_f(stolen[1], 2)} "
            "(pgbench runs) cores on average"
        )
    print(f"ledger check: {checked} balances, {mismatches} differ from the sum of their entries")
    errors = summary["tally"]["errors"]
    if errors:
        print(f"ERRORS: {errors} requests failed; most common:")
        for row in rounds:
            for text, count in row["tally"]["error_samples"].items():
                print(f"  round {row['label']}: {count} x {text}")
    if server_problems:
        print(f"server log: {len(server_problems)} error lines, e.g. {server_problems[0]}")
    print(f"server log: {server_log}")

    path = write_results(
        "ledger",
        stamp,
        {
            "benchmark": "ledger",
            "timestamp": stamp,
            "command": command,
            "commit": commit,
            "postgres": {"url": redact(server_url), "version": version},
            "cpus": cpus,
            "settings": vars(args),
            "rounds": rounds,
            "median": summary,
            "goal_ratio": GOAL_RATIO,
            "goal_met": ratio >= GOAL_RATIO,
            "ledger_check": {"customers": checked, "mismatches": mismatches},
            "server_log": str(server_log),
            "server_error_lines": server_problems[:20],
        },
    )
    print(f"results:  {path}")
    return 1 if errors or mismatches else 0


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the `finally` blocks stop the server subprocess.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
