"""Helpers shared by the benchmarks: PostgreSQL, the `tally serve` subprocess, numbers, results.

Nothing here imports Tally, so a benchmark can set up its databases before Tally reads settings.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"


class BenchError(RuntimeError):
    """A problem that stops a benchmark; printed without a traceback."""


# --- PostgreSQL -----------------------------------------------------------------------------------


def postgres_url() -> str:
    """TALLY_BENCH_POSTGRES_URL, or the URL of the private server scripts/postgres.sh starts."""
    url = os.environ.get("TALLY_BENCH_POSTGRES_URL", "").strip()
    if url:
        return url
    script = REPO / "scripts" / "postgres.sh"
    done = subprocess.run([str(script), "start"], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise BenchError(f"scripts/postgres.sh start failed:\n{done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1]


def database_url(server_url: str, database: str) -> str:
    """The same server and credentials, another database."""
    url = make_url(server_url).set(database=database)
    return url.render_as_string(hide_password=False)


def redact(url: str) -> str:
    """The URL without its password, for printing."""
    return make_url(url).render_as_string(hide_password=True)


def _admin_connection(server_url: str) -> psycopg.Connection[Any]:
    url = make_url(database_url(server_url, "postgres")).set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)


def server_version(server_url: str) -> str:
    """PostgreSQL's version, e.g. "15.8 (Debian 15.8-0+deb12u1)"."""
    with _admin_connection(server_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def postmaster_pid(server_url: str) -> int | None:
    """The PID of the PostgreSQL server when it runs on this machine (from postmaster.pid)."""
    try:
        with _admin_connection(server_url) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        if row is None:
            return None
        pid = int((Path(str(row[0])) / "postmaster.pid").read_text().split("\n", 1)[0])
    except (psycopg.Error, OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def recreate_database(server_url: str, database: str) -> str:
    """Drop (disconnecting its sessions) and create `database`; returns its URL."""
    with _admin_connection(server_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return database_url(server_url, database)


def ensure_database(server_url: str, database: str) -> str:
    """Create `database` when it does not exist yet; returns its URL."""
    with _admin_connection(server_url) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if found is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return database_url(server_url, database)


def libpq_url(url: str) -> str:
    """A URL libpq programs (psql, pgbench) accept: no SQLAlchemy driver suffix."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_program(name: str) -> str:
    """The newest /usr/lib/postgresql/*/bin/<name> (as scripts/postgres.sh finds it), else PATH."""
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parts[-3].split(".")],
    )
    if candidates:
        return candidates[-1]
    found = shutil.which(name)
    if found:
        return found
    raise BenchError(
        f"{name} was not found in /usr/lib/postgresql/*/bin or on PATH; install PostgreSQL's "
        "client programs (Debian: apt-get install postgresql-client, or run scripts/postgres.sh)"
    )


# --- the Tally server -----------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tally_command(*args: str) -> list[str]:
    """Run the `tally` CLI of the interpreter running the benchmark (the repo's .venv)."""
    script = Path(sys.executable).parent / "tally"
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from tally.cli import app; app()", *args]


def run_tally(args: Sequence[str], env: Mapping[str, str]) -> str:
    """Run a `tally` command to completion; returns its output, raises BenchError on failure."""
    done = subprocess.run(
        tally_command(*args), env=dict(env), cwd=REPO, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"tally {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


class Server:
    """`tally serve` in a subprocess of its own process group, its output going to a log file."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            tally_command("serve", *args),
            env=dict(env),
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_healthy(self, base_url: str, timeout: float = 60.0) -> None:
        """Poll /healthz until it answers 200; raise with the log's tail if the server dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"tally serve exited with {self.process.returncode}:\n{self.tail()}"
                )
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise BenchError(f"tally serve did not become healthy in {timeout:.0f} s:\n{self.tail()}")

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the server and its worker processes so far (Linux only)."""
        return process_tree_cpu_seconds(self.process.pid)

    def tail(self, lines: int = 40) -> str:
        """The end of the server's log."""
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (uvicorn shuts its workers down), then SIGKILL of its group if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()


def process_tree_cpu_seconds(root_pid: int) -> float | None:
    """CPU seconds of a process and all its descendants, live or exited, from /proc."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    cpu: dict[int, int] = {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces; the fields follow the last ")".
        fields = text[text.rindex(")") + 2 :].split()
        pid = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(pid)
        # utime + stime, and cutime + cstime: the CPU of children that exited and were reaped
        cpu[pid] = sum(int(x) for x in fields[11:15])
    if root_pid not in cpu:
        return None
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / ticks


def machine_cpu_seconds() -> tuple[float, float] | None:
    """(busy, stolen) CPU seconds of the whole machine since boot, summed over CPUs (Linux only).

    Busy is user + nice + system + irq + softirq; stolen is time the hypervisor gave to others.
    """
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / ticks, steal / ticks


# --- numbers and results --------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """The pct-th percentile (nearest rank) of values; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    """The median, ignoring NaN; NaN when nothing is left."""
    kept = [v for v in values if v == v]
    return statistics.median(kept) if kept else float("nan")


def git_commit() -> str:
    """`git rev-parse --short HEAD`, with `+dirty` when the working tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if status else head


def timestamp() -> str:
    """A UTC timestamp for file names, e.g. 20250101T120000Z."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_results(name: str, stamp: str, data: Mapping[str, Any]) -> Path:
    """Write bench/results/<name>-<stamp>.json (bench/results is git-ignored)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return path
