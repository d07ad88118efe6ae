"""`Idempotency-Key` for API writes: the same key and body replay the stored response.

The key is claimed by inserting a row (`ON CONFLICT DO NOTHING`) inside the request's own
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
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from tally.api.deps import Caller
from tally.db.base import Base, BigId, utcnow
from tally.db.upsert import insert_unless_exists
from tally.errors import Conflict


class IdempotencyRecord(Base):
    """A stored response to a POST made with an Idempotency-Key."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("merchant_id", "key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("merchants.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    response_body: Mapped[Any] = mapped_column(JSON, nullable=True, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKeyMismatch(Conflict):
    """The key was used before with a different request."""

    title = "Idempotency key reused"


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


def idempotent_post(
    caller: Caller,
    request: Request,
    *,
    key: str | None,
    body: BaseModel | None,
    work: Callable[[Session], tuple[int, Any]],
) -> JSONResponse:
    """Run a POST's work in one unit of work under its Idempotency-Key and build the response."""
    payload = body.model_dump(mode="json") if body is not None else None
    with caller.unit_of_work() as session:
        stored = run_idempotent(
            session,
            merchant_id=caller.merchant_id,
            key=key,
            fingerprint=request_fingerprint("POST", request.url.path, payload),
            work=lambda: work(session),
        )
    headers = {"Idempotent-Replayed": "true"} if stored.replayed else None
    return JSONResponse(stored.body, status_code=stored.status, headers=headers)
