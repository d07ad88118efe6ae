"""Webhook signatures (the README's verification snippet included) and the address guard."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import time
from pathlib import Path

import pytest

from tally.webhooks.addresses import AddressRefused, is_public, parse_url
from tally.webhooks.signing import SignatureError, parse, sign, verify

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_signature_is_an_hmac_of_timestamp_dot_body() -> None:
    body = b'{"id":"evt_1"}'
    header = sign(["whsec_abc"], body, timestamp=1700000000)
    expected = hmac.new(b"whsec_abc", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify("whsec_abc", header, body, now=1700000000 + 299) == 1700000000


def test_verification_refuses_stale_tampered_and_malformed_headers() -> None:
    body = b"{}"
    header = sign(["s1"], body, timestamp=1000)
    for bad_header, now in (
        (header, 1000 + 301),
        (header, 1000 - 301),
        (header.replace("v1=", "v1=0"), 1000),
        ("t=1000", 1000),
        ("v1=abc", 1000),
        ("", 1000),
    ):
        with pytest.raises(SignatureError):
            verify("s1", bad_header, body, now=now)
    with pytest.raises(SignatureError):
        verify("s2", header, body, now=1000)


def test_during_a_rotation_either_secret_verifies() -> None:
    header = sign(["new", "old"], b"x", timestamp=5)
    assert len(parse(header)[1]) == 2
    assert verify("new", header, b"x", now=5) == 5
    assert verify("old", header, b"x", now=5) == 5


def test_the_readme_snippet_verifies_a_tally_signature() -> None:
    text = README.read_text(encoding="utf-8")
    snippet = re.search(r"<!-- webhook-verify -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert snippet is not None, "the README has no webhook verification snippet"
    namespace: dict[str, object] = {}
    exec(snippet.group(1), namespace)  # noqa: S102 - our own README's code
    check = namespace["verify_tally_signature"]
    body = b'{"id":"evt_1","type":"points.changed"}'
    header = sign(["whsec_test"], body)
    assert check(body, header, "whsec_test") is True  # type: ignore[operator]
    assert check(body, header, "whsec_other") is False  # type: ignore[operator]
    stale = sign(["whsec_test"], body, timestamp=int(time.time()) - 600)
    assert check(body, stale, "whsec_test") is False  # type: ignore[operator]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1::1", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("2002:7f00:1::", False),  # 6to4 around 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 around 10.0.0.1
        ("64:ff9b::5db8:d822", False),  # NAT64 falls in ::/8, which Python counts as reserved
    ],
)
def test_only_public_addresses_pass(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "ftp://example.com/x",
        "http://example.com/x",
        "https:///x",
        "https://user:pw@example.com/x",
        "https://example.com/x#frag",
        "https://example.com/" + "a" * 2000,
    ],
)
def test_malformed_or_insecure_urls_are_refused(url: str) -> None:
    with pytest.raises(AddressRefused):
        parse_url(url, allow_insecure=False)


def test_a_url_keeps_its_port_and_path() -> None:
    checked = parse_url("https://Hooks.Example.com:8443/in?x=1", allow_insecure=False)
    assert (checked.host, checked.port, checked.scheme) == ("hooks.example.com", 8443, "https")
    assert checked.url == "https://hooks.example.com:8443/in?x=1"
