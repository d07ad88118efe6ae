"""Inserting a row whose unique key another transaction may take first, on both backends.

`insert_unless_exists` is `INSERT ... ON CONFLICT DO NOTHING RETURNING`. The idempotency keys
of the ledger and of API requests are claimed with it: the row that wins the unique constraint
comes back, a duplicate comes back as None, and no savepoint or error handling is needed. On
PostgreSQL a concurrent duplicate waits for the first writer's transaction to end before it is
reported as a conflict.

`insert_or_find` is for ORM objects the session has to insert itself (defaults, relationships):
a savepoint takes the insert back when the unique key is taken, and the winner's row is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

T = TypeVar("T")


def insert_unless_exists(
    session: Session, model: type[T], values: dict[str, Any], conflict_columns: Sequence[str]
) -> T | None:
    """Insert one row and return it as an ORM object, or None if the unique key is taken."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert(model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=list(conflict_columns))
        .returning(model)
    )
    return session.scalars(stmt).first()


def insert_or_find(session: Session, row: T, find: Callable[[], T | None]) -> tuple[T, bool]:
    """Insert `row` and return `(row, True)`, or `(find(), False)` when its unique key was taken.

    A concurrent writer of the same key makes the insert fail (on PostgreSQL after waiting for
    that writer to commit), which is the only race-free duplicate check. When `find` finds
    nothing, the constraint that failed was another one, and the error is raised.
    """
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        existing = find()
        if existing is None:
            raise
        return existing, False
    return row, True
