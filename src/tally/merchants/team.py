"""A merchant's team: the admin users who sign in, their roles, and set-password links.

Callers own the transaction (services never commit). Every function that changes the team takes
an ``actor`` (who did it: an admin's email, ``cli (<user>)``) and logs the change under
``tally.merchants.team``; that is the hook an audit log will use.

Roles: ``owner`` may do everything (the Team page and API keys included), ``manager`` runs the
program (settings, imports, integrations, customers), ``support`` views customers and adjusts
their points with a reason. What each role may do is ``ROLE_PERMISSIONS``, the only table of it;
the admin checks a route's declared permission against it on every request.

Set-password links carry a JWT (HS256 under a key derived from the secret key for this one
purpose) naming the user, the purpose, and a keyed fingerprint of the user's password hash and
session version. Setting a password changes the hash, so a link works once; a sign-out
everywhere voids outstanding links too. Invitations are valid for 7 days, resets for 1 hour.
Tokens are never logged or stored: the email that carries one mints it when it is sent.

An invited member's ``password_hash`` is ``!`` and random text: it matches no password, differs
per invitation (so a new invitation voids the previous link), and marks the member as invited.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar

import jwt
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tally.config import Settings
from tally.customers.emails import canonical_email, email_problem
from tally.db.base import utcnow
from tally.db.rows import merchant_row
from tally.errors import Conflict, DomainError, FieldProblem, NotFound, ValidationFailed
from tally.merchants.orm import AdminUser, Merchant
from tally.merchants.service import hash_password
from tally.outbox.events import DomainEvent
from tally.outbox.service import emit

log = logging.getLogger("tally.merchants.team")

MIN_PASSWORD_LENGTH = 10
INVITE_LIFETIME = timedelta(days=7)
RESET_LIFETIME = timedelta(hours=1)
SET_PASSWORD_PATH = "/admin/set-password"  # noqa: S105 - a page, not a password
_TOKEN_KEY_INFO = b"tally/admin/set-password-token/v1"
_FINGERPRINT_KEY_INFO = b"tally/admin/set-password-fingerprint/v1"
_ALGORITHM = "HS256"
_UNUSABLE_PREFIX = "!"


class Role(StrEnum):
    """What a member of the team is."""

    OWNER = "owner"
    MANAGER = "manager"
    SUPPORT = "support"


class Permission(StrEnum):
    """One kind of admin page or action; routes declare the ones they need."""

    DASHBOARD = "dashboard"
    CUSTOMERS = "customers"  # view customers, adjust their points with a reason
    CUSTOMER_EDITS = "customer-edits"  # edit a customer's profile, redeem on their behalf
    PROGRAM = "program"  # program settings and email templates
    IMPORTS = "imports"
    INTEGRATIONS = "integrations"
    API_KEYS = "api-keys"
    TEAM = "team"
    REPORTS = "reports"  # the mail log, CSV exports, the points liability
    MAIL_SETTINGS = "mail-settings"  # the store's own SMTP server
    AUDIT = "audit"  # the audit log: who changed what


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OWNER: frozenset(Permission),
    Role.MANAGER: frozenset(
        {
            Permission.DASHBOARD,
            Permission.CUSTOMERS,
            Permission.CUSTOMER_EDITS,
            Permission.PROGRAM,
            Permission.IMPORTS,
            Permission.INTEGRATIONS,
            Permission.REPORTS,
            Permission.AUDIT,
        }
    ),
    Role.SUPPORT: frozenset({Permission.CUSTOMERS}),
}

ROLE_DESCRIPTIONS: dict[Role, str] = {
    Role.OWNER: "everything, including the team, API keys and the SMTP server",
    Role.MANAGER: "program settings, imports, integrations, customers, reports and the audit log",
    Role.SUPPORT: "view customers and adjust their points with a reason",
}


def permissions_of(role: str) -> frozenset[Permission]:
    """What a role may do; nothing for a role Tally does not know."""
    try:
        return ROLE_PERMISSIONS[Role(role)]
    except ValueError:
        return frozenset()


class LinkPurpose(StrEnum):
    """Why a set-password link was issued (it decides how long the link lives)."""

    INVITE = "invite"
    RESET = "reset"


_LIFETIMES = {LinkPurpose.INVITE: INVITE_LIFETIME, LinkPurpose.RESET: RESET_LIFETIME}


class NotPermitted(DomainError, status_code=403, title="Not allowed"):
    """The signed-in member's role does not allow this page or action."""


