"""Engines and sessions. Nothing here runs at import time: callers pass Settings in."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker, with_loader_criteria

from tally.audit.actor import Actor, act_as
from tally.db.base import TenantScoped

MERCHANT_KEY = "merchant_id"


def make_engine(database_url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """Create an engine tuned for the backend the URL names."""
    url = database_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    return create_engine(
        url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800
    )


def _configure_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, and BEGIN IMMEDIATE: writers queue instead of failing mid-transaction."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy (not the sqlite3 module) decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A deferred transaction that reads and then writes fails with SQLITE_BUSY when another
        # writer got in between; taking the write lock up front makes writers wait their turn.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose sessions apply the tenant filter when bound to a merchant."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@event.listens_for(Session, "do_orm_execute")
def _apply_tenant_filter(state: ORMExecuteState) -> None:
    """The one place the merchant filter is applied to every ORM query of a bound session."""
    merchant_id = state.session.info.get(MERCHANT_KEY)
    if merchant_id is None:
        return
    if state.is_select or state.is_update or state.is_delete:
        # `merchant_id + 0` keeps the guard out of index selection: it is a safety net on top of
        # the filters services write themselves, and as an indexable term it led SQLite (which
        # has no statistics) to scan a merchant's whole table instead of using a better index.
        state.statement = state.statement.options(
            with_loader_criteria(
                TenantScoped,
                lambda cls: cls.merchant_id + 0 == merchant_id,
                include_aliases=True,
            )
        )


def bind_merchant(session: Session, merchant_id: int) -> None:
    """Restrict every ORM query of this session to one merchant's rows."""
    session.info[MERCHANT_KEY] = merchant_id


@contextmanager
def unit_of_work(
    factory: sessionmaker[Session], *, merchant_id: int | None = None, actor: Actor | None = None
) -> Iterator[Session]:
    """One transaction: commit when the block succeeds, roll back when it raises.

    With an ``actor`` (what the admin, the API and the CLI pass), the audited changes the
    block makes are written to the audit log in the same transaction (``tally.audit``).
    """
    session = factory()
    if merchant_id is not None:
        bind_merchant(session, merchant_id)
    act_as(session, actor)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
