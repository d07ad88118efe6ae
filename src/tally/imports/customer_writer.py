"""Writing a batch of customer rows: new customers, profile updates, their points in the ledger.

A new email creates a member; an existing customer is updated with the names, birthday and tier
the file gives (an external id is filled in, never replaced; a guest becomes a member). The
points become one ``import`` ledger entry keyed ``import:<first 20 hex digits of the
checksum>:<customer id>`` (``:g<n>`` after the checksum once the file's earlier imports were
reverted ``n`` times, so it can be imported again), so the same file imported again changes
nothing. With ``PointsMode.REPLACE`` (the default) the file's value is the customer's
*migrated* balance: the entry is the difference from what earlier imports credited (net of
reverts), so a customer with points earned in Tally keeps them; lowering a migrated balance
below what is left is refused for that row. ``PointsMode.ADD`` credits the file's value on top.
Imported credits get expiry like any credit (per grant: they expire ``days`` after the import;
rolling: the import is the balance's last change). Tiers named in the file are set as they are
(by tier id or name; a name the program does not have is an error) and kept as a minimum for
``KEPT_TIER_DAYS``. With ``award_create_account`` each *new* customer gets the create-account
action's points (when the action is enabled) and, if the action sends emails, one queued
``create_account_points`` email.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tally.customers.orm import Customer, CustomerState
from tally.db.bulk import Bulk, chunks
from tally.imports import consent
from tally.imports.customer_rows import (
    CUSTOMER_COLUMNS,
    Existing,
    customer_emails,
    external_ids_in_use,
    insert_customers,
    load_customers,
)
from tally.imports.events import announce, job_source_ref
from tally.imports.formats import ImportRowError
from tally.imports.job_record import BatchResult
from tally.imports.kept_tiers import record_kept_tiers
from tally.imports.options import PointsMode
from tally.imports.rejected import RejectedRow
from tally.imports.spool import (
    C_BIRTHDAY,
    C_CONSENT,
    C_EMAIL,
    C_EXTERNAL,
    C_FIRST,
    C_LAST,
    C_POINTS,
    C_ROW,
    C_TIER,
)
from tally.ledger import service as ledger
from tally.ledger.batch import Transfer, post_transfers
from tally.ledger.errors import InsufficientPoints
from tally.ledger.orm import EntryKind, LedgerEntry
from tally.program import service as program_service
from tally.program.settings import VipMetric

# A customer the file gives a VIP tier keeps it (as a minimum) this long after the import.
KEPT_TIER_DAYS = 365
_MEMBER_COLUMNS = (*CUSTOMER_COLUMNS, "vip_tier_kept", "vip_tier_kept_until")


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
        if not (self.award_create_account and action.enabled and self.program.settings.live):
            return 0
        return max(action.points, 0)

    def entry_key(self, customer_id: int) -> str:
        """The idempotency key of a customer's import entry."""
        return f"{self.key_prefix}:{customer_id}"

    def import_credit(self, customer_id: int, points: int, expires_at: datetime | None) -> Transfer:
        """A customer's import entry, crediting ``points``."""
        return Transfer(
            customer_id=customer_id,
            points=points,
            kind=EntryKind.IMPORT,
            reason="Points balance imported",
            idempotency_key=self.entry_key(customer_id),
            source_ref=self.source_ref,
            expires_at=expires_at,
        )


def tier_lookup(program: program_service.Program) -> dict[str, str]:
    """Tier id or name (lowercased) -> tier id, for the tiers of the program."""
    lookup: dict[str, str] = {}
    for tier in program.settings.vip.tiers:
        lookup[tier.name.strip().lower()] = tier.id
        lookup[tier.id.lower()] = tier.id
    return lookup


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


def write_customers(
    session: Session, run: CustomerRun, rows: Sequence[Sequence[Any]], labels: dict[str, str]
) -> BatchResult:
    """Apply one batch of spooled customer rows (the caller commits, with the job's cursor).

    Every row is first inserted as a new customer (a row whose email exists is skipped by the
    unique key), so a batch of new customers costs no lookup; the rows left over are existing
    customers, updated in bulk.
    """
    result = BatchResult()
    if not rows:
        return result
    bulk = Bulk(session)
    bonus = run.create_account_points
    created = _insert_new(bulk, run, rows)
    record_kept_tiers(
        session,
        merchant_id=run.merchant_id,
        job_id=run.job_id,
        tiers={cid: rows[p][C_TIER] for p, cid in created.items() if rows[p][C_TIER] is not None},
        created=True,
    )
    result.new = result.customers_created = len(created)
    result.points = _credit_new(session, run, rows, created)

    changed = set(created.values())
    leftover = [rows[p] for p in range(len(rows)) if p not in created]
    if leftover:
        changed |= _update_existing(session, bulk, run, leftover, labels, result)
    changed |= consent.record_consent(
        session,
        merchant_id=run.merchant_id,
        job_id=run.job_id,
        answers=[(row[C_EMAIL], row[C_CONSENT]) for row in rows if row[C_CONSENT] is not None],
        now=run.now,
    )
    announce(session, run.merchant_id, run.job_id, changed)
    if bonus and created:
        welcomed = {cid: bonus + int(rows[p][C_POINTS] or 0) for p, cid in created.items()}
        result.emails += _welcome(session, run, welcomed)
    return result


