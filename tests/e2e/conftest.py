"""Fixtures for end-to-end tests over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tally.api.app import create_app
from tally.config import Settings
from tally.state import AppState
from tests.support.server import serve_in_thread


@pytest.fixture
def live_server(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[str]:
    """The API served by uvicorn on a loopback port; yields its base URL."""
    app = create_app(settings, AppState(settings=settings, session_factory=session_factory))
    with serve_in_thread(app) as url:
        yield url
