"""Hostile import files: NUL characters, dates at the ends of the calendar, formulas in cells,
and unexpected failures, through the service, the API, the admin and the CLI."""

from __future__ import annotations

import csv
import html
import io
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tally.api.app import create_app
from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.engine import unit_of_work
from tally.imports import customer_writer, queue
from tally.imports import service as imports
from tally.imports.orm import ImportJob
from tally.program.config_service import update_program
from tally.program.orm import Order
from tally.state import AppState
from tests.integration.test_admin_pages import admin_app, apply_import, make_store, sign_in
from tests.support.factories import MerchantFixture, make_merchant

CustomerOptions = imports.CustomerImportOptions
OrderOptions = imports.OrderImportOptions

NUL_EXPECTED = (
    "a value without NUL characters (the invisible character shown as \\0, "
    "left by a damaged file or a faulty export: delete it)"
)
GENERIC_FAILURE = re.compile(
    r"the import failed unexpectedly \(reference ([0-9a-f]{8})\); "
    r"the operator's log has the details"
)
SQL = "INSERT INTO customers (email, first_name) VALUES (%(email)s, %(first_name)s)"


@pytest.fixture
def api(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    """The API on the test database."""
    app = create_app(settings, AppState(settings=settings, session_factory=session_factory))
    with TestClient(app) as client:
        yield client


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _count(factory: sessionmaker[Session], model: Any, merchant_id: int) -> int:
    with factory() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(model).where(model.merchant_id == merchant_id)
            )
            or 0
        )


def _names(factory: sessionmaker[Session], merchant_id: int) -> dict[str, tuple[Any, ...]]:
    with factory() as session:
        rows = session.execute(
            select(Customer.email, Customer.first_name, Customer.last_name, Customer.points_balance)
            .where(Customer.merchant_id == merchant_id)
            .order_by(Customer.email)
        )
        return {email: (first, last, points) for email, first, last, points in rows}


def _rejected_csv(factory: sessionmaker[Session], merchant_id: int, job_id: int) -> str:
    with factory() as session:
        return "".join(imports.rejected_csv(session, merchant_id=merchant_id, job_id=job_id))


