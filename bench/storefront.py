"""Storefront benchmark: signed `GET /me` per second on PostgreSQL, beside `/healthz` as ceiling.

1. PostgreSQL: TALLY_BENCH_POSTGRES_URL, or the private server `scripts/postgres.sh` starts; the
   database `tally_bench_storefront` is dropped and made again.
2. `tally migrate`, then a merchant with a program (create-account points, rewards, VIP tiers,
   referrals), its storefront settings, and N customers known by their store id, seeded through
   the services. `tally serve --workers W` runs in a subprocess with the storefront's rate
   limits off (one load generator on one address would hit them at once) and
   TALLY_WORKER_MODE=separate; its log goes to bench/results/storefront-<time>-server.log.
3. `wrk` (Debian package `wrk`) with a Lua script: every request of `/me` carries the headers a
   Shopify theme sends (customer id, email, HMAC-SHA256 signature), the customers taken in turn;
   the other runs request `/healthz` (one `SELECT 1`), the same server's cheapest route.
4. R rounds, the two sides interleaved, C connections each: requests per second (2xx only),
   p50/p99 latency from wrk's histogram, then the medians of the rounds and the ratio
   /me ÷ /healthz. Goal: ratio >= 0.5 and /me p99 < 50 ms.

    .venv/bin/python bench/storefront.py                  # 3 rounds x 10 s, 16 connections
    .venv/bin/python bench/storefront.py --seconds 20 --connections 16 --web-workers 2

wrk, the server and PostgreSQL share the machine's CPUs; the figures are for this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    RESULTS_DIR,
    BenchError,
    Server,
    free_port,
    git_commit,
    median,
    postgres_url,
    recreate_database,
    redact,
    run_tally,
    server_version,
    timestamp,
    write_results,
)

DATABASE = "tally_bench_storefront"
GOAL_RATIO = 0.5
GOAL_P99_MS = 50.0
PROGRAM: dict[str, Any] = {
    "create_account": {"enabled": True, "points": 100, "send_email": False},
    "referral": {"enabled": True, "sender_points": 500, "receiver_points": 250},
    "rewards": [
        {
            "type": "fixed_amount",
            "id": "five-off",
            "name": "5 off",
            "points_cost": 500,
            "amount": "5",
        }
    ],
    "vip": {
        "enabled": True,
        "metric": "points_earned",
        "tiers": [
            {"id": "silver", "name": "Silver", "threshold": "1000"},
            {"id": "gold", "name": "Gold", "threshold": "5000"},
        ],
    },
}
# done() prints wrk's figures as one JSON line (latency percentiles in microseconds).
DONE_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "seconds": %f, "non2xx": %d, "socket_errors": %d, '
    .. '"p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration / 1e6, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
# Each request takes the next customer's headers, as a Shopify theme would send them.
ME_LUA = """
local shoppers = {__SHOPPERS__}
local next_one = 0
request = function()
  next_one = next_one % #shoppers + 1
  local s = shoppers[next_one]
  return wrk.format("GET", "__PATH__", {
    ["X-Tally-Customer-Id"] = s[1], ["X-Tally-Customer-Email"] = s[2],
    ["X-Tally-Signature"] = s[3]})
end
"""


def seed(database_url: str, customers: int) -> tuple[str, list[tuple[str, str, str]]]:
    """The merchant's widget id and (store id, email, signature) of each seeded customer."""
    from tally.config import Settings
    from tally.customers import service as customer_service
    from tally.db.engine import make_engine, make_session_factory, unit_of_work
    from tally.ledger import service as ledger
    from tally.ledger.orm import EntryKind
    from tally.merchants.service import create_merchant
    from tally.program.config_service import update_program
    from tally.storefront import service
    from tally.storefront.identity import hmac_signature

    config = Settings()
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    shoppers = []
    with unit_of_work(factory) as session:
        merchant = create_merchant(session, name="Bench", store_url="https://bench.example")
        update_program(session, merchant_id=merchant.id, changes=PROGRAM, changed_by="bench")
        row = service.settings_for(session, config=config, merchant_id=merchant.id)
        widget_id, secret = row.widget_id, service.reveal_secret(config, row)
        for n in range(1, customers + 1):
            email, store_id = f"shopper{n}@bench.example", str(9_000_000 + n)
            customer = customer_service.enroll_customer(
                session, merchant_id=merchant.id, email=email, external_id=store_id
            ).customer
            ledger.credit(
                session,
                customer=customer,
                points=100 * n % 3000 + 1,
                kind=EntryKind.EARN,
                idempotency_key=f"bench:{n}",
                reason="bench",
            )
            shoppers.append((store_id, email, hmac_signature(secret, store_id, email)))
    engine.dispose()
    return widget_id, shoppers


def write_scripts(directory: Path, widget_id: str, shoppers: list[tuple[str, str, str]]) -> dict:
    """The Lua scripts of both sides, written into `directory`, with the path each requests."""
    table = ",".join(f'{{"{i}","{e}","{s}"}}' for i, e, s in shoppers)
    path = f"/storefront/v1/{widget_id}/me"
    me = directory / "me.lua"
    me.write_text(ME_LUA.replace("__SHOPPERS__", table).replace("__PATH__", path) + DONE_LUA)
    health = directory / "healthz.lua"
    health.write_text(DONE_LUA)
    return {"me": (me, path), "healthz": (health, "/healthz")}


