"""Deliver built messages: over SMTP, or to `.eml` files when no SMTP server is configured.

Failures are split the way the outbox worker needs them: `TemporaryMailError` (4xx replies,
connection problems, timeouts, authentication and TLS problems: retry later with back-off) and
`PermanentMailError` (5xx replies to the message or its recipient: retrying cannot help).
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from tally.config import Settings, SmtpSecurity
from tally.webhooks.addresses import ResolutionFailed, is_public, resolve


class MailError(Exception):
    """A message could not be delivered."""


class TemporaryMailError(MailError):
    """Delivery failed for a reason that may go away; the send should be retried later."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        self.reason = reason
        self.code = code
        super().__init__(f"{code} {reason}" if code is not None else reason)


class PermanentMailError(MailError):
    """The server refused the message or its recipient for good; do not retry."""

    def __init__(self, code: int | None, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code} {reason}" if code is not None else reason)


class MailTransport(Protocol):
    """Something that delivers one message or raises a `MailError`."""

    def send(self, message: EmailMessage) -> None:
        """Deliver the message to the recipients in its headers."""
        ...


def _reply_text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return " ".join(text.split())


def _error_for_reply(code: int, reason: str) -> MailError:
    if 500 <= code <= 599:
        return PermanentMailError(code, reason)
    # 4xx is temporary by definition; anything stranger is treated as temporary so that a
    # misbehaving server cannot make us drop a message for good.
    return TemporaryMailError(reason, code)


def _error_for_refused_recipients(refused: dict[str, tuple[int, bytes]]) -> MailError:
    replies = sorted(refused.items())
    # If any recipient was only refused for now, a retry may still reach them.
    for address, (code, text) in replies:
        if not 500 <= code <= 599:
            return TemporaryMailError(f"{address}: {_reply_text(text)}", code)
    address, (code, text) = replies[0]
    reason = _reply_text(text)
    return PermanentMailError(code, reason if len(replies) == 1 else f"{address}: {reason}")


class _NamedSMTP(smtplib.SMTP):
    """An SMTP client told the server's name apart from the address it connects to, so STARTTLS
    checks the certificate against the name while the socket goes to an address checked first."""

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(**options)
        self._host = name


class _NamedSMTPS(smtplib.SMTP_SSL):
    """The same for implicit TLS (SMTP_SSL wraps the socket with the name as SNI)."""

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(**options)
        self._host = name


class SmtpTransport:
    """Sends each message over its own SMTP connection, with an explicit timeout.

    With `public_only` (a merchant's own server outside development) the host is resolved at
    each connection and refused unless every address is public, and the connection goes to the
    address that was checked: a DNS answer that changed since the settings were saved can
    neither reach a private network nor slip in between the check and the connection.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: SmtpSecurity | str = SmtpSecurity.NONE,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.security = SmtpSecurity(security)
        self.username = username
        self.password = password
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.local_hostname = local_hostname
        self.public_only = False

    def _context(self) -> ssl.SSLContext:
        return self.ssl_context if self.ssl_context is not None else ssl.create_default_context()

    def _checked_address(self) -> str:
        try:
            addresses = resolve(self.host, self.port)
        except ResolutionFailed as error:
            raise TemporaryMailError(str(error)) from error
        for address in addresses:
            if not is_public(address):
                raise TemporaryMailError(
                    f"refused to connect to {self.host}: it resolves to {address}, which is not "
                    "a public address"
                )
        return str(addresses[0])

    def _connect_checked(self) -> smtplib.SMTP:
        address = self._checked_address()
        options: dict[str, Any] = {"local_hostname": self.local_hostname, "timeout": self.timeout}
        connection: smtplib.SMTP
        if self.security is SmtpSecurity.TLS:
            connection = _NamedSMTPS(self.host, context=self._context(), **options)
        else:
            connection = _NamedSMTP(self.host, **options)
        code, greeting = connection.connect(address, self.port)
        if code != 220:
            connection.close()
            raise smtplib.SMTPConnectError(code, greeting)
        return connection

    def _connect(self) -> smtplib.SMTP:
        if self.public_only:
            return self._connect_checked()
        if self.security is SmtpSecurity.TLS:
            return smtplib.SMTP_SSL(
                self.host,
                self.port,
                local_hostname=self.local_hostname,
                timeout=self.timeout,
                context=self._context(),
            )
        return smtplib.SMTP(
            self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout
        )

    def _open(self) -> smtplib.SMTP:
        """Connect, secure and log in; every failure here is the server's or the settings'."""
        try:
            connection = self._connect()
        except (smtplib.SMTPException, OSError) as error:
            raise TemporaryMailError(
                f"cannot connect to {self.host}:{self.port}: {str(error) or type(error).__name__}"
            ) from error
        try:
            connection.ehlo_or_helo_if_needed()
            if self.security is SmtpSecurity.STARTTLS:
                connection.starttls(context=self._context())
            if self.username:
                connection.login(self.username, self.password or "")
        except smtplib.SMTPResponseException as error:
            connection.close()
            # Even a 5xx here (EHLO refused, bad password) is a configuration problem shared by
            # every message, not a reason to give up on this one.
            raise TemporaryMailError(
                f"SMTP session setup failed: {_reply_text(error.smtp_error)}", error.smtp_code
            ) from error
        except (smtplib.SMTPException, OSError) as error:
            connection.close()
            raise TemporaryMailError(
                f"SMTP session setup failed: {str(error) or type(error).__name__}"
            ) from error
        return connection

    def send(self, message: EmailMessage) -> None:
        """Deliver the message; raise `TemporaryMailError` or `PermanentMailError` on failure."""
        self.send_with_reply(message)

    def send_with_reply(self, message: EmailMessage) -> str:
        """`send`, returning the server's answer to the message (e.g. `250 OK queued as 12`)."""
        connection = self._open()
        replies = _keep_data_replies(connection)
        try:
            refused = connection.send_message(message)
        except smtplib.SMTPRecipientsRefused as error:
            raise _error_for_refused_recipients(error.recipients) from error
        except smtplib.SMTPResponseException as error:
            raise _error_for_reply(error.smtp_code, _reply_text(error.smtp_error)) from error
        except smtplib.SMTPNotSupportedError as error:
            # e.g. an internationalised address and a server without SMTPUTF8.
            raise PermanentMailError(None, str(error)) from error
        except (smtplib.SMTPException, OSError) as error:
            raise TemporaryMailError(str(error) or type(error).__name__) from error
        finally:
            _quit(connection)
        if refused:
            # Some recipients took the message and some did not. Tally sends one recipient per
            # message, so this only happens to hand-built messages; report it as permanent to
            # avoid sending duplicates to those who accepted it.
            failures = ", ".join(f"{address} ({code})" for address, (code, _) in refused.items())
            raise PermanentMailError(None, f"refused by {failures}")
        return " ".join(f"{code} {_reply_text(text)}" for code, text in replies)


