"""Records the audited changes of a unit of work as audit events, when it commits.

Session listeners, registered once for every session: after each flush the inserts, updates
(changed attributes only, old and new value) and deletes of declared models (``registry.py``)
are gathered per row, so a row flushed several times in one unit of work is one event; just
before the commit they are written with the unit of work's actor, in the same transaction as
the change. Sessions without an actor (the worker, scheduled jobs, the import batches) record
nothing: what they do is not someone's admin action, and it would be row by row.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import event, insert, inspect
from sqlalchemy.orm import Session, SessionTransaction

from tally.audit.actor import Actor, actor_of
from tally.audit.orm import AuditEvent
from tally.audit.registry import MASK, AuditSpec, spec_for
from tally.db.base import utcnow

_PENDING = "audit_pending"
_explicit_keys = itertools.count()


@dataclass
class _Change:
    """One row's changes so far in this unit of work (or one explicitly recorded event)."""

    merchant_id: int
    kind: str
    target_type: str
    target_id: str | None
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    action: str | None = None
    spec: AuditSpec | None = None

    def merge(self, later: _Change) -> _Change | None:
        """This change followed by a later one of the same row; None when they cancel out."""
        if self.kind == "created" and later.kind == "deleted":
            return None
        if later.kind == "deleted":
            return _Change(
                self.merchant_id, "deleted", later.target_type, self.target_id,
                {**later.before, **self.before}, {}, spec=self.spec,
            )  # fmt: skip
        before = {**later.before, **self.before}
        after = {**self.after, **later.after}
        if self.kind == "updated":
            before, after = _net(before, after, self.spec.secrets if self.spec else frozenset())
        return _Change(
            self.merchant_id, self.kind, self.target_type, self.target_id, before, after,
            spec=self.spec,
        )  # fmt: skip


