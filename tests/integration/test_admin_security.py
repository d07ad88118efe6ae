"""The admin's session cookie signer, login rate limiter and proxy trust (no database)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from tally.admin.security import (
    LoginRateLimiter,
    SessionSigner,
    csrf_matches,
    limit_key_for_address,
)
from tally.cli import main as cli
from tally.config import Settings

SECRET = "test-secret-that-is-long-enough-for-tally"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_signed_session_reads_back() -> None:
    signer = SessionSigner(SECRET)
    session = signer.signed_in(
        user_id=7, merchant_id=3, password_hash="$argon2id$x", session_version=4
    )

    loaded = signer.loads(signer.dumps(session))

    assert loaded == session
    assert loaded is not None
    assert loaded.signed_in
    assert loaded.session_version == 4


def test_a_tampered_session_is_refused() -> None:
    signer = SessionSigner(SECRET)
    value = signer.dumps(
        signer.signed_in(user_id=7, merchant_id=3, password_hash="h", session_version=0)
    )
    body, signature = value.split(".")
    other = SessionSigner(SECRET).dumps(
        signer.signed_in(user_id=8, merchant_id=4, password_hash="h", session_version=0)
    )

    assert signer.loads(f"{other.split('.')[0]}.{signature}") is None
    assert signer.loads(f"{body}.{signature[:-2]}AA") is None
    assert SessionSigner("another-secret-entirely-0123456789").loads(value) is None
    assert signer.loads("garbage") is None
    assert signer.loads(None) is None


def test_a_session_expires() -> None:
    clock = Clock()
    signer = SessionSigner(SECRET, max_age=60, clock=clock)
    value = signer.dumps(signer.anonymous())

    clock.now += 59
    assert signer.loads(value) is not None
    clock.now += 2
    assert signer.loads(value) is None


def test_the_password_fingerprint_follows_the_password_hash() -> None:
    signer = SessionSigner(SECRET)

    assert signer.password_fingerprint("a") == signer.password_fingerprint("a")
    assert signer.password_fingerprint("a") != signer.password_fingerprint("b")
    assert SessionSigner("x" * 40).password_fingerprint("a") != signer.password_fingerprint("a")


def test_csrf_tokens_must_match_exactly() -> None:
    assert csrf_matches("abc", "abc")
    assert not csrf_matches("abc", "abd")
    assert not csrf_matches("abc", "")
    assert not csrf_matches("abc", None)


def test_a_session_matches_only_the_user_row_it_was_issued_for() -> None:
    signer = SessionSigner(SECRET)
    session = signer.signed_in(user_id=7, merchant_id=3, password_hash="h", session_version=2)
    row = {"user_id": 7, "merchant_id": 3, "password_hash": "h", "session_version": 2}

    assert signer.matches_user(session, **row)  # type: ignore[arg-type]
    for changed in (
        {"session_version": 3},
        {"password_hash": "h2"},
        {"merchant_id": 4},
        {"user_id": 8},
    ):
        assert not signer.matches_user(session, **(row | changed))  # type: ignore[arg-type]


def test_a_cookie_from_before_session_versions_is_refused() -> None:
    signer = SessionSigner(SECRET)
    value = signer.dumps(
        signer.signed_in(user_id=7, merchant_id=3, password_hash="h", session_version=0)
    )
    body = value.split(".")[0]
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["v"] = 1
    del payload["s"]
    old_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()

    assert signer.loads(f"{old_body}.{signer._signature(old_body)}") is None


def test_one_email_is_blocked_after_five_failures_from_any_addresses() -> None:
    clock = Clock()
    limiter = LoginRateLimiter(clock=clock)
    for n in range(4):
        assert limiter.try_attempt("Ada@Example.com", f"10.0.0.{n}") is None
    assert limiter.retry_after("ada@example.com", "10.0.0.9") is None

    assert limiter.try_attempt("ada@example.com ", "10.0.0.4") is None

    assert limiter.try_attempt("ada@example.com", "10.0.0.5") == 15 * 60
    assert limiter.retry_after("ada@example.com", "192.0.2.1") == 15 * 60
    assert limiter.try_attempt("grace@example.com", "10.0.0.1") is None
    clock.now += 15 * 60
    assert limiter.try_attempt("ada@example.com", "10.0.0.5") is None


def test_one_address_is_blocked_after_ten_failures_with_any_emails() -> None:
    clock = Clock()
    limiter = LoginRateLimiter(clock=clock)
    for n in range(10):
        clock.now += 1
        assert limiter.try_attempt(f"user{n}@example.com", "10.0.0.1") is None

    assert limiter.try_attempt("user10@example.com", "10.0.0.1") == 15 * 60 - 9
    assert limiter.try_attempt("user10@example.com", "10.0.0.2") is None
    clock.now += 15 * 60 - 9
    assert limiter.try_attempt("user10@example.com", "10.0.0.1") is None


def test_ipv6_addresses_are_counted_per_64_network() -> None:
    limiter = LoginRateLimiter(clock=Clock())
    for n in range(10):
        assert limiter.try_attempt(f"user{n}@example.com", f"2001:db8::{n:x}") is None

    assert limiter.try_attempt("user10@example.com", "2001:db8::ffff:1") is not None
    assert limiter.try_attempt("user10@example.com", "2001:db8:0:1::1") is None
    assert limit_key_for_address("::ffff:10.0.0.1") == "10.0.0.1"
    assert limit_key_for_address("testclient") == "testclient"


def test_a_right_password_clears_the_email_but_not_the_address() -> None:
    limiter = LoginRateLimiter(clock=Clock())
    for n in range(4):
        limiter.try_attempt("ada@example.com", "10.0.0.1")
        limiter.try_attempt(f"user{n}@example.com", "10.0.0.1")
    limiter.try_attempt("ada@example.com", "10.0.0.1")

    limiter.succeeded("ada@example.com", "10.0.0.1")

    # The email starts again; the address keeps its 8 failures (the 9th attempt was right).
    assert limiter.try_attempt("ada@example.com", "10.0.0.1") is None
    assert limiter.try_attempt("ada@example.com", "10.0.0.1") is None
    assert limiter.try_attempt("ada@example.com", "10.0.0.1") is not None


# --------------------------------------------------------------------------- forwarded headers


def _serve_config(monkeypatch: pytest.MonkeyPatch, trusted: str | None) -> uvicorn.Config:
    """The uvicorn config `tally serve` builds, around an app that reports the client address."""
    if trusted is None:
        monkeypatch.delenv("TALLY_TRUSTED_PROXIES", raising=False)
    else:
        monkeypatch.setenv("TALLY_TRUSTED_PROXIES", trusted)
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    captured: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: captured.update(options))

    result = CliRunner().invoke(cli.app, ["serve"])

    assert result.exit_code == 0, result.output
    captured["log_config"] = None
    return uvicorn.Config(_report_client, **captured)


async def _report_client(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = f"{scope['client'][0]} {scope['scheme']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _client_seen(config: uvicorn.Config, peer: str, forwarded_for: str) -> str:
    if not config.loaded:
        config.load()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/admin/login",
        "raw_path": b"/admin/login",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"x-forwarded-for", forwarded_for.encode()),
            (b"x-forwarded-proto", b"https"),
        ],
        "client": (peer, 40000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(config.loaded_app(scope, receive, send))
    return bytes(sent[-1]["body"]).decode()


def test_serve_ignores_forwarded_headers_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _serve_config(monkeypatch, None)

    assert config.proxy_headers is False
    # uvicorn's own default would have believed this local peer.
    assert _client_seen(config, "127.0.0.1", "203.0.113.9") == "127.0.0.1 http"


def test_serve_believes_forwarded_headers_only_from_trusted_proxies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _serve_config(monkeypatch, " 10.1.0.0/16, 192.0.2.7 ")

    assert config.proxy_headers is True
    assert config.forwarded_allow_ips == ["10.1.0.0/16", "192.0.2.7"]
    assert _client_seen(config, "10.1.4.2", "203.0.113.9") == "203.0.113.9 https"
    assert _client_seen(config, "192.0.2.7", "203.0.113.9") == "203.0.113.9 https"
    assert _client_seen(config, "127.0.0.1", "203.0.113.9") == "127.0.0.1 http"
    assert _client_seen(config, "10.2.0.1", "203.0.113.9") == "10.2.0.1 http"


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    with pytest.raises(ValueError, match=r"'proxy\.internal' is not an IP address or network"):
        Settings(trusted_proxies="10.0.0.1,proxy.internal", _env_file=None)  # type: ignore[call-arg]

    assert Settings(trusted_proxies="10.0.0.1, *", _env_file=None).trusted_proxies == "*"  # type: ignore[call-arg]
    loose = Settings(trusted_proxies="10.1.0.5/16,::1", _env_file=None)  # type: ignore[call-arg]
    assert loose.trusted_proxies == "10.1.0.0/16,::1"
