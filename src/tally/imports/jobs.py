"""The machinery of import jobs: checked rows spooled to disk, and batches written in bulk.

An import reads its file twice over. The first pass parses and checks every row (the readers in
``customers_csv`` / ``orders_csv``, then the checks that need the program or the database) and
spools the valid rows, as plain tuples, to a temporary file; a file with errors is refused
there, before anything is written. The second pass reads the spool back and writes it one batch
per transaction, with the job's cursor (the last row applied) in the same transaction, so a job
stopped at any point has applied whole batches only and continues after its cursor.

Writes are bulk statements on the session's own connection, not one ORM object per row:
``executemany`` of plain tuples, ids allocated up front (so rows can be linked without
``RETURNING``), one ``IN`` query per batch for whatever must be looked up, and one
``CustomersImported`` event per batch rather than an event per customer. Values are converted
once to what the driver stores (SQLite keeps timestamps as text and ``Numeric`` as floats, as
SQLAlchemy does), so the rows read back exactly like rows written through the ORM.

Orders earn exactly what ``tally.program.service.record_order`` gives them (without per-period
limits), VIP tiers moving order by order in date order (changing the multiplier of the next
order) with their entry rewards; ``ENGINE_RECORD_ORDER`` sends every order through
``record_order`` instead, which is how the tests check that both give the same balances. Two
things ``record_order`` does are left out on purpose: imported (historical) orders queue no
"points earned" or "tier earned" emails, and they do not complete pending referrals.
"""

from __future__ import annotations

import heapq
import marshal
import os
import struct
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, Context, Decimal, Inexact
from enum import StrEnum
from typing import IO, Any, Final

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tally.customers.orm import Customer, CustomerState
from tally.customers.service import REFERRAL_ALPHABET, REFERRAL_CODE_LENGTH
from tally.db.bulk import Bulk, chunks, utc_text
from tally.imports.customers_csv import CustomerRow
from tally.imports.formats import ImportRowError
from tally.imports.orders_csv import OrderRow, OrderStatus
from tally.ledger import service as ledger
from tally.ledger.batch import Outcome, Transfer, post_transfers
from tally.ledger.errors import InsufficientPoints
from tally.ledger.orm import EntryKind, LedgerEntry
from tally.outbox.events import CustomersImported
from tally.outbox.registry import default_registry
from tally.outbox.service import emit
from tally.program import earning, tiers
from tally.program import service as program_service
from tally.program.orm import Order
from tally.program.service import PAID_STATUSES
from tally.program.settings import OrderPointsMode, Tier, VipMetric

ENGINE_BULK: Final = "bulk"
ENGINE_RECORD_ORDER: Final = "record_order"

# Positions in a spooled customer: (row, email, first name, last name, points, birthday as
# YYYY-MM-DD, tier id, external id).
C_ROW, C_EMAIL, C_FIRST, C_LAST, C_POINTS, C_BIRTHDAY, C_TIER, C_EXTERNAL = range(8)
# Positions in a spooled order: amounts are decimal text, the date UTC "YYYY-MM-DD HH:MM:SS.ffffff".
(
    O_ROW,
    O_ID,
    O_EMAIL,
    O_TOTAL,
    O_SUBTOTAL,
    O_DISCOUNTS,
    O_SHIPPING,
    O_TAX,
    O_CURRENCY,
    O_STATUS,
    O_PLACED,
    O_REFUNDED,
) = range(12)

_ZERO = Decimal(0)
# Products of amounts, rates and multipliers are exact in 60 digits; Inexact would say otherwise.
_EXACT = Context(prec=60, rounding=ROUND_FLOOR, traps=[Inexact])


class PointsMode(StrEnum):
    """What a customer file's points do to an existing customer.

    ``replace``: the file's value becomes the customer's migrated balance: the import entry is
    the difference between it and what earlier imports already credited (net of reverts), so
    points earned in Tally meanwhile are kept and a corrected file only moves the difference.
    ``add``: the file's value is credited on top of whatever the customer has.
    """

    REPLACE = "replace"
    ADD = "add"


# --- errors ----------------------------------------------------------------------------------


def error_dict(error: ImportRowError) -> dict[str, Any]:
    """An error as stored in a job's report and returned by the API."""
    return {
        "row": error.row,
        "column": error.column,
        "value": error.value,
        "expected": error.expected,
        "message": error.message,
    }


@dataclass
class RejectedRow:
    """Every error of one row, and its values as read when they are wanted (skip-invalid)."""

    row: int
    errors: list[ImportRowError]
    record: list[str] | None = None

    @property
    def reason(self) -> str:
        """The errors as one text for the ``reason`` column of the rejected rows file."""
        return "; ".join(error.message for error in self.errors)


# --- the spool -------------------------------------------------------------------------------


class Spool:
    """Batches of checked rows on a temporary file, written once and read back once.

    Rows are plain tuples of text and numbers written with ``marshal``, which reads back
    several times faster than the CSV parses.
    """

    _HEADER = struct.Struct("<I")

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="tally-import-")  # noqa: SIM115

    def write(self, batch: Any) -> None:
        """Append one batch."""
        blob = marshal.dumps(batch)
        self._file.write(self._HEADER.pack(len(blob)))
        self._file.write(blob)

    def read(self) -> Iterator[Any]:
        """Every batch, in the order written."""
        self._file.flush()
        self._file.seek(0)
        size = self._HEADER.size
        while header := self._file.read(size):
            (length,) = self._HEADER.unpack(header)
            yield marshal.loads(self._file.read(length))  # noqa: S302 - our own temp file

    def close(self) -> None:
        """Delete the temporary file."""
        self._file.close()


def _date_order(row: Sequence[Any]) -> tuple[str, int]:
    return row[O_PLACED], row[O_ROW]


