"""Use cases for merchants, API keys and admin users. Callers own the transaction."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.db.base import utcnow
from tally.db.rows import merchant_row
from tally.errors import FieldProblem, NotFound, ValidationFailed
from tally.merchants.orm import AdminUser, ApiKey, Merchant

API_KEY_PREFIX = "tly"
_password_hasher = PasswordHasher()


@dataclass(frozen=True)
class IssuedApiKey:
    """A freshly created key: the secret is only ever available here, once."""

    id: int
    name: str
    secret: str


def _validate_merchant(name: str, store_url: str, currency: str, timezone: str) -> None:
    problems: list[FieldProblem] = []
    if not name.strip():
        problems.append(FieldProblem("name", "must not be empty"))
    if not store_url.startswith(("http://", "https://")):
        problems.append(FieldProblem("store_url", "must start with http:// or https://", store_url))
    if len(currency) != 3 or not currency.isalpha():
        problems.append(FieldProblem("currency", "must be a 3-letter ISO 4217 code", currency))
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(FieldProblem("timezone", "must be an IANA time zone name", timezone))
    if problems:
        raise ValidationFailed("the merchant's details are not valid", problems)


def create_merchant(
    session: Session,
    *,
    name: str,
    store_url: str,
    currency: str = "USD",
    timezone: str = "UTC",
) -> Merchant:
    """Create a merchant with default program settings."""
    _validate_merchant(name, store_url, currency, timezone)
    merchant = Merchant(
        name=name.strip(),
        store_url=store_url.rstrip("/"),
        currency=currency.upper(),
        timezone=timezone,
        program_settings={},
    )
    session.add(merchant)
    session.flush()
    return merchant


def _hash_key(secret: str) -> str:
    # API keys carry 256 bits of randomness, so a fast hash is as safe as a slow one here and
    # keeps authentication off the request's critical path (argon2 is for human passwords).
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(session: Session, *, merchant_id: int, name: str = "default") -> IssuedApiKey:
    """Create an API key and return its secret, which is not stored and cannot be shown again."""
    prefix = secrets.token_hex(6)
    secret = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(merchant_id=merchant_id, name=name, prefix=prefix, key_hash=_hash_key(secret))
    session.add(key)
    session.flush()
    return IssuedApiKey(id=key.id, name=name, secret=secret)


def revoke_api_key(session: Session, *, merchant_id: int, key_id: int) -> None:
    """Revoke a key; requests made with it are refused from then on."""
    key = merchant_row(session, ApiKey, key_id, merchant_id, "API key")
    if key.revoked_at is None:
        key.revoked_at = utcnow()


def list_api_keys(session: Session, *, merchant_id: int) -> list[ApiKey]:
    """The merchant's keys, newest first (secrets are never available)."""
    return list(
        session.scalars(
            select(ApiKey).where(ApiKey.merchant_id == merchant_id).order_by(ApiKey.id.desc())
        )
    )


def find_api_key(session: Session, secret: str) -> ApiKey | None:
    """The live API key this secret belongs to, or None for an unknown or revoked one."""
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX:
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    if key is None or key.revoked_at is not None:
        return None
    if not hmac.compare_digest(key.key_hash, _hash_key(secret)):
        return None
    return key


def resolve_api_key(session: Session, secret: str) -> int | None:
    """The merchant id an API key belongs to, or None for an unknown or revoked key."""
    key = find_api_key(session, secret)
    return None if key is None else key.merchant_id


def hash_password(password: str) -> str:
    """The argon2 hash of an admin's password."""
    return _password_hasher.hash(password)


def create_admin_user(
    session: Session, *, merchant_id: int, email: str, password: str, role: str = "owner"
) -> AdminUser:
    """Create an admin user with an argon2 password hash."""
    if len(password) < 10:
        raise ValidationFailed(
            "password too short", [FieldProblem("password", "must be at least 10 characters")]
        )
    user = AdminUser(
        merchant_id=merchant_id,
        email=email.strip().lower(),
        password_hash=_password_hasher.hash(password),
        role=role,
    )
    session.add(user)
    session.flush()
    return user


def authenticate_admin(session: Session, *, email: str, password: str) -> AdminUser | None:
    """The admin user for these credentials, or None."""
    user = session.scalar(select(AdminUser).where(AdminUser.email == email.strip().lower()))
    if user is None or not user.password_hash.startswith("$argon2"):
        # Spend the same time as a real check so a login form does not reveal which emails exist
        # (nor which members were invited and have not set a password yet: their hash is unusable).
        _password_hasher.hash(password)
        return None
    try:
        _password_hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _password_hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _password_hasher.hash(password)
    user.last_login_at = utcnow()
    return user


def get_merchant(session: Session, merchant_id: int) -> Merchant:
    """The merchant with this id."""
    merchant = session.get(Merchant, merchant_id)
    if merchant is None:
        raise NotFound(f"merchant {merchant_id} does not exist")
    return merchant


def list_merchants(session: Session) -> list[Merchant]:
    """Every merchant, oldest first."""
    return list(session.scalars(select(Merchant).order_by(Merchant.id)))
