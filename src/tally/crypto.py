"""Settings encrypted at rest (SMTP and Dotdigital passwords) under the application secret.

Each use passes its own `purpose` label, which HKDF binds into the derived key, so one secret
yields unrelated keys for unrelated settings.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tally.config import Settings


def cipher(settings: Settings, purpose: bytes) -> Fernet:
    """Fernet under a key derived from the application secret for this one purpose."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        settings.secret_key.get_secret_value().encode("utf-8")
    )
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt_text(settings: Settings, purpose: bytes, text: str) -> str:
    """The text as a Fernet token."""
    return cipher(settings, purpose).encrypt(text.encode("utf-8")).decode("ascii")


def decrypt_text(settings: Settings, purpose: bytes, token: str) -> str:
    """The text back; raises cryptography's InvalidToken when the secret changed."""
    return cipher(settings, purpose).decrypt(token.encode("ascii")).decode("utf-8")