class InvalidPasswordLink(DomainError, status_code=400, title="Link not valid"):
    """A set-password link that is tampered with, expired or already used."""


@dataclass(frozen=True)
class PasswordLinkRequested(DomainEvent):
    """A member should get an email with a set-password link (minted when the email is sent)."""

    event_type: ClassVar[str] = "PasswordLinkRequested"
    user_id: int
    purpose: str


@dataclass(frozen=True)
class IssuedLink:
    """A set-password link for one member: the token is only ever available here."""

    user_id: int
    email: str
    purpose: LinkPurpose
    token: str
    expires_at: datetime

    def url(self, settings: Settings) -> str:
        """The link to open in a browser."""
        return password_link(settings, self.token)


# --------------------------------------------------------------------------- passwords


def has_usable_password(password_hash: str) -> bool:
    """False for an invited member who has not set a password yet (or any unusable hash)."""
    return bool(password_hash) and not password_hash.startswith(_UNUSABLE_PREFIX)


def _unusable_hash() -> str:
    return _UNUSABLE_PREFIX + secrets.token_urlsafe(24)


def is_invited(user: AdminUser) -> bool:
    """Whether the member has yet to set a password."""
    return not has_usable_password(user.password_hash)


def password_problems(password: str, confirmation: str) -> list[FieldProblem]:
    """What is wrong with a new password (empty when it is acceptable)."""
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(
            FieldProblem("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
        )
    elif len(password) > 1024:
        problems.append(FieldProblem("password", "must be at most 1,024 characters"))
    if not hmac.compare_digest(password.encode(), confirmation.encode()):
        problems.append(FieldProblem("confirmation", "must be the same password again"))
    return problems


# --------------------------------------------------------------------------- tokens


def _key(settings: Settings, info: bytes) -> bytes:
    # As admin/security.py derives its keys: one key per purpose from the one secret.
    return hmac.new(settings.secret_key.get_secret_value().encode(), info, hashlib.sha256).digest()


def _fingerprint(settings: Settings, user: AdminUser) -> str:
    material = f"{user.password_hash}\x00{user.session_version}".encode()
    digest = hmac.new(_key(settings, _FINGERPRINT_KEY_INFO), material, hashlib.sha256)
    return digest.hexdigest()[:32]


def issue_link(
    settings: Settings, user: AdminUser, purpose: LinkPurpose, *, now: datetime | None = None
) -> IssuedLink:
    """A signed link that lets this member set a password once, until it expires."""
    issued_at = now or utcnow()
    expires_at = issued_at + _LIFETIMES[purpose]
    claims = {
        "sub": str(user.id),
        "mid": user.merchant_id,
        "pur": purpose.value,
        "fp": _fingerprint(settings, user),
        "iat": int(issued_at.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    token = jwt.encode(claims, _key(settings, _TOKEN_KEY_INFO), algorithm=_ALGORITHM)
    return IssuedLink(user.id, user.email, purpose, token, expires_at)


def password_link(settings: Settings, token: str) -> str:
    """The set-password page's address with the token (URL-safe: base64url and dots)."""
    return f"{settings.public_base_url}{SET_PASSWORD_PATH}?token={token}"


_INVALID = "This link is not valid: it has expired, was already used, or was copied wrongly."


def check_link(session: Session, *, settings: Settings, token: str) -> AdminUser:
    """The member a set-password link is for; InvalidPasswordLink when it cannot be used."""
    if not token or len(token) > 2048:
        raise InvalidPasswordLink(_INVALID)
    try:
        claims = jwt.decode(
            token,
            _key(settings, _TOKEN_KEY_INFO),
            algorithms=[_ALGORITHM],
            options={"require": ["sub", "exp", "iat", "fp", "pur"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidPasswordLink(
            "This link has expired. Ask for a new one (an owner can send a new invitation, "
            "and “Forgot password?” on the sign-in page sends a new reset link)."
        ) from None
    except jwt.PyJWTError:
        raise InvalidPasswordLink(_INVALID) from None
    subject, fingerprint = claims.get("sub"), claims.get("fp")
    if not isinstance(subject, str) or not subject.isdigit() or not isinstance(fingerprint, str):
        raise InvalidPasswordLink(_INVALID)
    if claims.get("pur") not in set(LinkPurpose):
        raise InvalidPasswordLink(_INVALID)
    user = session.get(AdminUser, int(subject))
    if user is None or user.merchant_id != claims.get("mid"):
        raise InvalidPasswordLink(_INVALID)
    if not hmac.compare_digest(fingerprint.encode(), _fingerprint(settings, user).encode()):
        # The password was set (or the member signed out everywhere) since the link was made.
        raise InvalidPasswordLink(_INVALID)
    return user


def set_password(
    session: Session, *, settings: Settings, token: str, password: str, confirmation: str
) -> AdminUser:
    """Set the member's password from a link; the link, and every session, stop working."""
    user = check_link(session, settings=settings, token=token)
    problems = password_problems(password, confirmation)
    if problems:
        raise ValidationFailed("the new password is not acceptable", problems)
    # A new hash changes the fingerprint the link and the session cookies carry; moving the
    # session version on as well ends sessions even if a hash were ever reused.
    user.password_hash = hash_password(password)
    user.session_version += 1
    session.flush()
    log.info("team: %s set their password (merchant %s)", user.email, user.merchant_id)
    return user


# --------------------------------------------------------------------------- the team


def _email(raw: str) -> str:
    email = canonical_email(raw)
    if email is None:
        raise ValidationFailed(
            "the email address is not valid", [FieldProblem("email", email_problem(raw), raw)]
        )
    return email


def _role(raw: str) -> Role:
    try:
        return Role(raw.strip().lower())
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise ValidationFailed(
            "the role is not known", [FieldProblem("role", f"must be one of {known}", raw)]
        ) from None


def find_member_by_email(session: Session, email: str) -> AdminUser:
    """The admin user with this email (of any merchant), or NotFound."""
    wanted = canonical_email(email) or email.strip().lower()
    user = session.scalar(select(AdminUser).where(AdminUser.email == wanted))
    if user is None:
        raise NotFound(f"there is no admin user {email.strip()!r}")
    return user


def get_member(session: Session, *, merchant_id: int, user_id: int) -> AdminUser:
    """One member of this merchant's team, or NotFound."""
    return merchant_row(session, AdminUser, user_id, merchant_id, "team member")


def list_members(session: Session, *, merchant_id: int) -> list[AdminUser]:
    """The merchant's team, by email."""
    return list(
        session.scalars(
            select(AdminUser).where(AdminUser.merchant_id == merchant_id).order_by(AdminUser.email)
        )
    )


def invite_member(
    session: Session,
    *,
    settings: Settings,
    merchant_id: int,
    email: str,
    role: str,
    actor: str,
    send_email: bool = False,
) -> IssuedLink:
    """Add a member without a password and return their invitation link (valid 7 days).

    ``send_email`` also emails them a link (an outbox message, sent when this commits).
    """
    address = _email(email)
    chosen = _role(role)
    if session.get(Merchant, merchant_id) is None:
        raise NotFound(f"merchant {merchant_id} does not exist")
    if session.scalar(select(AdminUser.id).where(AdminUser.email == address)) is not None:
        raise Conflict(
            f"{address} already has an admin account",
            [FieldProblem("email", "already has an admin account", address)],
        )
    user = AdminUser(
        merchant_id=merchant_id, email=address, password_hash=_unusable_hash(), role=chosen
    )
    session.add(user)
    session.flush()
    log.info("team: %s invited %s as %s (merchant %s)", actor, address, chosen, merchant_id)
    if send_email:
        _request_email(session, user, LinkPurpose.INVITE)
    return issue_link(settings, user, LinkPurpose.INVITE)


def renew_invitation(
    session: Session,
    *,
    settings: Settings,
    merchant_id: int,
    user_id: int,
    actor: str,
    send_email: bool = False,
) -> IssuedLink:
    """A new invitation link for a member who has not set a password; earlier links stop."""
    user = get_member(session, merchant_id=merchant_id, user_id=user_id)
    if not is_invited(user):
        raise Conflict(f"{user.email} has already set a password")
    user.password_hash = _unusable_hash()
    session.flush()
    log.info("team: %s renewed the invitation of %s (merchant %s)", actor, user.email, merchant_id)
    if send_email:
        _request_email(session, user, LinkPurpose.INVITE)
    return issue_link(settings, user, LinkPurpose.INVITE)


def reset_link(session: Session, *, settings: Settings, email: str, actor: str) -> IssuedLink:
    """A password-reset link (valid 1 hour) for the admin user with this email."""
    user = find_member_by_email(session, email)
    log.info("team: %s issued a reset link for %s", actor, user.email)
    purpose = LinkPurpose.INVITE if is_invited(user) else LinkPurpose.RESET
    return issue_link(settings, user, purpose)


def request_password_reset(session: Session, *, email: str) -> None:
    """Email a reset link when an admin user has this address; do nothing otherwise.

    The caller answers the same either way, so nobody learns which addresses have accounts.
    """
    wanted = canonical_email(email)
    if wanted is None:
        return
    user = session.scalar(select(AdminUser).where(AdminUser.email == wanted))
    if user is None:
        return
    log.info("team: a password reset was requested for %s", user.email)
    _request_email(session, user, LinkPurpose.RESET)


def _request_email(session: Session, user: AdminUser, purpose: LinkPurpose) -> None:
    emit(
        session,
        PasswordLinkRequested(merchant_id=user.merchant_id, user_id=user.id, purpose=purpose),
    )


def _lock_team(session: Session, merchant_id: int) -> None:
    # Changes that could leave no owner queue up behind each other on the merchant row, so two
    # owners demoting each other at once cannot both succeed (SQLite serialises writers anyway).
    session.execute(
        select(Merchant.id).where(Merchant.id == merchant_id).with_for_update(key_share=True)
    )


def _other_owners(session: Session, merchant_id: int, user_id: int) -> int:
    return (
        session.scalar(
            select(func.count(AdminUser.id)).where(
                AdminUser.merchant_id == merchant_id,
                AdminUser.role == Role.OWNER,
                AdminUser.id != user_id,
            )
        )
        or 0
    )


def change_role(
    session: Session, *, merchant_id: int, user_id: int, role: str, actor: str
) -> AdminUser:
    """Give a member another role; the last owner stays an owner."""
    chosen = _role(role)
    _lock_team(session, merchant_id)
    user = get_member(session, merchant_id=merchant_id, user_id=user_id)
    if user.role == chosen:
        return user
    if user.role == Role.OWNER and _other_owners(session, merchant_id, user.id) == 0:
        raise Conflict(f"{user.email} is the only owner; make someone else an owner first")
    previous, user.role = user.role, chosen
    session.flush()
    log.info(
        "team: %s changed the role of %s from %s to %s (merchant %s)",
        actor,
        user.email,
        previous,
        chosen,
        merchant_id,
    )
    return user


def remove_member(session: Session, *, merchant_id: int, user_id: int, actor: str) -> str:
    """Remove a member (their sessions end at once); never the last owner. Returns the email."""
    _lock_team(session, merchant_id)
    user = get_member(session, merchant_id=merchant_id, user_id=user_id)
    if user.role == Role.OWNER and _other_owners(session, merchant_id, user.id) == 0:
        raise Conflict(f"{user.email} is the only owner and cannot be removed")
    email = user.email
    session.delete(user)
    session.flush()
    log.info("team: %s removed %s (merchant %s)", actor, email, merchant_id)
    return email
