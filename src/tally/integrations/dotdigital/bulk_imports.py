"""Bulk imports in flight, shared by the automatic and the manual sync: when to look at one
again, recording how it ended, and imports whose start got no answer.

Every import start is recorded (status ``Starting``) before the request goes out. A start that
gets no answer (a timeout, a dropped connection) may still have been accepted, and Dotdigital
offers no way to find an import without its id; so such an import is ``Unanswered`` and its
contacts are not sent again blindly. Once Dotdigital has had time to run it, a few of its
contacts are read back: when they hold the values Tally would send, the import ``Landed``
(sending again would only start a duplicate); otherwise it is ``Lost`` and its contacts are
sent again. A ``Starting`` row left by a worker that died mid-call is in the same doubt.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from tally.db.base import utcnow
from tally.integrations.dotdigital.client import (
    IMPORT_STATUS_NOT_FINISHED,
    Contact,
    DataFieldValue,
    ImportStatus,
)
from tally.integrations.dotdigital.options import SyncOptions
from tally.integrations.dotdigital.orm import SyncImport
from tally.integrations.dotdigital.statements import execute, execute_alone

IMPORT_NOT_FINISHED = IMPORT_STATUS_NOT_FINISHED
TOO_MANY_IMPORTS = "contacts:tooManyActiveImports"
IMPORT_NOT_FOUND = "contacts:importNotFound"
# Tally's own statuses, for starts whose outcome it had to find out (see the module docstring).
IMPORT_STARTING = "Starting"
IMPORT_UNANSWERED = "Unanswered"
IMPORT_LANDED = "Landed"
IMPORT_LOST = "Lost"
IN_DOUBT = (IMPORT_STARTING, IMPORT_UNANSWERED)
# Dotdigital's statuses for an import it refused as a whole: sending the same contacts again
# gets the same answer, so they are recorded and not retried.
TERMINAL_STATUSES = {
    "RejectedByWatchdog": (
        "Dotdigital's watchdog rejected the import (it holds back imports that look like "
        "purchased or poor-quality lists); ask Dotdigital support to review it"
    ),
    "ExceedsAllowedContactLimit": (
        "the import would take the account over its allowed number of contacts; raise the "
        "limit with Dotdigital or remove contacts"
    ),
}


def status_explanation(status: str, otherwise: str) -> str:
    """``: <why and what to do>`` for a status that is final, else ``; <otherwise>``."""
    explanation = TERMINAL_STATUSES.get(status)
    return f": {explanation}" if explanation else f"; {otherwise} to send them again"


# Contacts read back to learn whether an unanswered import landed.
SAMPLE_SIZE = 3

_T = TypeVar("_T")


class RunningImport(NamedTuple):
    """A bulk import Dotdigital has not finished yet."""

    pk: int
    import_id: str
    started_at: datetime
    checked_at: datetime | None


def next_check_at(running: RunningImport, options: SyncOptions) -> datetime:
    """When to ask about an import next: soon after it starts, then less and less often."""
    first = timedelta(seconds=options.import_poll_seconds)
    if running.checked_at is None:
        return running.started_at + first
    age = running.checked_at - running.started_at
    wait = min(max(first, age), timedelta(seconds=options.import_poll_max_seconds))
    return running.checked_at + wait


def running_imports(session: Session, *conditions: Any) -> list[RunningImport]:
    """Unfinished imports matching ``conditions``, oldest first."""
    return [
        RunningImport(*row)
        for row in session.execute(
            select(
                SyncImport.id,
                SyncImport.import_id,
                SyncImport.started_at,
                SyncImport.checked_at,
            )
            .where(SyncImport.status == IMPORT_NOT_FINISHED, *conditions)
            .order_by(SyncImport.id)
        )
    ]


def final_status(
    result: ImportStatus, running: RunningImport, options: SyncOptions
) -> ImportStatus | None:
    """How the import ended; None while it may still finish (too long a run ends as GaveUp)."""
    if result.finished:
        return result
    age = utcnow() - running.started_at
    if age <= timedelta(seconds=options.import_give_up_seconds):
        return None
    return ImportStatus(running.import_id, "GaveUp")


def touch_import(session_factory: sessionmaker[Session], pk: int) -> None:
    """Note that the import was looked at, which spaces out the next look."""
    execute_alone(
        session_factory, update(SyncImport).where(SyncImport.id == pk).values(checked_at=utcnow())
    )


def import_counts(result: ImportStatus) -> tuple[int, int]:
    """Contacts the import created and updated."""
    created = int(result.summary.get("newContacts", len(result.created)))
    updated = int(result.summary.get("updatedContacts", len(result.updated)))
    return created, updated


def record_import_end(
    session: Session,
    pk: int,
    result: ImportStatus,
    *,
    counts: tuple[int, int],
    failed: int,
    now: datetime,
) -> None:
    """Store how an import ended; ``counts`` are the contacts created and updated."""
    created, updated = counts
    execute(
        session,
        update(SyncImport)
        .where(SyncImport.id == pk)
        .values(
            status=result.status,
            created_count=created,
            updated_count=updated,
            failed_count=failed,
            checked_at=now,
            finished_at=now,
        ),
    )


# --------------------------------------------------------------------------- unanswered starts


def record_attempt(session: Session, **values: Any) -> SyncImport:
    """The row of an import about to be started, before the request goes out."""
    record = SyncImport(
        # Unique and recognisably Tally's until Dotdigital names the import.
        import_id=f"tally-{uuid.uuid4().hex}",
        status=IMPORT_STARTING,
        started_at=utcnow(),
        **values,
    )
    session.add(record)
    session.flush()
    return record


def confirm_start(session: Session, pk: int, import_id: str) -> None:
    """Dotdigital accepted the import and named it."""
    execute(
        session,
        update(SyncImport)
        .where(SyncImport.id == pk)
        .values(import_id=import_id, status=IMPORT_NOT_FINISHED, started_at=utcnow()),
    )


def mark_unanswered(session_factory: sessionmaker[Session], pk: int) -> None:
    """The start got no answer: Dotdigital may or may not have begun the import."""
    execute_alone(
        session_factory,
        update(SyncImport).where(SyncImport.id == pk).values(status=IMPORT_UNANSWERED),
    )


def forget_attempt(session: Session, pk: int) -> None:
    """Dotdigital answered that it started nothing: the attempt leaves no trace."""
    execute(session, delete(SyncImport).where(SyncImport.id == pk))


def imports_in_doubt(session: Session, *conditions: Any) -> list[RunningImport]:
    """Starts matching ``conditions`` whose outcome is not known yet, oldest first."""
    return [
        RunningImport(*row)
        for row in session.execute(
            select(
                SyncImport.id,
                SyncImport.import_id,
                SyncImport.started_at,
                SyncImport.checked_at,
            )
            .where(SyncImport.status.in_(IN_DOUBT), *conditions)
            .order_by(SyncImport.id)
        )
    ]


def doubt_check_at(item: RunningImport, options: SyncOptions) -> datetime:
    """When to read contacts back: once Dotdigital has had time to run the import."""
    first = item.started_at + timedelta(seconds=options.unanswered_wait_seconds)
    if item.checked_at is None:
        return first
    return max(first, item.checked_at + timedelta(seconds=options.import_poll_seconds))


def resolve_doubt(session: Session, pk: int, *, landed: bool, now: datetime) -> None:
    """Record what reading the contacts back showed."""
    execute(
        session,
        update(SyncImport)
        .where(SyncImport.id == pk)
        .values(
            status=IMPORT_LANDED if landed else IMPORT_LOST,
            checked_at=now,
            finished_at=now,
        ),
    )


def samples(items: Sequence[_T]) -> list[_T]:
    """Up to SAMPLE_SIZE items spread over the sequence: its first, middle and last."""
    if len(items) <= SAMPLE_SIZE:
        return list(items)
    last = len(items) - 1
    return [items[round(i * last / (SAMPLE_SIZE - 1))] for i in range(SAMPLE_SIZE)]


def _same_value(stored: Any, sent: DataFieldValue) -> bool:
    if sent is None or stored is None:
        return (sent is None or sent == "") and (stored is None or stored == "")
    if isinstance(sent, bool) or isinstance(stored, bool):
        return sent is stored
    if isinstance(sent, int | float) and isinstance(stored, int | float):
        return math.isclose(float(sent), float(stored))
    if isinstance(sent, str) and isinstance(stored, str) and sent != stored:
        try:
            return datetime.fromisoformat(sent) == datetime.fromisoformat(stored)
        except ValueError:
            return False
    return bool(sent == stored)


def holds_values(contact: Contact | None, values: Mapping[str, DataFieldValue]) -> bool:
    """Whether Dotdigital's contact carries every value Tally would send (names in any case)."""
    if contact is None:
        return False
    stored = {name.upper(): value for name, value in contact.data_fields.items()}
    return all(_same_value(stored.get(name.upper()), value) for name, value in values.items())
