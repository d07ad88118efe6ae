"""Shopper signatures: the store's HMAC of customer id + email, and the headless store's JWT."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt

from tally.storefront.appearance import Appearance, checked_origins, origin_of
from tally.storefront.identity import ShopperClaim, hmac_signature, verify_hmac, verify_token
from tally.storefront.limits import RateLimiter

SECRET = "a" * 64
OTHER = "b" * 64


def _now() -> datetime:
    return datetime.now(UTC)


def _token(secret: str = SECRET, *, lifetime: int = 600, **claims: object) -> str:
    issued = int(_now().timestamp())
    body = {"sub": "42", "email": "ann@example.com", "iat": issued, "exp": issued + lifetime}
    return jwt.encode({**body, **claims}, secret, algorithm="HS256")


def test_the_hmac_is_what_liquid_computes() -> None:
    # {{ customer.id | append: customer.email | hmac_sha256: "key" }} for customer 42
    assert hmac_signature("key", "42", "ann@example.com") == (
        "837b9d97a3d839e919fd7a476208c0c65fd6fff9d81bf73dbcf1b9843732abea"
    )


def test_a_valid_hmac_names_the_shopper() -> None:
    signature = hmac_signature(SECRET, "42", "ann@example.com")
    assert verify_hmac([SECRET], "42", "ann@example.com", signature) == ShopperClaim(
        "42", "ann@example.com"
    )
    assert verify_hmac([SECRET], "42", "ann@example.com", signature.upper()) == ShopperClaim(
        "42", "ann@example.com"
    )


def test_a_wrong_hmac_is_refused() -> None:
    signature = hmac_signature(SECRET, "42", "ann@example.com")
    assert verify_hmac([SECRET], "43", "ann@example.com", signature) is None
    assert verify_hmac([SECRET], "42", "bob@example.com", signature) is None
    assert verify_hmac([SECRET], "42", "ann@example.com", "00" * 32) is None
    assert verify_hmac([SECRET], "42", "ann@example.com", "") is None
    assert verify_hmac([SECRET], "", "ann@example.com", hmac_signature(SECRET, "", "x")) is None


def test_an_hmac_made_with_another_merchants_secret_is_refused() -> None:
    signature = hmac_signature(OTHER, "42", "ann@example.com")
    assert verify_hmac([SECRET], "42", "ann@example.com", signature) is None


def test_any_of_the_secrets_verifies() -> None:
    signature = hmac_signature(OTHER, "42", "ann@example.com")
    assert verify_hmac([SECRET, OTHER], "42", "ann@example.com", signature) == ShopperClaim(
        "42", "ann@example.com"
    )


def test_a_valid_token_names_the_shopper() -> None:
    assert verify_token([SECRET], _token(), now=_now()) == ShopperClaim("42", "ann@example.com")


def test_a_token_without_an_email_names_only_the_customer_id() -> None:
    token = jwt.encode(
        {"sub": "42", "iat": int(_now().timestamp()), "exp": int(_now().timestamp()) + 60},
        SECRET,
        algorithm="HS256",
    )
    assert verify_token([SECRET], token, now=_now()) == ShopperClaim("42", None)


def test_an_expired_token_is_refused() -> None:
    issued = int((_now() - timedelta(minutes=20)).timestamp())
    token = jwt.encode(
        {"sub": "42", "email": "a@example.com", "iat": issued, "exp": issued + 600},
        SECRET,
        algorithm="HS256",
    )
    assert verify_token([SECRET], token, now=_now()) is None


def test_a_token_living_longer_than_15_minutes_is_refused() -> None:
    assert verify_token([SECRET], _token(lifetime=15 * 60), now=_now()) is not None
    assert verify_token([SECRET], _token(lifetime=15 * 60 + 1), now=_now()) is None


def test_a_token_without_exp_or_iat_or_sub_is_refused() -> None:
    issued = int(_now().timestamp())
    for claims in (
        {"sub": "42", "iat": issued},
        {"sub": "42", "exp": issued + 60},
        {"iat": issued, "exp": issued + 60},
        {"sub": 42, "iat": issued, "exp": issued + 60},
    ):
        assert (
            verify_token([SECRET], jwt.encode(claims, SECRET, algorithm="HS256"), now=_now())
            is None
        )


def _unsigned(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def test_a_token_with_alg_none_is_refused() -> None:
    issued = int(_now().timestamp())
    token = _unsigned({"sub": "42", "email": "a@example.com", "iat": issued, "exp": issued + 60})
    assert verify_token([SECRET], token, now=_now()) is None


def test_a_token_signed_with_another_key_or_algorithm_is_refused() -> None:
    assert verify_token([SECRET], _token(OTHER), now=_now()) is None
    issued = int(_now().timestamp())
    hs512 = jwt.encode({"sub": "42", "iat": issued, "exp": issued + 60}, SECRET, algorithm="HS512")
    assert verify_token([SECRET], hs512, now=_now()) is None
    assert verify_token([SECRET], "not.a.token", now=_now()) is None


def test_a_token_issued_in_the_future_is_refused() -> None:
    later = int((_now() + timedelta(minutes=10)).timestamp())
    token = jwt.encode({"sub": "42", "iat": later, "exp": later + 60}, SECRET, algorithm="HS256")
    assert verify_token([SECRET], token, now=_now()) is None


def test_origins_are_kept_as_browsers_send_them() -> None:
    assert origin_of("https://Shop.Example.com/") == "https://shop.example.com"
    assert origin_of("https://shop.example.com:443") == "https://shop.example.com"
    assert origin_of("http://localhost:8000") == "http://localhost:8000"
    assert origin_of("https://shop.example.com/path") is None
    assert origin_of("ftp://shop.example.com") is None
    assert origin_of("shop.example.com") is None
    assert checked_origins(["http://localhost:8000", "http://LOCALHOST:8000"]) == [
        "http://localhost:8000"
    ]


def test_the_appearance_has_english_defaults() -> None:
    assert Appearance().model_dump(mode="json") == {
        "primary_colour": "#5b3df5",
        "text_colour": "#ffffff",
        "launcher_label": "Rewards",
        "title": "Our rewards program",
        "guest_message": "Join to earn points on every order.",
        "position": "right",
    }


def test_the_rate_limiter_refuses_past_the_burst_and_says_how_long_to_wait() -> None:
    clock = [100.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: clock[0])
    assert [limiter.take("a"), limiter.take("a"), limiter.take("a")] == [None, None, 1]
    assert limiter.take("b") is None
    clock[0] += 1.0
    assert limiter.take("a") is None
    assert limiter.take("a") == 1
    assert RateLimiter(per_minute=0).take("a") is None


README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_mints_a_token_the_api_accepts() -> None:
    text = README.read_text(encoding="utf-8")
    snippet = re.search(r"<!-- storefront-token -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert snippet is not None, "the README has no token snippet"
    namespace: dict[str, object] = {}
    exec(snippet.group(1), namespace)  # noqa: S102 - our own README's code
    token = namespace["tally_token"]("42", "ann@example.com", SECRET)  # type: ignore[operator]
    assert verify_token([SECRET], token, now=_now()) == ShopperClaim("42", "ann@example.com")
    assert verify_token([OTHER], token, now=_now()) is None
