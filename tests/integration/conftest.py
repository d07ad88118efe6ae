"""Fixtures for API tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tally.api.app import create_app
from tally.config import Settings
from tally.state import AppState


@pytest.fixture
def client(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    """An in-process client for the API on the test database."""
    app = create_app(settings, AppState(settings=settings, session_factory=session_factory))
    with TestClient(app, raise_server_exceptions=True) as test_client:
        yield test_client
