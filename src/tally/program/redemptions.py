"""Spending points on rewards: redemptions, their coupon codes, and merchant code pools.

A redemption is one ledger debit (kind `spend`, key `redeem:<idempotency key>`) and one
`Redemption` row pointing at it, written together: replaying the key finds the entry and returns
the redemption made the first time, so a retried request never spends twice.

Coupon codes come from the reward's uploaded pool when it has one, otherwise they are generated.
A pool code is claimed in the same savepoint as the debit, so an empty pool or a refused debit
leaves both the balance and the pool untouched. On PostgreSQL the claim is
`SELECT ... FOR UPDATE SKIP LOCKED`, so concurrent redemptions each take a different code without
waiting on one another; SQLite runs one writer at a time (`BEGIN IMMEDIATE`), which serialises
claims. Either way the claim is a guarded `UPDATE ... WHERE redemption_id IS NULL`, so a code can
never be handed out twice.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tally.audit import recorder as audit
from tally.customers import service as customers
from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.db.pages import page
from tally.errors import Conflict, FieldProblem, NotFound
from tally.ledger import service as ledger
from tally.ledger.errors import IdempotencyKeyReused
from tally.ledger.orm import EntryKind, LedgerEntry
from tally.outbox.events import RewardRedeemed
from tally.outbox.service import emit
from tally.program.config_service import load_program
from tally.program.orm import PoolCode, Redemption
from tally.program.rewards import (
    CodePoolInvalid,
    RedemptionQuote,
    RedemptionRefused,
    coupon_expires_at,
    generate_coupon_code,
    parse_code_pool,
    redemption_quote,
)
from tally.program.settings import ProgramSettings, Reward

# Generated codes have no prefix: the store shows them next to its own discount codes, and a
# merchant who wants a recognisable prefix can upload a pool instead.
GENERATED_CODE_PREFIX = ""
# 31^12 possible codes make a collision vanishingly rare; a few retries cover it.
GENERATED_CODE_ATTEMPTS = 5
# The ledger's idempotency_key column is 200 characters; longer keys are hashed to fit.
LEDGER_KEY_MAX_LENGTH = 200
LEDGER_KEY_PREFIX = "redeem:"
# Rows per query when comparing or inserting uploaded codes (well below bind-parameter limits).
POOL_CHUNK_SIZE = 500
# Money columns keep four decimal places; quotes are rounded to them before storing so the
# value a client sees at redemption equals the one it reads back later.
STORED_PLACES = Decimal("0.0001")

T = TypeVar("T")


class CodePoolEmpty(Conflict, title="Code pool empty"):
    """The reward hands out uploaded codes and none is left."""


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """How many codes a reward's pool holds and how many are still free."""

    total: int
    available: int

    @property
    def used(self) -> int:
        """Codes already handed out."""
        return self.total - self.available


class PoolUpload(NamedTuple):
    """The outcome of an upload: codes added, and codes the pool already held."""

    added: int
    skipped_existing: int


# -- rewards ------------------------------------------------------------------------------------


def find_reward(settings: ProgramSettings, reward_id: str) -> Reward:
    """The reward with this id in the merchant's settings, or NotFound naming the id."""
    reward = settings.reward(reward_id)
    if reward is None:
        raise NotFound(
            f"reward '{reward_id}' does not exist",
            [FieldProblem("reward_id", "no reward with this id", reward_id)],
        )
    return reward


def _enabled_reward(settings: ProgramSettings, reward_id: str) -> Reward:
    reward = find_reward(settings, reward_id)
    if not reward.enabled:
        raise RedemptionRefused(
            f"reward '{reward_id}' is disabled and cannot be redeemed",
            [FieldProblem("reward_id", "the reward is disabled", reward_id)],
        )
    return reward


# -- redeeming ----------------------------------------------------------------------------------


def ledger_key(idempotency_key: str) -> str:
    """The ledger idempotency key of the redemption made under `idempotency_key`."""
    key = f"{LEDGER_KEY_PREFIX}{idempotency_key}"
    if len(key) <= LEDGER_KEY_MAX_LENGTH:
        return key
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return f"{LEDGER_KEY_PREFIX}sha256:{digest}"