def _finished(api: TestClient, location: str, headers: dict[str, str]) -> dict[str, Any]:
    # The tests run no background worker: run the queued import here, as a worker would.
    state = api.app.state.tally  # type: ignore[attr-defined]
    queue.work(state.settings, state.session_factory)
    for _ in range(200):
        job: dict[str, Any] = api.get(location, headers=headers).json()
        if job["status"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError(f"{location} is still running")


def _upload(name: str, data: bytes) -> dict[str, tuple[str, bytes, str]]:
    return {"file": (name, data, "text/csv")}


def _data_error(*_args: object, **_kwargs: object) -> Any:
    """What psycopg reports for a NUL, as SQLAlchemy wraps it: SQL and values included."""
    raise DataError(
        SQL,
        {"email": "ana@example.com", "first_name": "A\x00na"},
        ValueError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
    )


def _logged_failure(caplog: pytest.LogCaptureFixture, reference: str) -> logging.LogRecord:
    found = [record for record in caplog.records if reference in record.getMessage()]
    assert len(found) == 1, [record.getMessage() for record in caplog.records]
    return found[0]


# --- NUL characters --------------------------------------------------------------------------

NUL_CUSTOMERS = (
    b"email,first_name,last_name,points\n"
    b"ana\x00@example.com,Ana,Souza,10\n"
    b"wei@example.com,W\x00ei,Li,20\n"
    b"jo@example.com,Jo,Okafor,30\n"
)
NUL_ORDERS = (
    b"order_id,email,total,placed_at\n"
    b"A\x001,ana@example.com,10.00,2025-01-05\n"
    b"A2,wei@exa\x00mple.com,20.00,2025-01-06\n"
    b"A3,jo@example.com,30.00,2025-01-07\n"
)


@pytest.mark.parametrize("kind", ["customers", "orders"])
def test_nul_characters_are_row_errors_in_preview_refusal_and_rejected_rows(
    session_factory: sessionmaker[Session], tmp_path: Path, kind: str
) -> None:
    m = make_merchant(session_factory)
    options: imports.ImportOptions
    if kind == "customers":
        path = _write(tmp_path, "nul.csv", NUL_CUSTOMERS)
        options, columns = CustomerOptions(), ["email", "first_name"]
        values = ["ana\x00@example.com", "W\x00ei"]
    else:
        with unit_of_work(session_factory, merchant_id=m.id) as session:
            update_program(session, merchant_id=m.id, changes={"place_order": {"enabled": True}})
        path = _write(tmp_path, "nul.csv", NUL_ORDERS)
        options, columns = OrderOptions(), ["order_id", "email"]
        values = ["A\x001", "wei@exa\x00mple.com"]

    preview = imports.preview_import(session_factory, merchant_id=m.id, path=path, options=options)
    assert (preview.status, preview.total_rows, preview.invalid_count, preview.new_count) == (
        "previewed",
        3,
        2,
        1,
    )
    assert [(e["row"], e["column"], e["value"], e["expected"]) for e in preview.errors] == [
        (2, columns[0], values[0], NUL_EXPECTED),
        (3, columns[1], values[1], NUL_EXPECTED),
    ]

    with pytest.raises(imports.ImportRefused):
        imports.run_import(session_factory, merchant_id=m.id, path=path, options=options)
    assert _count(session_factory, Customer, m.id) == 0

    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=path,
        options=type(options)(skip_invalid=True),
    )
    assert (job.status, job.new_count, job.invalid_count) == ("completed", 1, 2)
    assert list(_names(session_factory, m.id)) == ["jo@example.com"]
    records = list(csv.reader(io.StringIO(_rejected_csv(session_factory, m.id, job.id))))
    shown = values[0].replace("\x00", "\\0")
    assert records[1][-1] == (f'row 2, column "{columns[0]}": "{shown}" — expected {NUL_EXPECTED}')
    # The row as it was, so the merchant sees (and deletes) the character in place.
    assert values[0] in records[1]


def test_a_nul_character_through_the_api_preview_is_a_row_error(
    api: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)

    r = api.post(
        "/api/v1/imports/customers/preview",
        files=_upload("nul.csv", NUL_CUSTOMERS),
        headers=m.headers,
    )

    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["invalid_count"], body["new_count"]) == (2, 1)
    assert body["errors"][0]["message"] == (
        f'row 2, column "email": "ana\\0@example.com" — expected {NUL_EXPECTED}'
    )


# --- dates at the ends of the calendar -------------------------------------------------------

FAR_DATES = (
    b"order_id,email,total,placed_at\n"
    b"A1,ana@example.com,10.00,9999-12-31T23:59:59-23:59\n"
    b"A2,wei@example.com,20.00,0001-01-01T00:00:00+23:59\n"
    b"A3,jo@example.com,30.00,1969-12-31\n"
    b"A4,jo@example.com,40.00,2024-02-30\n"
    b"A5,jo@example.com,50.00,2025-01-07\n"
)


def test_order_dates_without_a_utc_equivalent_are_row_errors_in_an_api_preview(
    api: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)

    r = api.post(
        "/api/v1/imports/orders/preview", files=_upload("far.csv", FAR_DATES), headers=m.headers
    )

    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["total_rows"], body["invalid_count"], body["new_count"]) == (5, 4, 1)
    assert [(e["row"], e["expected"]) for e in body["errors"]] == [
        (2, "a date that is not in the future"),
        (3, "a date on or after 1970-01-01"),
        (4, "a date on or after 1970-01-01"),
        (5, "a real date (2024-02-30 is not one: February 2024 has 29 days)"),
    ]


