"""Shared fixtures: each database test runs on every configured backend (SQLite and PostgreSQL).

Backends come from TALLY_TEST_BACKENDS (default "sqlite,postgresql"); PostgreSQL's URL from
TALLY_TEST_POSTGRES_URL (`make test` starts a private server and sets it). Under CI=true a
missing PostgreSQL is a failure, elsewhere the PostgreSQL half is skipped with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings, WorkerMode
from tally.db import migrate
from tally.db.engine import make_engine, make_session_factory
from tally.db.models import Base

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
BACKENDS = [
    b.strip() for b in os.environ.get("TALLY_TEST_BACKENDS", "sqlite,postgresql").split(",")
]


def _postgres_url() -> str | None:
    return os.environ.get("TALLY_TEST_POSTGRES_URL") or None


def _require_postgres() -> str:
    url = _postgres_url()
    if url is None:
        message = "PostgreSQL tests need TALLY_TEST_POSTGRES_URL (run `make test`)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend this test runs on."""
    return str(request.param)


def _recreate_database(server_url: str, name: str, *, create: bool) -> None:
    admin = make_engine(server_url)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if create:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL for an empty database of the backend, migrated to head once per session.

    On PostgreSQL each pytest process gets a database of its own (named after its pid), so
    two runs against one server cannot drop each other's tables.
    """
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "tally.db"
        yield f"sqlite:///{path}"
        return
    url = _require_postgres()
    server, _, base = url.rpartition("/")
    name = f"{base}_{os.getpid()}"
    _recreate_database(url, name, create=True)
    yield f"{server}/{name}"
    _recreate_database(url, name, create=False)


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    """The migrated engine for the session."""
    eng = make_engine(database_url, pool_size=30)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def _clean(engine: Engine) -> None:
    tables = [t.name for t in Base.metadata.sorted_tables]
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        return
    # Without foreign key checks: deleting a customer checks the unindexed self-reference
    # (customers.referred_by_id) by a scan, which makes emptying a big table quadratic. The
    # pragma only takes effect outside a transaction, so on the driver's own connection.
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA foreign_keys=OFF")
        try:
            cursor.execute("BEGIN IMMEDIATE")
            for name in reversed(tables):
                cursor.execute(f"DELETE FROM {name}")
            cursor.execute("COMMIT")
        finally:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
    finally:
        raw.close()


@pytest.fixture
def session_factory(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """A session factory on a clean database; everything written is removed afterwards."""
    yield make_session_factory(engine)
    _clean(engine)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings for a test: its database, no background worker, files under tmp_path."""
    return Settings(
        environment="test",
        database_url=database_url,
        worker_mode=WorkerMode.OFF,
        var_dir=tmp_path / "var",
        public_base_url="http://tally.test",
        worker_backoff_base_seconds=0.0,
        _env_file=None,  # type: ignore[call-arg]
    )