def _redemption_for_entry(session: Session, entry: LedgerEntry) -> Redemption:
    redemption = session.scalar(
        select(Redemption).where(
            Redemption.merchant_id == entry.merchant_id, Redemption.ledger_entry_id == entry.id
        )
    )
    if redemption is None:
        # Only a debit written by another code path could carry a `redeem:` key.
        raise IdempotencyKeyReused(
            f"idempotency key {entry.idempotency_key!r} was already used for a movement "
            "that is not a redemption"
        )
    return redemption


def _check_replay(
    redemption: Redemption, *, customer_id: int, reward_id: str, points: int | None
) -> Redemption:
    if (
        redemption.customer_id != customer_id
        or redemption.reward_id != reward_id
        or (points is not None and points != redemption.points_spent)
    ):
        raise IdempotencyKeyReused(
            "this idempotency key was already used for another redemption "
            f"(reward '{redemption.reward_id}', {redemption.points_spent} points, "
            f"customer {redemption.customer_id})"
        )
    return redemption


def _is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _claim_pool_code(session: Session, merchant_id: int, reward_id: str) -> PoolCode | None:
    """Lock the reward's first free pool code; None when the reward has no pool at all."""
    stmt = (
        select(PoolCode)
        .where(
            PoolCode.merchant_id == merchant_id,
            PoolCode.reward_id == reward_id,
            PoolCode.redemption_id.is_(None),
        )
        .order_by(PoolCode.id)
        .limit(1)
    )
    if _is_postgresql(session):
        stmt = stmt.with_for_update(skip_locked=True)
    code = session.scalar(stmt)
    if code is not None:
        return code
    has_pool = session.scalar(
        select(PoolCode.id)
        .where(PoolCode.merchant_id == merchant_id, PoolCode.reward_id == reward_id)
        .limit(1)
    )
    if has_pool is not None:
        raise CodePoolEmpty(
            f"the code pool of reward '{reward_id}' is empty",
            [FieldProblem("reward_id", "no coupon codes are left for this reward", reward_id)],
        )
    return None


def _mark_pool_code_used(session: Session, code: PoolCode, redemption: Redemption) -> None:
    claimed = session.scalar(
        update(PoolCode)
        .where(PoolCode.id == code.id, PoolCode.redemption_id.is_(None))
        .values(redemption_id=redemption.id)
        .returning(PoolCode.id)
        .execution_options(synchronize_session=False)
    )
    if claimed is None:
        # Unreachable while claims go through _claim_pool_code; refuse rather than reuse a code.
        raise CodePoolEmpty(
            f"the code pool of reward '{code.reward_id}' is empty",
            [FieldProblem("reward_id", "no coupon codes are left for this reward", code.reward_id)],
        )
    session.expire(code, ["redemption_id"])


def _insert_with_pool_code(session: Session, fields: dict[str, Any], code: PoolCode) -> Redemption:
    redemption = Redemption(**fields, coupon_code=code.code)
    try:
        with session.begin_nested():
            session.add(redemption)
            session.flush()
    except IntegrityError as exc:
        # Uploads refuse codes already issued, so only a race with an upload to another reward
        # gets here; the merchant has to take the code out of one of the pools.
        raise Conflict(
            f"the code '{code.code}' in the pool of reward '{code.reward_id}' was already "
            "issued by another redemption; remove it from the pool",
            [FieldProblem("reward_id", "the next pool code was already issued", code.reward_id)],
        ) from exc
    _mark_pool_code_used(session, code, redemption)
    return redemption


def _insert_with_generated_code(session: Session, fields: dict[str, Any]) -> Redemption:
    rng = secrets.SystemRandom()
    for attempt in range(1, GENERATED_CODE_ATTEMPTS + 1):
        redemption = Redemption(
            **fields, coupon_code=generate_coupon_code(GENERATED_CODE_PREFIX, rng)
        )
        try:
            with session.begin_nested():
                session.add(redemption)
                session.flush()
        except IntegrityError:
            if attempt == GENERATED_CODE_ATTEMPTS:
                raise
            continue
        return redemption
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _insert_redemption(
    session: Session,
    *,
    customer: Customer,
    reward: Reward,
    quote: RedemptionQuote,
    entry: LedgerEntry,
    issued_at: datetime,
    pool_code: PoolCode | None,
) -> Redemption:
    """The redemption row, with the pool's code or a generated one."""
    fields: dict[str, Any] = {
        "merchant_id": customer.merchant_id,
        "customer_id": customer.id,
        "reward_id": reward.id,
        "reward_name": reward.name,
        "points_spent": quote.points_to_spend,
        "discount_value": quote.discount_value.quantize(STORED_PLACES),
        "discount_unit": quote.discount_unit.value,
        "expires_at": coupon_expires_at(reward, issued_at),
        "ledger_entry_id": entry.id,
        "created_at": issued_at,
    }
    if pool_code is not None:
        return _insert_with_pool_code(session, fields, pool_code)
    return _insert_with_generated_code(session, fields)


