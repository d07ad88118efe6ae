"""The one writer of points: many transfers in, one result per transfer.

Every path that moves points (API adjustments, orders and refunds, redemptions, imports,
expiry, tier rewards) hands its transfers to `post_transfers`, which in one pass

- inserts every entry with `ON CONFLICT DO NOTHING` on (merchant, idempotency key), so a key
  already used is a replay (checked to be the same movement) and never a second entry;
- moves each customer's cached balance once, by the net of its new entries, guarding any net
  debit against the balance read under a row lock (a customer whose debits cannot be paid gets
  none of its entries in this batch and the result `INSUFFICIENT`);
- takes debits out of open credits (soonest-expiring first, or the one credit an expiry names,
  or all of them when the whole balance expires);
- emits one `PointsBalanceChanged` per customer per batch, unless the caller announces the
  batch its own way (imports send one `CustomersImported`).

Statements are bulk (`executemany` of tuples, ids allocated up front), so a batch of twenty
thousand import entries costs a handful of round trips, and a single transfer a few.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.db.bulk import Bulk, chunks
from tally.errors import FieldProblem
from tally.ledger.bounds import MAX_POINTS
from tally.ledger.errors import IdempotencyKeyReused, InvalidPoints
from tally.ledger.orm import EntryKind, LedgerEntry
from tally.outbox.events import PointsBalanceChanged
from tally.outbox.service import emit_many

CREDIT_BATCH = 20

_ENTRY_COLUMNS = (
    "id",
    "merchant_id",
    "customer_id",
    "points",
    "kind",
    "reason",
    "source_ref",
    "rule_id",
    "rule_version",
    "idempotency_key",
    "remaining",
    "expires_at",
    "details",
    "created_at",
)


class Outcome(StrEnum):
    """What became of one transfer."""

    WRITTEN = "written"
    REPLAYED = "replayed"  # its key was used before, for the same movement
    INSUFFICIENT = "insufficient"  # its customer's debits in this batch exceed the balance


@dataclass(frozen=True)
class Transfer:
    """One movement of points: positive credits, negative debits."""

    customer_id: int
    points: int
    kind: EntryKind | str
    idempotency_key: str
    reason: str = ""
    source_ref: str | None = None
    rule_id: str | None = None
    rule_version: int | None = None
    expires_at: datetime | None = None
    details: dict[str, Any] | None = None
    created_at: datetime | None = None
    # A debit drawn from this credit first, as far as it has points left (per-grant expiry, a
    # reverted import), and only then from the soonest-expiring others.
    draws_on: int | None = None
    # A debit of the whole balance that empties every open credit (rolling expiry).
    closes_credits: bool = False
    # Whether the movement counts as the customer's activity (`last_activity_at`, from which
    # rolling expiry counts); expiry itself does not.
    counts_as_activity: bool = True


@dataclass(frozen=True)
class TransferResult:
    """The outcome of one transfer and the entry that holds it (None when refused)."""

    transfer: Transfer
    outcome: Outcome
    entry_id: int | None


@dataclass(frozen=True)
class BatchResult:
    """One result per transfer, in order, and the balances the batch left behind."""

    results: list[TransferResult]
    balances: dict[int, int]

    def written(self) -> list[TransferResult]:
        """The transfers that wrote an entry now."""
        return [r for r in self.results if r.outcome == Outcome.WRITTEN]


def check_points(points: int) -> None:
    """Refuse a movement of zero points or beyond the bound."""
    if points == 0:
        raise InvalidPoints("points must not be zero", [FieldProblem("points", "must not be 0", 0)])
    if abs(points) > MAX_POINTS:
        raise InvalidPoints(
            f"at most {MAX_POINTS:,} points can move at once",
            [FieldProblem("points", f"must be between -{MAX_POINTS} and {MAX_POINTS}", points)],
        )


def post_transfers(
    session: Session,
    *,
    merchant_id: int,
    transfers: Sequence[Transfer],
    now: datetime | None = None,
    announce: bool = True,
    strict_replays: bool = True,
) -> BatchResult:
    """Write the transfers exactly once per idempotency key and move the balances.

    A key already used for a different movement is refused (`IdempotencyKeyReused`) unless
    `strict_replays` is off, for callers whose keys mean "at most once" whatever the amount
    (an import's per-customer key); `balances` is filled when the batch is announced.
    """
    for transfer in transfers:
        check_points(transfer.points)
    if not transfers:
        return BatchResult([], {})
    now = now or utcnow()
    # Entries the ORM still holds must be in the database before ids are allocated and open
    # credits are read.
    session.flush()
    bulk = Bulk(session)
    ids = _insert(bulk, merchant_id, transfers, now)
    present = bulk.present_ids("ledger_entries", ids)
    written = [present is None or entry_id in present for entry_id in ids]
    replays = _replays(bulk, merchant_id, transfers, written, strict=strict_replays)
    net: dict[int, int] = defaultdict(int)
    active: set[int] = set()
    for transfer, new in zip(transfers, written, strict=True):
        if new:
            net[transfer.customer_id] += transfer.points
            if transfer.counts_as_activity:
                active.add(transfer.customer_id)
    refused = _move_balances(bulk, net, active, now)
    if refused:
        doomed = [
            entry_id
            for entry_id, transfer, new in zip(ids, transfers, written, strict=True)
            if new and transfer.customer_id in refused
        ]
        for part in chunks(doomed):
            where, params = bulk.in_list("id", part)
            bulk.connection.exec_driver_sql(f"DELETE FROM ledger_entries WHERE {where}", params)
    results = []
    for entry_id, transfer, new in zip(ids, transfers, written, strict=True):
        if not new:
            results.append(
                TransferResult(transfer, Outcome.REPLAYED, replays[transfer.idempotency_key])
            )
        elif transfer.customer_id in refused:
            results.append(TransferResult(transfer, Outcome.INSUFFICIENT, None))
        else:
            results.append(TransferResult(transfer, Outcome.WRITTEN, entry_id))
    done = [r for r in results if r.outcome == Outcome.WRITTEN]
    _consume_credits(bulk, done)
    moved = sorted({r.transfer.customer_id for r in done})
    balances = _balances(bulk, moved) if moved and announce else {}
    if announce and done:
        _announce(session, merchant_id, done, balances)
    _expire_stale(session, moved)
    return BatchResult(results, balances)


def _insert(
    bulk: Bulk, merchant_id: int, transfers: Sequence[Transfer], now: datetime
) -> list[int]:
    ids = bulk.allocate_ids("ledger_entries", len(transfers))
    bulk.insert(
        "ledger_entries",
        _ENTRY_COLUMNS,
        [
            (
                entry_id,
                merchant_id,
                t.customer_id,
                t.points,
                str(t.kind),
                t.reason,
                t.source_ref,
                t.rule_id,
                t.rule_version,
                t.idempotency_key,
                t.points if t.points > 0 else None,
                bulk.timestamp(t.expires_at) if t.points > 0 else None,
                bulk.json(t.details),
                bulk.timestamp(t.created_at or now),
            )
            for entry_id, t in zip(ids, transfers, strict=True)
        ],
        skip_conflicts=True,
    )
    return ids


def _replays(
    bulk: Bulk,
    merchant_id: int,
    transfers: Sequence[Transfer],
    written: Sequence[bool],
    *,
    strict: bool,
) -> dict[str, int]:
    """The existing entry of each key that was taken; refuses a different movement under it."""
    wanted = [t for t, new in zip(transfers, written, strict=True) if not new]
    if not wanted:
        return {}
    found: dict[str, tuple[int, int, int, str]] = {}
    keys = sorted({t.idempotency_key for t in wanted})
    for part in chunks(keys):
        where, params = bulk.in_list("idempotency_key", part)
        rows = bulk.connection.exec_driver_sql(
            "SELECT idempotency_key, id, customer_id, points, kind FROM ledger_entries "
            f"WHERE merchant_id = {bulk.mark} AND {where}",
            (merchant_id, *params),
        ).all()
        found.update({row[0]: (row[1], row[2], row[3], row[4]) for row in rows})
    out = {}
    for t in wanted:
        entry_id, customer_id, points, kind = found[t.idempotency_key]
        if strict and (customer_id, points, kind) != (t.customer_id, t.points, str(t.kind)):
            raise IdempotencyKeyReused(
                f"idempotency key {t.idempotency_key!r} was already used for another movement "
                f"({points:+d} points, {kind}, customer {customer_id})"
            )
        out[t.idempotency_key] = entry_id
    return out


def _move_balances(bulk: Bulk, net: dict[int, int], active: set[int], now: datetime) -> set[int]:
    """Add each customer's net; returns the customers whose net debit the balance cannot pay."""
    refused: set[int] = set()
    debtors = sorted(cid for cid, amount in net.items() if amount < 0)
    if debtors:
        # Read (and on PostgreSQL lock) the balances the debits are checked against; the
        # guarded UPDATE below repeats the check, which the check constraint backs up too.
        # NO KEY UPDATE, not UPDATE: the entries just inserted hold KEY SHARE locks on their
        # customers (the foreign key), and two batches would deadlock on each other's.
        lock = " FOR NO KEY UPDATE" if bulk.postgres else ""
        current = {}
        for part in chunks(debtors):
            where, params = bulk.in_list("id", part)
            rows = bulk.connection.exec_driver_sql(
                f"SELECT id, points_balance FROM customers WHERE {where} ORDER BY id{lock}",
                params,
            ).all()
            current.update({int(r[0]): int(r[1]) for r in rows})
        refused = {cid for cid in debtors if current.get(cid, 0) < -net[cid]}
    moves = [
        (cid, amount)
        for cid, amount in sorted(net.items())
        if (amount or cid in active) and cid not in refused
    ]
    stamp = bulk.timestamp(now)
    bulk.execute_many(
        "UPDATE customers SET points_balance = points_balance + ?, last_activity_at = ? "
        "WHERE id = ? AND points_balance + ? >= 0",
        [(amount, stamp, cid, amount) for cid, amount in moves if cid in active],
    )
    bulk.execute_many(
        "UPDATE customers SET points_balance = points_balance + ? "
        "WHERE id = ? AND points_balance + ? >= 0",
        [(amount, cid, amount) for cid, amount in moves if cid not in active],
    )
    return refused


def _consume_credits(bulk: Bulk, done: Sequence[TransferResult]) -> None:
    closing = sorted({r.transfer.customer_id for r in done if r.transfer.closes_credits})
    for part in chunks(closing):
        where, params = bulk.in_list("customer_id", part)
        bulk.connection.exec_driver_sql(
            f"UPDATE ledger_entries SET remaining = 0 WHERE {where} AND remaining > 0", params
        )
    debits = [r.transfer for r in done if r.transfer.points < 0 and not r.transfer.closes_credits]
    owed: dict[int, int] = defaultdict(int)
    for t in debits:
        owed[t.customer_id] += -t.points
    named = sorted({t.draws_on for t in debits if t.draws_on is not None})
    left: dict[int, int] = {}
    for part in chunks(named):
        where, params = bulk.in_list("id", part)
        rows = bulk.connection.exec_driver_sql(
            f"SELECT id, remaining FROM ledger_entries WHERE {where}", params
        ).all()
        left.update({int(r[0]): int(r[1] or 0) for r in rows})
    drawn = []
    for t in debits:
        if t.draws_on is None:
            continue
        take = min(left.get(t.draws_on, 0), -t.points)
        if take:
            left[t.draws_on] -= take
            owed[t.customer_id] -= take
            drawn.append((take, t.draws_on))
    bulk.execute_many("UPDATE ledger_entries SET remaining = remaining - ? WHERE id = ?", drawn)
    for customer_id, amount in sorted(owed.items()):
        if amount > 0:
            _consume_soonest(bulk, customer_id, amount)


def _consume_soonest(bulk: Bulk, customer_id: int, amount: int) -> None:
    """Take a debit out of the open credits, soonest-expiring first, never-expiring last.

    Credits are read a few at a time: a customer may have thousands of small open credits, and
    a debit usually needs only the first one or two.
    """
    left = amount
    while left > 0:
        rows = bulk.connection.exec_driver_sql(
            "SELECT id, remaining FROM ledger_entries "
            f"WHERE customer_id = {bulk.mark} AND remaining > 0 "
            "ORDER BY expires_at IS NULL, expires_at, id "
            f"LIMIT {CREDIT_BATCH}",
            (customer_id,),
        ).all()
        if not rows:
            return
        taken = []
        for entry_id, remaining in rows:
            part = min(int(remaining), left)
            taken.append((part, int(entry_id)))
            left -= part
            if left == 0:
                break
        bulk.execute_many("UPDATE ledger_entries SET remaining = remaining - ? WHERE id = ?", taken)


def _expire_stale(session: Session, customer_ids: Sequence[int]) -> None:
    """Mark what the bulk statements changed behind the ORM's back, so it is read again."""
    moved = set(customer_ids)
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Customer) and obj.id in moved:
            session.expire(obj, ["points_balance", "last_activity_at"])
        elif isinstance(obj, LedgerEntry) and obj.customer_id in moved:
            session.expire(obj, ["remaining"])


def _balances(bulk: Bulk, customer_ids: Sequence[int]) -> dict[int, int]:
    balances = {}
    for part in chunks(customer_ids):
        where, params = bulk.in_list("id", part)
        rows = bulk.connection.exec_driver_sql(
            f"SELECT id, points_balance FROM customers WHERE {where}", params
        ).all()
        balances.update({int(r[0]): int(r[1]) for r in rows})
    return balances


def _announce(
    session: Session, merchant_id: int, done: Sequence[TransferResult], balances: dict[int, int]
) -> None:
    last: dict[int, TransferResult] = {}
    moved: dict[int, int] = defaultdict(int)
    for r in done:
        last[r.transfer.customer_id] = r
        moved[r.transfer.customer_id] += r.transfer.points
    emit_many(
        session,
        [
            PointsBalanceChanged(
                merchant_id=merchant_id,
                customer_id=cid,
                entry_id=int(r.entry_id or 0),
                points=moved[cid],
                kind=str(r.transfer.kind),
                balance=balances[cid],
            )
            for cid, r in last.items()
        ],
    )