def _keep_data_replies(connection: smtplib.SMTP) -> list[tuple[int, bytes]]:
    """The replies to DATA, as the connection receives them (`sendmail` drops them)."""
    replies: list[tuple[int, bytes]] = []
    data = connection.data

    def data_kept(message: bytes | str) -> tuple[int, bytes]:
        reply = data(message)
        replies.append(reply)
        return reply

    setattr(connection, "data", data_kept)  # noqa: B010 - mypy refuses assigning to a method
    return replies


def _quit(connection: smtplib.SMTP) -> None:
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        # The message was accepted (or already failed); a rude goodbye changes nothing.
        connection.close()


class StoredMessage(NamedTuple):
    """A message written by `FileTransport`, as shown in the development mail viewer."""

    path: Path
    subject: str
    to: str
    date: datetime | None


_UNSAFE_FILENAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_name(message_id: str) -> str:
    name = _UNSAFE_FILENAME_CHARACTERS.sub("_", message_id.strip().strip("<>")).strip("._")
    return name[:100] or "message"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class FileTransport:
    """Writes each message to `<directory>/<timestamp>-<message id>.eml` (for development)."""

    def __init__(self, directory: Path, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.directory = Path(directory)
        self._clock = clock

    def send(self, message: EmailMessage) -> None:
        """Write the message atomically, so a reader never sees half a file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = self._clock().astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{stamp}-{_safe_name(str(message.get('Message-ID', '')))}.eml"
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(message.as_bytes())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.directory / name)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _read_stored(path: Path) -> StoredMessage:
    with path.open("rb") as file:
        headers = BytesParser(policy=default_policy).parse(file, headersonly=True)
    date: datetime | None
    try:
        date = parsedate_to_datetime(str(headers["Date"])) if headers["Date"] else None
    except (TypeError, ValueError):
        date = None
    return StoredMessage(
        path=path, subject=str(headers["Subject"] or ""), to=str(headers["To"] or ""), date=date
    )


def list_messages(directory: Path) -> list[StoredMessage]:
    """The `.eml` files in a directory, newest first."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    stored = [_read_stored(path) for path in folder.glob("*.eml") if path.is_file()]
    oldest = datetime.min.replace(tzinfo=UTC)
    # File names start with a microsecond timestamp, which breaks ties within a second.
    stored.sort(key=lambda item: (item.date or oldest, item.path.name), reverse=True)
    return stored


def find_stored(directory: Path, message_id: str) -> Path | None:
    """The newest `.eml` file `FileTransport` wrote for this Message-ID, if there is one."""
    # _safe_name leaves only [A-Za-z0-9._-], so the name is safe to use as a glob pattern.
    matches = sorted(Path(directory).glob(f"*-{_safe_name(message_id)}.eml"))
    return matches[-1] if matches else None


def transport_from_settings(settings: Settings, *, timeout: float = 30.0) -> MailTransport:
    """SMTP when a host is configured, otherwise `.eml` files under `settings.mail_dir`."""
    if settings.smtp_host:
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return SmtpTransport(
            settings.smtp_host,
            settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=password,
            timeout=timeout,
        )
    return FileTransport(settings.mail_dir)


class RateLimiter:
    """A token bucket: at most `per_second` acquisitions per second, with bursts up to `burst`.

    Callers reserve a token under a lock and sleep outside it, so threads sharing one limiter
    are served in turn without holding each other up.
    """

    def __init__(
        self,
        per_second: float,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = burst
        self._updated_at = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated_at)
        self._tokens = min(self.burst, self._tokens + elapsed * self.per_second)
        self._updated_at = now

    def try_acquire(self) -> bool:
        """Take a token if one is available now, without waiting."""
        with self._lock:
            self._refill()
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False

    def acquire(self) -> float:
        """Take a token, sleeping until one is available; return the seconds slept."""
        with self._lock:
            self._refill()
            self._tokens -= 1
            # A negative balance is a reservation: later callers queue behind this one.
            wait = -self._tokens / self.per_second if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait
