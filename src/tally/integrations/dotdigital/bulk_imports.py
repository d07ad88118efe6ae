"""Bulk imports in flight, shared by the automatic and the manual sync: when to look at one
again, and recording how it ended."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from tally.db.base import utcnow
from tally.integrations.dotdigital.client import IMPORT_STATUS_NOT_FINISHED, ImportStatus
from tally.integrations.dotdigital.options import SyncOptions
from tally.integrations.dotdigital.orm import SyncImport
from tally.integrations.dotdigital.statements import execute, execute_alone

IMPORT_NOT_FINISHED = IMPORT_STATUS_NOT_FINISHED
TOO_MANY_IMPORTS = "contacts:tooManyActiveImports"
IMPORT_NOT_FOUND = "contacts:importNotFound"


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
