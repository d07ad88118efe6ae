"""Drift checks against the emulator over HTTP: exactly the planted drift, fixes that send only
it, a check the call budget cuts short that continues from its marker, and the CLI."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tally.api.app import create_app
from tally.cli.dotdigital import dotdigital_app
from tally.config import Settings
from tally.db.engine import unit_of_work
from tally.devtools.dotdigital_emulator import DEMO_PASSWORD, DEMO_USERNAME, EmulatorServer
from tally.integrations.dotdigital import reconcile, service
from tally.integrations.dotdigital.sync import flush_merchant, run_manual_sync
from tally.state import AppState
from tests.integration.test_admin_pages import admin_app, csrf_of, make_store, sign_in
from tests.integration.test_dotdigital_service import (
    FAST,
    all_expected,
    clean_sqlite_quickly,
    connect,
    dotdigital_settings,
    emulator_config,
    emulator_fields,
    insert_customers,
    set_tiers,
)
from tests.support.factories import make_merchant

LIST = "GET /contacts/v3"
PATCH = "PATCH /contacts/v3/email/{email}"
# Seven contacts a page, so 30 contacts take several pages.
PAGED = dataclasses.replace(FAST, reconcile_page_size=7)


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(emulator_config()) as running:
        yield running


@pytest.fixture
def emulator(server: EmulatorServer) -> EmulatorServer:
    server.emulator.reset()
    return server


@pytest.fixture
def dd_settings(settings: Settings, emulator: EmulatorServer) -> Settings:
    return dotdigital_settings(settings, emulator)


@pytest.fixture(autouse=True)
def _quick_cleanup(engine: Engine, session_factory: sessionmaker[Session]) -> Iterator[None]:
    yield
    clean_sqlite_quickly(engine)


def _email(merchant_id: int, i: int) -> str:
    return f"bulk{i}@m{merchant_id}.example.com"


def _synced_merchant(
    factory: sessionmaker[Session],
    settings: Settings,
    count: int = 30,
    merchant_id: int | None = None,
) -> tuple[int, list[int]]:
    """A merchant whose `count` customers were all sent to the emulator by a manual sync."""
    if merchant_id is None:
        merchant_id = make_merchant(factory).id
    set_tiers(factory, merchant_id)
    connect(factory, settings, merchant_id)
    ids = insert_customers(factory, merchant_id, count)
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        job_id = service.start_manual_sync(session, merchant_id=merchant_id).id
    assert run_manual_sync(settings, factory, job_id, options=FAST).status == "finished"
    return merchant_id, ids


def _plant(emulator: EmulatorServer, merchant_id: int) -> None:
    """Two balances changed, one tier cleared, one contact deleted; two harmless rewrites."""
    state = emulator.emulator
    state.plant_values(_email(merchant_id, 3), {"LOYALTY_POINTS": 999})
    state.plant_values(_email(merchant_id, 11), {"LOYALTY_POINTS": 0})
    state.plant_values(_email(merchant_id, 10), {"LOYALTY_VIP_TIER": None})
    state.delete_contact(_email(merchant_id, 20))
    # The same values in another notation are no drift.
    state.plant_values(
        _email(merchant_id, 6),
        {"LOYALTY_POINTS": 6.0, "LOYALTY_BIRTHDAY": "1986-07-07T00:00:00Z"},
    )


def _check(
    factory: sessionmaker[Session], settings: Settings, merchant_id: int, options: Any = PAGED
) -> reconcile.ReconcileView:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        reconcile_id = reconcile.start_reconcile(session, merchant_id=merchant_id).id
    return reconcile.run_reconcile(settings, factory, reconcile_id, options=options)


def _differences(
    factory: sessionmaker[Session], merchant_id: int, reconcile_id: int
) -> list[tuple[str, str, list[dict[str, Any]]]]:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        found = reconcile.list_differences(
            session, merchant_id=merchant_id, reconcile_id=reconcile_id, limit=100
        )
    return [(d.email, d.state, d.fields) for d in found]


def _send_backlog(factory: sessionmaker[Session], settings: Settings, merchant_id: int) -> None:
    """Run the automatic sync until the merchant's backlog is empty."""

    def backlog() -> int:
        with factory() as session:
            return reconcile.backlog_size(session, merchant_id=merchant_id)

    flush = lambda: flush_merchant(settings, factory, merchant_id, options=FAST)  # noqa: E731
    assert reconcile.flush_fixes(flush, backlog, timeout_seconds=30) == 0


def _calls(emulator: EmulatorServer, key: str) -> list[dict[str, Any]]:
    return [c for c in emulator.emulator.calls if f"{c['method']} {c['route']}" == key]


def test_a_check_finds_exactly_the_planted_drift_and_a_fix_sends_only_it(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    merchant_id, ids = _synced_merchant(session_factory, dd_settings)
    assert emulator_fields(emulator) == all_expected(session_factory, merchant_id)
    _plant(emulator, merchant_id)
    first_call = len(emulator.emulator.calls)

    view = _check(session_factory, dd_settings, merchant_id)

    assert (view.status, view.checked_count, view.differ_count, view.missing_count) == (
        "finished",
        29,
        3,
        1,
    )
    assert (view.drifted, view.compared, view.contacts_read, view.pages_read) == (4, 30, 29, 5)
    assert _differences(session_factory, merchant_id, view.id) == [
        (
            _email(merchant_id, 3),
            "differs",
            [{"field": "LOYALTY_POINTS", "tally": 3, "dotdigital": 999}],
        ),
        (
            _email(merchant_id, 10),
            "differs",
            [{"field": "LOYALTY_VIP_TIER", "tally": "Gold Circle", "dotdigital": None}],
        ),
        (
            _email(merchant_id, 11),
            "differs",
            [{"field": "LOYALTY_POINTS", "tally": 11, "dotdigital": 0}],
        ),
        (_email(merchant_id, 20), "missing", []),
    ]
    # Only listing calls, each asking for the mapped fields, the first without a marker.
    listing = emulator.emulator.calls[first_call:]
    assert [f"{c['method']} {c['route']}" for c in listing] == [LIST] * 5
    queries = [parse_qs(c["query"]) for c in listing]
    assert queries[0]["data-fields"] == [
        "LOYALTY_POINTS|LOYALTY_REFERRAL_URL|LOYALTY_BIRTHDAY|LOYALTY_VIP_TIER"
    ]
    assert "marker" not in queries[0]
    assert all("marker" in q and q["limit"] == ["7"] for q in queries[1:])

    with unit_of_work(session_factory, merchant_id=merchant_id) as session:
        assert reconcile.queue_fixes(session, merchant_id=merchant_id) == 4
    before_fix = len(emulator.emulator.calls)
    _send_backlog(session_factory, dd_settings, merchant_id)
    fixes = emulator.emulator.calls[before_fix:]
    assert sorted(c["body"]["identifiers"]["email"] for c in fixes) == sorted(
        _email(merchant_id, i) for i in (3, 10, 11, 20)
    )
    assert {f"{c['method']} {c['route']}" for c in fixes} == {PATCH}
    assert emulator_fields(emulator)[_email(merchant_id, 6)]["LOYALTY_POINTS"] == 6.0
    del ids

    again = _check(session_factory, dd_settings, merchant_id)
    assert (again.status, again.checked_count, again.drifted, again.compared) == (
        "finished",
        30,
        0,
        30,
    )
    assert _differences(session_factory, merchant_id, again.id) == []


def test_customers_waiting_to_be_sent_are_not_reported(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    merchant_id, ids = _synced_merchant(session_factory, dd_settings)
    _plant(emulator, merchant_id)
    with unit_of_work(session_factory, merchant_id=merchant_id) as session:
        service.mark_dirty(session, merchant_id=merchant_id, customer_id=ids[3])
    view = _check(session_factory, dd_settings, merchant_id)
    # Customer 3 is in the backlog: the sync is about to send it.
    assert (view.status, view.checked_count, view.differ_count, view.missing_count) == (
        "finished",
        28,
        2,
        1,
    )
    emails = [
        email for email, _state, _fields in _differences(session_factory, merchant_id, view.id)
    ]
    assert emails == [_email(merchant_id, i) for i in (10, 11, 20)]


def test_a_check_the_budget_cuts_short_continues_from_its_marker(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    merchant_id, _ids = _synced_merchant(session_factory, dd_settings)
    _plant(emulator, merchant_id)
    with unit_of_work(session_factory, merchant_id=merchant_id) as session:
        # Six calls a minute: a bucket of one call, refilled every ten seconds.
        service.set_calls_per_minute(session, merchant_id=merchant_id, calls_per_minute=6)
    first_call = len(emulator.emulator.calls)

    stopped = _check(session_factory, dd_settings, merchant_id)

    assert (stopped.status, stopped.pages_read, stopped.contacts_read) == ("running", 1, 7)
    assert len(_calls(emulator, LIST)) == 1
    with unit_of_work(session_factory, merchant_id=merchant_id) as session:
        service.set_calls_per_minute(session, merchant_id=merchant_id, calls_per_minute=None)
    # Starting again continues the running check rather than beginning another.
    finished = _check(session_factory, dd_settings, merchant_id)

    assert finished.id == stopped.id
    assert (
        finished.status,
        finished.checked_count,
        finished.differ_count,
        finished.missing_count,
    ) == (
        "finished",
        29,
        3,
        1,
    )
    queries = [parse_qs(c["query"]) for c in emulator.emulator.calls[first_call:]]
    assert len(queries) == 5
    markers = [q.get("marker", [None])[0] for q in queries]
    assert markers[0] is None
    assert None not in markers[1:]
    assert len(set(markers[1:])) == 4


def test_the_emulator_refuses_what_dotdigital_refuses(emulator: EmulatorServer) -> None:
    auth = (DEMO_USERNAME, DEMO_PASSWORD)
    with httpx.Client(base_url=emulator.base_url, auth=auth) as client:
        for params in (
            {"limit": "0"},
            {"limit": "5001"},
            {"~created": "2024-01-01T00:00:00Z", "~modified": "2024-01-01T00:00:00Z"},
            {"~listId": "1", "~segmentId": "2"},
            {"marker": "not-a-marker"},
            {"data-fields": "NO_SUCH_FIELD"},
        ):
            answer = client.get("/contacts/v3", params=params)
            assert answer.status_code == 400, params
            assert answer.json()["errorCode"].startswith("contacts:")
        empty = client.get("/contacts/v3", params={"limit": "5000"})
    assert empty.status_code == 200
    assert empty.json()["_items"] == []
    assert "next" not in empty.json()["_links"]


def _cli(database_url: str, emulator: EmulatorServer) -> CliRunner:
    return CliRunner(
        env={
            "TALLY_DATABASE_URL": database_url,
            "TALLY_ENVIRONMENT": "test",
            "TALLY_PUBLIC_BASE_URL": "http://tally.test",
            "TALLY_DOTDIGITAL_BASE_URL": emulator.base_url,
            "TALLY_DOTDIGITAL_CALLS_PER_MINUTE": "60000",
        }
    )


def test_the_cli_reports_drift_with_its_exit_code_and_fixes_it(
    session_factory: sessionmaker[Session],
    dd_settings: Settings,
    emulator: EmulatorServer,
    database_url: str,
) -> None:
    merchant_id, _ids = _synced_merchant(session_factory, dd_settings)
    runner = _cli(database_url, emulator)

    clean = runner.invoke(dotdigital_app, ["reconcile", "--merchant", str(merchant_id)])
    assert clean.exit_code == 0, clean.output
    assert "0 of 30 contacts differ" in " ".join(clean.output.split())

    _plant(emulator, merchant_id)
    drift = runner.invoke(dotdigital_app, ["reconcile", "--merchant", str(merchant_id)])
    assert drift.exit_code == 1, drift.output
    text = " ".join(drift.output.split())
    assert "4 of 30 contacts differ (1 missing in Dotdigital)" in text
    assert _email(merchant_id, 3) in drift.output
    assert _email(merchant_id, 10) in drift.output
    assert _email(merchant_id, 6) not in drift.output

    before = len(emulator.emulator.calls)
    fixed = runner.invoke(dotdigital_app, ["reconcile", "--fix", "--merchant", str(merchant_id)])
    assert fixed.exit_code == 0, fixed.output
    assert "sent 4 drifted contacts" in " ".join(fixed.output.split())
    patched = [
        c["body"]["identifiers"]["email"]
        for c in emulator.emulator.calls[before:]
        if f"{c['method']} {c['route']}" == PATCH
    ]
    assert sorted(patched) == sorted(_email(merchant_id, i) for i in (3, 10, 11, 20))

    after = runner.invoke(dotdigital_app, ["reconcile", "--merchant", str(merchant_id)])
    assert after.exit_code == 0, after.output
    assert "0 of 30 contacts differ" in " ".join(after.output.split())


def _drift_section(html: str) -> str:
    section = html[html.index('id="drift-area"') :]
    return " ".join(section[: section.index("</section>")].split())


def test_the_admin_page_checks_shows_the_figure_and_fixes(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    store = make_store(session_factory, "owner@drift.example")
    merchant_id, _ids = _synced_merchant(
        session_factory, dd_settings, merchant_id=store.merchant_id
    )
    _plant(emulator, merchant_id)
    with TestClient(admin_app(dd_settings, session_factory)) as client:
        assert sign_in(client, store.email) == (303, "/admin")
        page = client.get("/admin/integrations/dotdigital").text
        assert "No drift check yet." in _drift_section(page)
        listed_before = len(_calls(emulator, LIST))

        started = client.post(
            "/admin/integrations/dotdigital/drift/check",
            data={"csrf_token": csrf_of(page)},
            follow_redirects=False,
        )
        assert started.status_code == 303
        assert started.headers["location"] == "/admin/integrations/dotdigital?done=checking#drift"
        running = client.get(started.headers["location"]).text
        # The request only queued the check: nothing was read from Dotdigital yet.
        assert len(_calls(emulator, LIST)) == listed_before
        assert 'data-status="running"' in running
        assert "Checking" in _drift_section(running)

        with session_factory() as session:
            view = reconcile.latest_reconcile(session, merchant_id=merchant_id)
        assert view is not None
        reconcile.run_reconcile(dd_settings, session_factory, view.id, options=PAGED)
        fragment = client.get(
            "/admin/integrations/dotdigital/drift", headers={"HX-Request": "true"}
        ).text
        assert "<strong>4 of 30 contacts differ</strong> (1 missing in Dotdigital)" in " ".join(
            fragment.split()
        )
        done = client.get("/admin/integrations/dotdigital").text
        section = _drift_section(done)
        assert "<strong>4 of 30 contacts differ</strong> (1 missing in Dotdigital)" in section
        assert (
            f"{_email(merchant_id, 3)}</a></td><td>LOYALTY_POINTS</td><td>3</td><td>999</td>"
            in (section.replace("> <", "><"))
        )
        assert "Missing in Dotdigital" in section
        assert _email(merchant_id, 6) not in section
        assert "Fix these" in section

        fixed = client.post(
            "/admin/integrations/dotdigital/drift/fix",
            data={"csrf_token": csrf_of(done)},
            follow_redirects=False,
        )
        assert fixed.headers["location"] == "/admin/integrations/dotdigital?done=fixing#drift"
        with session_factory() as session:
            assert reconcile.backlog_size(session, merchant_id=merchant_id) == 4
        _send_backlog(session_factory, dd_settings, merchant_id)
        again = _check(session_factory, dd_settings, merchant_id)
        assert again.drifted == 0
        after = _drift_section(client.get("/admin/integrations/dotdigital").text)
        assert "<strong>0 of 30 contacts differ</strong>" in after
        assert "Fix these" not in after


def test_a_customer_sent_while_a_check_waits_is_not_taken_for_missing(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    merchant_id, ids = _synced_merchant(session_factory, dd_settings)
    with unit_of_work(session_factory, merchant_id=merchant_id) as session:
        service.mark_dirty(session, merchant_id=merchant_id, customer_id=ids[2])
        service.set_calls_per_minute(session, merchant_id=merchant_id, calls_per_minute=6)
    stopped = _check(session_factory, dd_settings, merchant_id)
    # The first page listed customer 2 while it waited in the backlog: seen, not compared.
    assert (stopped.status, stopped.contacts_read, stopped.checked_count) == ("running", 7, 6)
    with unit_of_work(session_factory, merchant_id=merchant_id) as session:
        service.set_calls_per_minute(session, merchant_id=merchant_id, calls_per_minute=None)
    _send_backlog(session_factory, dd_settings, merchant_id)

    finished = _check(session_factory, dd_settings, merchant_id)
    assert (finished.id, finished.status, finished.checked_count, finished.drifted) == (
        stopped.id,
        "finished",
        29,
        0,
    )


def test_the_api_starts_a_check_reports_it_and_queues_the_fix(
    session_factory: sessionmaker[Session], dd_settings: Settings, emulator: EmulatorServer
) -> None:
    ours, theirs = make_merchant(session_factory), make_merchant(session_factory)
    merchant_id, _ids = _synced_merchant(session_factory, dd_settings, merchant_id=ours.id)
    _plant(emulator, merchant_id)
    path = "/api/v1/integrations/dotdigital/reconcile"
    app = create_app(dd_settings, AppState(settings=dd_settings, session_factory=session_factory))
    with TestClient(app) as client:
        assert client.get(path, headers=ours.headers).status_code == 404
        started = client.post(path, headers=ours.headers)
        assert started.status_code == 202
        check = started.json()["check"]
        assert (check["status"], check["pages_read"]) == ("running", 0)
        assert client.post(f"{path}/fix", headers=ours.headers).status_code == 409

        reconcile.run_reconcile(dd_settings, session_factory, check["id"], options=PAGED)
        found = client.get(path, params={"limit": 2, "offset": 2}, headers=ours.headers).json()
        assert (found["check"]["status"], found["drifted"], found["compared"]) == (
            "finished",
            4,
            30,
        )
        assert [(d["email"], d["state"]) for d in found["differences"]] == [
            (_email(merchant_id, 11), "differs"),
            (_email(merchant_id, 20), "missing"),
        ]
        assert client.get(path, headers=theirs.headers).status_code == 404

        fixed = client.post(f"{path}/fix", headers=ours.headers)
        assert (fixed.status_code, fixed.json()["check"]["fix_queued_count"]) == (200, 4)
    with session_factory() as session:
        assert reconcile.backlog_size(session, merchant_id=merchant_id) == 4
        assert reconcile.backlog_size(session, merchant_id=theirs.id) == 0
