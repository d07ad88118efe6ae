"""Customers in bulk for both writers: looked up by email or customer ID, inserted as new rows.

Writes are bulk statements on the session's own connection (``db/bulk.py``), not one ORM object
per row: ``executemany`` of plain tuples, ids allocated up front (so rows can be linked without
``RETURNING``), one ``IN`` query per batch for whatever must be looked up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute, Session

from tally.customers.orm import Customer
from tally.customers.service import REFERRAL_ALPHABET, REFERRAL_CODE_LENGTH
from tally.db.bulk import Bulk, chunks
from tally.program.orm import Order

_CODE_TABLE = bytes(
    REFERRAL_ALPHABET.encode()[value % len(REFERRAL_ALPHABET)] for value in range(256)
)


# Bytes 248-255 would make the first 8 letters likelier than the rest: they are dropped.
_CODE_DROPPED = bytes(range(len(REFERRAL_ALPHABET) * (256 // len(REFERRAL_ALPHABET)), 256))


def referral_codes(count: int) -> list[str]:
    """``count`` distinct random referral codes from the OS's random source (one call)."""
    length = REFERRAL_CODE_LENGTH
    codes: list[str] = []
    while len(codes) < count:
        wanted = (count - len(codes)) * length
        text = os.urandom(wanted + wanted // 16 + 64).translate(_CODE_TABLE, _CODE_DROPPED)
        usable = len(text) - len(text) % length
        codes.extend(text[start : start + length].decode() for start in range(0, usable, length))
        codes = list(dict.fromkeys(codes))
    return codes[:count]


CUSTOMER_COLUMNS = (
    "id",
    "merchant_id",
    "email",
    "first_name",
    "last_name",
    "birthday",
    "birthday_set_at",
    "external_id",
    "state",
    "referral_code",
    "points_balance",
    "vip_tier",
    "enrolled_at",
    "last_activity_at",
    "created_at",
    "updated_at",
)


_Key = TypeVar("_Key", int, str)


def insert_customers(
    bulk: Bulk,
    columns: Sequence[str],
    keys: Sequence[_Key],
    make_row: Callable[[int, str, _Key], tuple[Any, ...]],
    retry: Callable[[list[_Key]], list[_Key]],
) -> dict[_Key, int]:
    """Insert a customer for each key, with a fresh id and referral code; key -> id of those in.

    ``make_row`` gives a key's row from its id and code. A row the unique keys skipped goes to
    ``retry``, which returns those that lost only on their random referral code: they are tried
    again with new codes.
    """
    created: dict[_Key, int] = {}
    pending = list(keys)
    for _attempt in range(4):
        if not pending:
            break
        ids = bulk.allocate_ids("customers", len(pending))
        # Sorted, the batch's codes go into the referral code index in one sweep.
        codes = sorted(referral_codes(len(pending)))
        bulk.insert(
            "customers",
            columns,
            [make_row(cid, code, key) for cid, code, key in zip(ids, codes, pending, strict=True)],
            skip_conflicts=True,
        )
        present = bulk.present_ids("customers", ids)
        missed: list[_Key] = []
        for key, cid in zip(pending, ids, strict=True):
            if present is None or cid in present:
                created[key] = cid
            else:
                missed.append(key)
        pending = retry(missed) if missed else []
    return created


def insert_guests(
    bulk: Bulk, merchant_id: int, emails: Sequence[str], now: datetime
) -> dict[str, int]:
    """Create guest customers (as ``record_order`` does for unknown emails); email -> id.

    An email someone else created meanwhile is left out; rows that lost only on their random
    referral code are tried again with new codes.
    """
    stamp = bulk.timestamp(now)

    def guest(cid: int, code: str, email: str) -> tuple[Any, ...]:
        return (
            *(cid, merchant_id, email, None, None, None, None, None, "guest", code, 0),
            *(None, None, None, stamp, stamp),
        )

    def retry(missed: list[str]) -> list[str]:
        taken = customer_emails(bulk.session, merchant_id, missed)
        return [email for email in missed if email not in taken]

    return insert_customers(bulk, CUSTOMER_COLUMNS, emails, guest, retry)


def customer_emails(session: Session, merchant_id: int, emails: Sequence[str]) -> set[str]:
    """Which of these emails belong to a customer of the merchant."""
    return values_in_use(session, Customer, Customer.email, merchant_id, emails)


def values_in_use(
    session: Session,
    table: type[Customer | Order],
    column: InstrumentedAttribute[str],
    merchant_id: int,
    values: Sequence[str],
) -> set[str]:
    """Which of these values the merchant's rows of ``table`` hold in ``column``."""
    found: set[str] = set()
    for part in chunks(list(values)):
        found.update(
            session.scalars(
                select(column).where(table.merchant_id == merchant_id, column.in_(part))
            )
        )
    return found


def external_ids_in_use(
    session: Session, merchant_id: int, external_ids: Sequence[str]
) -> dict[str, str]:
    """External id -> email of the customer holding it, for those in use."""
    found: dict[str, str] = {}
    for part in chunks(list(external_ids)):
        for external_id, email in session.execute(
            select(Customer.external_id, Customer.email).where(
                Customer.merchant_id == merchant_id, Customer.external_id.in_(part)
            )
        ):
            if external_id is not None:
                found[external_id] = email
    return found


@dataclass
class Existing:
    """What a batch needs about a customer that already exists."""

    id: int
    email: str
    first_name: str | None
    last_name: str | None
    birthday: date | None
    external_id: str | None
    vip_tier: str | None
    state: str
    points_balance: int
    imported: int = 0
    """Net points of earlier ``import`` entries (what ``replace`` measures against)."""
    key_used: bool = False
    """The import entry of this file is already written (the file was imported before)."""
    kept_tier: str | None = None
    """A tier kept as a minimum (``tiers.with_kept_tier``), if still kept (orders imports)."""


_EXISTING_COLUMNS = (
    Customer.id,
    Customer.email,
    Customer.first_name,
    Customer.last_name,
    Customer.birthday,
    Customer.external_id,
    Customer.vip_tier,
    Customer.state,
    Customer.points_balance,
)


def load_customers(
    session: Session, merchant_id: int, emails: Sequence[str]
) -> dict[str, Existing]:
    """The customers with these emails, by email."""
    found: dict[str, Existing] = {}
    # Core rows on the session's connection: no ORM result processing for thousands of rows.
    connection = session.connection()
    for part in chunks(list(emails)):
        rows = connection.execute(
            select(*_EXISTING_COLUMNS).where(
                Customer.merchant_id == merchant_id, Customer.email.in_(part)
            )
        )
        for row in rows:
            found[row[1]] = Existing(*row)
    return found


def order_customers(
    session: Session, merchant_id: int, emails: Sequence[str], now: datetime
) -> dict[str, Existing]:
    """What an orders batch needs of the customers with these emails (id, tiers, balance)."""
    found: dict[str, Existing] = {}
    bulk = Bulk(session)
    for part in chunks(list(emails)):
        where, params = bulk.in_list("email", part)
        sql = (
            "SELECT id, email, vip_tier, state, points_balance, CASE WHEN vip_tier_kept_until > "
            f"{bulk.mark} THEN vip_tier_kept END FROM customers WHERE merchant_id = {bulk.mark} "
            f"AND {where}"
        )
        rows = bulk.connection.exec_driver_sql(sql, (bulk.timestamp(now), merchant_id, *params))
        for cid, email, tier, state, balance, kept in rows.all():
            found[email] = Existing(
                cid, email, None, None, None, None, tier, state, balance, kept_tier=kept
            )
    return found
