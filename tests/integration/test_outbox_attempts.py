"""Every outbox delivery attempt is recorded, and shown and retried from the CLI and the admin."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tally.cli import main as cli
from tally.cli import support as cli_support
from tally.config import Settings
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.errors import NotFound
from tally.integrations.dotdigital.client import (
    DotdigitalAuthError,
    DotdigitalRejected,
    DotdigitalRetryable,
)
from tally.outbox.events import CustomerUpdated
from tally.outbox.orm import OutboxDeliveryAttempt, OutboxMessage
from tally.outbox.registry import PermanentFailure, Registry, RetryLater
from tally.outbox.service import emit
from tally.outbox.worker import MAX_ERROR_CHARS, Worker, response_status
from tests.integration.test_admin_pages import admin_app, csrf_of, make_store, sign_in
from tests.support.factories import make_merchant

runner = CliRunner()
DOTDIGITAL = "dotdigital.mark_contact"


def _emit(
    factory: sessionmaker[Session], registry: Registry, merchant_id: int, customer_id: int
) -> None:
    with unit_of_work(factory) as session:
        emit(
            session,
            CustomerUpdated(merchant_id=merchant_id, customer_id=customer_id, fields=("email",)),
            registry=registry,
        )


def _messages(factory: sessionmaker[Session]) -> list[OutboxMessage]:
    with factory() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def _attempts(factory: sessionmaker[Session]) -> list[OutboxDeliveryAttempt]:
    with factory() as session:
        return list(
            session.scalars(
                select(OutboxDeliveryAttempt).order_by(
                    OutboxDeliveryAttempt.message_id, OutboxDeliveryAttempt.attempt
                )
            )
        )


def _make_due(factory: sessionmaker[Session]) -> None:
    with unit_of_work(factory) as session:
        session.execute(update(OutboxMessage).values(available_at=utcnow()))


def _refusing_registry(name: str = DOTDIGITAL) -> Registry:
    """A handler that fails for good the way a Dotdigital refusal would be reported."""

    def refuse(_ctx: Any, _payload: dict[str, Any]) -> None:
        cause = DotdigitalRejected(400, "ERROR_CONTACT_INVALID", "Email is invalid")
        raise PermanentFailure(f"Dotdigital refused the contact: {cause}") from cause

    registry = Registry()
    registry.subscribe("CustomerUpdated", name, refuse)
    return registry


# --------------------------------------------------------------------------- recording


def test_two_failures_then_success_leave_three_attempts(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    calls: list[int] = []

    def flaky(ctx: Any, _payload: dict[str, Any]) -> None:
        calls.append(ctx.attempt)
        if len(calls) == 1:
            raise DotdigitalRetryable("503: Service Unavailable", status=503)
        if len(calls) == 2:
            raise RetryLater("rate limited", delay_seconds=60)
        time.sleep(0.02)

    registry = Registry()
    registry.subscribe("CustomerUpdated", "flaky", flaky)
    merchant = make_merchant(session_factory)
    _emit(session_factory, registry, merchant.id, 7)
    worker = Worker(settings=settings, session_factory=session_factory, registry=registry)
    for _ in range(3):
        worker.run_once()
        _make_due(session_factory)

    [message] = _messages(session_factory)
    attempts = _attempts(session_factory)
    retryable = "tally.integrations.dotdigital.errors.DotdigitalRetryable"
    assert (message.status, message.attempts, message.last_error) == ("done", 3, None)
    assert [(a.message_id, a.attempt, a.outcome, a.status_code, a.error) for a in attempts] == [
        (message.id, 1, "retry_scheduled", 503, f"{retryable}: 503: Service Unavailable"),
        (message.id, 2, "retry_scheduled", None, "rate limited"),
        (message.id, 3, "succeeded", None, None),
    ]
    assert attempts[0].started_at < attempts[1].started_at < attempts[2].started_at
    assert attempts[2].started_at <= message.finished_at
    assert attempts[2].duration_ms >= 20
    assert all(a.duration_ms >= 0 for a in attempts)


def test_a_permanent_failure_is_recorded_once_with_its_error(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    registry = _refusing_registry()
    merchant = make_merchant(session_factory)
    _emit(session_factory, registry, merchant.id, 7)
    stats = Worker(settings=settings, session_factory=session_factory, registry=registry).drain()

    [message] = _messages(session_factory)
    [attempt] = _attempts(session_factory)
    error = "Dotdigital refused the contact: 400 ERROR_CONTACT_INVALID: Email is invalid"
    assert stats.failed == 1
    assert (message.status, message.attempts, message.last_error) == ("failed", 1, error)
    # The status comes from the Dotdigital error the failure was raised from.
    assert (attempt.attempt, attempt.outcome, attempt.status_code, attempt.error) == (
        1,
        "failed",
        400,
        error,
    )


def test_errors_are_stored_without_secrets_and_cut_short(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    secret_error = (
        "POST https://api-user:hunter2@r1-api.dotdigital.com/contacts failed; sent headers "
        "{'Authorization': 'Basic YXBpLXVzZXI6aHVudGVyMg==', 'Accept': 'application/json'} "
        "with password=hunter2 "
    )

    def leaky(_ctx: Any, _payload: dict[str, Any]) -> None:
        raise RuntimeError(secret_error + "x" * 5000)

    registry = Registry()
    registry.subscribe("CustomerUpdated", "leaky", leaky)
    merchant = make_merchant(session_factory)
    _emit(session_factory, registry, merchant.id, 7)
    Worker(settings=settings, session_factory=session_factory, registry=registry).run_once()

    [message] = _messages(session_factory)
    [attempt] = _attempts(session_factory)
    assert attempt.error is not None
    assert attempt.error == message.last_error
    assert len(attempt.error) == MAX_ERROR_CHARS
    assert attempt.error.startswith(
        "RuntimeError: POST https://***@r1-api.dotdigital.com/contacts failed; sent headers "
        "{'Authorization': '[redacted]', 'Accept': 'application/json'} with password=[redacted] x"
    )
    for secret in ("hunter2", "YXBpLXVzZXI6aHVudGVyMg", "api-user"):
        assert secret not in attempt.error
    assert attempt.status_code is None


def test_the_status_is_read_from_the_error_or_its_cause_but_not_from_domain_errors() -> None:
    assert response_status(DotdigitalAuthError("wrong password")) == 401
    assert response_status(DotdigitalRetryable("timed out")) is None
    wrapped = PermanentFailure("refused")
    wrapped.__cause__ = DotdigitalRejected(422, None, "bad")
    assert response_status(wrapped) == 422
    # A DomainError's status_code is how Tally would answer, not what a remote answered.
    assert response_status(NotFound("no such customer")) is None
    assert response_status(ValueError("x")) is None


def test_a_worker_whose_lease_ran_out_records_nothing(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    registry = Registry()
    registry.subscribe("CustomerUpdated", "h", lambda _c, _p: None)
    merchant = make_merchant(session_factory)
    _emit(session_factory, registry, merchant.id, 7)
    late = Worker(settings=settings, session_factory=session_factory, registry=registry)
    [claimed] = late.claim()
    with unit_of_work(session_factory) as session:
        session.execute(update(OutboxMessage).values(locked_until=utcnow() - timedelta(seconds=1)))
    Worker(settings=settings, session_factory=session_factory, registry=registry).run_once()

    late.handle(claimed)
    assert [(a.attempt, a.outcome) for a in _attempts(session_factory)] == [(2, "succeeded")]


def test_deleting_a_message_deletes_its_attempts(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    registry = _refusing_registry()
    merchant = make_merchant(session_factory)
    _emit(session_factory, registry, merchant.id, 7)
    Worker(settings=settings, session_factory=session_factory, registry=registry).drain()
    assert len(_attempts(session_factory)) == 1
    with unit_of_work(session_factory) as session:
        session.execute(OutboxMessage.__table__.delete())
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(OutboxDeliveryAttempt)) == 0


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point the CLI's own Settings() at the test database."""
    monkeypatch.setenv("TALLY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TALLY_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("TALLY_ENVIRONMENT", "test")
    monkeypatch.setenv("TALLY_PUBLIC_BASE_URL", settings.public_base_url)
    # Wide enough that Rich does not wrap error texts in the tables.
    monkeypatch.setattr(cli_support.console, "_width", 400)
    return settings


def _line_of(output: str, needle: str) -> str:
    return next(line for line in output.splitlines() if needle in line)


def _fact(output: str, name: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith(f"{name} "))
    return line[len(name) :].strip()


def test_cli_lists_shows_and_retries_a_failed_message(
    cli_env: Settings, session_factory: sessionmaker[Session]
) -> None:
    registry = _refusing_registry()
    registry.subscribe("CustomerUpdated", "fine", lambda _c, _p: None)
    a, b = make_merchant(session_factory), make_merchant(session_factory)
    _emit(session_factory, registry, a.id, 7)
    _emit(session_factory, registry, b.id, 8)
    Worker(settings=cli_env, session_factory=session_factory, registry=registry).drain()
    failed_a, delivered_a, failed_b, _ = _messages(session_factory)

    listed = runner.invoke(cli.app, ["outbox", "list", "--status", "failed"])
    assert listed.exit_code == 0, listed.output
    assert "2 messages" in listed.output
    line = _line_of(listed.output, f" {failed_a.id} ")
    assert "CustomerUpdated" in line
    assert DOTDIGITAL in line
    assert "failed" in line
    assert "400 ERROR_CONTACT_INVALID" in line
    only_a = runner.invoke(cli.app, ["outbox", "list", "--merchant", str(a.id), "--limit", "10"])
    assert only_a.exit_code == 0, only_a.output
    assert "2 messages" in only_a.output
    assert "delivered" in _line_of(only_a.output, f" {delivered_a.id} ")
    delivered = runner.invoke(cli.app, ["outbox", "list", "--status", "delivered"])
    assert "2 messages" in delivered.output

    shown = runner.invoke(cli.app, ["outbox", "show", str(failed_a.id)])
    assert shown.exit_code == 0, shown.output
    assert _fact(shown.output, "merchant") == str(a.id)
    assert _fact(shown.output, "status") == "failed"
    assert _fact(shown.output, "handler") == DOTDIGITAL
    # The attempts table's row (the facts above it repeat the error as the message's last one).
    attempt_line = _line_of(shown.output, "│ failed ")
    assert attempt_line.startswith("│ 1 ")
    assert "│ 400 " in attempt_line
    assert "ERROR_CONTACT_INVALID: Email is invalid" in attempt_line

    retried = runner.invoke(cli.app, ["outbox", "retry", str(failed_a.id)])
    assert retried.exit_code == 0, retried.output
    assert f"message {failed_a.id} is pending again and due now; attempt 2 next" in retried.output
    # The cause is fixed: the next run delivers it, adding a second attempt.
    registry.subscribe("CustomerUpdated", DOTDIGITAL, lambda _c, _p: None)
    Worker(settings=cli_env, session_factory=session_factory, registry=registry).drain()
    again = runner.invoke(cli.app, ["outbox", "show", str(failed_a.id)])
    assert _fact(again.output, "status") == "delivered"
    assert _fact(again.output, "attempts") == "2"
    history = [(x.message_id, x.attempt, x.outcome) for x in _attempts(session_factory)]
    assert history == [
        (failed_a.id, 1, "failed"),
        (failed_a.id, 2, "succeeded"),
        (delivered_a.id, 1, "succeeded"),
        (failed_b.id, 1, "failed"),
        (failed_b.id + 1, 1, "succeeded"),
    ]
    assert [m.status for m in _messages(session_factory)] == ["done", "done", "failed", "done"]


def test_cli_refuses_unknown_ids_and_messages_that_are_not_failed(
    cli_env: Settings, session_factory: sessionmaker[Session]
) -> None:
    registry = Registry()
    registry.subscribe("CustomerUpdated", "fine", lambda _c, _p: None)
    merchant = make_merchant(session_factory)
    _emit(session_factory, registry, merchant.id, 7)
    Worker(settings=cli_env, session_factory=session_factory, registry=registry).drain()
    [delivered] = _messages(session_factory)
    cases = [
        (["outbox", "show", "999999"], "outbox message 999999 does not exist"),
        (["outbox", "retry", "999999"], "outbox message 999999 does not exist"),
        (["outbox", "retry", str(delivered.id)], f"outbox message {delivered.id} is delivered"),
        (["outbox", "list", "--status", "lost"], "unknown status 'lost'"),
        (["outbox", "list", "--merchant", "999999"], "merchant 999999 does not exist"),
    ]
    for args, message in cases:
        result = runner.invoke(cli.app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
    [unchanged] = _messages(session_factory)
    assert (unchanged.status, unchanged.attempts, unchanged.finished_at) == (
        "done",
        1,
        delivered.finished_at,
    )
    assert len(_attempts(session_factory)) == 1


# --------------------------------------------------------------------------- admin


def test_the_dotdigital_page_lists_and_retries_the_merchants_failed_deliveries(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    registry = _refusing_registry()
    registry.subscribe("CustomerUpdated", "notifications.other", lambda _c, _p: 1 / 0)
    ours = make_store(session_factory, "owner@ours.example")
    theirs = make_store(session_factory, "owner@theirs.example")
    _emit(session_factory, registry, ours.merchant_id, 7)
    _emit(session_factory, registry, theirs.merchant_id, 8)
    Worker(settings=settings, session_factory=session_factory, registry=registry).run_once()
    [our_message] = [
        m
        for m in _messages(session_factory)
        if m.merchant_id == ours.merchant_id and m.handler == DOTDIGITAL
    ]
    [their_message] = [
        m
        for m in _messages(session_factory)
        if m.merchant_id == theirs.merchant_id and m.handler == DOTDIGITAL
    ]
    retry_path = "/admin/integrations/dotdigital/deliveries/{}/retry"

    with TestClient(admin_app(settings, session_factory)) as client:
        assert sign_in(client, ours.email) == (303, "/admin")
        page = client.get("/admin/integrations/dotdigital")
        assert page.status_code == 200
        html = page.text
        table = html[html.index('data-testid="delivery-failures"') :]
        table = table[: table.index("</table>")]
        assert "CustomerUpdated" in table
        assert "customer 7" in table
        assert "400 ERROR_CONTACT_INVALID: Email is invalid" in table
        assert ">400<" in table
        assert retry_path.format(our_message.id) in table
        # Neither the other merchant's delivery nor other handlers' failures are shown.
        assert "customer 8" not in table
        assert retry_path.format(their_message.id) not in table
        assert "ZeroDivisionError" not in table

        token = csrf_of(html)
        refused = client.post(
            retry_path.format(their_message.id), data={"csrf_token": token}, follow_redirects=False
        )
        assert refused.status_code == 404
        no_token = client.post(retry_path.format(our_message.id), follow_redirects=False)
        assert no_token.status_code == 403
        statuses = {m.id: m.status for m in _messages(session_factory)}
        assert (statuses[our_message.id], statuses[their_message.id]) == ("failed", "failed")

        done = client.post(
            retry_path.format(our_message.id), data={"csrf_token": token}, follow_redirects=False
        )
        assert done.status_code == 303
        assert done.headers["location"] == "/admin/integrations/dotdigital?done=retried#deliveries"
        after = client.get(done.headers["location"]).text
        assert "The delivery is queued again" in after
        again = client.post(
            retry_path.format(our_message.id), data={"csrf_token": token}, follow_redirects=False
        )
        assert again.status_code == 409
        assert "is pending, not failed" in again.text

    statuses = {m.id: m.status for m in _messages(session_factory)}
    assert (statuses[our_message.id], statuses[their_message.id]) == ("pending", "failed")