class OrdersByDate:
    """Checked orders read back by date (then file row), whatever order the file has them in.

    Orders must be counted in the order they were placed - a VIP tier reached by an early order
    multiplies the later ones - and stores export newest first. An external merge sort keeps
    memory flat: each batch is sorted and written as a run of small blocks to a temporary file,
    and reading merges the runs with one block of each in memory.
    """

    BLOCK = 1000

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="tally-orders-")  # noqa: SIM115
        self._runs: list[list[tuple[int, int]]] = []
        self.count = 0

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        """One batch of spooled orders."""
        ordered = sorted(rows, key=_date_order)
        blocks = []
        self._file.seek(0, os.SEEK_END)
        for start in range(0, len(ordered), self.BLOCK):
            blob = marshal.dumps(ordered[start : start + self.BLOCK])
            blocks.append((self._file.tell(), len(blob)))
            self._file.write(blob)
        if blocks:
            self._runs.append(blocks)
        self.count += len(ordered)

    def _run(self, blocks: list[tuple[int, int]]) -> Iterator[Sequence[Any]]:
        for offset, length in blocks:
            self._file.seek(offset)
            yield from marshal.loads(self._file.read(length))  # noqa: S302 - our own temp file

    def __iter__(self) -> Iterator[Sequence[Any]]:
        self._file.flush()
        return heapq.merge(*(self._run(blocks) for blocks in self._runs), key=_date_order)

    def close(self) -> None:
        """Delete the temporary file."""
        self._file.close()


def customer_plain(row: CustomerRow, tier_id: str | None) -> tuple[Any, ...]:
    """A checked customer row as spooled (the tier already resolved to its id)."""
    return (
        row.row_number,
        row.email,
        row.first_name,
        row.last_name,
        row.points,
        row.birthday.isoformat() if row.birthday is not None else None,
        tier_id,
        row.external_id,
    )


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def order_plain(row: OrderRow) -> tuple[Any, ...]:
    """A checked order row as spooled."""
    return (
        row.row_number,
        row.order_id,
        row.email,
        str(row.total),
        _text(row.subtotal),
        _text(row.discounts),
        _text(row.shipping),
        _text(row.tax),
        row.currency,
        row.status.value,
        utc_text(row.placed_at),
        _text(row.refunded_amount),
    )


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def order_row(plain: Sequence[Any]) -> OrderRow:
    """A spooled order as the reader gave it."""
    return OrderRow(
        plain[O_ROW],
        plain[O_ID],
        plain[O_EMAIL],
        Decimal(plain[O_TOTAL]),
        _decimal(plain[O_SUBTOTAL]),
        _decimal(plain[O_DISCOUNTS]),
        _decimal(plain[O_SHIPPING]),
        _decimal(plain[O_TAX]),
        plain[O_CURRENCY],
        OrderStatus(plain[O_STATUS]),
        datetime.fromisoformat(plain[O_PLACED]).replace(tzinfo=UTC),
        _decimal(plain[O_REFUNDED]),
    )


def rejected_plain(rejected: RejectedRow) -> tuple[Any, ...]:
    """A rejected row as spooled."""
    return (
        rejected.row,
        [(e.column, e.value, e.expected) for e in rejected.errors],
        rejected.record,
    )


def rejected_row(plain: Sequence[Any]) -> RejectedRow:
    """The inverse of ``rejected_plain``."""
    row = plain[0]
    return RejectedRow(
        row, [ImportRowError(row, c, v, e) for c, v, e in plain[1]], plain[2] or None
    )


# --- bulk SQL --------------------------------------------------------------------------------


def announce(session: Session, merchant_id: int, import_id: int, customer_ids: set[int]) -> None:
    """One ``CustomersImported`` for the customers a batch created or changed, in its transaction.

    It stands in for the per-customer events (``CustomerEnrolled``, ``PointsBalanceChanged``,
    ``VipTierChanged``, ``CustomerUpdated``) the same changes made one at a time would emit:
    receivers read the customers' current values when they run.
    """
    if not customer_ids or not default_registry.handler_names(CustomersImported.event_type):
        return
    emit(
        session,
        CustomersImported(
            merchant_id=merchant_id,
            import_id=import_id,
            customer_ids=tuple(sorted(customer_ids)),
        ),
    )


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