def _net(
    before: dict[str, Any], after: dict[str, Any], secrets: frozenset[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Leave out what changed back to where it was (a masked secret always looks the same)."""
    same = {k for k in after if k in before and before[k] == after[k] and k not in secrets}
    return (
        {k: v for k, v in before.items() if k not in same},
        {k: v for k, v in after.items() if k not in same},
    )


def plain(value: Any) -> Any:
    """A value as JSON holds it: Decimals as strings, dates as ISO text, enums by value."""
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return MASK
    return str(value)


def _shown(spec: AuditSpec, attribute: str, value: Any) -> Any:
    if attribute in spec.secrets:
        return None if value is None else MASK
    return plain(value)


def _primary_key(instance: Any) -> tuple[Any, ...]:
    # In after_flush new rows have their keys but are not in the identity map yet.
    return tuple(inspect(instance).mapper.primary_key_from_instance(instance))


def _identity(instance: Any) -> str | None:
    key = _primary_key(instance)
    if not key or any(part is None for part in key):
        return None
    return ",".join(str(part) for part in key)


def _columns(instance: Any) -> list[str]:
    return [attr.key for attr in inspect(instance).mapper.column_attrs]


def _snapshot(spec: AuditSpec, instance: Any) -> dict[str, Any]:
    # Only what is loaded: reading an expired attribute of a deleted row would query for it.
    loaded = inspect(instance).dict
    return {
        name: _shown(spec, name, loaded[name])
        for name in _columns(instance)
        if name in loaded and spec.compared(name)
    }


def _dict_changes(old: Any, new: Any) -> tuple[Any, Any]:
    """For a JSON document, only the keys whose values changed; other values as they are."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return old, new
    keys = [k for k in {**old, **new} if old.get(k) != new.get(k)]
    return {k: old.get(k) for k in keys}, {k: new.get(k) for k in keys}


def _updates(spec: AuditSpec, instance: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    state = inspect(instance)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for name in _columns(instance):
        if not spec.compared(name):
            continue
        history = state.attrs[name].history
        if not history.added and not history.deleted:
            continue
        old = history.deleted[0] if history.deleted else None
        new = history.added[0] if history.added else None
        if old == new:
            continue
        old, new = _dict_changes(plain(old), plain(new))
        before[name] = _shown(spec, name, old)
        after[name] = _shown(spec, name, new)
    return before, after


def _change(kind: str, spec: AuditSpec, instance: Any) -> _Change | None:
    merchant_id = getattr(instance, spec.merchant_attribute, None)
    if merchant_id is None:
        return None
    if kind == "updated":
        before, after = _updates(spec, instance)
        if not after and not before:
            return None
    elif kind == "created":
        before, after = {}, _snapshot(spec, instance)
    else:
        before, after = _snapshot(spec, instance), {}
    target_type = spec.target_type
    changed = set(before) | set(after)
    if kind == "updated" and len(changed) == 1:
        (name,) = changed
        if name in spec.sections:
            # The section is the target: its changed keys are the before and after.
            target_type = spec.sections[name]
            before, after = before[name] or {}, after[name] or {}
    return _Change(
        merchant_id, kind, target_type, _identity(instance), before, after, spec=spec
    )  # fmt: skip


def _pending(session: Session) -> dict[Any, _Change]:
    found: dict[Any, _Change] = session.info.setdefault(_PENDING, {})
    return found


def _note(session: Session, key: Any, change: _Change | None) -> None:
    if change is None:
        return
    pending = _pending(session)
    earlier = pending.pop(key, None)
    merged = change if earlier is None else earlier.merge(change)
    if merged is not None:
        pending[key] = merged


@event.listens_for(Session, "after_flush")
def _gather(session: Session, _context: Any) -> None:
    """Note what this flush changed of the audited models (history is still pre-flush here)."""
    if actor_of(session) is None:
        return
    for kind, instances in (
        ("created", session.new),
        ("updated", session.dirty),
        ("deleted", session.deleted),
    ):
        for instance in instances:
            spec = spec_for(instance)
            if spec is None or kind not in spec.on:
                continue
            key = (type(instance), _primary_key(instance))
            _note(session, key, _change(kind, spec, instance))


@event.listens_for(Session, "before_commit")
def _write(session: Session) -> None:
    """Write the unit of work's events in its own transaction, just before it commits."""
    actor = actor_of(session)
    if actor is None:
        session.info.pop(_PENDING, None)
        return
    session.flush()  # the last changes, so _gather sees them
    changes = list(session.info.pop(_PENDING, {}).values())
    if not changes:
        return
    now = utcnow()
    session.connection().execute(
        insert(AuditEvent), [_row(actor, change, now) for change in changes]
    )


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: SessionTransaction) -> None:
    """A unit of work that ended without committing (rolled back) records nothing.

    Only the outermost transaction counts: a savepoint rolled back inside a unit of work that
    goes on leaves what was gathered before it (and, a known gap, what it gathered itself).
    """
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def _row(actor: Actor, change: _Change, now: datetime) -> dict[str, Any]:
    return {
        "merchant_id": change.merchant_id,
        "occurred_at": now,
        "actor_kind": actor.kind[:16],
        "actor_id": None if actor.id is None else actor.id[:100],
        "actor_label": actor.label[:320],
        "action": (change.action or f"{change.target_type}.{change.kind}")[:64],
        "target_type": change.target_type[:64],
        "target_id": None if change.target_id is None else change.target_id[:100],
        "before": change.before or None,
        "after": change.after or None,
        "request_id": actor.request_id,
        "address": actor.address,
    }


def record(
    session: Session,
    *,
    merchant_id: int,
    action: str,
    target_type: str,
    target_id: object,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Record one event by hand (a points adjustment), written with the unit of work's others.

    Nothing is recorded in a unit of work without an actor.
    """
    if actor_of(session) is None:
        return
    change = _Change(
        merchant_id, "recorded", target_type, None if target_id is None else str(target_id),
        plain(before or {}), plain(after or {}), action=action,
    )  # fmt: skip
    _pending(session)[("explicit", next(_explicit_keys))] = change
