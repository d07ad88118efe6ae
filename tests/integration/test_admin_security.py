"""The admin's session cookie signer and login rate limiter (no database)."""

from __future__ import annotations

from tally.admin.security import LoginRateLimiter, SessionSigner, csrf_matches

SECRET = "test-secret-that-is-long-enough-for-tally"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_signed_session_reads_back() -> None:
    signer = SessionSigner(SECRET)
    session = signer.signed_in(user_id=7, merchant_id=3, password_hash="$argon2id$x")

    loaded = signer.loads(signer.dumps(session))

    assert loaded == session
    assert loaded is not None
    assert loaded.signed_in


def test_a_tampered_session_is_refused() -> None:
    signer = SessionSigner(SECRET)
    value = signer.dumps(signer.signed_in(user_id=7, merchant_id=3, password_hash="h"))
    body, signature = value.split(".")
    other = SessionSigner(SECRET).dumps(
        signer.signed_in(user_id=8, merchant_id=4, password_hash="h")
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


def test_the_rate_limit_blocks_after_five_failures_for_fifteen_minutes() -> None:
    clock = Clock()
    limiter = LoginRateLimiter(clock=clock)
    for _ in range(4):
        limiter.record_failure("Ada@Example.com", "10.0.0.1")
    assert limiter.retry_after("ada@example.com", "10.0.0.1") is None

    limiter.record_failure("ada@example.com ", "10.0.0.1")

    assert limiter.retry_after("ada@example.com", "10.0.0.1") == 15 * 60
    assert limiter.retry_after("ada@example.com", "10.0.0.2") is None
    assert limiter.retry_after("grace@example.com", "10.0.0.1") is None
    clock.now += 15 * 60
    assert limiter.retry_after("ada@example.com", "10.0.0.1") is None


def test_a_successful_sign_in_clears_the_count() -> None:
    limiter = LoginRateLimiter(clock=Clock())
    for _ in range(5):
        limiter.record_failure("ada@example.com", "10.0.0.1")

    limiter.reset("ada@example.com", "10.0.0.1")

    assert limiter.retry_after("ada@example.com", "10.0.0.1") is None
