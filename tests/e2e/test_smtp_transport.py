"""Delivering notification emails: real SMTP against aiosmtpd, the file transport, rate limiting.

The SMTP tests start their own server on a free 127.0.0.1 port (see `smtp_server.py`).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest

from tally.config import Settings, SmtpSecurity
from tally.notifications.message import build_message, message_id
from tally.notifications.templates import (
    EmailType,
    RenderedEmail,
    default_template,
    render,
    sample_variables,
)
from tally.notifications.transport import (
    FileTransport,
    PermanentMailError,
    RateLimiter,
    SmtpTransport,
    StoredMessage,
    TemporaryMailError,
    list_messages,
    transport_from_settings,
)
from tally.notifications.unsubscribe import make_token, read_token, unsubscribe_url
from tests.e2e.smtp_server import (
    HOST,
    PasswordChecker,
    RecordingHandler,
    ScriptedHandler,
    SelfSignedCertificate,
    free_port,
    make_certificate,
    running_smtp_server,
)

SENDER = "Example Store <loyalty@shop.example.com>"
RECIPIENT = "Zoë Adams <zoe@example.org>"
SENT_AT = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
SECRET = "e2e-secret"
BASE_URL = "https://loyalty.example.com"


def _rendered() -> RenderedEmail:
    variables = sample_variables(EmailType.REWARD_REDEEMED) | {
        "customer_first_name": "Zoë & <Co>",
        "customer_name": "Zoë Adams",
        "customer_email": "zoe@example.org",
        "points": 500,
        "balance": 730,
        "coupon_code": "TALLY-Z0E-5OFF",
        "unsubscribe_url": _unsubscribe_url(),
    }
    return render(default_template(EmailType.REWARD_REDEEMED), variables)


def _unsubscribe_url() -> str:
    return unsubscribe_url(BASE_URL, make_token(SECRET, 3, 1042))


def _message(key: str = "reward_redeemed:3:1042:redemption-77") -> EmailMessage:
    return build_message(
        sender=SENDER,
        recipient=RECIPIENT,
        rendered=_rendered(),
        unsubscribe_url=_unsubscribe_url(),
        message_id_domain="loyalty.example.com",
        message_key=key,
        sent_at=SENT_AT,
    )


def _transport(
    port: int,
    *,
    security: SmtpSecurity | str = SmtpSecurity.NONE,
    username: str | None = None,
    password: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> SmtpTransport:
    return SmtpTransport(
        HOST,
        port,
        security=security,
        username=username,
        password=password,
        timeout=5.0,
        ssl_context=ssl_context,
        local_hostname="tally.test",
    )


# --- building the message -------------------------------------------------------------------


def test_message_id_depends_only_on_the_key() -> None:
    first = _message("points_earned:3:1042:entry-1")
    retried = build_message(
        sender=SENDER,
        recipient=RECIPIENT,
        rendered=RenderedEmail("other", "<p>other</p>", "other"),
        unsubscribe_url=_unsubscribe_url(),
        message_id_domain="loyalty.example.com",
        message_key="points_earned:3:1042:entry-1",
    )
    other = _message("points_earned:3:1042:entry-2")

    assert first["Message-ID"] == retried["Message-ID"]
    assert first["Message-ID"] == message_id("points_earned:3:1042:entry-1", "loyalty.example.com")
    assert first["Message-ID"] != other["Message-ID"]
    assert first["Message-ID"].startswith("<tally.")
    assert first["Message-ID"].endswith("@loyalty.example.com>")


def test_long_unsubscribe_header_is_neither_folded_nor_encoded() -> None:
    raw = _message().as_bytes()

    expected = f"\r\nList-Unsubscribe: <{_unsubscribe_url()}>\r\n".encode()
    assert expected in raw
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
    assert len(_unsubscribe_url()) > 78


def test_build_message_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_message(
            sender=SENDER,
            recipient=RECIPIENT,
            rendered=_rendered(),
            unsubscribe_url=_unsubscribe_url(),
            message_id_domain="loyalty.example.com",
            message_key="k",
            sent_at=datetime(2025, 1, 1),  # noqa: DTZ001 - the naive datetime under test
        )
    with pytest.raises(ValueError, match="ASCII without whitespace"):
        build_message(
            sender=SENDER,
            recipient=RECIPIENT,
            rendered=_rendered(),
            unsubscribe_url="https://loyalty.example.com/u/1.2.x\r\nBcc: victim@example.org",
            message_id_domain="loyalty.example.com",
            message_key="k",
        )
    with pytest.raises(ValueError, match="not a valid Message-ID domain"):
        message_id("k", "bad domain>")
    with pytest.raises(ValueError, match="must not be empty"):
        message_id("", "loyalty.example.com")


# --- real SMTP ------------------------------------------------------------------------------


def test_smtp_delivers_both_parts_with_headers_variables_and_unsubscribe_link() -> None:
    handler = RecordingHandler()
    message = _message()

    with running_smtp_server(handler) as server:
        _transport(server.port).send(message)

    assert len(handler.deliveries) == 1
    delivery = handler.deliveries[0]
    assert delivery.mail_from == "loyalty@shop.example.com"
    assert delivery.rcpt_tos == ["zoe@example.org"]
    received = delivery.message
    assert received["Subject"] == "Your reward from Example Store: $5 off your next order"
    assert received["From"] == SENDER
    assert received["To"] == RECIPIENT
    assert received["Date"].datetime == SENT_AT
    assert received["Message-ID"] == message_id(
        "reward_redeemed:3:1042:redemption-77", "loyalty.example.com"
    )
    assert received["List-Unsubscribe"] == f"<{_unsubscribe_url()}>"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received.get_content_type() == "multipart/alternative"
    parts = list(received.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    text, html = (part.get_content() for part in parts)
    assert isinstance(text, str)
    assert isinstance(html, str)
    rendered = _rendered()
    # Text travels in canonical form (CRLF line ends); the parser hands those back unchanged.
    text, html = text.replace("\r\n", "\n"), html.replace("\r\n", "\n")
    assert text == rendered.text + "\n"
    assert html == rendered.html + "\n"
    assert "Hi Zoë & <Co>," in text
    assert "Hi Zoë &amp; &lt;Co&gt;," in html
    assert "You spent 500 points on $5 off your next order." in text
    assert "Use this code at checkout: TALLY-Z0E-5OFF" in text
    assert "Your remaining balance is 730 points." in text
    assert f"Unsubscribe: {_unsubscribe_url()}" in text
    assert f'<a href="{_unsubscribe_url()}"' in html
    # The link in the email leads back to the right customer.
    token = received["List-Unsubscribe"].strip("<>").rsplit("/u/", 1)[1]
    assert read_token(SECRET, token) == (3, 1042)


def test_smtp_451_on_data_is_temporary_and_a_retry_delivers_the_same_message() -> None:
    handler = ScriptedHandler(data_replies=["451 4.3.0 Try again later"])
    message = _message()

    with running_smtp_server(handler) as server:
        transport = _transport(server.port)
        with pytest.raises(TemporaryMailError) as caught:
            transport.send(message)
        assert handler.deliveries == []
        transport.send(message)

    assert caught.value.code == 451
    assert caught.value.reason == "4.3.0 Try again later"
    assert [received["Message-ID"] for received in handler.messages] == [message["Message-ID"]]


def test_smtp_451_on_recipient_is_temporary() -> None:
    handler = ScriptedHandler(rcpt_replies=["451 4.7.1 Greylisted, come back later"])

    with running_smtp_server(handler) as server, pytest.raises(TemporaryMailError) as caught:
        _transport(server.port).send(_message())

    assert caught.value.code == 451
    assert caught.value.reason == "zoe@example.org: 4.7.1 Greylisted, come back later"
    assert handler.deliveries == []


def test_smtp_550_on_recipient_is_permanent_with_code_and_reason() -> None:
    handler = ScriptedHandler(rcpt_replies=["550 5.1.1 No such user here"])

    with running_smtp_server(handler) as server, pytest.raises(PermanentMailError) as caught:
        _transport(server.port).send(_message())

    assert caught.value.code == 550
    assert caught.value.reason == "5.1.1 No such user here"
    assert str(caught.value) == "550 5.1.1 No such user here"
    assert handler.deliveries == []


def test_smtp_554_on_data_is_permanent() -> None:
    handler = ScriptedHandler(data_replies=["554 5.7.1 Message rejected as spam"])

    with running_smtp_server(handler) as server, pytest.raises(PermanentMailError) as caught:
        _transport(server.port).send(_message())

    assert (caught.value.code, caught.value.reason) == (554, "5.7.1 Message rejected as spam")
    assert handler.deliveries == []


def test_connection_refused_is_temporary() -> None:
    port = free_port()  # nothing listens there

    with pytest.raises(TemporaryMailError, match=f"cannot connect to {HOST}:{port}") as caught:
        _transport(port).send(_message())

    assert caught.value.code is None


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections but never sends an SMTP greeting."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((HOST, 0))
        listener.listen(1)
        yield listener.getsockname()[1]


def test_silent_server_times_out_as_temporary(silent_server: int) -> None:
    transport = SmtpTransport(HOST, silent_server, timeout=0.2, local_hostname="tally.test")
    started = time.monotonic()

    with pytest.raises(TemporaryMailError, match="cannot connect"):
        transport.send(_message())

    assert time.monotonic() - started < 2.0


def test_starttls_with_login_delivers(tmp_path: Path) -> None:
    certificate = make_certificate(tmp_path)
    handler = RecordingHandler()
    checker = PasswordChecker("tally", "s3cret")

    with running_smtp_server(
        handler,
        tls_context=certificate.server_context(),
        require_starttls=True,
        auth_required=True,
        authenticator=checker,
    ) as server:
        _transport(
            server.port,
            security=SmtpSecurity.STARTTLS,
            username="tally",
            password="s3cret",
            ssl_context=certificate.client_context(),
        ).send(_message())

    assert checker.logins == ["tally"]
    assert [received["Message-ID"] for received in handler.messages] == [_message()["Message-ID"]]


def test_wrong_password_is_temporary_because_it_is_a_settings_problem(tmp_path: Path) -> None:
    certificate = make_certificate(tmp_path)
    handler = RecordingHandler()

    with (
        running_smtp_server(
            handler,
            tls_context=certificate.server_context(),
            require_starttls=True,
            auth_required=True,
            authenticator=PasswordChecker("tally", "s3cret"),
        ) as server,
        pytest.raises(TemporaryMailError) as caught,
    ):
        _transport(
            server.port,
            security="starttls",
            username="tally",
            password="wrong",
            ssl_context=certificate.client_context(),
        ).send(_message())

    assert caught.value.code == 535
    assert handler.deliveries == []


def test_untrusted_certificate_is_temporary(tmp_path: Path) -> None:
    certificate = make_certificate(tmp_path)
    handler = RecordingHandler()

    # The default context trusts the system's authorities, not our self-signed certificate.
    with (
        running_smtp_server(handler, tls_context=certificate.server_context()) as server,
        pytest.raises(TemporaryMailError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        _transport(server.port, security=SmtpSecurity.STARTTLS).send(_message())

    assert handler.deliveries == []


def test_implicit_tls_delivers(tmp_path: Path) -> None:
    certificate = make_certificate(tmp_path)
    handler = RecordingHandler()

    with running_smtp_server(handler, ssl_context=certificate.server_context()) as server:
        _transport(
            server.port, security=SmtpSecurity.TLS, ssl_context=certificate.client_context()
        ).send(_message())

    assert len(handler.messages) == 1
    assert handler.messages[0]["Subject"] == _rendered().subject


# --- file transport -------------------------------------------------------------------------


def test_file_transport_writes_a_parseable_eml_that_list_messages_shows(tmp_path: Path) -> None:
    mail_dir = tmp_path / "mail"
    clock_values = iter(
        [
            datetime(2025, 3, 14, 9, 0, 0, 1, tzinfo=UTC),
            datetime(2025, 3, 14, 9, 0, 0, 2, tzinfo=UTC),
        ]
    )
    transport = FileTransport(mail_dir, clock=lambda: next(clock_values))
    older = _message("points_earned:3:1042:entry-1")
    newer = build_message(
        sender=SENDER,
        recipient="sam@example.org",
        rendered=RenderedEmail("Second", "<p>Second</p>", "Second"),
        unsubscribe_url=_unsubscribe_url(),
        message_id_domain="loyalty.example.com",
        message_key="points_earned:3:1043:entry-2",
        sent_at=datetime(2025, 3, 14, 10, 0, tzinfo=UTC),
    )

    transport.send(older)
    transport.send(newer)

    older_name = (
        "20250314T090000000001Z-" + older["Message-ID"].strip("<>").replace("@", "_") + ".eml"
    )
    newer_name = (
        "20250314T090000000002Z-" + newer["Message-ID"].strip("<>").replace("@", "_") + ".eml"
    )
    assert sorted(path.name for path in mail_dir.iterdir()) == sorted([older_name, newer_name])
    assert list_messages(mail_dir) == [
        StoredMessage(
            mail_dir / newer_name,
            "Second",
            "sam@example.org",
            datetime(2025, 3, 14, 10, tzinfo=UTC),
        ),
        StoredMessage(mail_dir / older_name, _rendered().subject, RECIPIENT, SENT_AT),
    ]
    parsed = message_from_bytes((mail_dir / older_name).read_bytes(), policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Message-ID"] == older["Message-ID"]
    assert parsed["List-Unsubscribe"] == f"<{_unsubscribe_url()}>"
    assert [part.get_content_type() for part in parsed.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    text_part = parsed.get_body(preferencelist=("plain",))
    assert text_part is not None
    assert text_part.get_content().replace("\r\n", "\n") == _rendered().text + "\n"


def test_list_messages_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert list_messages(tmp_path / "nowhere") == []


# --- settings -------------------------------------------------------------------------------


def test_transport_from_settings_uses_files_without_an_smtp_host(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, smtp_host=None, var_dir=tmp_path)

    transport = transport_from_settings(settings)

    assert isinstance(transport, FileTransport)
    assert transport.directory == tmp_path / "mail"


def test_transport_from_settings_uses_smtp_when_a_host_is_set() -> None:
    settings = Settings(
        _env_file=None,
        smtp_host="smtp.example.com",
        smtp_port=587,
        smtp_security=SmtpSecurity.STARTTLS,
        smtp_username="tally",
        smtp_password="s3cret",
    )

    transport = transport_from_settings(settings, timeout=12.5)

    assert isinstance(transport, SmtpTransport)
    assert (
        transport.host,
        transport.port,
        transport.security,
        transport.username,
        transport.password,
        transport.timeout,
    ) == ("smtp.example.com", 587, SmtpSecurity.STARTTLS, "tally", "s3cret", 12.5)


# --- rate limiting --------------------------------------------------------------------------


class FakeClock:
    """A monotonic clock that only moves when the limiter sleeps or the test says so."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_rate_limiter_spaces_sends_evenly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep)

    waits = [limiter.acquire() for _ in range(5)]

    assert waits == [0.0, 0.25, 0.25, 0.25, 0.25]
    assert clock.sleeps == [0.25, 0.25, 0.25, 0.25]
    assert clock.now == 101.0


