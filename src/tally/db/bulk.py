"""Bulk statements on a session's own connection: many rows per statement, per dialect.

The ledger's batch writer and the imports write thousands of rows per transaction. Going
through the ORM (an object per row, identity map, unit-of-work flush) would cost more than the
database itself, so these write plain tuples with ``executemany`` and allocate ids up front so
that rows can be linked without ``RETURNING``. Values are converted once to what the driver
stores (SQLite keeps timestamps as text and ``Numeric`` as floats, as SQLAlchemy does), so the
rows read back exactly like rows written through the ORM.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

# Values per ``IN (...)`` list: SQLite allows 32,766 parameters per statement.
IN_CHUNK = 5000


def utc_text(moment: datetime) -> str:
    """An aware timestamp as SQLite stores it (UTC, no offset, microseconds)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class Bulk:
    """Bulk statements on a session's connection (so inside its transaction), per dialect."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.connection: Connection = session.connection()
        self.postgres = self.connection.dialect.name == "postgresql"
        self.mark = "%s" if self.postgres else "?"
        if self.postgres:
            from psycopg.types.json import Json

            self._json: Any = Json
        else:
            self._json = json.dumps

    def timestamp(self, value: datetime | None) -> Any:
        """An aware timestamp as the column stores it."""
        if value is None or self.postgres:
            return value
        return utc_text(value)

    def timestamp_text(self, text: str) -> Any:
        """A spooled UTC timestamp as the column stores it."""
        if self.postgres:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        return text

    def day(self, value: date | None) -> Any:
        """A date as the column stores it."""
        if value is None or self.postgres:
            return value
        return value.isoformat()

    def day_text(self, text: str | None) -> Any:
        """A spooled YYYY-MM-DD date as the column stores it."""
        if text is None or not self.postgres:
            return text
        return date.fromisoformat(text)

    def in_list(self, column: str, values: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
        """``column IN (...)`` for these values: the SQL and its parameters."""
        if self.postgres:
            return f"{column} = ANY(%s)", (list(values),)
        return f"{column} IN ({', '.join('?' * len(values))})", tuple(values)

    def money(self, value: Decimal | None) -> Any:
        """An amount as a ``Numeric`` column stores it (SQLAlchemy binds floats on SQLite)."""
        if value is None or self.postgres:
            return value
        return float(value)

    def money_text(self, text: str | None) -> Any:
        """A spooled decimal amount as a ``Numeric`` column stores it."""
        if text is None:
            return None
        return Decimal(text) if self.postgres else float(text)

    def json(self, value: Any) -> Any:
        """A value for a JSON column."""
        return None if value is None else self._json(value)

    def json_text(self, text: str) -> Any:
        """JSON already serialised, for a JSON column."""
        if self.postgres:
            from psycopg.types.json import Json

            return Json(text, dumps=_as_is)
        return text

    def allocate_ids(self, table: str, count: int) -> list[int]:
        """``count`` fresh primary keys for ``table``.

        SQLite: the ids after the largest one (the transaction holds the database's write lock
        from its first statement, so nobody else can take them). PostgreSQL: its sequence.
        """
        if count == 0:
            return []
        if self.postgres:
            rows = self.connection.exec_driver_sql(
                f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) "
                "FROM generate_series(1, %s)",
                (count,),
            ).all()
            return [int(row[0]) for row in rows]
        highest = self.connection.exec_driver_sql(f"SELECT max(id) FROM {table}").scalar()
        start = int(highest or 0) + 1
        return list(range(start, start + count))

    def insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        skip_conflicts: bool = False,
    ) -> None:
        """Insert many rows; with ``skip_conflicts`` rows that break a unique key are skipped."""
        if not rows:
            return
        marks = ", ".join([self.mark] * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        if skip_conflicts:
            sql += " ON CONFLICT DO NOTHING"
        self.connection.exec_driver_sql(sql, list(rows))

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement written with ``?`` marks once per row of values."""
        if rows:
            self.connection.exec_driver_sql(sql.replace("?", self.mark), list(rows))

    def present_ids(self, table: str, ids: Sequence[int]) -> set[int] | None:
        """Which of these ids (from ``allocate_ids``) have a row; None when all of them do."""
        if not ids:
            return None
        if self.postgres:
            rows = self.connection.exec_driver_sql(
                f"SELECT id FROM {table} WHERE id = ANY(%s)", (list(ids),)
            ).all()
            present = {int(row[0]) for row in rows}
            return None if len(present) == len(ids) else present
        low, high = min(ids), max(ids)
        count = self.connection.exec_driver_sql(
            f"SELECT count(*) FROM {table} WHERE id BETWEEN ? AND ?", (low, high)
        ).scalar()
        if count == len(ids):
            return None
        rows = self.connection.exec_driver_sql(
            f"SELECT id FROM {table} WHERE id BETWEEN ? AND ?", (low, high)
        ).all()
        return {int(row[0]) for row in rows}


def _as_is(text: Any) -> str:
    return str(text)


def chunks(values: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` values, for ``IN (...)`` lists.

    A short last slice is padded (by repeating its first value) to a power of two: every
    length makes a distinct statement, and SQLite keeps its prepared statements (with their
    thousands of parameters) in a per-connection cache, so few lengths keep memory flat.
    """
    for start in range(0, len(values), size):
        part = values[start : start + size]
        if len(part) < size:
            target = min(size, 1 << (len(part) - 1).bit_length())
            part = [*part, *[part[0]] * (target - len(part))]
        yield part