def _insert_new(bulk: Bulk, run: CustomerRun, rows: Sequence[Sequence[Any]]) -> dict[int, int]:
    """Insert each row as a new member; position in ``rows`` -> id, for the rows inserted."""
    merchant_id = run.merchant_id
    stamp = bulk.timestamp(run.now)
    kept_until = bulk.timestamp(run.kept_until)
    day = bulk.day_text

    def member(cid: int, code: str, position: int) -> tuple[Any, ...]:
        row = rows[position]
        return (
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

    def retry(missed: list[int]) -> list[int]:
        # Skipped: the email exists (an existing customer, updated below), the external id is
        # another customer's (refused below), or - rarely - the random referral code was taken.
        session = bulk.session
        emails = customer_emails(session, merchant_id, [rows[p][C_EMAIL] for p in missed])
        external = [rows[p][C_EXTERNAL] for p in missed if rows[p][C_EXTERNAL] is not None]
        held = external_ids_in_use(session, merchant_id, external)
        return [
            p for p in missed if rows[p][C_EMAIL] not in emails and rows[p][C_EXTERNAL] not in held
        ]

    # In email order, so the batch goes into the email index (and, with ids given in that
    # order, into every index by customer) in one sweep rather than at random.
    pending = sorted(range(len(rows)), key=lambda position: rows[position][C_EMAIL])
    return insert_customers(bulk, _MEMBER_COLUMNS, pending, member, retry)


def _credit_new(
    session: Session, run: CustomerRun, rows: Sequence[Sequence[Any]], created: dict[int, int]
) -> int:
    """Post the new customers' imported points (and create-account points); points written."""
    expires_at = program_service.credit_expiry(run.program, run.now)
    transfers = [
        run.import_credit(cid, rows[p][C_POINTS], expires_at)
        for p, cid in created.items()
        if rows[p][C_POINTS]
    ]
    bonus = run.create_account_points
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
        session, merchant_id=run.merchant_id, transfers=transfers, now=run.now, announce=False
    )
    return sum(r.transfer.points for r in posted.written())


_Debit = tuple[Sequence[Any], Existing, int]
"""A row lowering an existing customer's migrated balance: (row, customer, points, negative)."""


def _update_existing(
    session: Session,
    bulk: Bulk,
    run: CustomerRun,
    rows: Sequence[Sequence[Any]],
    labels: dict[str, str],
    result: BatchResult,
) -> set[int]:
    """Update the customers that exist already; the ids of those that changed."""
    existing = load_existing(session, run, [row[C_EMAIL] for row in rows])
    updates, credits, debits = _changes(run, rows, existing, labels, result)
    record_kept_tiers(
        session,
        merchant_id=run.merchant_id,
        job_id=run.job_id,
        tiers={c.id: values["vip_tier"] for c, values in updates if "vip_tier" in values},
        created=False,
    )
    _write_profiles(bulk, run, updates)
    # A key already taken is a batch this job applied before it was stopped: skipped.
    posted = post_transfers(
        session,
        merchant_id=run.merchant_id,
        transfers=credits,
        now=run.now,
        announce=False,
        strict_replays=False,
    )
    amounts: dict[int, int] = defaultdict(int)
    for r in posted.written():
        amounts[r.transfer.customer_id] += r.transfer.points
    result.points += sum(amounts.values())
    changed = {customer.id for customer, _ in updates} | set(amounts)
    changed |= _post_debits(session, run, debits, labels, result)
    result.updated += len(changed)
    return changed


def _changes(
    run: CustomerRun,
    rows: Sequence[Sequence[Any]],
    existing: dict[str, Existing],
    labels: dict[str, str],
    result: BatchResult,
) -> tuple[list[tuple[Existing, dict[str, Any]]], list[Transfer], list[_Debit]]:
    """What each row changes of its existing customer: profile updates, credits and debits."""
    expires_at = program_service.credit_expiry(run.program, run.now)
    updates: list[tuple[Existing, dict[str, Any]]] = []
    credits: list[Transfer] = []
    debits: list[_Debit] = []
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
            credits.append(run.import_credit(customer.id, points, expires_at))
        elif points < 0:
            debits.append((row, customer, points))
        if not values and not points:
            result.skipped += 1
    return updates, credits, debits


def _post_debits(
    session: Session,
    run: CustomerRun,
    debits: Sequence[_Debit],
    labels: dict[str, str],
    result: BatchResult,
) -> set[int]:
    """Lower migrated balances, refusing rows whose points were spent; the customers changed."""
    changed: set[int] = set()
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
