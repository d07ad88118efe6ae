"""Small helpers for the sync's bulk UPDATE and DELETE statements."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Executable
from sqlalchemy.orm import Session, sessionmaker

# The sync's statements touch rows no session holds, so there is nothing to synchronise.
_NO_SYNC = {"synchronize_session": False}


def execute(session: Session, statement: Executable) -> int:
    """Run a bulk statement in the session's transaction; the number of rows it matched."""
    result: Any = session.execute(statement, execution_options=_NO_SYNC)
    return int(getattr(result, "rowcount", 0) or 0)


def execute_alone(session_factory: sessionmaker[Session], statement: Executable) -> int:
    """Run one bulk statement in a transaction of its own (committed when it returns)."""
    with session_factory() as session, session.begin():
        return execute(session, statement)
