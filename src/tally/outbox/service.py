"""Recording events: one outbox row per subscribed handler, in the caller's transaction."""

from __future__ import annotations

from sqlalchemy import insert
from sqlalchemy.orm import Session

from tally.db.base import utcnow
from tally.outbox.events import DomainEvent
from tally.outbox.orm import OutboxMessage
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
