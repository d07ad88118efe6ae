"""The Alembic migrations and the SQLAlchemy models describe the same schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from tally.db import migrate
from tally.db.engine import make_engine
from tally.db.models import Base


def test_models_and_migrations_agree(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_downgrade_to_base_and_upgrade_again(database_url: str, backend: str, tmp_path) -> None:
    # A separate database so the shared one stays migrated for the other tests.
    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'roundtrip.db'}")
    else:
        from sqlalchemy import text

        server, _, name = database_url.rpartition("/")
        roundtrip = f"{name}_roundtrip"
        admin = make_engine(database_url)
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{roundtrip}"'))
            conn.execute(text(f'CREATE DATABASE "{roundtrip}"'))
        admin.dispose()
        engine = make_engine(f"{server}/{roundtrip}")
    try:
        migrate.upgrade(engine)
        assert "ledger_entries" in inspect(engine).get_table_names()
        migrate.downgrade(engine, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(engine)
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
