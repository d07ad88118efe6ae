"""Customer use cases. Callers own the transaction and bind the session to the merchant."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TypedDict, Unpack

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tally.customers.emails import canonical_email, email_problem
from tally.customers.orm import Customer, CustomerState
from tally.db.base import utcnow
from tally.db.pages import page
from tally.db.rows import merchant_row
from tally.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from tally.outbox.events import CustomerEnrolled, CustomerUpdated
from tally.outbox.service import emit

# No 0/O or 1/I/L: codes are read aloud and typed from printed cards.
REFERRAL_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
REFERRAL_CODE_LENGTH = 8


def normalize_email(raw: str) -> str:
    """The canonical form of an email (see `customers.emails`), refusing what is no address."""
    email = canonical_email(raw)
    if email is None:
        raise ValidationFailed(
            f"{raw!r} is not a valid email address",
            [FieldProblem("email", f"expected {email_problem(raw)}", raw)],
        )
    return email


def new_referral_code() -> str:
    """A random referral code from an unambiguous alphabet."""
    return "".join(secrets.choice(REFERRAL_ALPHABET) for _ in range(REFERRAL_CODE_LENGTH))


@dataclass(frozen=True)
class EnrollResult:
    """The enrolled customer and whether it was created just now."""

    customer: Customer
    created: bool


def _validate_birthday(birthday: date | None) -> None:
    if birthday is not None and birthday > utcnow().date():
        raise ValidationFailed(
            "birthday is in the future",
            [FieldProblem("birthday", "must not be in the future", birthday.isoformat())],
        )
    # The same floor as the import files' birthday column: earlier years are typing slips.
    if birthday is not None and birthday.year < 1900:
        raise ValidationFailed(
            "birthday is before 1900",
            [FieldProblem("birthday", "must be in 1900 or later", birthday.isoformat())],
        )


def find_by_email(session: Session, merchant_id: int, email: str) -> Customer | None:
    """The customer with this email (case-insensitive), if any."""
    return session.scalar(
        select(Customer).where(
            Customer.merchant_id == merchant_id, Customer.email == normalize_email(email)
        )
    )


def customers_after(
    session: Session,
    merchant_id: int,
    after_id: int,
    *,
    where: Sequence[ColumnElement[bool]] = (),
    limit: int,
) -> list[Customer]:
    """The next `limit` customers matching `where`, in id order, after the one with `after_id`.

    Jobs that go through every customer read them like this (keyset paging), a batch at a time,
    so memory stays flat and a batch never skips or repeats a customer, whatever is inserted.
    """
    return list(
        session.scalars(
            select(Customer)
            .where(Customer.merchant_id == merchant_id, Customer.id > after_id, *where)
            .order_by(Customer.id)
            .limit(limit)
        )
    )


def get_customer(session: Session, merchant_id: int, customer_id: int) -> Customer:
    """The customer with this id, only if it belongs to the merchant."""
    return merchant_row(session, Customer, customer_id, merchant_id, "customer")


def get_customer_by_email(session: Session, merchant_id: int, email: str) -> Customer:
    """The customer with this email, or NotFound."""
    customer = find_by_email(session, merchant_id, email)
    if customer is None:
        raise NotFound(f"no customer with email {email.strip().lower()!r}")
    return customer


class Profile(TypedDict, total=False):
    """What an enrolment may say besides the email (left out, or None: not given)."""

    first_name: str | None
    last_name: str | None
    birthday: date | None
    external_id: str | None
    referred_by_code: str | None


def enroll_customer(
    session: Session,
    *,
    merchant_id: int,
    email: str,
    state: CustomerState = CustomerState.MEMBER,
    **profile: Unpack[Profile],
) -> EnrollResult:
    """Create a customer, or turn a guest into a member; a second enrolment is a conflict."""
    normalized = normalize_email(email)
    referred_by_code = profile.get("referred_by_code")
    _validate_birthday(profile.get("birthday"))
    existing = find_by_email(session, merchant_id, normalized)
    now = utcnow()
    if existing is not None:
        if existing.state == CustomerState.MEMBER or state == CustomerState.GUEST:
            raise Conflict(f"a customer with email {normalized!r} already exists")
        existing.state = CustomerState.MEMBER
        existing.enrolled_at = now
        existing.updated_at = now
        _apply_profile(existing, profile)
        session.flush()
        emit(session, CustomerEnrolled(merchant_id=merchant_id, customer_id=existing.id))
        return EnrollResult(existing, created=False)

    referrer_id = None
    if referred_by_code:
        referrer = session.scalar(
            select(Customer).where(
                Customer.merchant_id == merchant_id,
                Customer.referral_code == referred_by_code.strip().upper(),
            )
        )
        if referrer is None:
            raise ValidationFailed(
                f"referral code {referred_by_code!r} does not exist",
                [FieldProblem("referred_by", "unknown referral code", referred_by_code)],
            )
        referrer_id = referrer.id

    for _ in range(5):
        customer = Customer(
            merchant_id=merchant_id,
            email=normalized,
            state=state,
            referral_code=new_referral_code(),
            referred_by_id=referrer_id,
            enrolled_at=now if state == CustomerState.MEMBER else None,
            created_at=now,
            updated_at=now,
            points_balance=0,
        )
        _apply_profile(customer, profile)
        try:
            with session.begin_nested():
                session.add(customer)
                session.flush()
        except IntegrityError as exc:
            # Another request created the same email (or external id) first, or - very rarely -
            # the random referral code collided; only the latter is worth another try.
            if find_by_email(session, merchant_id, normalized) is not None:
                raise Conflict(f"a customer with email {normalized!r} already exists") from exc
            external_id = profile.get("external_id")
            if external_id and session.scalar(
                select(Customer.id).where(
                    Customer.merchant_id == merchant_id, Customer.external_id == external_id
                )
            ):
                raise Conflict(
                    f"a customer with external id {external_id!r} already exists"
                ) from exc
            continue
        if state == CustomerState.MEMBER:
            emit(session, CustomerEnrolled(merchant_id=merchant_id, customer_id=customer.id))
        return EnrollResult(customer, created=True)
    raise RuntimeError("could not allocate a unique referral code")  # pragma: no cover


def _apply_profile(customer: Customer, profile: Profile) -> None:
    first_name, last_name = profile.get("first_name"), profile.get("last_name")
    birthday, external_id = profile.get("birthday"), profile.get("external_id")
    if first_name is not None:
        customer.first_name = first_name.strip() or None
    if last_name is not None:
        customer.last_name = last_name.strip() or None
    if birthday is not None and birthday != customer.birthday:
        customer.birthday = birthday
        customer.birthday_set_at = utcnow()
    if external_id is not None:
        customer.external_id = external_id.strip() or None


_UNSET: object = object()


def update_customer(
    session: Session,
    *,
    merchant_id: int,
    customer_id: int,
    first_name: str | object | None = _UNSET,
    last_name: str | object | None = _UNSET,
    birthday: date | object | None = _UNSET,
    accepts_marketing: bool | None = None,
    consent_source: str = "api",
    email: str | object = _UNSET,
) -> Customer:
    """Change a customer's name, birthday, email or marketing consent; only the fields passed
    change.

    An email is stored in its canonical form and must not be another customer's (Conflict).
    ``accepts_marketing`` (None: not stated) is recorded with ``consent_source`` and the time.
    """
    customer = get_customer(session, merchant_id, customer_id)
    changed: list[str] = []
    if accepts_marketing is not None and record_consent(
        customer, accepts=accepts_marketing, source=consent_source
    ):
        changed.append("accepts_marketing")
    if email is not _UNSET:
        normalized = normalize_email(str(email))
        if normalized != customer.email:
            _change_email(session, customer, normalized)
            changed.append("email")
    if first_name is not _UNSET and first_name != customer.first_name:
        customer.first_name = first_name  # type: ignore[assignment]
        changed.append("first_name")
    if last_name is not _UNSET and last_name != customer.last_name:
        customer.last_name = last_name  # type: ignore[assignment]
        changed.append("last_name")
    if birthday is not _UNSET and birthday != customer.birthday:
        _validate_birthday(birthday)  # type: ignore[arg-type]
        customer.birthday = birthday  # type: ignore[assignment]
        customer.birthday_set_at = utcnow()
        changed.append("birthday")
    if changed:
        customer.updated_at = utcnow()
        session.flush()
        emit(
            session,
            CustomerUpdated(
                merchant_id=merchant_id, customer_id=customer.id, fields=tuple(changed)
            ),
        )
    return customer


def record_consent(
    customer: Customer, *, accepts: bool, source: str, at: datetime | None = None
) -> bool:
    """Record a statement of email marketing consent; True when the recorded answer changed.

    The latest statement wins, and a repeated one keeps the time it was first given, so the
    record says since when the customer agreed (or refused).
    """
    if customer.accepts_marketing is accepts:
        return False
    customer.accepts_marketing = accepts
    customer.marketing_consent_source = source[:100]
    customer.marketing_consent_at = at or utcnow()
    return True


def _email_taken(email: str) -> Conflict:
    return Conflict(
        f"another customer already has the email {email!r}",
        [FieldProblem("email", "another customer has this email", email)],
    )


def _change_email(session: Session, customer: Customer, email: str) -> None:
    if find_by_email(session, customer.merchant_id, email) is not None:
        raise _email_taken(email)
    try:
        # The unique constraint decides a race with a concurrent change or enrolment.
        with session.begin_nested():
            customer.email = email
            session.flush()
    except IntegrityError as exc:
        raise _email_taken(email) from exc


def search_customers_query(
    merchant_id: int,
    *,
    query: str | None = None,
    state: str | None = None,
    tier: str | None = None,
) -> Select[Customer]:
    """The select behind customer search: email or name contains `query`."""
    stmt = select(Customer).where(Customer.merchant_id == merchant_id)
    if query:
        like = f"%{query.strip().lower()}%"
        stmt = stmt.where(
            or_(
                Customer.email.like(like),
                func.lower(Customer.first_name).like(like),
                func.lower(Customer.last_name).like(like),
            )
        )
    if state:
        stmt = stmt.where(Customer.state == state)
    if tier:
        stmt = stmt.where(Customer.vip_tier == tier)
    return stmt


def search_customers(
    session: Session,
    *,
    merchant_id: int,
    query: str | None = None,
    state: str | None = None,
    tier: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Customer], int]:
    """One page of customers matching the filters, and the total count."""
    stmt = search_customers_query(merchant_id, query=query, state=state, tier=tier)
    return page(session, stmt, order_by=Customer.id, limit=limit, offset=offset)
