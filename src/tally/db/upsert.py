"""`INSERT ... ON CONFLICT DO NOTHING RETURNING` on both backends.

The idempotency keys of the ledger and of API requests are claimed with this: the row that wins
the unique constraint comes back, a duplicate comes back as None, and no savepoint or error
handling is needed. On PostgreSQL a concurrent duplicate waits for the first writer's
transaction to end before it is reported as a conflict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy.dialects import postgresql, sqlite
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