def test_order_dates_without_a_utc_equivalent_are_rejected_rows_of_a_background_import(
    api: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)

    r = api.post(
        "/api/v1/imports/orders",
        files=_upload("far.csv", FAR_DATES),
        data={"skip_invalid": "true"},
        headers=m.headers,
    )

    assert r.status_code == 202, r.text
    job = _finished(api, r.headers["location"], m.headers)
    assert (job["status"], job["failure_reason"], job["new_count"], job["invalid_count"]) == (
        "completed",
        None,
        1,
        4,
    )
    rejected = api.get(job["rejected_rows_url"], headers=m.headers)
    records = list(csv.reader(io.StringIO(rejected.text)))
    assert [record[0] for record in records] == ["order_id", "A1", "A2", "A3", "A4"]
    assert _count(session_factory, Order, m.id) == 1


# --- unexpected failures ---------------------------------------------------------------------


def test_an_unexpected_error_is_logged_and_the_job_shows_only_a_reference(
    api: TestClient,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = make_merchant(session_factory)
    monkeypatch.setattr(customer_writer, "write_customers", _data_error)
    caplog.set_level(logging.ERROR, logger="tally.imports.service")

    r = api.post(
        "/api/v1/imports/customers",
        files=_upload("c.csv", b"email,points\nana@example.com,10\n"),
        headers=m.headers,
    )

    assert r.status_code == 202, r.text
    job = _finished(api, r.headers["location"], m.headers)
    assert job["status"] == "failed"
    reason = job["failure_reason"]
    match = GENERIC_FAILURE.fullmatch(reason)
    assert match is not None, reason
    assert "INSERT" not in reason
    assert "ana@example.com" not in reason
    assert "DataError" not in reason
    # The operator's log has everything, found by the reference.
    record = _logged_failure(caplog, match[1])
    assert record.getMessage() == f"import {job['id']} failed unexpectedly (reference {match[1]})"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], DataError)
    assert SQL in caplog.text
    listed = api.get("/api/v1/imports", headers=m.headers).json()["items"]
    assert [item["failure_reason"] for item in listed] == [reason]
    assert _count(session_factory, Customer, m.id) == 0