_CUSTOMER_COLUMNS = (
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
# A customer the file gives a VIP tier keeps it (as a minimum) this long after the import.
KEPT_TIER_DAYS = 365
_MEMBER_COLUMNS = (*_CUSTOMER_COLUMNS, "vip_tier_kept", "vip_tier_kept_until")
_ORDER_COLUMNS = (
    "id",
    "merchant_id",
    "customer_id",
    "order_id",
    "subtotal",
    "discounts",
    "shipping",
    "tax",
    "total",
    "currency",
    "status",
    "placed_at",
    "refunded_amount",
    "points_awarded",
    "points_clawed_back",
    "points_basis",
    "source",
    "import_id",
    "created_at",
    "updated_at",
)


def insert_guests(
    bulk: Bulk, merchant_id: int, emails: Sequence[str], now: datetime
) -> dict[str, int]:
    """Create guest customers (as ``record_order`` does for unknown emails); email -> id.

    An email someone else created meanwhile is left out; rows that lost only on their random
    referral code are tried again with new codes.
    """
    stamp = bulk.timestamp(now)
    created: dict[str, int] = {}
    pending = list(emails)
    for _attempt in range(4):
        if not pending:
            break
        ids = bulk.allocate_ids("customers", len(pending))
        codes = sorted(referral_codes(len(pending)))
        bulk.insert(
            "customers",
            _CUSTOMER_COLUMNS,
            [
                (
                    *(cid, merchant_id, email, None, None, None, None, None, "guest", code, 0),
                    *(None, None, None, stamp, stamp),
                )
                for cid, email, code in zip(ids, pending, codes, strict=True)
            ],
            skip_conflicts=True,
        )
        present = bulk.present_ids("customers", ids)
        missed: list[str] = []
        for cid, email in zip(ids, pending, strict=True):
            if present is None or cid in present:
                created[email] = cid
            else:
                missed.append(email)
        taken = customer_emails(bulk.session, merchant_id, missed) if missed else set()
        pending = [email for email in missed if email not in taken]
    return created


def customer_emails(session: Session, merchant_id: int, emails: Sequence[str]) -> set[str]:
    """Which of these emails belong to a customer of the merchant."""
    found: set[str] = set()
    for part in chunks(list(emails)):
        found.update(
            session.scalars(
                select(Customer.email).where(
                    Customer.merchant_id == merchant_id, Customer.email.in_(part)
                )
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


# --- customers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerRun:
    """What every batch of a customer import needs to know."""

    merchant_id: int
    job_id: int
    key_prefix: str
    """``import:<file checksum>`` (plus the generation): entries are ``<prefix>:<customer id>``."""
    points_mode: PointsMode
    award_create_account: bool
    program: program_service.Program
    now: datetime

    @property
    def source_ref(self) -> str:
        """What every ledger entry of the job carries (how a revert finds them)."""
        return job_source_ref(self.job_id)

    @property
    def kept_until(self) -> datetime:
        """Until when a tier the file gives is kept (``tiers.with_kept_tier``)."""
        return self.now + timedelta(days=KEPT_TIER_DAYS)

    @property
    def create_account_points(self) -> int:
        """Points for each customer the import creates (0 when not awarded)."""
        action = self.program.settings.create_account
        if not (self.award_create_account and action.enabled):
            return 0
        return max(action.points, 0)

    def entry_key(self, customer_id: int) -> str:
        """The idempotency key of a customer's import entry."""
        return f"{self.key_prefix}:{customer_id}"


def job_source_ref(job_id: int) -> str:
    """The ``source_ref`` of the ledger entries an import job writes directly."""
    return f"import-job:{job_id}"


def tier_lookup(program: program_service.Program) -> dict[str, str]:
    """Tier id or name (lowercased) -> tier id, for the tiers of the program."""
    lookup: dict[str, str] = {}
    for tier in program.settings.vip.tiers:
        lookup[tier.name.strip().lower()] = tier.id
        lookup[tier.id.lower()] = tier.id
    return lookup


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


def load_existing(session: Session, run: CustomerRun, emails: Sequence[str]) -> dict[str, Existing]:
    """The customers with these emails, with what earlier imports credited them."""
    found = load_customers(session, run.merchant_id, emails)
    if not found:
        return found
    by_id = {customer.id: customer for customer in found.values()}
    for part in chunks(list(by_id)):
        sums = session.execute(
            select(LedgerEntry.customer_id, func.sum(LedgerEntry.points))
            .where(LedgerEntry.customer_id.in_(part), LedgerEntry.kind == EntryKind.IMPORT)
            .group_by(LedgerEntry.customer_id)
        )
        for customer_id, total in sums:
            by_id[customer_id].imported = int(total or 0)
        keys = [run.entry_key(customer_id) for customer_id in part]
        used = session.scalars(
            select(LedgerEntry.customer_id).where(
                LedgerEntry.merchant_id == run.merchant_id, LedgerEntry.idempotency_key.in_(keys)
            )
        )
        for customer_id in used:
            by_id[customer_id].key_used = True
    return found


def points_change(run: CustomerRun, row: Sequence[Any], customer: Existing) -> int:
    """The import entry a spooled row makes for an existing customer (0: none)."""
    points = row[C_POINTS]
    if points is None or customer.key_used:
        return 0
    if run.points_mode is PointsMode.ADD:
        return int(points)
    return int(points) - customer.imported


def profile_change(row: Sequence[Any], customer: Existing) -> dict[str, Any]:
    """The profile fields a spooled row changes on an existing customer, with new values."""
    values: dict[str, Any] = {}
    if row[C_FIRST] is not None and row[C_FIRST] != customer.first_name:
        values["first_name"] = row[C_FIRST]
    if row[C_LAST] is not None and row[C_LAST] != customer.last_name:
        values["last_name"] = row[C_LAST]
    birthday = row[C_BIRTHDAY]
    if birthday is not None and date.fromisoformat(birthday) != customer.birthday:
        values["birthday"] = date.fromisoformat(birthday)
    if row[C_TIER] is not None and row[C_TIER] != customer.vip_tier:
        values["vip_tier"] = row[C_TIER]
    # An external id is filled in, never replaced: the store integration owns it.
    if row[C_EXTERNAL] is not None and customer.external_id is None:
        values["external_id"] = row[C_EXTERNAL]
    if customer.state == CustomerState.GUEST:
        values["state"] = CustomerState.MEMBER.value
    return values


def reduction_error(
    row: Sequence[Any], column: str, customer: Existing, change: int
) -> ImportRowError | None:
    """Refuse a ``replace`` that would lower a balance below zero (the points were spent)."""
    if change >= 0 or customer.points_balance >= -change:
        return None
    floor = int(row[C_POINTS] or 0) + (-change - customer.points_balance)
    return ImportRowError(
        row[C_ROW],
        column,
        str(row[C_POINTS]),
        f"at least {floor} points: {customer.imported} points were imported for this customer "
        f"before and the balance is now {customer.points_balance}, so it cannot be lowered by "
        f"{-change}",
    )


@dataclass
class CustomerBatchResult:
    """What writing one batch of customers did."""

    new: int = 0
    updated: int = 0
    skipped: int = 0
    points: int = 0
    emails: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)


def write_customers(
    session: Session, run: CustomerRun, rows: Sequence[Sequence[Any]], labels: dict[str, str]
) -> CustomerBatchResult:
    """Apply one batch of spooled customer rows (the caller commits, with the job's cursor).

    Every row is first inserted as a new customer (a row whose email exists is skipped by the
    unique key), so a batch of new customers costs no lookup; the rows left over are existing
    customers, updated in bulk.
    """
    result = CustomerBatchResult()
    if not rows:
        return result
    bulk = Bulk(session)
    now = run.now
    bonus = run.create_account_points
    merchant_id = run.merchant_id
    stamp = bulk.timestamp(now)
    kept_until = bulk.timestamp(run.kept_until)
    day = bulk.day_text
    created: dict[int, int] = {}  # position in rows -> customer id
    # In email order, so the batch goes into the email index (and, with ids given in that
    # order, into every index by customer) in one sweep rather than at random.
    pending = sorted(range(len(rows)), key=lambda position: rows[position][C_EMAIL])
    for _attempt in range(4):
        ids = bulk.allocate_ids("customers", len(pending))
        # Sorted, the batch's codes go into the referral code index in one sweep.
        codes = sorted(referral_codes(len(pending)))
        bulk.insert(
            "customers",
            _MEMBER_COLUMNS,
            [
                (
                    cid,
                    merchant_id,
                    row[C_EMAIL],
                    row[C_FIRST],
                    row[C_LAST],
                    day(row[C_BIRTHDAY]),
                    stamp if row[C_BIRTHDAY] is not None else None,
                    row[C_EXTERNAL],
                    "member",
                    code,
                    0,  # the ledger moves it, with the entries below
                    row[C_TIER],
                    stamp,
                    None,
                    stamp,
                    stamp,
                    row[C_TIER],
                    kept_until if row[C_TIER] is not None else None,
                )
                for cid, code, row in zip(ids, codes, (rows[p] for p in pending), strict=True)
            ],
            skip_conflicts=True,
        )
        present = bulk.present_ids("customers", ids)
        missed = []
        for position, cid in zip(pending, ids, strict=True):
            if present is None or cid in present:
                created[position] = cid
            else:
                missed.append(position)
        if not missed:
            break
        # Skipped: the email exists (an existing customer, updated below), the external id is
        # another customer's (refused below), or - rarely - the random referral code was taken.
        emails = customer_emails(session, merchant_id, [rows[p][C_EMAIL] for p in missed])
        external = [rows[p][C_EXTERNAL] for p in missed if rows[p][C_EXTERNAL] is not None]
        held = external_ids_in_use(session, merchant_id, external)
        pending = [
            p for p in missed if rows[p][C_EMAIL] not in emails and rows[p][C_EXTERNAL] not in held
        ]
        if not pending:
            break

    expires_at = program_service.credit_expiry(run.program, now)
    transfers = [
        Transfer(
            customer_id=cid,
            points=rows[p][C_POINTS],
            kind=EntryKind.IMPORT,
            idempotency_key=f"{run.key_prefix}:{cid}",
            reason="Points balance imported",
            source_ref=run.source_ref,
            expires_at=expires_at,
        )
        for p, cid in created.items()
        if rows[p][C_POINTS]
    ]
    if bonus:
        version = run.program.settings.version
        # As program_service.enroll_member awards them, marked with the job for a revert.
        transfers += [
            Transfer(
                customer_id=cid,
                points=bonus,
                kind=EntryKind.EARN,
                idempotency_key=f"create_account:{cid}",
                reason="Created an account",
                source_ref=run.source_ref,
                rule_id="create_account",
                rule_version=version,
                expires_at=expires_at,
            )
            for cid in created.values()
        ]
    posted = post_transfers(
        session, merchant_id=merchant_id, transfers=transfers, now=now, announce=False
    )
    result.new = len(created)
    result.points = sum(r.transfer.points for r in posted.written())

    changed = set(created.values())
    leftover = [rows[p] for p in range(len(rows)) if p not in created]
    if leftover:
        changed |= _update_existing(session, bulk, run, leftover, labels, result)
    announce(session, merchant_id, run.job_id, changed)
    if bonus and created:
        welcomed = {cid: bonus + int(rows[p][C_POINTS] or 0) for p, cid in created.items()}
        result.emails += _welcome(session, run, welcomed)
    return result


def _update_existing(
    session: Session,
    bulk: Bulk,
    run: CustomerRun,
    rows: Sequence[Sequence[Any]],
    labels: dict[str, str],
    result: CustomerBatchResult,
) -> set[int]:
    """Update the customers that exist already; the ids of those that changed."""
    now = run.now
    existing = load_existing(session, run, [row[C_EMAIL] for row in rows])
    expires_at = program_service.credit_expiry(run.program, now)
    credits: list[Transfer] = []
    debits: list[tuple[Sequence[Any], Existing, int]] = []
    updates: list[tuple[Existing, dict[str, Any]]] = []
    for row in rows:
        customer = existing.get(row[C_EMAIL])
        if customer is None:
            # Neither created nor there: its external id belongs to another customer.
            error = ImportRowError(
                row[C_ROW],
                labels.get("external_id", "external_id"),
                row[C_EXTERNAL] or "",
                "a customer ID that no other customer has",
            )
            result.rejected.append(RejectedRow(row[C_ROW], [error]))
            continue
        values = profile_change(row, customer)
        points = points_change(run, row, customer)
        if values:
            updates.append((customer, values))
        if points > 0:
            credits.append(
                Transfer(
                    customer_id=customer.id,
                    points=points,
                    kind=EntryKind.IMPORT,
                    reason="Points balance imported",
                    idempotency_key=run.entry_key(customer.id),
                    source_ref=run.source_ref,
                    expires_at=expires_at,
                )
            )
        elif points < 0:
            debits.append((row, customer, points))
        if not values and not points:
            result.skipped += 1

    _write_profiles(bulk, run, updates)
    # A key already taken is a batch this job applied before it was stopped: skipped.
    posted = post_transfers(
        session,
        merchant_id=run.merchant_id,
        transfers=credits,
        now=now,
        announce=False,
        strict_replays=False,
    )
    amounts: dict[int, int] = defaultdict(int)
    for r in posted.written():
        amounts[r.transfer.customer_id] += r.transfer.points
    result.points += sum(amounts.values())
    changed = {customer.id for customer, _ in updates} | set(amounts)

    for row, customer, points in debits:
        # Rare (a corrected file lowering a migrated balance): the ledger's own guarded debit,
        # which also takes the points out of the open credits.
        try:
            with session.begin_nested():
                posting = ledger.post(
                    session,
                    customer=session.get_one(Customer, customer.id),
                    points=points,
                    kind=EntryKind.IMPORT,
                    idempotency_key=run.entry_key(customer.id),
                    reason="Points balance imported (corrected)",
                    source_ref=run.source_ref,
                )
        except InsufficientPoints:
            refused = reduction_error(row, labels.get("points", "points"), customer, points)
            if refused is not None:
                result.rejected.append(RejectedRow(row[C_ROW], [refused]))
            continue
        if not posting.replayed:
            result.points += points
            changed.add(customer.id)
    result.updated += len(changed)
    return changed


def _write_profiles(
    bulk: Bulk,
    run: CustomerRun,
    updates: Sequence[tuple[Existing, dict[str, Any]]],
) -> None:
    stamp = bulk.timestamp(run.now)
    kept_until = bulk.timestamp(run.kept_until)
    # One statement for every row: COALESCE keeps what a row does not change.
    params = []
    for customer, values in updates:
        birthday = values.get("birthday")
        params.append(
            (
                values.get("first_name"),
                values.get("last_name"),
                bulk.day(birthday),
                stamp if birthday is not None else None,
                values.get("vip_tier"),
                values.get("vip_tier"),
                kept_until if "vip_tier" in values else None,
                values.get("external_id"),
                values.get("state"),
                stamp if "state" in values else None,
                stamp,
                customer.id,
            )
        )
    bulk.execute_many(
        "UPDATE customers SET first_name = COALESCE(?, first_name), "
        "last_name = COALESCE(?, last_name), birthday = COALESCE(?, birthday), "
        "birthday_set_at = COALESCE(?, birthday_set_at), vip_tier = COALESCE(?, vip_tier), "
        "vip_tier_kept = COALESCE(?, vip_tier_kept), "
        "vip_tier_kept_until = COALESCE(?, vip_tier_kept_until), "
        "external_id = COALESCE(?, external_id), state = COALESCE(?, state), "
        "enrolled_at = COALESCE(?, enrolled_at), updated_at = ? WHERE id = ?",
        params,
    )


def _welcome(session: Session, run: CustomerRun, points: dict[int, int]) -> int:
    """After create-account points: the customers' emails, and their tiers on a points metric."""
    from tally.notifications import service as notifications
    from tally.notifications.templates import EmailType

    settings = run.program.settings
    queued = 0
    ids = list(points)
    if settings.create_account.send_email:
        for part in chunks(ids, 500):
            queued += notifications.queue_bulk(
                session,
                merchant_id=run.merchant_id,
                email_type=EmailType.CREATE_ACCOUNT_POINTS,
                dedupe_key_prefix="create_account_points",
                variables=lambda customer: {"points": points[customer.id]},
                where=[Customer.id.in_(part)],
            ).queued
    if settings.vip.enabled and settings.vip.metric == VipMetric.POINTS_EARNED:
        # award() recomputes the tier after earning, and create-account points are earned.
        for part in chunks(ids):
            for customer in session.scalars(select(Customer).where(Customer.id.in_(part))):
                program_service.recompute_tier(session, run.program, customer, now=run.now)
    return queued


# --- orders ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderRun:
    """What every batch of an orders import needs to know."""

    merchant_id: int
    job_id: int
    reward_points: bool
    program: program_service.Program
    now: datetime
    engine: str = ENGINE_BULK
    known_orders_possible: bool = True
    """False when the merchant had no orders when the job started: no lookups needed."""


def order_input(row: OrderRow) -> tuple[program_service.OrderInput, bool]:
    """The order as ``record_order`` takes it, and whether it may earn points.

    Refunded and cancelled orders earn nothing; a refunded order without an amount was
    refunded in full; partial refunds earn on what was kept (``net_of_refunds``), and a
    partially refunded order whose refunded amount the file does not give earns nothing.
    """
    status = row.status
    refunded = row.refunded_amount
    if refunded is None:
        refunded = row.total if status is OrderStatus.REFUNDED else _ZERO
    data = program_service.OrderInput(
        order_id=row.order_id,
        total=row.total,
        placed_at=row.placed_at,
        email=row.email,
        subtotal=row.subtotal,
        discounts=row.discounts or _ZERO,
        shipping=row.shipping or _ZERO,
        tax=row.tax or _ZERO,
        currency=row.currency,
        status=status.value,
        refunded_amount=refunded,
    )
    return data, may_earn(status.value, row.refunded_amount is not None)


def may_earn(status: str, refund_known: bool) -> bool:
    """Whether an imported order's status lets it earn points at all."""
    if status in {"refunded", "cancelled"}:
        return False
    return status != "partially_refunded" or refund_known


def reached_award_status(status: str, award_on_status: str) -> bool:
    """``record_order``'s test of whether an order's status earns its points."""
    if status == "cancelled":
        return False
    if award_on_status == "paid":
        return status in program_service.PAID_STATUSES
    return status == award_on_status or (
        award_on_status == "fulfilled" and status in {"partially_refunded", "refunded"}
    )


@dataclass
class TierState:
    """A customer's VIP standing while the batch's orders are counted, in date order."""

    tier: str | None
    value: Decimal
    rewarded: set[str] = field(default_factory=set)
    kept: Tier | None = None
    """A tier kept as a minimum (imported), whatever the value."""
    changes: list[tuple[str | None, str | None, Decimal, str]] = field(default_factory=list)
    """(old tier, new tier, value, UTC date text of the order that moved it)."""
    rewards: list[Tier] = field(default_factory=list)


@dataclass
class OrderPlan:
    """What a batch of orders will do, before anything is written.

    ``orders`` holds (spooled row, points, points basis, multiplier) in date order.
    """

    orders: list[tuple[Sequence[Any], int, Decimal | None, Decimal]] = field(default_factory=list)
    skipped: int = 0
    new_guests: list[str] = field(default_factory=list)
    customers: dict[str, Existing] = field(default_factory=dict)
    states: dict[str, TierState] = field(default_factory=dict)

    @property
    def points(self) -> int:
        """Points the orders earn (tier entry rewards they bring are not counted here)."""
        return sum(order[1] for order in self.orders)


class OrderPlanner:
    """Counts a batch of orders the way ``record_order`` would, order after order."""

    def __init__(self, run: OrderRun) -> None:
        self.run = run
        settings = run.program.settings
        self.rule = settings.place_order
        self.vip = settings.vip
        self.tiers = {tier.id: tier for tier in self.vip.tiers}
        self.ascending = sorted(self.vip.tiers, key=lambda tier: tier.threshold)
        self.window_start = tiers.window_start(run.now, run.program.zone, self.vip.window)
        self.window_text = utc_text(self.window_start) if self.window_start else None
        self.expires_at = program_service.credit_expiry(run.program, run.now)
        self.earning = run.reward_points and self.rule.enabled

    def plan(
        self,
        session: Session,
        rows: Sequence[Sequence[Any]],
        *,
        carry: dict[str, TierState] | None = None,
        guests_seen: Any = None,
    ) -> OrderPlan:
        """Decide every order of the batch; ``carry`` holds VIP state between preview batches."""
        run = self.run
        plan = OrderPlan()
        fresh = rows
        if run.known_orders_possible:
            known = known_order_ids(session, run.merchant_id, [row[O_ID] for row in rows])
            if known:
                fresh = [row for row in rows if row[O_ID] not in known]
        plan.skipped = len(rows) - len(fresh)
        emails = list(dict.fromkeys(row[O_EMAIL] for row in fresh))
        plan.customers = order_customers(session, run.merchant_id, emails, run.now)
        for email in emails:
            if email not in plan.customers and (
                guests_seen is None or guests_seen.first_row(email, 1) is None
            ):
                plan.new_guests.append(email)

        if self.vip.enabled:
            plan.states = self._states(session, plan.customers, emails, carry)
        states = plan.states
        count = self._count
        if states:
            plan.orders = [count(row, states[row[O_EMAIL]]) for row in fresh]
        else:
            plan.orders = [count(row, None) for row in fresh]
        if carry is not None:
            carry.update(plan.states)
        return plan

    def _states(
        self,
        session: Session,
        customers: dict[str, Existing],
        emails: Sequence[str],
        carry: dict[str, TierState] | None,
    ) -> dict[str, TierState]:
        ids = [customer.id for customer in customers.values()]
        values = self._values(session, ids)
        rewarded = self._rewarded(session, ids)
        states: dict[str, TierState] = {}
        for email in emails:
            if carry is not None and email in carry:
                previous = carry[email]
                states[email] = TierState(
                    previous.tier, previous.value, set(previous.rewarded), previous.kept
                )
                continue
            customer = customers.get(email)
            if customer is None:
                states[email] = TierState(None, _ZERO)
            else:
                states[email] = TierState(
                    customer.vip_tier,
                    values.get(customer.id, _ZERO),
                    rewarded.get(customer.id, set()),
                    self.tiers.get(customer.kept_tier) if customer.kept_tier else None,
                )
        return states

    def _values(self, session: Session, ids: Sequence[int]) -> dict[int, Decimal]:
        """``program_service.tier_value`` of many customers at once (read the same way)."""
        bulk = Bulk(session)
        found: dict[int, Decimal] = {}
        start = self.window_start
        amount = self.vip.metric == VipMetric.AMOUNT_SPENT
        for part in chunks(list(ids)):
            where, params = bulk.in_list("customer_id", part)
            if amount:
                statuses = ", ".join(f"'{status}'" for status in sorted(PAID_STATUSES))
                sql = (
                    "SELECT customer_id, SUM(total - refunded_amount) FROM orders "
                    f"WHERE {where} AND status IN ({statuses})"
                )
                if start is not None:
                    sql += f" AND placed_at >= {bulk.mark}"
            else:
                sql = f"SELECT customer_id, SUM(points) FROM ledger_entries WHERE {where} "
                sql += "AND kind = 'earn'"
                if start is not None:
                    sql += f" AND created_at >= {bulk.mark}"
            if start is not None:
                params = (*params, bulk.timestamp(start))
            for customer_id, total in bulk.connection.exec_driver_sql(
                sql + " GROUP BY customer_id", params
            ).all():
                if not amount:
                    found[customer_id] = Decimal(int(total or 0))
                elif isinstance(total, float):
                    # As SQLAlchemy reads a Numeric(18, 4) that SQLite summed as a float.
                    found[customer_id] = Decimal(f"{total:.4f}")
                else:
                    found[customer_id] = Decimal(str(total or 0))
        return found

    def _rewarded(self, session: Session, ids: Sequence[int]) -> dict[int, set[str]]:
        """Tiers whose entry reward each customer already had (the ledger key is taken)."""
        rewarding = [tier.id for tier in self.vip.tiers if tier.entry_reward_points > 0]
        found: dict[int, set[str]] = defaultdict(set)
        if not rewarding or not ids:
            return found
        bulk = Bulk(session)
        rules = ", ".join(f"'tier:{tier_id}'" for tier_id in rewarding)
        for part in chunks(list(ids)):
            where, params = bulk.in_list("customer_id", part)
            rows = bulk.connection.exec_driver_sql(
                "SELECT customer_id, idempotency_key FROM ledger_entries "
                f"WHERE {where} AND rule_id IN ({rules})",
                params,
            ).all()
            for customer_id, key in rows:
                prefix = f"tier-entry:{customer_id}:"
                if key.startswith(prefix):
                    found[customer_id].add(key.removeprefix(prefix))
        return found

    def _count(
        self, row: Sequence[Any], state: TierState | None
    ) -> tuple[Sequence[Any], int, Decimal | None, Decimal]:
        """An order's points, as ``record_order`` counts them; moves the customer's tier."""
        status = row[O_STATUS]
        points = 0
        basis: Decimal | None = None
        multiplier = Decimal(1)
        rule = self.rule
        if (
            self.earning
            and may_earn(status, row[O_REFUNDED] is not None)
            and reached_award_status(status, rule.award_on_status)
        ):
            if state is not None and state.tier is not None:
                multiplier = tiers.multiplier_for(self.tiers.get(state.tier))
            points, basis = self._points(row, multiplier)
        if state is not None:
            vip = self.vip
            if points > 0 and vip.metric == VipMetric.POINTS_EARNED:
                state.value += points
                self._settle(state, row[O_PLACED])
            if vip.metric == VipMetric.AMOUNT_SPENT and (
                status in program_service.PAID_STATUSES
                and (self.window_text is None or row[O_PLACED] >= self.window_text)
            ):
                state.value += Decimal(row[O_TOTAL]) - _refunded(row)
            self._settle(state, row[O_PLACED])
        return row, points, basis, multiplier

    def _points(self, row: Sequence[Any], multiplier: Decimal) -> tuple[int, Decimal]:
        """``earning.order_points`` of the order net of refunds, and its paid total."""
        total = Decimal(row[O_TOTAL])
        subtotal = Decimal(row[O_SUBTOTAL]) if row[O_SUBTOTAL] is not None else total
        discounts = Decimal(row[O_DISCOUNTS]) if row[O_DISCOUNTS] is not None else _ZERO
        shipping = Decimal(row[O_SHIPPING]) if row[O_SHIPPING] is not None else _ZERO
        tax = Decimal(row[O_TAX]) if row[O_TAX] is not None else _ZERO
        refunded = _refunded(row)
        rule = self.rule
        if refunded:
            amounts = earning.OrderAmounts(
                subtotal=subtotal, discounts=discounts, shipping=shipping, taxes=tax
            )
            net = earning.net_of_refunds(amounts, refunded)
            return earning.order_points(net, rule, multiplier), net.paid_total
        paid_total = max(subtotal - discounts + shipping + tax, _ZERO)
        basis = subtotal
        if rule.count_discounts:
            basis -= discounts
        if rule.include_shipping:
            basis += shipping
        if rule.include_taxes:
            basis += tax
        basis = max(basis, _ZERO)
        if rule.minimum_order is not None and basis < rule.minimum_order:
            return 0, paid_total
        # Decimal products in a 60-digit context are exact (it raises Inexact otherwise), so
        # rounding down gives what earning.order_points computes with fractions.
        exact = _EXACT.multiply
        try:
            if rule.mode is OrderPointsMode.FIXED_PER_ORDER:
                return int(exact(Decimal(rule.fixed_points), multiplier)), paid_total
            return int(exact(exact(basis, rule.points_per_unit), multiplier)), paid_total
        except Inexact:  # pragma: no cover - beyond 60 digits; count it the slow way
            amounts = earning.OrderAmounts(
                subtotal=subtotal, discounts=discounts, shipping=shipping, taxes=tax
            )
            return earning.order_points(amounts, rule, multiplier), paid_total

    def _settle(self, state: TierState, placed: str) -> None:
        """``recompute_tier``, including the entry rewards (which count for a points metric)."""
        while True:
            new_tier = None
            for tier in self.ascending:  # tiers.select_tier, without its sort for every order
                if tier.threshold > state.value:
                    break
                new_tier = tier
            kept = state.kept  # tiers.with_kept_tier (still kept: checked when it was read)
            if kept is not None and (new_tier is None or new_tier.threshold < kept.threshold):
                new_tier = kept
            if (new_tier.id if new_tier is not None else None) == state.tier:
                return
            change = tiers.tier_change(self.vip.tiers, state.tier, new_tier)
            if change is None:
                return
            state.changes.append((state.tier, change.new_tier_id, state.value, placed))
            state.tier = change.new_tier_id
            if (
                change.direction is not tiers.TierDirection.UP
                or new_tier is None
                or new_tier.entry_reward_points <= 0
                or new_tier.id in state.rewarded
            ):
                continue
            state.rewarded.add(new_tier.id)
            state.rewards.append(new_tier)
            if self.vip.metric == VipMetric.POINTS_EARNED:
                state.value += new_tier.entry_reward_points


def _refunded(row: Sequence[Any]) -> Decimal:
    """The refunded amount ``order_input`` records for a spooled order."""
    if row[O_REFUNDED] is not None:
        return Decimal(row[O_REFUNDED])
    return Decimal(row[O_TOTAL]) if row[O_STATUS] == "refunded" else _ZERO


def known_order_ids(session: Session, merchant_id: int, order_ids: Sequence[str]) -> set[str]:
    """Which of these order ids the merchant already has."""
    found: set[str] = set()
    for part in chunks(list(order_ids)):
        found.update(
            session.scalars(
                select(Order.order_id).where(
                    Order.merchant_id == merchant_id, Order.order_id.in_(part)
                )
            )
        )
    return found


@dataclass
class OrderBatchResult:
    """What writing one batch of orders did."""

    new: int = 0
    skipped: int = 0
    guests: int = 0
    points: int = 0


def write_orders(
    session: Session, run: OrderRun, planner: OrderPlanner, rows: Sequence[Sequence[Any]]
) -> OrderBatchResult:
    """Record one batch of spooled orders (the caller commits, with the job's cursor)."""
    if run.engine == ENGINE_RECORD_ORDER:
        return record_each(session, run, rows)
    result = OrderBatchResult()
    if not rows:
        return result
    plan = planner.plan(session, rows)
    result.skipped = plan.skipped
    bulk = Bulk(session)
    now = run.now
    merchant_id = run.merchant_id

    ids: dict[str, int] = {email: customer.id for email, customer in plan.customers.items()}
    if plan.new_guests:
        created = insert_guests(bulk, merchant_id, plan.new_guests, now)
        ids.update(created)
        result.guests = len(created)
        missing = [email for email in plan.new_guests if email not in created]
        if missing:
            # Created by someone else since the plan was made: use them as they are.
            for email, customer in order_customers(session, merchant_id, missing, now).items():
                ids[email] = customer.id
                plan.customers[email] = customer

    stamp = bulk.timestamp(now)
    currency = run.program.merchant.currency
    version = run.program.settings.version
    money = bulk.money_text
    placed = bulk.timestamp_text
    # Written in customer order: the indexes by customer are then filled in one sweep.
    plan.orders.sort(key=lambda order: ids[order[0][O_EMAIL]])
    order_ids = bulk.allocate_ids("orders", len(plan.orders))
    order_rows = []
    earned: list[tuple[int, int, str, Decimal | None, Decimal]] = []
    for pk, (row, points, basis, multiplier) in zip(order_ids, plan.orders, strict=True):
        customer_id = ids[row[O_EMAIL]]
        total = row[O_TOTAL]
        refunded = row[O_REFUNDED]
        if refunded is None:
            refunded = total if row[O_STATUS] == "refunded" else "0"
        order_rows.append(
            (
                pk,
                merchant_id,
                customer_id,
                row[O_ID],
                money(row[O_SUBTOTAL] if row[O_SUBTOTAL] is not None else total),
                money(row[O_DISCOUNTS] or "0"),
                money(row[O_SHIPPING] or "0"),
                money(row[O_TAX] or "0"),
                money(total),
                (row[O_CURRENCY] or currency).upper(),
                row[O_STATUS],
                placed(row[O_PLACED]),
                money(refunded),
                points,
                0,
                bulk.money(basis),
                "import",
                run.job_id,
                stamp,
                stamp,
            )
        )
        if points > 0:
            earned.append((customer_id, points, row[O_ID], basis, multiplier))
    bulk.insert("orders", _ORDER_COLUMNS, order_rows)
    result.new = len(order_rows)
    result.points = plan.points

    source_ref = job_source_ref(run.job_id)
    expires = planner.expires_at

    def earn(earned_row: tuple[Any, ...], key: str) -> Transfer:
        customer_id, points, order_id, basis, multiplier = earned_row
        return Transfer(
            customer_id=customer_id,
            points=points,
            kind=EntryKind.EARN,
            idempotency_key=key,
            reason=f"Order {order_id}",
            source_ref=source_ref,
            rule_id="place_order",
            rule_version=version,
            expires_at=expires,
            details={"basis": str(basis), "multiplier": str(multiplier)},
        )

    rewards = _write_tier_changes(bulk, run, planner, plan, ids)
    first = post_transfers(
        session,
        merchant_id=merchant_id,
        transfers=[earn(row, f"order:{row[2]}") for row in earned] + rewards,
        now=now,
        announce=False,
        strict_replays=False,
    )
    # ``order:<id>`` is taken only when an earlier import of the order was reverted (a known
    # order is skipped): the order imported again gets its points under a key of this job.
    again = [
        earn(row, f"order:{row[2]}:import-{run.job_id}")
        for row, r in zip(earned, first.results, strict=False)
        if r.outcome == Outcome.REPLAYED
    ]
    second = post_transfers(
        session, merchant_id=merchant_id, transfers=again, now=now, announce=False
    )
    moved = {r.transfer.customer_id for r in first.written() + second.written()}
    moved_tier = {ids[email] for email, state in plan.states.items() if state.changes}
    announce(session, merchant_id, run.job_id, moved | moved_tier)
    return result


def _write_tier_changes(
    bulk: Bulk,
    run: OrderRun,
    planner: OrderPlanner,
    plan: OrderPlan,
    ids: dict[str, int],
) -> list[Transfer]:
    """Tier moves as ``recompute_tier`` records them; the entry rewards they earned, to post."""
    merchant_id = run.merchant_id
    stamp = bulk.timestamp(run.now)
    change_rows = []
    current: dict[int, str | None] = {}
    rewards: list[Transfer] = []
    for email, state in plan.states.items():
        if not state.changes:
            continue
        customer_id = ids[email]
        current[customer_id] = state.tier
        for old, new, value, placed in state.changes:
            change_rows.append(
                (merchant_id, customer_id, old, new, bulk.money(value), bulk.timestamp_text(placed))
            )
        rewards += [
            Transfer(
                customer_id=customer_id,
                points=tier.entry_reward_points,
                kind=EntryKind.EARN,
                reason=f"Welcome to {tier.name}",
                idempotency_key=f"tier-entry:{customer_id}:{tier.id}",
                # Marked with the job, so that a revert takes it back with the orders' points.
                source_ref=job_source_ref(run.job_id),
                rule_id=f"tier:{tier.id}",
                rule_version=run.program.settings.version,
                expires_at=planner.expires_at,
            )
            for tier in state.rewards
            if tier.entry_reward_points > 0
        ]
    bulk.insert(
        "tier_changes",
        ("merchant_id", "customer_id", "old_tier", "new_tier", "value", "changed_at"),
        change_rows,
    )
    bulk.execute_many(
        "UPDATE customers SET vip_tier = ?, updated_at = ? WHERE id = ?",
        [(tier, stamp, customer_id) for customer_id, tier in current.items()],
    )
    return rewards


def record_each(session: Session, run: OrderRun, rows: Sequence[Sequence[Any]]) -> OrderBatchResult:
    """Record spooled orders one by one through ``record_order`` (same rules, no bulk writes)."""
    result = OrderBatchResult()
    for plain in rows:
        row = order_row(plain)
        exists = session.scalar(
            select(Order.id).where(
                Order.merchant_id == run.merchant_id, Order.order_id == row.order_id
            )
        )
        if exists is not None:
            result.skipped += 1
            continue
        known = session.scalar(
            select(Customer.id).where(
                Customer.merchant_id == run.merchant_id, Customer.email == row.email
            )
        )
        data, earns = order_input(row)
        recorded = program_service.record_order(
            session,
            merchant_id=run.merchant_id,
            data=data,
            award_points=run.reward_points and earns,
            apply_limits=False,
            source="import",
            import_id=run.job_id,
            now=run.now,
        )
        result.new += 1
        result.guests += known is None
        result.points += recorded.points_awarded_now
    session.flush()
    return result