def redeem_reward(
    session: Session,
    *,
    merchant_id: int,
    customer_id: int,
    reward_id: str,
    points: int | None = None,
    idempotency_key: str,
    now: datetime | None = None,
) -> Redemption:
    """Spend a customer's points on a reward and issue its coupon code, once per key.

    `points` is the amount for a variable reward (and may be left out of fixed-cost ones).
    Refusals (unknown or disabled reward, points out of bounds, insufficient points, empty code
    pool) raise before anything is written; a replayed key returns the first redemption.
    """
    customer = customers.get_customer(session, merchant_id, customer_id)
    key = ledger_key(idempotency_key)
    entry = session.scalar(
        select(LedgerEntry).where(
            LedgerEntry.merchant_id == merchant_id, LedgerEntry.idempotency_key == key
        )
    )

    def replay(entry: LedgerEntry) -> Redemption:
        return _check_replay(
            _redemption_for_entry(session, entry),
            customer_id=customer_id,
            reward_id=reward_id,
            points=points,
        )

    if entry is not None:
        return replay(entry)

    _, settings = load_program(session, merchant_id)
    reward = _enabled_reward(settings, reward_id)
    quote = redemption_quote(reward, points)
    issued_at = now or utcnow()

    # One savepoint for the claim, the debit and the coupon: a refusal anywhere inside undoes
    # all of it, even when the caller catches the error and commits the rest of its work.
    with session.begin_nested():
        pool_code = _claim_pool_code(session, merchant_id, reward.id)
        posting = ledger.debit(
            session,
            customer=customer,
            points=quote.points_to_spend,
            kind=EntryKind.SPEND,
            idempotency_key=key,
            reason=f"Redeemed {reward.name}",
            source_ref=f"reward:{reward.id}",
            rule_id=reward.id,
            rule_version=settings.version,
            created_at=issued_at,
        )
        if posting.replayed:
            # A concurrent call with the same key committed first; its redemption is the answer.
            return replay(posting.entry)
        redemption = _insert_redemption(
            session,
            customer=customer,
            reward=reward,
            quote=quote,
            entry=posting.entry,
            issued_at=issued_at,
            pool_code=pool_code,
        )
    # Who spent a customer's points (an admin on their behalf, an API key) is worth keeping.
    audit.record(
        session,
        merchant_id=merchant_id,
        action="reward.redeemed",
        target_type="customer",
        target_id=customer_id,
        before={"points_balance": customer.points_balance + redemption.points_spent},
        after={
            "points_balance": customer.points_balance,
            "reward": reward.id,
            "points_spent": redemption.points_spent,
            "coupon_code": redemption.coupon_code,
        },
    )
    _announce(session, redemption)
    return redemption


def _announce(session: Session, redemption: Redemption) -> None:
    emit(
        session,
        RewardRedeemed(
            merchant_id=redemption.merchant_id,
            customer_id=redemption.customer_id,
            redemption_id=redemption.id,
            points=redemption.points_spent,
            reward_name=redemption.reward_name,
            coupon_code=redemption.coupon_code,
        ),
    )


def list_redemptions(
    session: Session, *, merchant_id: int, customer_id: int, limit: int = 50, offset: int = 0
) -> tuple[list[Redemption], int]:
    """A page of a customer's redemptions, newest first, and the total count."""
    base = select(Redemption).where(
        Redemption.merchant_id == merchant_id, Redemption.customer_id == customer_id
    )
    return page(session, base, order_by=Redemption.id.desc(), limit=limit, offset=offset)


# -- code pools ---------------------------------------------------------------------------------