def test_an_unexpected_error_of_a_waited_import_is_a_problem_with_the_reference(
    api: TestClient, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    m = make_merchant(session_factory)
    monkeypatch.setattr(customer_writer, "write_customers", _data_error)

    r = api.post(
        "/api/v1/imports/customers",
        params={"wait": "true"},
        files=_upload("c.csv", b"email,points\nana@example.com,10\n"),
        headers=m.headers,
    )

    assert r.status_code == 500
    problem = r.json()
    assert problem["title"] == "Import failed"
    match = GENERIC_FAILURE.fullmatch(problem["detail"])
    assert match is not None, problem
    assert "INSERT" not in r.text
    with session_factory() as session:
        job = session.scalars(select(ImportJob).where(ImportJob.merchant_id == m.id)).one()
    assert (job.status, job.failure_reason) == ("failed", problem["detail"])


def test_an_unexpected_error_in_a_preview_is_a_problem_with_the_reference(
    api: TestClient,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = make_merchant(session_factory)
    monkeypatch.setattr(customer_writer, "load_existing", _data_error)
    caplog.set_level(logging.ERROR, logger="tally.imports.service")

    r = api.post(
        "/api/v1/imports/customers/preview",
        files=_upload("c.csv", b"email,points\nana@example.com,10\n"),
        headers=m.headers,
    )

    assert r.status_code == 500
    match = GENERIC_FAILURE.fullmatch(r.json()["detail"])
    assert match is not None, r.text
    assert "INSERT" not in r.text
    assert _logged_failure(caplog, match[1]).getMessage().startswith("import preview failed")


def test_the_service_raises_import_failed_from_the_original_error(
    session_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = make_merchant(session_factory)
    monkeypatch.setattr(customer_writer, "write_customers", _data_error)
    path = _write(tmp_path, "c.csv", b"email,points\nana@example.com,10\n")

    with pytest.raises(imports.ImportFailed) as raised:
        imports.run_import(session_factory, merchant_id=m.id, path=path, options=CustomerOptions())

    assert isinstance(raised.value.__cause__, DataError)
    assert raised.value.status_code == 500
    assert raised.value.job is not None
    assert (raised.value.job.status, raised.value.job.failure_reason) == (
        "failed",
        raised.value.detail,
    )
    assert GENERIC_FAILURE.fullmatch(raised.value.detail)


def test_a_domain_error_during_an_import_keeps_its_message(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m = make_merchant(session_factory)
    # The header reads well; the broken quote only shows on row 3, once the job is running.
    path = _write(tmp_path, "c.csv", b'email,points\nana@example.com,10\n"wei@example.com,2\n')

    with pytest.raises(imports.ImportFileRefused) as raised:
        imports.run_import(session_factory, merchant_id=m.id, path=path, options=CustomerOptions())

    with session_factory() as session:
        job = session.scalars(select(ImportJob).where(ImportJob.merchant_id == m.id)).one()
    assert job.status == "failed"
    assert job.failure_reason == raised.value.detail
    assert job.failure_reason.startswith("row 3 is not valid CSV")


def test_the_admin_shows_a_reference_for_an_unexpected_error(
    settings: Settings, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(session_factory, "owner@hostile.example")
    monkeypatch.setattr(customer_writer, "write_customers", _data_error)
    with TestClient(admin_app(settings, session_factory)) as client:
        assert sign_in(client, store.email) == (303, "/admin")
        fragment = apply_import(client, "customers", b"email,points\nana@example.com,10\n")

    assert 'data-state="failed"' in fragment
    assert GENERIC_FAILURE.search(html.unescape(fragment)) is not None, fragment
    assert "INSERT" not in fragment
    assert "DataError" not in fragment


# --- formulas in the rejected rows -----------------------------------------------------------

FORMULAS = (
    "email,first_name,last_name,points\n"
    'ana@example.com,"=HYPERLINK(""https://evil.example"",""x"")",@SUM(A1),-50\n'
    'wei@example.com,+Wei,"\tLi",lots\n'
    "jo@example.com,Jo,Okafor,30\n"
)


def _formula_import(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> tuple[MerchantFixture, ImportJob]:
    m = make_merchant(session_factory)
    job = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=_write(tmp_path, "formulas.csv", FORMULAS.encode()),
        options=CustomerOptions(skip_invalid=True),
    )
    assert (job.new_count, job.invalid_count) == (1, 2)
    return m, job


def _assert_neutralised(text: str) -> None:
    records = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    # A rejected file of a rejected file keeps the first reason and adds its own after it.
    assert records[0][:5] == ["email", "first_name", "last_name", "points", "reason"]
    assert records[1][:4] == [
        "ana@example.com",
        '\'=HYPERLINK("https://evil.example","x")',
        "'@SUM(A1)",
        "'-50",
    ]
    assert records[2][:4] == ["wei@example.com", "'+Wei", "'\tLi", "lots"]
    assert [record[4][:3] for record in records[1:]] == ["row", "row"]
    assert len(records) == 3


def test_formulas_in_the_rejected_rows_are_neutralised_and_read_back_as_they_were(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    m, job = _formula_import(session_factory, tmp_path)
    text = _rejected_csv(session_factory, m.id, job.id)
    _assert_neutralised(text)

    # Imported again as it is: the same rows are refused for the same reasons, values unchanged.
    again = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=_write(tmp_path, "again.csv", text.encode()),
        options=CustomerOptions(skip_invalid=True),
    )
    assert (again.new_count, again.invalid_count) == (0, 2)
    assert [(e["row"], e["column"], e["value"]) for e in again.errors] == [
        (2, "points", "-50"),
        (3, "points", "lots"),
    ]
    _assert_neutralised(_rejected_csv(session_factory, m.id, again.id))

    # Corrected, it imports with the names exactly as the first file had them.
    corrected = text.replace("'-50", "50").replace("lots", "20")
    fixed = imports.run_import(
        session_factory,
        merchant_id=m.id,
        path=_write(tmp_path, "fixed.csv", corrected.encode()),
        options=CustomerOptions(),
    )
    assert (fixed.status, fixed.new_count, fixed.invalid_count) == ("completed", 2, 0)
    assert _names(session_factory, m.id) == {
        "ana@example.com": ('=HYPERLINK("https://evil.example","x")', "@SUM(A1)", 50),
        "jo@example.com": ("Jo", "Okafor", 30),
        "wei@example.com": ("+Wei", "Li", 20),
    }


def test_formulas_in_the_api_and_admin_rejected_rows_are_neutralised(
    api: TestClient,
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    m, job = _formula_import(session_factory, tmp_path)
    r = api.get(f"/api/v1/imports/{job.id}/rejected.csv", headers=m.headers)
    assert r.status_code == 200
    _assert_neutralised(r.text)

    store = make_store(session_factory, "owner@formulas.example")
    with TestClient(admin_app(settings, session_factory)) as client:
        assert sign_in(client, store.email) == (303, "/admin")
        applied = apply_import(client, "customers", FORMULAS.encode(), skip_invalid="on")
        job_id = re.search(r"/admin/imports/jobs/(\d+)/rejected\.csv", applied)
        assert job_id is not None, applied
        admin = client.get(f"/admin/imports/jobs/{job_id[1]}/rejected.csv")
    assert admin.status_code == 200
    _assert_neutralised(admin.text)


# --- the command line ------------------------------------------------------------------------


def _cli(monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path, *args: str) -> Any:
    from tally.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TALLY_DATABASE_URL", database_url)
    monkeypatch.setenv("TALLY_ENVIRONMENT", "test")
    monkeypatch.setenv("TALLY_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("TALLY_WORKER_MODE", "off")
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner().invoke(app, list(args))


def test_the_cli_reports_nul_characters_and_far_dates_as_row_errors(
    session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_merchant(session_factory)
    customers = _write(tmp_path, "nul.csv", NUL_CUSTOMERS)
    orders = _write(tmp_path, "far.csv", FAR_DATES)

    refused = _cli(monkeypatch, database_url, tmp_path, "import", "customers", str(customers))
    assert refused.exit_code == 2, refused.output
    assert refused.exception is None or isinstance(refused.exception, SystemExit)
    assert "2 of the 3 rows of nul.csv are not valid" in " ".join(refused.output.split())

    dry = _cli(monkeypatch, database_url, tmp_path, "import", "orders", str(orders), "--dry-run")
    # The file would be refused, so the dry run says so by its exit code too.
    assert dry.exit_code == 2, dry.output
    assert "a date on or after 1970-01-01" in dry.output
    assert "Traceback" not in dry.output


def test_the_cli_rejected_file_is_neutralised(
    session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_merchant(session_factory)
    source = _write(tmp_path, "formulas.csv", FORMULAS.encode())
    target = tmp_path / "out.csv"

    result = _cli(
        monkeypatch,
        database_url,
        tmp_path,
        "import",
        "customers",
        str(source),
        "--skip-invalid",
        "--rejected-file",
        str(target),
    )

    assert result.exit_code == 0, result.output
    _assert_neutralised(target.read_text(encoding="utf-8"))


def test_the_cli_shows_a_reference_for_an_unexpected_error(
    session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_merchant(session_factory)
    monkeypatch.setattr(customer_writer, "write_customers", _data_error)
    path = _write(tmp_path, "c.csv", b"email,points\nana@example.com,10\n")

    result = _cli(monkeypatch, database_url, tmp_path, "import", "customers", str(path))

    # Not bad input (2): the operator looks the reference up in the log.
    assert result.exit_code == 1, result.output
    assert GENERIC_FAILURE.search(" ".join(result.output.split())) is not None, result.output
