"""Imports started over the API are worker jobs: a kill -9 of the server or of the worker running
one loses nothing, and the finished import equals an uninterrupted one. Real processes (`tally
serve`, `tally worker`), real HTTP, both backends."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from tally.customers.orm import Customer
from tally.imports.orm import ImportJob, ImportRejectedRow, ImportUploadChunk
from tally.ledger.orm import LedgerEntry
from tests.support.factories import MerchantFixture, make_merchant
from tests.support.processes import (
    kill,
    start_tally,
    stop,
    tally_env,
    wait_for,
    wait_healthy,
)
from tests.support.server import free_port

pytestmark = pytest.mark.slow

ROWS = 30_000
BATCH = 500
# Long enough that a lease renewal starved of CPU on a busy machine is not lost.
LEASE_SECONDS = 10
# Long enough to finish a big file on two busy cores, short enough to end a hung run.
DEADLINE = 300.0


def _customers_file() -> bytes:
    """A customer file of ROWS rows, every 997th one invalid (imported with skip_invalid)."""
    lines = ["email,first_name,points\n"]
    for n in range(ROWS):
        points = "lots" if n % 997 == 0 else str(n % 700)
        lines.append(f"c{n:06d}@example.com,Name {n},{points}\n")
    return "".join(lines).encode()


def _settings(mode: str, **more: str | float | int) -> dict[str, str | float | int]:
    return {
        "worker_mode": mode,
        "worker_poll_seconds": 0.1,
        "import_batch_size": BATCH,
        "import_lease_seconds": LEASE_SECONDS,
        **more,
    }


@dataclass
class Server:
    url: str
    process: Any
    log: Path


def _serve(database_url: str, tmp_path: Path, mode: str, name: str) -> Server:
    port = free_port()
    log = tmp_path / f"{name}.log"
    env = tally_env(database_url, **_settings(mode, port=port, var_dir=tmp_path / "var"))
    process = start_tally("serve", env, log)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, process, log)
    return Server(url, process, log)


def _worker(database_url: str, tmp_path: Path, name: str) -> Any:
    env = tally_env(database_url, **_settings("separate", var_dir=tmp_path / "var"))
    return start_tally("worker", env, tmp_path / f"{name}.log")


def _upload(
    server: Server, merchant: MerchantFixture, content: bytes, *, wait: bool = False
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/imports/customers",
        params={"wait": "true"} if wait else None,
        files={"file": ("customers.csv", content, "text/csv")},
        data={"skip_invalid": "true"},
        headers=merchant.headers,
        timeout=DEADLINE,
    )


def _job(factory: sessionmaker[Session], job_id: int) -> ImportJob:
    with factory() as session:
        return session.get_one(ImportJob, job_id)


def _outcome(factory: sessionmaker[Session], merchant_id: int, job_id: int) -> dict[str, Any]:
    """What an import left: balances, ledger entries, the job's counts, its rejected rows."""
    with factory() as session:
        job = session.get_one(ImportJob, job_id)
        entries = session.execute(
            select(func.count(LedgerEntry.id), func.sum(LedgerEntry.points)).where(
                LedgerEntry.merchant_id == merchant_id
            )
        ).one()
        return {
            "balances": dict(
                session.execute(
                    select(Customer.email, Customer.points_balance).where(
                        Customer.merchant_id == merchant_id
                    )
                ).all()
            ),
            "entries": tuple(entries),
            "job": {
                "status": job.status,
                "total_rows": job.total_rows,
                "new": job.new_count,
                "updated": job.updated_count,
                "skipped": job.skipped_count,
                "customers_created": job.customers_created,
                "invalid": job.invalid_count,
                "errors": job.error_count,
                "points_issued": job.points_issued,
                "cursor": job.cursor,
                "failure_reason": job.failure_reason,
            },
            "rejected_rows": session.scalar(
                select(func.count(ImportRejectedRow.id)).where(ImportRejectedRow.job_id == job_id)
            ),
            "stored_chunks": session.scalar(
                select(func.count(ImportUploadChunk.id)).where(ImportUploadChunk.job_id == job_id)
            ),
        }


