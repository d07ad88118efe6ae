"""Signed one-click unsubscribe tokens."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.notifications.unsubscribe import InvalidToken, make_token, read_token, unsubscribe_url

SECRET = "test-secret-key"
# Pinned so a change of format, which would break every link already sent, fails a test.
KNOWN_TOKEN = "3.1042.Y99fOM5kqBfjQRE8tDD1LOG5OMfJoejN7GO-c3n5mKQ"
ids = st.integers(min_value=0, max_value=2**63 - 1)


def test_token_round_trip() -> None:
    token = make_token(SECRET, 3, 1042)

    assert token == KNOWN_TOKEN
    assert read_token(SECRET, token) == (3, 1042)


@given(merchant_id=ids, customer_id=ids)
def test_token_round_trip_for_any_ids(merchant_id: int, customer_id: int) -> None:
    token = make_token(SECRET, merchant_id, customer_id)

    assert read_token(SECRET, token) == (merchant_id, customer_id)
    assert quote(token, safe="") == token  # needs no escaping in a URL


def test_token_is_deterministic_and_secret_bound() -> None:
    assert make_token(SECRET, 3, 1042) == make_token(SECRET.encode(), 3, 1042)
    assert make_token("another-secret", 3, 1042) != KNOWN_TOKEN
    with pytest.raises(InvalidToken):
        read_token("another-secret", KNOWN_TOKEN)


@pytest.mark.parametrize(
    "token",
    [
        "3.1043.Y99fOM5kqBfjQRE8tDD1LOG5OMfJoejN7GO-c3n5mKQ",  # another customer
        "4.1042.Y99fOM5kqBfjQRE8tDD1LOG5OMfJoejN7GO-c3n5mKQ",  # another merchant
        "1042.3.Y99fOM5kqBfjQRE8tDD1LOG5OMfJoejN7GO-c3n5mKQ",  # ids swapped
        "3.1042.Z99fOM5kqBfjQRE8tDD1LOG5OMfJoejN7GO-c3n5mKQ",  # signature altered
        "3.1042.Y99fOM5kqBfjQRE8tDD1LOG5OMfJoejN7GO-c3n5mKR",  # last base64 character altered
        "03.1042.Y99fOM5kqBfjQRE8tDD1LOG5OMfJoejN7GO-c3n5mKQ",  # same id, other spelling
        "3.1042.Y99fOM5kqBfjQRE8tDD1LOG5OMfJoejN7GO-c3n5mK",  # truncated
        "3.1042.Y99fOM5kqBfjQRE8tDD1LOG5OMfJoejN7GO-c3n5mKQ=",  # padded
        "3.1042.Y99fOM5kqBfjQRE8tDD1LOG5OMfJoejN7GO-c3n5mKQ.9",  # extra part
        "-3.1042.Y99fOM5kqBfjQRE8tDD1LOG5OMfJoejN7GO-c3n5mKQ",  # negative id
        "3.1042",
        "",
    ],
)
def test_tampered_or_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidToken):
        read_token(SECRET, token)


@given(position=st.integers(min_value=0, max_value=len(KNOWN_TOKEN) - 1), data=st.data())
def test_any_single_character_change_is_refused(position: int, data: st.DataObject) -> None:
    alphabet = "0123456789.-_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    replacement = data.draw(st.sampled_from(alphabet.replace(KNOWN_TOKEN[position], "")))
    tampered = KNOWN_TOKEN[:position] + replacement + KNOWN_TOKEN[position + 1 :]

    with pytest.raises(InvalidToken):
        read_token(SECRET, tampered)


def test_make_token_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="between 0 and"):
        make_token(SECRET, -1, 5)
    with pytest.raises(ValueError, match="between 0 and"):
        make_token(SECRET, 1, 2**63)
    with pytest.raises(ValueError, match="must not be empty"):
        make_token("", 1, 5)
    with pytest.raises(ValueError, match="must not be empty"):
        read_token(b"", KNOWN_TOKEN)


def test_unsubscribe_url() -> None:
    assert unsubscribe_url("https://loyalty.example.com/", KNOWN_TOKEN) == (
        "https://loyalty.example.com/u/3.1042.Y99fOM5kqBfjQRE8tDD1LOG5OMfJoejN7GO-c3n5mKQ"
    )
    assert unsubscribe_url("http://127.0.0.1:8000", "1.2.x") == "http://127.0.0.1:8000/u/1.2.x"
