"""The store's SMTP server in the admin (saved encrypted, tested against a real aiosmtpd server)
and the mail log, which also lists team emails and SMTP tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.db.engine import unit_of_work
from tally.errors import ValidationFailed
from tally.merchants import team
from tally.notifications import service, team_emails
from tally.notifications.orm import EmailMessage, MailSettings
from tally.outbox.registry import Registry
from tally.outbox.worker import Worker
from tests.e2e.smtp_server import (
    HOST,
    PasswordChecker,
    RecordingHandler,
    RunningServer,
    free_port,
    running_smtp_server,
)
from tests.integration.test_admin_pages import admin_app, make_store, sign_in, token

OWNER = "owner@shop.example"
SMTP_PASSWORD = "s3cret-smtp-pw"


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    return admin_app(settings, session_factory)


@pytest.fixture
def merchant_id(session_factory: sessionmaker[Session]) -> int:
    return make_store(session_factory, OWNER).merchant_id


@pytest.fixture
def client(app: FastAPI, merchant_id: int) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        assert sign_in(test_client, OWNER) == (303, "/admin")
        yield test_client


def _form(client: TestClient, port: int, /, **changes: str) -> dict[str, str]:
    values = {
        "csrf_token": token(client, "/admin/mail/smtp"),
        "host": HOST,
        "port": str(port),
        "security": "none",
        "username": "tally",
        "password": SMTP_PASSWORD,
        "from_name": "Harbour Books",
        "from_address": "news@harbour.example",
    }
    return values | changes


def _save(client: TestClient, port: int, /, **changes: str) -> Any:
    return client.post(
        "/admin/mail/smtp", data=_form(client, port, **changes), follow_redirects=False
    )


def _stored(factory: sessionmaker[Session]) -> MailSettings | None:
    with factory() as session:
        return session.scalar(select(MailSettings))


def _log(factory: sessionmaker[Session]) -> list[EmailMessage]:
    with factory() as session:
        return list(session.scalars(select(EmailMessage).order_by(EmailMessage.id)))


def _test_result(html: str) -> str:
    found = re.search(r'data-testid="smtp-test-result">(.*?)</div>', html, re.S)
    assert found is not None, "no test result on the page"
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


def _auth_server(handler: RecordingHandler, checker: PasswordChecker) -> Any:
    return running_smtp_server(
        handler, auth_required=True, auth_require_tls=False, authenticator=checker
    )


def test_the_password_is_stored_encrypted_and_never_shown_back(
    client: TestClient, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    assert "No password is set" in client.get("/admin/mail/smtp").text

    saved = _save(client, 2525)

    assert (saved.status_code, saved.headers["location"]) == (
        303,
        "/admin/mail/smtp?done=smtp-saved",
    )
    row = _stored(session_factory)
    assert row is not None
    assert (row.host, row.port, row.security, row.username) == (HOST, 2525, "none", "tally")
    assert row.sender == "Harbour Books <news@harbour.example>"
    assert row.password_encrypted is not None
    assert SMTP_PASSWORD not in row.password_encrypted
    assert service.decrypt_password(settings, row.password_encrypted) == SMTP_PASSWORD
    page = client.get("/admin/mail/smtp").text
    assert SMTP_PASSWORD not in page
    assert "A password is set" in page
    assert 'value="news@harbour.example"' in page
    # An empty password field keeps the stored one.
    assert _save(client, 2526, password="").status_code == 303
    kept = _stored(session_factory)
    assert kept is not None
    assert kept.port == 2526
    assert service.decrypt_password(settings, kept.password_encrypted or "") == SMTP_PASSWORD


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"port": "70000"}, "must be between 1 and 65535"),
        ({"port": "x"}, "must be between 1 and 65535"),
        ({"security": "ssl3"}, "must be one of"),
        ({"from_address": "not an address"}, "must be an email address"),
        ({"host": "smtp example.com"}, "must be a host name or address"),
    ],
)
def test_bad_settings_are_refused_and_nothing_is_saved(
    client: TestClient,
    session_factory: sessionmaker[Session],
    changes: dict[str, str],
    message: str,
) -> None:
    refused = _save(client, 2525, **changes)

    assert refused.status_code == 422
    assert message in refused.text
    assert SMTP_PASSWORD not in refused.text
    assert _stored(session_factory) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "192.168.0.9"])
def test_outside_development_a_private_host_is_refused(
    settings: Settings, session_factory: sessionmaker[Session], merchant_id: int, host: str
) -> None:
    production = settings.model_copy(update={"environment": "production"})

    with (
        pytest.raises(ValidationFailed) as caught,
        unit_of_work(session_factory, merchant_id=merchant_id) as session,
    ):
        service.save_mail_settings(
            session, settings=production, merchant_id=merchant_id, host=host, port=587,
            security="starttls", sender="news@harbour.example",
        )  # fmt: skip

    assert [(p.field, p.message.split(" (")[0]) for p in caught.value.errors] == [
        ("host", "must not point to a loopback, private or link-local address")
    ]
    assert _stored(session_factory) is None


def test_a_test_email_goes_through_the_saved_server_and_shows_its_answer(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    handler = RecordingHandler()
    checker = PasswordChecker("tally", SMTP_PASSWORD)
    with _auth_server(handler, checker) as server:
        assert _save(client, server.port).status_code == 303
        page = client.post("/admin/mail/smtp/test", data={"csrf_token": token(client)})

    assert page.status_code == 200
    assert _test_result(page.text) == (
        f"The test email was accepted (to {OWNER}): 250 2.0.0 Message accepted"
    )
    assert checker.logins == ["tally"]
    [delivery] = handler.deliveries
    assert delivery.rcpt_tos == [OWNER]
    assert delivery.message["Subject"] == "Tally test email"
    assert delivery.message["From"] == "Harbour Books <news@harbour.example>"
    [logged] = _log(session_factory)
    assert (logged.email_type, logged.recipient, logged.status, logged.customer_id) == (
        "smtp_test", OWNER, "sent", None,
    )  # fmt: skip


def test_a_wrong_password_is_explained_and_logged_as_failed(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    handler = RecordingHandler()
    with _auth_server(handler, PasswordChecker("tally", "another-password")) as server:
        assert _save(client, server.port).status_code == 303
        page = client.post("/admin/mail/smtp/test", data={"csrf_token": token(client)})

    result = _test_result(page.text)
    assert result.startswith("The test email was not sent (to owner@shop.example): ")
    assert "the server refused the user name or password: 535" in result
    assert SMTP_PASSWORD not in page.text
    assert handler.deliveries == []
    [logged] = _log(session_factory)
    assert logged.status == "failed"
    assert logged.last_error is not None
    assert "refused the user name or password" in logged.last_error


def test_a_closed_port_is_connection_refused(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    port = free_port()
    assert _save(client, port).status_code == 303

    page = client.post("/admin/mail/smtp/test", data={"csrf_token": token(client)})

    assert _test_result(page.text) == (
        f"The test email was not sent (to {OWNER}): "
        f"connection refused: nothing accepts connections on {HOST}:{port}"
    )
    assert [e.status for e in _log(session_factory)] == ["failed"]


def test_a_test_needs_saved_settings(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    page = client.post("/admin/mail/smtp/test", data={"csrf_token": token(client)})

    assert page.status_code == 422
    assert "save the SMTP settings first" in page.text
    assert _log(session_factory) == []


def _use_own_server(
    factory: sessionmaker[Session], settings: Settings, merchant_id: int, server: RunningServer
) -> None:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        service.save_mail_settings(
            session, settings=settings, merchant_id=merchant_id, host=server.host,
            port=server.port, security="none", sender="Harbour Books <news@harbour.example>",
        )  # fmt: skip


def test_team_invitations_go_through_the_stores_server_and_into_the_mail_log(
    client: TestClient, settings: Settings, session_factory: sessionmaker[Session], merchant_id: int
) -> None:
    registry = Registry()
    team_emails.register(registry)
    handler = RecordingHandler()
    with running_smtp_server(handler) as server:
        _use_own_server(session_factory, settings, merchant_id, server)
        with unit_of_work(session_factory, merchant_id=merchant_id) as session:
            team.invite_member(
                session, settings=settings, merchant_id=merchant_id, email="new@shop.example",
                role="support", actor=OWNER, send_email=True,
            )  # fmt: skip
        Worker(settings=settings, session_factory=session_factory, registry=registry).drain()

    [delivery] = handler.deliveries
    assert delivery.rcpt_tos == ["new@shop.example"]
    [logged] = _log(session_factory)
    assert (logged.email_type, logged.recipient, logged.status, logged.attempts) == (
        "team_invitation", "new@shop.example", "sent", 1,
    )  # fmt: skip
    assert logged.subject == delivery.message["Subject"]
    assert logged.message_id == delivery.message["Message-ID"]
    assert "set-password" not in str(logged.variables)  # the link is never stored
    listed = client.get("/admin/mail/log?kind=team_invitation").text
    assert "new@shop.example" in listed
    assert 'data-kind="team_invitation"' in listed
    assert "No emails match." in client.get("/admin/mail/log?status=failed").text
    assert "No emails match." in client.get("/admin/mail/log?kind=points_earned").text


def test_tls_against_a_plain_server_is_explained_as_a_tls_failure(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    handler = RecordingHandler()
    with running_smtp_server(handler) as server:
        assert _save(client, server.port, security="tls").status_code == 303
        page = client.post("/admin/mail/smtp/test", data={"csrf_token": token(client)})

    result = _test_result(page.text)
    assert result.startswith(
        f"The test email was not sent (to {OWNER}): TLS failed with {HOST}:{server.port} "
        "(check the security setting and the port)"
    )
    assert handler.deliveries == []
    assert [e.status for e in _log(session_factory)] == ["failed"]
