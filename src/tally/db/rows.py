"""Rows by id: one merchant's (the lookup behind every "get one X or 404" of the services),
or one re-read from the database after a bulk UPDATE."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from tally.errors import NotFound

T = TypeVar("T")


def merchant_row(session: Session, model: type[T], row_id: int, merchant_id: int, what: str) -> T:
    """The `model` row `row_id` of the merchant, or NotFound naming `what` (another merchant's
    row is as absent as one that never existed)."""
    table: Any = model  # every tenant table has an integer `id` primary key
    row = session.scalar(select(model).where(table.id == row_id, table.merchant_id == merchant_id))
    if row is None:
        raise NotFound(f"{what} {row_id} does not exist")
    return row


def reloaded_row(session: Session, model: type[T], row_id: int) -> T:
    """The `model` row `row_id` as the database holds it now: a bulk UPDATE does not refresh
    objects already in the session, so this re-reads them (the row must exist)."""
    table: Any = model
    return session.scalars(
        select(model).where(table.id == row_id).execution_options(populate_existing=True)
    ).one()