def _stopped_mid_way(runner: subprocess.Popen[bytes], database_url: str, job_id: int) -> str:
    """Leave the process that runs the import stopped (SIGSTOP) once it is mid-way; the
    job's lease holder then.

    It is stopped while each look is taken, so on a machine busy enough to starve this test
    of CPU the import still cannot run to its end between two looks. The looks are plain
    reads: the test's sessions begin SQLite transactions as writers, and a stopped writer may
    hold the write lock.
    """
    engine = create_engine(database_url)
    deadline = time.monotonic() + DEADLINE
    try:
        while True:
            runner.send_signal(signal.SIGSTOP)
            try:
                with engine.connect() as connection:
                    status, cursor, holder = connection.execute(
                        select(ImportJob.status, ImportJob.cursor, ImportJob.locked_by).where(
                            ImportJob.id == job_id
                        )
                    ).one()
                assert status in {"queued", "running"}, f"the import ended first: {status}"
                if status == "running" and cursor >= 2 * BATCH:
                    return holder or ""
            except BaseException:
                runner.send_signal(signal.SIGCONT)
                raise
            runner.send_signal(signal.SIGCONT)
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for the import to be mid-way")
            time.sleep(0.05)
    finally:
        engine.dispose()


def _expected_shape(outcome: dict[str, Any]) -> None:
    invalid = len(range(0, ROWS, 997))
    assert outcome["job"]["status"] == "completed"
    assert (outcome["job"]["total_rows"], outcome["job"]["invalid"]) == (ROWS, invalid)
    assert outcome["job"]["new"] == ROWS - invalid
    assert len(outcome["balances"]) == ROWS - invalid
    assert outcome["rejected_rows"] == invalid
    assert outcome["stored_chunks"] == 0  # the upload is deleted once the job is finished


