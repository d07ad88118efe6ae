"""Run a write once per idempotency key: the same key and request replay the stored response.

The key is claimed by inserting a row (`ON CONFLICT DO NOTHING`) inside the caller's own
transaction, before the work; a concurrent request with the same key waits on the unique index
(PostgreSQL) or on the write lock (SQLite) until the first one commits, then finds the stored
response. The response is stored in
the same transaction as the work, so a replay can never see a response for work that rolled back.
Refused requests (4xx) are not stored: a client may fix its data and retry with the same key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.db.base import utcnow
from tally.db.upsert import insert_unless_exists
from tally.errors import Conflict
from tally.idempotency.orm import IdempotencyRecord


class IdempotencyKeyMismatch(Conflict, title="Idempotency key reused"):
    """The key was used before with a different request."""


@dataclass(frozen=True)
class StoredResponse:
    """What the endpoint answered (or answered the first time)."""

    status: int
    body: Any
    replayed: bool


def request_fingerprint(method: str, path: str, body: Any) -> str:
    """A hash of what makes two requests the same request."""
    canonical = json.dumps(
        {"m": method, "p": path, "b": body}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(record: IdempotencyRecord, fingerprint: str) -> StoredResponse:
    if record.request_hash != fingerprint:
        raise IdempotencyKeyMismatch(
            f"Idempotency-Key {record.key!r} was already used with a different request"
        )
    assert record.response_status is not None
    return StoredResponse(record.response_status, record.response_body, replayed=True)


def run_idempotent(
    session: Session,
    *,
    merchant_id: int,
    key: str | None,
    fingerprint: str,
    work: Callable[[], tuple[int, Any]],
) -> StoredResponse:
    """Run `work` once per key; `work` returns (status, JSON body). The caller commits."""
    if not key:
        status, body = work()
        return StoredResponse(status, body, replayed=False)
    if len(key) > 200:
        from tally.errors import FieldProblem, ValidationFailed

        raise ValidationFailed(
            "Idempotency-Key is too long",
            [FieldProblem("Idempotency-Key", "at most 200 characters")],
        )
    record = insert_unless_exists(
        session,
        IdempotencyRecord,
        {
            "merchant_id": merchant_id,
            "key": key,
            "request_hash": fingerprint,
            "response_status": None,
            "response_body": None,
            "created_at": utcnow(),
        },
        ("merchant_id", "key"),
    )
    if record is None:
        existing = session.scalar(
            select(IdempotencyRecord)
            .where(IdempotencyRecord.merchant_id == merchant_id, IdempotencyRecord.key == key)
            .execution_options(populate_existing=True)
        )
        if existing is None or existing.response_status is None:
            raise IdempotencyKeyMismatch(f"Idempotency-Key {key!r} is in use by another request")
        return _replay(existing, fingerprint)
    status, body = work()
    record.response_status = status
    record.response_body = body
    session.flush()
    return StoredResponse(status, body, replayed=False)
