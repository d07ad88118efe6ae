"""Storefront settings: made on first need, then changed by the admin page and the CLI.

Services never commit; the caller's unit of work does (and records the audited changes). The
signing secret is encrypted under an HKDF purpose of its own (``tally.crypto``), so it shares
no key with the webhook or mail secrets. `config` is the application's `Settings`, which holds
the key the secret is encrypted under.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.config import Settings
from tally.crypto import decrypt_text, encrypt_text
from tally.db.base import utcnow
from tally.db.upsert import insert_or_find
from tally.storefront.appearance import Appearance, checked_origins
from tally.storefront.orm import StorefrontSettings

SECRET_PURPOSE = b"tally storefront shopper signing secret"
WIDGET_ID_PREFIX = "wid_"
# A rotated-out secret still verifies this long, so a store can deploy the new one.
PREVIOUS_SECRET_VALID_FOR = timedelta(hours=24)

# Decrypting is a key derivation and an AES decryption per request; the Fernet token is the
# cache key, so a rotation (a new token) can never be answered with an old secret.
_DECRYPTED: dict[str, str] = {}
_DECRYPTED_MAX = 10_000


def new_widget_id() -> str:
    """A public widget id: `wid_` and 22 URL-safe random characters (about 131 bits)."""
    return WIDGET_ID_PREFIX + secrets.token_urlsafe(16)[:22]


def new_secret() -> str:
    """A signing secret: 32 random bytes as hex (what a Liquid theme setting holds)."""
    return secrets.token_hex(32)


def _decrypt(config: Settings, token: str) -> str:
    found = _DECRYPTED.get(token)
    if found is None:
        found = decrypt_text(config, SECRET_PURPOSE, token)
        if len(_DECRYPTED) >= _DECRYPTED_MAX:
            _DECRYPTED.clear()
        _DECRYPTED[token] = found
    return found


def _find(session: Session, merchant_id: int) -> StorefrontSettings | None:
    return session.scalar(
        select(StorefrontSettings).where(StorefrontSettings.merchant_id == merchant_id)
    )


def settings_for(session: Session, *, config: Settings, merchant_id: int) -> StorefrontSettings:
    """The merchant's storefront settings, created (with a new id and secret) if missing."""
    found = _find(session, merchant_id)
    if found is not None:
        return found
    now = utcnow()
    row = StorefrontSettings(
        merchant_id=merchant_id,
        widget_id=new_widget_id(),
        secret_encrypted=encrypt_text(config, SECRET_PURPOSE, new_secret()),
        allowed_origins=[],
        enabled=True,
        appearance=Appearance().model_dump(mode="json"),
        created_at=now,
        updated_at=now,
    )
    # Two first requests of one merchant race on the unique merchant id: the loser uses the
    # winner's row.
    chosen, _ = insert_or_find(session, row, lambda: _find(session, merchant_id))
    return chosen


def find_widget(session: Session, widget_id: str) -> StorefrontSettings | None:
    """The enabled storefront with this public widget id, whichever merchant's it is."""
    row = session.scalar(
        select(StorefrontSettings).where(StorefrontSettings.widget_id == widget_id)
    )
    return row if row is not None and row.enabled else None


def appearance_of(row: StorefrontSettings) -> Appearance:
    """The widget's appearance; a stored document from an older version gets the defaults."""
    return Appearance.model_validate(row.appearance or {})


def reveal_secret(config: Settings, row: StorefrontSettings) -> str:
    """The current signing secret, for the admin's "show" action and the CLI only."""
    return _decrypt(config, row.secret_encrypted)


def verifying_secrets(
    config: Settings, row: StorefrontSettings, *, now: datetime | None = None
) -> list[str]:
    """The secrets a shopper's signature may be made with now: current, then rotated-out."""
    found = [_decrypt(config, row.secret_encrypted)]
    expires = row.previous_secret_expires_at
    if row.previous_secret_encrypted and expires is not None and expires > (now or utcnow()):
        found.append(_decrypt(config, row.previous_secret_encrypted))
    return found


def _touch(session: Session, row: StorefrontSettings, **changes: Any) -> StorefrontSettings:
    for name, value in changes.items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    session.flush()
    return row


def rotate_secret(
    session: Session, *, config: Settings, merchant_id: int, now: datetime | None = None
) -> str:
    """A new signing secret (returned); the old one still verifies for 24 hours."""
    row = settings_for(session, config=config, merchant_id=merchant_id)
    secret = new_secret()
    _touch(
        session,
        row,
        previous_secret_encrypted=row.secret_encrypted,
        previous_secret_expires_at=(now or utcnow()) + PREVIOUS_SECRET_VALID_FOR,
        secret_encrypted=encrypt_text(config, SECRET_PURPOSE, secret),
    )
    return secret


def set_origins(
    session: Session, *, config: Settings, merchant_id: int, origins: Iterable[str]
) -> list[str]:
    """Replace the store origins the widget may be called from (checked; returns them)."""
    chosen = checked_origins(origins)
    row = settings_for(session, config=config, merchant_id=merchant_id)
    _touch(session, row, allowed_origins=chosen)
    return chosen


def update_appearance(
    session: Session, *, config: Settings, merchant_id: int, appearance: Appearance
) -> Appearance:
    """Replace the widget's colours and texts."""
    row = settings_for(session, config=config, merchant_id=merchant_id)
    _touch(session, row, appearance=appearance.model_dump(mode="json"))
    return appearance


def set_enabled(session: Session, *, config: Settings, merchant_id: int, enabled: bool) -> None:
    """Switch the storefront API on or off (off: every widget route answers 404)."""
    row = settings_for(session, config=config, merchant_id=merchant_id)
    _touch(session, row, enabled=enabled)