def test_rate_limiter_refills_after_idle_time_but_not_beyond_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, burst=3, clock=clock, sleep=clock.sleep)

    assert [limiter.try_acquire() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5
    assert limiter.try_acquire() is True
    assert limiter.try_acquire() is False
    clock.now += 60.0
    waits = [limiter.acquire() for _ in range(4)]

    assert waits == [0.0, 0.0, 0.0, 0.5]
    assert clock.sleeps == [0.5]


def test_rate_limiter_queues_reservations() -> None:
    clock = FakeClock()
    # A sleep that does not advance the clock, as when several threads reserve at once.
    limiter = RateLimiter(2, clock=clock, sleep=lambda seconds: None)

    assert [limiter.acquire() for _ in range(3)] == [0.0, 0.5, 1.0]
    assert limiter.try_acquire() is False


def test_rate_limiter_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="per_second must be positive"):
        RateLimiter(0)
    with pytest.raises(ValueError, match="burst must be at least 1"):
        RateLimiter(5, burst=0.5)


# --- a merchant's own server: checked at every connection ---------------------------------


def _resolving(monkeypatch: pytest.MonkeyPatch, name: str, *, public: bool) -> None:
    """`name` resolves to the test server's address, taken as public or not."""
    from tally.notifications import transport

    monkeypatch.setattr(
        transport,
        "resolve",
        lambda host, port: [ipaddress.ip_address(HOST)] if host == name else [],
    )
    monkeypatch.setattr(transport, "is_public", lambda address: public)


