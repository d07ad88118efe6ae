"""The import queue: exclusive claims, takeover after a lost lease, progress any app instance
shows, a stopping worker handing its job back, and stored uploads deleted when done."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from tally.api.app import create_app
from tally.config import Settings
from tally.db.base import utcnow
from tally.db.engine import make_engine, make_session_factory, unit_of_work
from tally.imports import customer_writer, queue
from tally.imports.orm import ImportJob, ImportUploadChunk
from tally.state import AppState
from tests.integration.test_admin_pages import admin_app, make_store, sign_in, token
from tests.support.factories import MerchantFixture, make_merchant

ROWS = 2_000
BATCH = 200


def _file(rows: int = ROWS, prefix: str = "q") -> bytes:
    return (
        "email,points\n" + "".join(f"{prefix}{i}@example.com,{i}\n" for i in range(rows))
    ).encode()


@pytest.fixture
def small_batches(settings: Settings) -> Settings:
    return settings.model_copy(update={"import_batch_size": BATCH, "import_lease_seconds": 30.0})


def _app(settings: Settings, database_url: str) -> TestClient:
    """An app instance with an engine of its own: another web process, as far as it knows."""
    factory = make_session_factory(make_engine(database_url))
    return TestClient(create_app(settings, AppState(settings=settings, session_factory=factory)))


def _queue(client: TestClient, merchant: MerchantFixture, content: bytes) -> int:
    r = client.post(
        "/api/v1/imports/customers",
        files={"file": ("q.csv", content, "text/csv")},
        headers=merchant.headers,
    )
    assert r.status_code == 202, r.text
    return int(r.json()["id"])


def _chunks(factory: sessionmaker[Session], job_id: int) -> int:
    with factory() as session:
        return int(
            session.scalar(
                select(func.count(ImportUploadChunk.id)).where(ImportUploadChunk.job_id == job_id)
            )
            or 0
        )


def test_concurrent_claims_of_one_job_give_it_to_one_worker(
    small_batches: Settings, session_factory: sessionmaker[Session], database_url: str
) -> None:
    m = make_merchant(session_factory)
    with _app(small_batches, database_url) as web:
        job_id = _queue(web, m, _file(10))
    barrier = threading.Barrier(8)
    won: list[int | None] = []

    def claim(n: int) -> None:
        barrier.wait()
        won.append(queue.claim_next(session_factory, worker_id=f"w{n}", lease_seconds=30))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(won, key=str) == [job_id] + [None] * 7
    with session_factory() as session:
        job = session.get_one(ImportJob, job_id)
        assert (job.status, job.attempts) == ("running", 1)
    # A lease that ran out (its worker died) is taken over, once, and counted.
    with unit_of_work(session_factory) as session:
        session.execute(
            update(ImportJob)
            .where(ImportJob.id == job_id)
            .values(locked_until=utcnow() - timedelta(seconds=1))
        )
    assert queue.claim_next(session_factory, worker_id="late", lease_seconds=30) == job_id
    assert queue.claim_next(session_factory, worker_id="later", lease_seconds=30) is None
    with session_factory() as session:
        job = session.get_one(ImportJob, job_id)
        assert (job.locked_by, job.attempts) == ("late", 2)


def test_progress_is_read_by_another_app_instance_than_the_one_that_received_the_upload(
    small_batches: Settings,
    session_factory: sessionmaker[Session],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = make_merchant(session_factory)
    with _app(small_batches, database_url) as web:
        job_id = _queue(web, m, _file())
    # The worker stops inside its third batch until the test has looked at the progress.
    write = customer_writer.write_customers
    calls = {"n": 0}
    reached, release = threading.Event(), threading.Event()

    def paused(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            reached.set()
            assert release.wait(60)
        return write(*args, **kwargs)

    monkeypatch.setattr(customer_writer, "write_customers", paused)
    worker = threading.Thread(
        target=queue.work, args=(small_batches, session_factory), kwargs={"worker_id": "w1"}
    )
    worker.start()
    try:
        assert reached.wait(60)
        with _app(small_batches, database_url) as other:
            path = f"/api/v1/imports/{job_id}"
            deadline = utcnow() + timedelta(seconds=30)
            shown: dict[str, Any] = other.get(path, headers=m.headers).json()
            while shown["progress"] != {"phase": "importing", "done": 2 * BATCH, "total": ROWS}:
                assert utcnow() < deadline, shown
                shown = other.get(path, headers=m.headers).json()
            assert (shown["status"], shown["last_row_applied"], shown["new_count"]) == (
                "running",
                2 * BATCH + 1,
                2 * BATCH,
            )
    finally:
        release.set()
        worker.join(60)
    with _app(small_batches, database_url) as other:
        done = other.get(f"/api/v1/imports/{job_id}", headers=m.headers).json()
    assert (done["status"], done["new_count"], done["progress"]["done"]) == (
        "completed",
        ROWS,
        ROWS,
    )
    assert _chunks(session_factory, job_id) == 0


def test_the_admin_progress_bar_is_served_by_any_web_process(
    small_batches: Settings, session_factory: sessionmaker[Session], database_url: str
) -> None:
    store = make_store(session_factory, "owner@queue.example")
    first = admin_app(small_batches, session_factory)
    second = admin_app(small_batches, make_session_factory(make_engine(database_url)))
    with TestClient(first) as one, TestClient(second) as two:
        for client in (one, two):
            assert sign_in(client, store.email) == (303, "/admin")
        preview = one.post(
            "/admin/imports/customers/preview",
            data={"csrf_token": token(one)},
            files={"file": ("upload.csv", _file(50), "text/csv")},
        )
        assert preview.status_code == 200, preview.text[-2000:]
        job_id = int(preview.text.split('name="job_id" value="', 1)[1].split('"', 1)[0])
        # "Apply" reaches the other process: the previewed file is in the database.
        applied = two.post(
            "/admin/imports/customers/apply",
            data={"csrf_token": token(two), "job_id": str(job_id)},
            follow_redirects=False,
        )
        assert applied.status_code == 303, applied.text[-2000:]
        assert applied.headers["location"] == f"/admin/imports/customers?run={job_id}"
        waiting = one.get(f"/admin/imports/customers/runs/{job_id}", headers={"HX-Request": "1"})
        assert 'data-state="running"' in waiting.text
        assert "Waiting for a worker to start the import" in waiting.text
        assert queue.work(small_batches, session_factory) == 1
        done = one.get(f"/admin/imports/customers/runs/{job_id}", headers={"HX-Request": "1"})
        assert 'data-state="completed"' in done.text
        assert f"Import {job_id} is complete" in done.text
    assert _chunks(session_factory, job_id) == 0


def test_a_stopping_worker_hands_its_import_back_between_batches(
    small_batches: Settings,
    session_factory: sessionmaker[Session],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = make_merchant(session_factory)
    with _app(small_batches, database_url) as web:
        job_id = _queue(web, m, _file())
    stopping = threading.Event()
    write = customer_writer.write_customers
    calls = {"n": 0}

    def stop_after_two(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            stopping.set()
        return write(*args, **kwargs)

    monkeypatch.setattr(customer_writer, "write_customers", stop_after_two)
    claimed = queue.claim_next(session_factory, worker_id="w1", lease_seconds=30)
    assert claimed == job_id
    result = queue.run_claimed(
        session_factory, job_id=job_id, worker_id="w1", settings=small_batches, stopping=stopping
    )
    assert result is None
    with session_factory() as session:
        job = session.get_one(ImportJob, job_id)
        assert (job.status, job.cursor, job.locked_by, job.failure_reason, job.attempts) == (
            "queued",
            2 * BATCH + 1,
            None,
            None,
            0,
        )
    assert _chunks(session_factory, job_id) > 0
    assert queue.work(small_batches, session_factory) == 1
    with session_factory() as session:
        job = session.get_one(ImportJob, job_id)
        assert (job.status, job.new_count, job.total_rows) == ("completed", ROWS, ROWS)
    assert _chunks(session_factory, job_id) == 0


def test_the_same_file_cannot_be_queued_twice_and_a_lost_upload_fails_the_job(
    small_batches: Settings, session_factory: sessionmaker[Session], database_url: str
) -> None:
    m = make_merchant(session_factory)
    with _app(small_batches, database_url) as web:
        job_id = _queue(web, m, _file(10))
        again = web.post(
            "/api/v1/imports/customers",
            files={"file": ("q.csv", _file(10), "text/csv")},
            headers=m.headers,
        )
        assert again.status_code == 409, again.text
        assert again.json()["title"] == "Import in progress"
        with unit_of_work(session_factory) as session:
            session.execute(delete(ImportUploadChunk))
        assert queue.work(small_batches, session_factory) == 1
        failed = web.get(f"/api/v1/imports/{job_id}", headers=m.headers).json()
    assert failed["status"] == "failed"
    assert failed["failure_reason"].startswith(f"the uploaded file of import {job_id} is no longer")


def test_old_previews_and_finished_jobs_keep_no_file(
    small_batches: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    path = tmp_path / "p.csv"
    path.write_bytes(_file(10))
    preview = queue.service.preview_import(
        session_factory,
        merchant_id=m.id,
        path=path,
        options=queue.service.CustomerImportOptions(),
    )
    queue.store_preview_upload(session_factory, merchant_id=m.id, job_id=preview.id, path=path)
    queue.prune_uploads(session_factory)
    assert _chunks(session_factory, preview.id) == 1  # a fresh preview keeps its file
    queue.prune_uploads(session_factory, now=utcnow() + queue.PREVIEW_UPLOAD_KEEP * 2)
    assert _chunks(session_factory, preview.id) == 0


def test_a_waited_import_is_run_by_the_request_and_leaves_nothing_stored(
    small_batches: Settings, session_factory: sessionmaker[Session], database_url: str
) -> None:
    m = make_merchant(session_factory)
    with _app(small_batches, database_url) as web:
        r = web.post(
            "/api/v1/imports/customers?wait=true",
            files={"file": ("q.csv", _file(), "text/csv")},
            headers=m.headers,
        )
    assert r.status_code == 201, r.text
    assert (r.json()["status"], r.json()["new_count"]) == ("completed", ROWS)
    with session_factory() as session:
        job = session.get_one(ImportJob, r.json()["id"])
        assert (job.attempts, job.locked_by) == (1, None)
    assert _chunks(session_factory, r.json()["id"]) == 0
