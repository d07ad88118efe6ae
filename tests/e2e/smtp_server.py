"""A real SMTP server for tests: aiosmtpd on a free 127.0.0.1 port, with scriptable replies.

Usage::

    handler = RecordingHandler()
    with running_smtp_server(handler) as server:
        SmtpTransport(server.host, server.port, timeout=5).send(message)
    assert handler.messages[0]["Subject"] == "..."

`ScriptedHandler` answers the first RCPT or DATA commands with the given replies (for example
"451 4.3.0 Try again later") and accepts normally afterwards, to exercise retry paths.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Delivery:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        """The message parsed with the modern email policy."""
        parsed = message_from_bytes(self.raw, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        return parsed


class RecordingHandler:
    """Accepts every message and keeps it."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    @property
    def messages(self) -> list[EmailMessage]:
        """Every accepted message, parsed, in arrival order."""
        return [delivery.message for delivery in self.deliveries]

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content.encode() if isinstance(content, str) else content
        self.deliveries.append(Delivery(envelope.mail_from or "", list(envelope.rcpt_tos), raw))
        return "250 2.0.0 Message accepted"


class ScriptedHandler(RecordingHandler):
    """Answers RCPT and DATA with scripted replies first, then accepts like `RecordingHandler`."""

    def __init__(self, *, rcpt_replies: Iterable[str] = (), data_replies: Iterable[str] = ()):
        super().__init__()
        self.rcpt_replies = deque(rcpt_replies)
        self.data_replies = deque(data_replies)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.popleft()
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        if self.data_replies:
            return self.data_replies.popleft()
        return await super().handle_DATA(server, session, envelope)


class PasswordChecker:
    """An aiosmtpd authenticator accepting one username and password; records the logins."""

    def __init__(self, username: str, password: str) -> None:
        self.expected = LoginPassword(username.encode(), password.encode())
        self.logins: list[str] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if auth_data == self.expected:
            self.logins.append(auth_data.login.decode())
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


@dataclass(frozen=True)
class RunningServer:
    """Where the test server listens."""

    host: str
    port: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_smtp_server(
    handler: object, *, ssl_context: ssl.SSLContext | None = None, **smtp_options: Any
) -> Iterator[RunningServer]:
    """Run aiosmtpd in a thread for the duration of the block.

    `ssl_context` makes it speak implicit TLS; `smtp_options` go to `aiosmtpd.smtp.SMTP`
    (for example `tls_context=..., require_starttls=True, auth_required=True`).
    """
    port = free_port()
    controller = Controller(
        handler,
        hostname=HOST,
        port=port,
        ssl_context=ssl_context,
        server_hostname="mx.tally.test",  # avoids a reverse DNS lookup at start
        ready_timeout=5.0,
        **smtp_options,
    )
    controller.start()
    try:
        yield RunningServer(HOST, port)
    finally:
        controller.stop()


@dataclass(frozen=True)
class SelfSignedCertificate:
    """A self-signed certificate for 127.0.0.1 and the contexts that use it."""

    certificate_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        """What the test server presents."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificate_path, self.key_path)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only this certificate."""
        return ssl.create_default_context(cafile=str(self.certificate_path))


def make_certificate(directory: Path, *, names: tuple[str, ...] = ()) -> SelfSignedCertificate:
    """Write a fresh self-signed certificate valid for 127.0.0.1 (or for the DNS `names`, when
    given) into `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tally test SMTP")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name) for name in names]
                or [x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    certificate_path = directory / "smtp-cert.pem"
    key_path = directory / "smtp-key.pem"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return SelfSignedCertificate(certificate_path, key_path)
