"""Recording events (one outbox row per subscribed handler, in the caller's transaction), and
reading and retrying deliveries with their recorded attempts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from tally.db.base import utcnow
from tally.errors import Conflict, NotFound, ValidationFailed
from tally.outbox.events import DomainEvent
from tally.outbox.orm import AttemptOutcome, MessageStatus, OutboxDeliveryAttempt, OutboxMessage
from tally.outbox.registry import Registry, default_registry, ensure_builtin_plugins


def emit(session: Session, event: DomainEvent, *, registry: Registry = default_registry) -> None:
    """Record an event for delivery; it is sent only if the surrounding transaction commits.

    Reactions to it run first, in this transaction.
    """
    if registry is default_registry:
        ensure_builtin_plugins(registry)
    for reaction in registry.reactions_to(event.event_type):
        reaction(session, event)
    now = utcnow()
    for name in registry.handler_names(event.event_type):
        session.add(
            OutboxMessage(
                merchant_id=event.merchant_id,
                event_type=event.event_type,
                handler=name,
                payload=event.payload(),
                available_at=now,
                created_at=now,
            )
        )


def emit_many(
    session: Session, events: list[DomainEvent], *, registry: Registry = default_registry
) -> None:
    """Record many events with one bulk insert (batch jobs: expiry, imports)."""
    if not events:
        return
    if registry is default_registry:
        ensure_builtin_plugins(registry)
    for event in events:
        for reaction in registry.reactions_to(event.event_type):
            reaction(session, event)
    now = utcnow()
    rows = [
        {
            "merchant_id": event.merchant_id,
            "event_type": event.event_type,
            "handler": name,
            "payload": event.payload(),
            "status": "pending",
            "attempts": 0,
            "available_at": now,
            "created_at": now,
        }
        for event in events
        for name in registry.handler_names(event.event_type)
    ]
    if rows:
        session.execute(insert(OutboxMessage), rows)


# --------------------------------------------------------------------------- deliveries

# What operators call each status (`done` is stored; people ask for "delivered").
STATUS_NAMES = {
    "pending": MessageStatus.PENDING,
    "processing": MessageStatus.PROCESSING,
    "failed": MessageStatus.FAILED,
    "delivered": MessageStatus.DONE,
}


def status_name(status: str) -> str:
    """The operator's name for a stored message status."""
    return "delivered" if status == MessageStatus.DONE else status


def list_messages(
    session: Session, *, status: str | None = None, merchant_id: int | None = None, limit: int = 50
) -> list[OutboxMessage]:
    """Outbox messages, newest first, optionally of one status (operator name) and merchant."""
    query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
    if status is not None:
        if status not in STATUS_NAMES:
            raise ValidationFailed(f"unknown status {status!r}: use {', '.join(STATUS_NAMES)}")
        query = query.where(OutboxMessage.status == STATUS_NAMES[status])
    if merchant_id is not None:
        query = query.where(OutboxMessage.merchant_id == merchant_id)
    return list(session.scalars(query))


def get_message(
    session: Session,
    *,
    message_id: int,
    merchant_id: int | None = None,
    handler_prefix: str | None = None,
) -> OutboxMessage:
    """One message (of this merchant and handler family, when given), or NotFound."""
    message = session.get(OutboxMessage, message_id)
    if (
        message is None
        or (merchant_id is not None and message.merchant_id != merchant_id)
        or (handler_prefix is not None and not message.handler.startswith(handler_prefix))
    ):
        raise NotFound(f"outbox message {message_id} does not exist")
    return message


def message_attempts(session: Session, *, message_id: int) -> list[OutboxDeliveryAttempt]:
    """Every recorded attempt at delivering a message, oldest first."""
    return list(
        session.scalars(
            select(OutboxDeliveryAttempt)
            .where(OutboxDeliveryAttempt.message_id == message_id)
            .order_by(OutboxDeliveryAttempt.attempt)
        )
    )


def requeued() -> dict[str, Any]:
    """The column values that put a message back in the queue, due now, with no lease."""
    return {
        "status": MessageStatus.PENDING,
        "available_at": utcnow(),
        "finished_at": None,
        "locked_by": None,
        "locked_until": None,
    }


def retry_message(
    session: Session,
    *,
    message_id: int,
    merchant_id: int | None = None,
    handler_prefix: str | None = None,
) -> OutboxMessage:
    """Put a failed message back in the queue, due now; its attempts and their count stay.

    The count staying means a manual retry is one more attempt: if that fails too, the message
    is failed again rather than backing off through a fresh series.
    """
    message = get_message(
        session, message_id=message_id, merchant_id=merchant_id, handler_prefix=handler_prefix
    )
    # Conditional on the status, so two retries at once (or a retry racing the worker) put the
    # message back once and the loser is told it is no longer failed.
    changed = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.status == MessageStatus.FAILED)
        .values(**requeued())
        .execution_options(synchronize_session=False)
    )
    if not changed.rowcount:  # type: ignore[attr-defined]
        raise Conflict(
            f"outbox message {message_id} is {status_name(message.status)}, not failed:"
            " only failed messages can be retried"
        )
    session.refresh(message)
    return message


@dataclass(frozen=True)
class FailedAttempt:
    """An attempt that did not deliver, with what the message was about."""

    message_id: int
    attempt: int
    started_at: datetime
    event_type: str
    handler: str
    customer_id: int | None
    outcome: str
    status_code: int | None
    error: str | None
    failed_for_good: bool


def recent_failed_attempts(
    session: Session, *, merchant_id: int, handler_prefix: str, limit: int = 20
) -> list[FailedAttempt]:
    """A merchant's latest attempts that failed or were put off, for handlers with this prefix."""
    rows = session.execute(
        select(OutboxDeliveryAttempt, OutboxMessage)
        .join(OutboxMessage, OutboxMessage.id == OutboxDeliveryAttempt.message_id)
        .where(
            OutboxMessage.merchant_id == merchant_id,
            OutboxMessage.handler.startswith(handler_prefix, autoescape=True),
            OutboxDeliveryAttempt.outcome.in_(
                [AttemptOutcome.RETRY_SCHEDULED, AttemptOutcome.FAILED]
            ),
        )
        .order_by(OutboxDeliveryAttempt.started_at.desc(), OutboxDeliveryAttempt.id.desc())
        .limit(limit)
    )
    return [
        FailedAttempt(
            message_id=message.id,
            attempt=attempt.attempt,
            started_at=attempt.started_at,
            event_type=message.event_type,
            handler=message.handler,
            customer_id=_customer_id(message.payload),
            outcome=attempt.outcome,
            status_code=attempt.status_code,
            error=attempt.error,
            failed_for_good=message.status == MessageStatus.FAILED,
        )
        for attempt, message in rows
    ]


def _customer_id(payload: object) -> int | None:
    value = payload.get("customer_id") if isinstance(payload, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