def test_a_public_only_transport_never_connects_to_a_host_that_resolves_to_loopback() -> None:
    handler = RecordingHandler()
    with running_smtp_server(handler) as server:
        transport = SmtpTransport("localhost", server.port, timeout=5.0)
        transport.public_only = True
        with pytest.raises(
            TemporaryMailError, match=r"resolves to (127\.0\.0\.1|::1), which is not"
        ):
            transport.send(_message())

    assert handler.deliveries == []


def test_a_public_only_transport_connects_to_the_checked_address_and_tls_checks_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "right").mkdir()
    (tmp_path / "wrong").mkdir()
    right = make_certificate(tmp_path / "right", names=("mail.shop.test",))
    wrong = make_certificate(tmp_path / "wrong", names=("other.shop.test",))
    _resolving(monkeypatch, "mail.shop.test", public=True)

    def send(certificate: SelfSignedCertificate, security: SmtpSecurity) -> RecordingHandler:
        handler = RecordingHandler()
        options: dict[str, Any] = (
            {"ssl_context": certificate.server_context()}
            if security is SmtpSecurity.TLS
            else {"tls_context": certificate.server_context(), "require_starttls": True}
        )
        with running_smtp_server(handler, **options) as server:
            transport = SmtpTransport(
                "mail.shop.test",
                server.port,
                security=security,
                timeout=5.0,
                ssl_context=certificate.client_context(),
            )
            transport.public_only = True
            transport.send(_message())
        return handler

    for security in (SmtpSecurity.STARTTLS, SmtpSecurity.TLS):
        assert len(send(right, security).messages) == 1
        with pytest.raises(TemporaryMailError, match=r"CERTIFICATE_VERIFY_FAILED|mismatch"):
            send(wrong, security)
