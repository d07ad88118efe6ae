"""One page of a listing and the number of rows in all, as every list screen and endpoint shows."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

T = TypeVar("T")


def page(
    session: Session, stmt: Select[T], *, order_by: Any, limit: int, offset: int
) -> tuple[list[T], int]:
    """At most `limit` rows of `stmt` in `order_by` order from `offset`, and the total count."""
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(order_by).limit(limit).offset(offset))
    return list(rows), total
