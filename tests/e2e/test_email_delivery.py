"""Notification emails end to end: queue -> outbox worker -> a real SMTP server (aiosmtpd on
127.0.0.1) -> the List-Unsubscribe link, posted over real HTTP to the running application.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.message import EmailMessage as MimeMessage

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.api.app import create_app
from tally.api.notifications import public_router, router
from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.engine import unit_of_work
from tally.notifications import service
from tally.notifications.handlers import register
from tally.notifications.message import message_id
from tally.notifications.orm import EmailMessage
from tally.notifications.unsubscribe import make_token
from tally.outbox.orm import OutboxMessage
from tally.outbox.registry import Registry
from tally.outbox.worker import Worker
from tally.state import AppState
from tests.e2e.smtp_server import (
    PasswordChecker,
    RecordingHandler,
    RunningServer,
    ScriptedHandler,
    running_smtp_server,
)
from tests.support.factories import make_customer, make_merchant
from tests.support.server import serve_in_thread


@pytest.fixture
def registry() -> Registry:
    """Only the email handler: rows for other plugins' handlers are not this file's business."""
    reg = Registry()
    register(reg)
    return reg


@pytest.fixture
def app_url(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[str]:
    """The application, with the notification routes, served over HTTP; links point at it."""
    app = create_app(settings, AppState(settings=settings, session_factory=session_factory))
    if "/u/{token}" not in {getattr(route, "path", None) for route in app.routes}:
        app.include_router(router)
        app.include_router(public_router)
    with serve_in_thread(app) as url:
        settings.public_base_url = url
        yield url


def _use_smtp(settings: Settings, server: RunningServer) -> None:
    settings.smtp_host = server.host
    settings.smtp_port = server.port


def _queue(
    factory: sessionmaker[Session], registry: Registry, merchant_id: int, customer_id: int, key: str
) -> EmailMessage | None:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        return service.queue_email(
            session,
            merchant_id=merchant_id,
            customer_id=customer_id,
            email_type="points_earned",
            variables={"points": 40, "balance": 40},
            dedupe_key=key,
            registry=registry,
        )


def _email(factory: sessionmaker[Session], key: str) -> EmailMessage:
    with factory() as session:
        row = session.scalar(select(EmailMessage).where(EmailMessage.dedupe_key == key))
        assert row is not None
        return row


def _outbox(factory: sessionmaker[Session]) -> list[OutboxMessage]:
    with factory() as session:
        return list(
            session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.event_type == "EmailQueued")
                .order_by(OutboxMessage.id)
            )
        )


def _part(message: MimeMessage, subtype: str) -> str:
    body = message.get_body((subtype,))
    assert isinstance(body, MimeMessage)
    # The message travels with CRLF line ends; compare with the template's own.
    return str(body.get_content()).replace("\r\n", "\n")


def test_email_arrives_over_smtp_and_its_one_click_link_unsubscribes(
    app_url: str,
    settings: Settings,
    session_factory: sessionmaker[Session],
    registry: Registry,
) -> None:
    m = make_merchant(session_factory, "Harbour Books")
    cid = make_customer(
        session_factory,
        m.id,
        email="zoe@example.org",
        first_name="Zoë",
        last_name="Adams",
        points=40,
    )
    handler = RecordingHandler()
    with running_smtp_server(handler) as server:
        _use_smtp(settings, server)
        queued = _queue(session_factory, registry, m.id, cid, "order:1001")
        assert queued is not None
        Worker(settings=settings, session_factory=session_factory, registry=registry).drain()

        [delivery] = handler.deliveries
        assert delivery.mail_from == "loyalty@localhost"
        assert delivery.rcpt_tos == ["zoe@example.org"]
        message = delivery.message
        token = make_token(settings.secret_key.get_secret_value(), m.id, cid)
        link = f"{app_url}/u/{token}"
        assert message["From"] == "Harbour Books <loyalty@localhost>"
        assert message["To"] == "Zoë Adams <zoe@example.org>"
        assert message["Subject"] == "You earned 40 points at Harbour Books"
        assert message["Message-ID"] == message_id(f"{m.id}:order:1001", "localhost")
        assert message["List-Unsubscribe"] == f"<{link}>"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["Auto-Submitted"] == "auto-generated"
        assert message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in message.iter_parts()] == [
            "text/plain",
            "text/html",
        ]
        text, html = _part(message, "plain"), _part(message, "html")
        assert text.startswith("Hi Zoë,\n")
        assert "You just earned 40 points, bringing your balance to 40 points." in text
        assert f"Unsubscribe: {link}" in text
        assert '<p style="margin:0 0 16px;font-size:16px;line-height:1.5;">Hi Zoë,</p>' in html
        assert f'<a href="{link}"' in html

        sent = _email(session_factory, "order:1001")
        assert (sent.status, sent.attempts, sent.last_error) == ("sent", 1, None)
        assert sent.message_id == message["Message-ID"]
        assert sent.subject == "You earned 40 points at Harbour Books"

        # The mail client's RFC 8058 one-click POST: no page, no cookie, no redirect.
        response = httpx.post(
            link,
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=10,
            follow_redirects=False,
        )
        assert response.status_code == 200
        with session_factory() as session:
            customer = session.get(Customer, cid)
            assert customer is not None
            assert customer.unsubscribed_at is not None

        assert _queue(session_factory, registry, m.id, cid, "order:1002") is None
        suppressed = _email(session_factory, "order:1002")
        assert (suppressed.status, suppressed.last_error) == (
            "suppressed",
            "the customer unsubscribed",
        )
        Worker(settings=settings, session_factory=session_factory, registry=registry).drain()
        assert len(handler.deliveries) == 1


def test_a_temporary_failure_is_retried_and_sends_exactly_one_message(
    settings: Settings, session_factory: sessionmaker[Session], registry: Registry
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id, email="ada@example.com")
    handler = ScriptedHandler(data_replies=["451 4.3.0 Try again later"])
    with running_smtp_server(handler) as server:
        _use_smtp(settings, server)
        _queue(session_factory, registry, m.id, cid, "order:1")
        worker = Worker(settings=settings, session_factory=session_factory, registry=registry)

        assert worker.run_once().retried == 1
        waiting = _email(session_factory, "order:1")
        assert (waiting.status, waiting.attempts, waiting.last_error) == (
            "queued",
            1,
            "451 4.3.0 Try again later",
        )
        [outbox] = _outbox(session_factory)
        assert (outbox.status, outbox.last_error) == (
            "pending",
            "tally.notifications.transport.TemporaryMailError: 451 4.3.0 Try again later",
        )
        assert handler.deliveries == []

        worker.drain()
        assert len(handler.deliveries) == 1
        sent = _email(session_factory, "order:1")
        assert (sent.status, sent.attempts, sent.last_error) == ("sent", 2, None)
        assert [(o.status, o.attempts) for o in _outbox(session_factory)] == [("done", 2)]


def test_giving_up_after_the_last_attempt_marks_the_email_failed(
    settings: Settings, session_factory: sessionmaker[Session], registry: Registry
) -> None:
    settings.worker_max_attempts = 2
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    handler = ScriptedHandler(data_replies=["421 4.7.0 Busy"] * 3)
    with running_smtp_server(handler) as server:
        _use_smtp(settings, server)
        _queue(session_factory, registry, m.id, cid, "order:1")
        Worker(settings=settings, session_factory=session_factory, registry=registry).drain()
    failed = _email(session_factory, "order:1")
    assert (failed.status, failed.attempts, failed.last_error) == (
        "failed",
        2,
        "gave up after 2 attempts: 421 4.7.0 Busy",
    )
    assert [(o.status, o.attempts) for o in _outbox(session_factory)] == [("failed", 2)]
    assert handler.deliveries == []


def test_a_permanent_failure_is_recorded_and_not_retried(
    settings: Settings, session_factory: sessionmaker[Session], registry: Registry
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id, email="nobody@example.com")
    handler = ScriptedHandler(data_replies=["550 5.1.1 Mailbox unavailable"])
    with running_smtp_server(handler) as server:
        _use_smtp(settings, server)
        _queue(session_factory, registry, m.id, cid, "order:1")
        worker = Worker(settings=settings, session_factory=session_factory, registry=registry)
        stats = worker.drain()
        assert (stats.claimed, stats.failed, stats.retried) == (1, 1, 0)
        assert worker.drain().claimed == 0
        assert handler.deliveries == []
    failed = _email(session_factory, "order:1")
    assert (failed.status, failed.attempts, failed.last_error, failed.sent_at) == (
        "failed",
        1,
        "550 5.1.1 Mailbox unavailable",
        None,
    )
    [outbox] = _outbox(session_factory)
    assert (outbox.status, outbox.attempts, outbox.last_error) == (
        "failed",
        1,
        "the mail server refused the email: 550 5.1.1 Mailbox unavailable",
    )


# Plain-text AUTH keeps the test free of certificates; TLS is covered in test_smtp_transport.py.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_a_merchants_own_smtp_server_is_used_with_its_password(
    settings: Settings, session_factory: sessionmaker[Session], registry: Registry
) -> None:
    m = make_merchant(session_factory, "Harbour Books")
    cid = make_customer(session_factory, m.id, email="ada@example.com")
    handler = RecordingHandler()
    checker = PasswordChecker("harbour", "s3cret-pass")
    with running_smtp_server(
        handler, authenticator=checker, auth_required=True, auth_require_tls=False
    ) as server:
        # No global SMTP host: without the merchant's server this would become an .eml file.
        with unit_of_work(session_factory) as session:
            service.save_mail_settings(
                session,
                settings=settings,
                merchant_id=m.id,
                host=server.host,
                port=server.port,
                security="none",
                sender="hello@harbour.example",
                username="harbour",
                password="s3cret-pass",
            )
        _queue(session_factory, registry, m.id, cid, "order:1")
        Worker(settings=settings, session_factory=session_factory, registry=registry).drain()
    assert checker.logins == ["harbour"]
    [delivery] = handler.deliveries
    assert delivery.mail_from == "hello@harbour.example"
    assert delivery.message["From"] == "Harbour Books <hello@harbour.example>"
    assert delivery.message["Message-ID"] == message_id(f"{m.id}:order:1", "harbour.example")
    assert not settings.mail_dir.exists()


def test_a_bulk_send_streams_through_the_outbox_at_the_configured_rate(
    settings: Settings, session_factory: sessionmaker[Session], registry: Registry
) -> None:
    settings.mail_send_per_second = 20.0
    settings.worker_batch_size = 2
    m = make_merchant(session_factory)
    for i in range(5):
        make_customer(session_factory, m.id, email=f"c{i}@example.com", points=10)
    handler = RecordingHandler()
    with running_smtp_server(handler) as server:
        _use_smtp(settings, server)
        with unit_of_work(session_factory, merchant_id=m.id) as session:
            result = service.queue_bulk(
                session,
                merchant_id=m.id,
                email_type="expiry_reminder",
                dedupe_key_prefix="expiry:2026-03",
                variables=lambda c: {"points": c.points_balance, "expiry_date": "31 March 2026"},
                batch_size=2,
                registry=registry,
            )
        assert result == service.BulkQueueResult(queued=5, suppressed=0, duplicates=0)
        started = time.monotonic()
        stats = Worker(
            settings=settings, session_factory=session_factory, registry=registry
        ).drain()
        elapsed = time.monotonic() - started
    assert (stats.claimed, stats.done) == (5, 5)
    assert sorted(d.rcpt_tos[0] for d in handler.deliveries) == [
        f"c{i}@example.com" for i in range(5)
    ]
    assert {d.message["Subject"] for d in handler.deliveries} == {
        "Reminder: 10 points expiring on 31 March 2026"
    }
    # Five sends at 20 per second with a burst of one: at least four gaps of 50 ms.
    assert elapsed >= 0.2
