"""Reading the audit log: a merchant's events, newest first, filtered and paged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tally.audit.orm import AuditEvent
from tally.db.pages import page


@dataclass(frozen=True)
class AuditFilter:
    """What a listing is narrowed to; every part is optional and they combine.

    ``actor`` matches ``kind:label`` or the label alone (``admin:ana@shop.com``,
    ``ana@shop.com``), ``target`` a type or ``type:id`` (``program``, ``customer:12``),
    ``action`` an action or its start (``program``, ``points.adjusted``).
    """

    actor: str | None = None
    target: str | None = None
    action: str | None = None


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_events(
    session: Session,
    *,
    merchant_id: int,
    where: AuditFilter = AuditFilter(),
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[AuditEvent], int]:
    """One page of the merchant's audit events, newest first, and how many match in all."""
    stmt = select(AuditEvent).where(AuditEvent.merchant_id == merchant_id)
    if where.actor:
        kind, colon, label = where.actor.strip().partition(":")
        if colon:
            stmt = stmt.where(AuditEvent.actor_kind == kind, AuditEvent.actor_label == label)
        else:
            stmt = stmt.where(
                or_(AuditEvent.actor_label == where.actor.strip(), AuditEvent.actor_kind == kind)
            )
    if where.target:
        target_type, colon, target_id = where.target.strip().partition(":")
        stmt = stmt.where(AuditEvent.target_type == target_type)
        if colon:
            stmt = stmt.where(AuditEvent.target_id == target_id)
    if where.action:
        action = where.action.strip()
        stmt = stmt.where(
            or_(
                AuditEvent.action == action,
                AuditEvent.action.like(_escaped(action) + ".%", escape="\\"),
            )
        )
    return page(session, stmt, order_by=AuditEvent.id.desc(), limit=limit, offset=offset)


def event_json(event: AuditEvent) -> dict[str, Any]:
    """An audit event as `tally audit list --json` and the API show it."""
    return {
        "id": event.id,
        "occurred_at": event.occurred_at.isoformat(),
        "actor": event.actor,
        "actor_kind": event.actor_kind,
        "actor_id": event.actor_id,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "before": event.before,
        "after": event.after,
        "request_id": event.request_id,
        "address": event.address,
    }