def pool_status(session: Session, *, merchant_id: int) -> dict[str, PoolStatus]:
    """Every reward with uploaded codes, by reward id, with its total and free codes."""
    rows = session.execute(
        select(PoolCode.reward_id, func.count(), func.count(PoolCode.redemption_id))
        .where(PoolCode.merchant_id == merchant_id)
        .group_by(PoolCode.reward_id)
    )
    return {
        reward_id: PoolStatus(total=int(total), available=int(total) - int(used))
        for reward_id, total, used in rows
    }


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _taken_elsewhere(
    session: Session, merchant_id: int, reward_id: str, codes: Sequence[str]
) -> tuple[set[str], list[FieldProblem]]:
    """Codes (lower-cased) already in this pool, and problems for codes used anywhere else.

    A redemption's coupon code is unique per merchant, so a code in another reward's pool or
    already issued could never be handed out from this one.
    """
    in_this_pool: set[str] = set()
    elsewhere: dict[str, str] = {}
    for chunk in _chunks(codes, POOL_CHUNK_SIZE):
        lowered = [code.lower() for code in chunk]
        for other_reward, existing in session.execute(
            select(PoolCode.reward_id, PoolCode.code).where(
                PoolCode.merchant_id == merchant_id, func.lower(PoolCode.code).in_(lowered)
            )
        ):
            if other_reward == reward_id:
                in_this_pool.add(existing.lower())
            else:
                elsewhere.setdefault(
                    existing.lower(), f"already in the code pool of reward '{other_reward}'"
                )
        for issued in session.scalars(
            select(Redemption.coupon_code).where(
                Redemption.merchant_id == merchant_id,
                func.lower(Redemption.coupon_code).in_(lowered),
            )
        ):
            elsewhere.setdefault(issued.lower(), "already issued by a redemption")
    problems = [
        FieldProblem("code", elsewhere[code.lower()], code)
        for code in codes
        if code.lower() in elsewhere and code.lower() not in in_this_pool
    ]
    return in_this_pool, problems


def _insert_codes(session: Session, merchant_id: int, reward_id: str, codes: Sequence[str]) -> int:
    """Insert codes, ignoring exact duplicates (a concurrent upload); returns how many went in."""
    insert = postgresql_insert if _is_postgresql(session) else sqlite_insert
    added = 0
    now = utcnow()
    for chunk in _chunks(codes, POOL_CHUNK_SIZE):
        stmt = (
            insert(PoolCode)
            .values(
                [
                    {
                        "merchant_id": merchant_id,
                        "reward_id": reward_id,
                        "code": code,
                        "created_at": now,
                    }
                    for code in chunk
                ]
            )
            .on_conflict_do_nothing(index_elements=["merchant_id", "reward_id", "code"])
            .returning(PoolCode.id)
        )
        added += len(list(session.scalars(stmt)))
    return added


def upload_code_pool(
    session: Session, *, merchant_id: int, reward_id: str, lines: Iterable[str]
) -> PoolUpload:
    """Add the codes of a one-column CSV file to a reward's pool.

    Codes the pool already holds (compared case-insensitively) are skipped and counted. A file
    with bad rows, or with codes that belong to another reward's pool or were already issued,
    is refused as a whole (CodePoolInvalid, every problem listed) and adds nothing.
    """
    _, settings = load_program(session, merchant_id)
    find_reward(settings, reward_id)
    codes = parse_code_pool(lines)
    in_this_pool, problems = _taken_elsewhere(session, merchant_id, reward_id, codes)
    if problems:
        raise CodePoolInvalid(
            f"{len(problems)} code{'s are' if len(problems) != 1 else ' is'} already used "
            "elsewhere",
            problems,
        )
    new_codes = [code for code in codes if code.lower() not in in_this_pool]
    added = _insert_codes(session, merchant_id, reward_id, new_codes) if new_codes else 0
    # Core inserts bypass the audit log's flush listener, so the upload is one event by hand.
    audit.record(
        session,
        merchant_id=merchant_id,
        action="reward.codes_uploaded",
        target_type="reward",
        target_id=reward_id,
        after={"added": added, "skipped_existing": len(codes) - added},
    )
    return PoolUpload(added=added, skipped_existing=len(codes) - added)