def run_wrk(base_url: str, script: Path, path: str, *, connections: int, seconds: int) -> dict:
    """One wrk run; its figures (requests per second counting 2xx only, p50/p99 in ms)."""
    threads = min(2, connections)
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        base_url + path,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    raw = json.loads(line.removeprefix("WRK_RESULT "))
    ok = raw["requests"] - raw["non2xx"]
    return {
        "rps": ok / raw["seconds"],
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "non2xx": raw["non2xx"],
        "socket_errors": raw["socket_errors"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Signed GET /me per second vs /healthz on the same server (wrk).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side, interleaved")
    parser.add_argument("--seconds", type=int, default=10, help="length of each run")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c")
    parser.add_argument("--web-workers", type=int, default=2, help="tally serve --workers")
    parser.add_argument("--customers", type=int, default=1000, help="shoppers taken in turn")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unrecorded load")
    args = parser.parse_args(argv)
    if min(args.rounds, args.seconds, args.connections, args.web_workers, args.customers) < 1:
        parser.error("--rounds, --seconds, --connections, --web-workers, --customers must be >= 1")
    return args


def _environment(database_url: str, port: int, var_dir: str) -> dict[str, str]:
    return {
        **os.environ,
        "TALLY_DATABASE_URL": database_url,
        "TALLY_WORKER_MODE": "separate",
        "TALLY_ENVIRONMENT": "development",
        "TALLY_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "TALLY_VAR_DIR": var_dir,
        "TALLY_STOREFRONT_REQUESTS_PER_MINUTE_PER_ADDRESS": "0",
        "TALLY_STOREFRONT_REQUESTS_PER_MINUTE_PER_SHOPPER": "0",
    }


def measure(args: argparse.Namespace, base_url: str, scripts: dict) -> list[dict[str, Any]]:
    """The rounds: each side once per round, the order alternating."""
    run = {"connections": args.connections}
    if args.warmup:
        for side in ("me", "healthz"):
            run_wrk(base_url, *scripts[side], seconds=args.warmup, **run)
    rounds = []
    for n in range(1, args.rounds + 1):
        row: dict[str, Any] = {"round": n}
        for side in ("me", "healthz") if n % 2 else ("healthz", "me"):
            row[side] = run_wrk(base_url, *scripts[side], seconds=args.seconds, **run)
            figures = row[side]
            print(
                f"  round {n}: {side:<8} {figures['rps']:8.1f} req/s  p50 {figures['p50_ms']:6.2f}"
                f" ms  p99 {figures['p99_ms']:6.2f} ms  non-2xx {figures['non2xx']}",
                flush=True,
            )
        row["ratio"] = row["me"]["rps"] / row["healthz"]["rps"]
        rounds.append(row)
    return rounds


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of every figure of each side over the rounds."""
    summary: dict[str, Any] = {
        side: {
            name: median([r[side][name] for r in rounds])
            for name in ("rps", "p50_ms", "p99_ms", "non2xx", "socket_errors")
        }
        for side in ("me", "healthz")
    }
    summary["ratio"] = summary["me"]["rps"] / summary["healthz"]["rps"]
    return summary


def main(argv: list[str] | None = None) -> int:
    """Set up, run the rounds, print and save the results."""
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
    stamp, commit = timestamp(), git_commit()
    server_url = postgres_url()
    print(f"commit:   {commit}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"postgres: {redact(server_url)} (PostgreSQL {server_version(server_url)})")
    database_url = recreate_database(server_url, DATABASE)
    port, var_dir = free_port(), tempfile.mkdtemp(prefix="tally-bench-var-")
    env = _environment(database_url, port, var_dir)
    os.environ.update(env)  # seed() reads the same settings as the server (the secret key)
    run_tally(["migrate"], env)
    print(f"setup:    {args.customers} customers known by their store id", flush=True)
    widget_id, shoppers = seed(database_url, args.customers)
    scripts = write_scripts(Path(var_dir), widget_id, shoppers)
    base_url = f"http://127.0.0.1:{port}"
    log = RESULTS_DIR / f"storefront-{stamp}-server.log"
    serve = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(args.web_workers)]
    server = Server(serve, env, log)
    try:
        server.wait_healthy(base_url)
        print(
            f"running:  {args.rounds} rounds x {args.seconds} s per side, wrk -c{args.connections}"
        )
        rounds = measure(args, base_url, scripts)
    finally:
        server.stop()
        shutil.rmtree(var_dir, ignore_errors=True)
    summary = summarize(rounds)
    me, health = summary["me"], summary["healthz"]
    met = summary["ratio"] >= GOAL_RATIO and me["p99_ms"] < GOAL_P99_MS
    print()
    print(f"medians of {args.rounds} rounds, tally serve --workers {args.web_workers}:")
    print(
        f"  GET /me (signed)  {me['rps']:8.1f} req/s  p50 {me['p50_ms']:.2f} ms  p99 {me['p99_ms']:.2f} ms"
    )
    print(
        f"  GET /healthz      {health['rps']:8.1f} req/s  p50 {health['p50_ms']:.2f} ms  "
        f"p99 {health['p99_ms']:.2f} ms"
    )
    print(
        f"  ratio {summary['ratio']:.2f} (goal >= {GOAL_RATIO}), /me p99 goal < {GOAL_P99_MS:.0f} "
        f"ms: {'met' if met else 'NOT met'}"
    )
    path = write_results(
        "storefront",
        stamp,
        {"commit": commit, "settings": vars(args), "rounds": rounds, "median": summary},
    )
    print(f"results:  {path}; server log: {log}")
    return 0 if me["non2xx"] == 0 and me["socket_errors"] == 0 else 1


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the `finally` block stops the server subprocess.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
