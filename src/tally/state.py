"""What every entry point shares, created once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings


@dataclass
class AppState:
    """Everything the entry points share, created once at start-up."""

    settings: Settings
    session_factory: sessionmaker[Session]