def test_a_killed_server_loses_no_api_started_import(
    backend: str,
    database_url: str,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    """SQLite: the server's in-process worker runs the import; kill -9 it mid-way, start it
    again, and it takes the job over. PostgreSQL: the server only stores the upload and a
    `tally worker` runs it; kill -9 the server mid-way and the worker finishes regardless."""
    content = _customers_file()
    interrupted, reference = make_merchant(session_factory), make_merchant(session_factory)
    sqlite = backend == "sqlite"
    mode = "inprocess" if sqlite else "separate"
    worker = None if sqlite else _worker(database_url, tmp_path, "worker")
    server = _serve(database_url, tmp_path, mode, "server-1")
    try:
        accepted = _upload(server, interrupted, content)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        assert accepted.headers["location"] == f"/api/v1/imports/{job_id}"
        assert accepted.json()["status"] in {"queued", "running"}  # a worker may be on it already
        runner = server.process if sqlite else worker
        assert runner is not None
        holder = _stopped_mid_way(runner, database_url, job_id)
        kill(server.process)
        if worker is not None:
            worker.send_signal(signal.SIGCONT)
        # The process that held the job is the one that ran it: the server on SQLite, the
        # worker on PostgreSQL (where the server runs no imports at all).
        runner_pid = server.process.pid if sqlite else worker.pid  # type: ignore[union-attr]
        assert f":{runner_pid}:" in holder, holder
        killed = _job(session_factory, job_id)
        assert (killed.status, killed.cursor < ROWS) == ("running", True)

        server = _serve(database_url, tmp_path, mode, "server-2")
        wait_for(
            lambda: _job(session_factory, job_id).status not in {"queued", "running"},
            "the import to be finished",
            timeout=DEADLINE,
        )
        shown = httpx.get(
            f"{server.url}/api/v1/imports/{job_id}", headers=interrupted.headers, timeout=30
        ).json()
        assert (shown["status"], shown["new_count"]) == (
            "completed",
            ROWS - len(range(0, ROWS, 997)),
        )
        # An uninterrupted import of the same file into a fresh merchant, for comparison.
        uninterrupted = _upload(server, reference, content, wait=True)
        assert uninterrupted.status_code == 201, uninterrupted.text
    finally:
        stop(server.process)
        if worker is not None:
            stop(worker)
    result = _outcome(session_factory, interrupted.id, job_id)
    expected = _outcome(session_factory, reference.id, uninterrupted.json()["id"])
    _expected_shape(expected)
    assert result == expected
    # Taken over once on SQLite (the restarted server); run once, never interrupted, on
    # PostgreSQL.
    assert _job(session_factory, job_id).attempts == (2 if sqlite else 1)


def test_a_killed_worker_import_is_finished_by_the_next_worker(
    backend: str,
    database_url: str,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    if backend != "postgresql":
        pytest.skip("separate worker processes run on PostgreSQL")
    content = _customers_file()
    interrupted, reference = make_merchant(session_factory), make_merchant(session_factory)
    server = _serve(database_url, tmp_path, "separate", "server")
    first = _worker(database_url, tmp_path, "worker-1")
    second = None
    try:
        accepted = _upload(server, interrupted, content)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        _stopped_mid_way(first, database_url, job_id)
        kill(first)
        assert _job(session_factory, job_id).status == "running"

        second = _worker(database_url, tmp_path, "worker-2")
        wait_for(
            lambda: _job(session_factory, job_id).status not in {"queued", "running"},
            "the import to be finished",
            timeout=DEADLINE,
        )
        uninterrupted = _upload(server, reference, content, wait=True)
        assert uninterrupted.status_code == 201, uninterrupted.text
    finally:
        stop(server.process)
        stop(first)
        if second is not None:
            stop(second)
    result = _outcome(session_factory, interrupted.id, job_id)
    expected = _outcome(session_factory, reference.id, uninterrupted.json()["id"])
    _expected_shape(expected)
    assert result == expected
    assert _job(session_factory, job_id).attempts == 2
    claims = re.findall(
        rf"import {job_id} claimed by (\S+)", (tmp_path / "worker-2.log").read_text()
    )
    assert len(claims) == 1, claims
    assert f":{second.pid}:" in claims[0], claims


def test_two_workers_never_run_the_same_import(
    database_url: str, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Eight queued imports, two `tally worker` processes: each job is claimed exactly once."""
    merchant = make_merchant(session_factory)
    files = [
        ("email,points\n" + "".join(f"w{n}-{i}@example.com,{i}\n" for i in range(3000))).encode()
        for n in range(8)
    ]
    server = _serve(database_url, tmp_path, "separate", "server")
    try:
        ids = []
        for number, content in enumerate(files):
            r = httpx.post(
                f"{server.url}/api/v1/imports/customers",
                files={"file": (f"f{number}.csv", content, "text/csv")},
                headers=merchant.headers,
                timeout=60,
            )
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
    finally:
        stop(server.process)
    workers = [_worker(database_url, tmp_path, f"worker-{n}") for n in range(2)]
    try:

        def all_done() -> bool:
            with session_factory() as session:
                statuses = Counter(
                    session.scalars(select(ImportJob.status).where(ImportJob.id.in_(ids)))
                )
            return statuses == Counter({"completed": len(ids)})

        wait_for(all_done, "every import to be completed", timeout=DEADLINE, every=0.2)
    finally:
        for worker in workers:
            stop(worker)
    claims = Counter(
        int(job_id)
        for n in range(2)
        for job_id in re.findall(
            r"import (\d+) claimed by", (tmp_path / f"worker-{n}.log").read_text()
        )
    )
    assert claims == Counter({job_id: 1 for job_id in ids})
    with session_factory() as session:
        assert set(session.scalars(select(ImportJob.attempts).where(ImportJob.id.in_(ids)))) == {1}
        balances = dict(
            session.execute(
                select(Customer.email, Customer.points_balance).where(
                    Customer.merchant_id == merchant.id
                )
            ).all()
        )
    assert balances == {f"w{n}-{i}@example.com": i for n in range(8) for i in range(3000)}
