"""The Dotdigital REST endpoints, with the emulator behind them over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.api.app import create_app
from tally.api.dotdigital import PREFIX, router
from tally.config import Settings
from tally.devtools.dotdigital_emulator import DEMO_PASSWORD, DEMO_USERNAME, EmulatorServer
from tally.integrations.dotdigital.client import HttpDotdigitalClient
from tally.integrations.dotdigital.orm import DotdigitalConnection, SyncJob
from tally.state import AppState
from tests.integration.test_dotdigital_service import (
    FIELDS,
    US_PASSWORD,
    US_USERNAME,
    dotdigital_settings,
    emulator_config,
    make_customer,
)
from tests.support.factories import MerchantFixture, make_merchant


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(emulator_config()) as running:
        yield running


@pytest.fixture
def emulator(server: EmulatorServer) -> EmulatorServer:
    server.emulator.reset()
    return server


@pytest.fixture
def api(
    settings: Settings, session_factory: sessionmaker[Session], emulator: EmulatorServer
) -> Iterator[TestClient]:
    dd_settings = dotdigital_settings(settings, emulator)
    app: FastAPI = create_app(
        dd_settings, AppState(settings=dd_settings, session_factory=session_factory)
    )
    if PREFIX not in app.openapi()["paths"]:
        app.include_router(router)  # until the app mounts it itself
    app.openapi_schema = None
    with TestClient(app) as client:
        yield client


@pytest.fixture
def merchant(session_factory: sessionmaker[Session]) -> MerchantFixture:
    return make_merchant(session_factory)


def _connect(api: TestClient, merchant: MerchantFixture) -> None:
    body = {"username": DEMO_USERNAME, "password": DEMO_PASSWORD}
    assert api.put(f"{PREFIX}/credentials", json=body, headers=merchant.headers).status_code == 200
    assert api.post(f"{PREFIX}/enable", headers=merchant.headers).status_code == 200


def test_every_endpoint_needs_an_api_key(api: TestClient) -> None:
    assert api.get(PREFIX).status_code == 401
    assert api.put(f"{PREFIX}/credentials", json={}).status_code == 401
    assert api.post(f"{PREFIX}/sync").status_code == 401


def test_status_before_connecting(api: TestClient, merchant: MerchantFixture) -> None:
    response = api.get(PREFIX, headers=merchant.headers)
    assert response.status_code == 200
    assert response.json() == {
        "connected": False,
        "enabled": False,
        "api_username": None,
        "api_endpoint": None,
        "mapping": {},
        "field_check": None,
        "calls_per_minute": None,
        "last_successful_sync_at": None,
        "paused_until": None,
        "last_error": None,
        "last_error_at": None,
        "backlog": 0,
        "backlog_retrying": 0,
        "failures_total": 0,
        "recent_failures": [],
        "recent_jobs": [],
    }


def test_bad_credentials_are_a_422_without_the_password(
    api: TestClient, merchant: MerchantFixture, session_factory: sessionmaker[Session]
) -> None:
    body = {"username": DEMO_USERNAME, "password": "not-the-password"}
    response = api.put(f"{PREFIX}/credentials", json=body, headers=merchant.headers)
    assert response.status_code == 422
    problem = response.json()
    assert problem["detail"] == "Dotdigital refused the API user's username or password"
    assert problem["errors"] == [
        {"field": "password", "message": "Dotdigital answered 401: check the username and password"}
    ]
    assert "not-the-password" not in response.text
    with session_factory() as session:
        assert session.scalar(select(DotdigitalConnection)) is None


def test_connect_enable_status_disable_and_disconnect(
    api: TestClient, merchant: MerchantFixture, emulator: EmulatorServer
) -> None:
    body = {"username": US_USERNAME, "password": US_PASSWORD}
    response = api.put(f"{PREFIX}/credentials", json=body, headers=merchant.headers)
    assert response.status_code == 200
    assert response.json() == {
        "api_username": US_USERNAME,
        "api_endpoint": emulator.url_for_region(2),
        "account_id": 2,
        "enabled": False,
        "replaced_user": False,
    }
    assert US_PASSWORD not in response.text

    response = api.post(f"{PREFIX}/enable", headers=merchant.headers)
    assert response.status_code == 200
    assert response.json() == {"enabled": True, "created_fields": FIELDS, "existing_fields": []}

    status = api.get(PREFIX, headers=merchant.headers).json()
    assert (status["connected"], status["enabled"]) == (True, True)
    assert status["api_username"] == US_USERNAME
    assert status["api_endpoint"] == emulator.url_for_region(2)
    assert status["mapping"] == {
        "points_balance": "LOYALTY_POINTS",
        "referral_url": "LOYALTY_REFERRAL_URL",
        "birthday": "LOYALTY_BIRTHDAY",
        "vip_tier": "LOYALTY_VIP_TIER",
    }
    assert status["calls_per_minute"] == 60_000
    assert status["field_check"]["created"] == FIELDS
    assert US_PASSWORD not in api.get(PREFIX, headers=merchant.headers).text

    response = api.post(f"{PREFIX}/disable", headers=merchant.headers)
    assert response.status_code == 200
    assert (response.json()["connected"], response.json()["enabled"]) == (True, False)

    assert api.delete(PREFIX, headers=merchant.headers).status_code == 204
    assert api.get(PREFIX, headers=merchant.headers).json()["connected"] is False
    response = api.delete(PREFIX, headers=merchant.headers)
    assert response.status_code == 404
    assert response.json()["detail"] == "Dotdigital is not connected"


def test_enable_reports_a_field_of_the_wrong_type(
    api: TestClient, merchant: MerchantFixture, emulator: EmulatorServer
) -> None:
    with HttpDotdigitalClient(DEMO_USERNAME, DEMO_PASSWORD, emulator.base_url, 2.0) as client:
        client.create_data_field("LOYALTY_BIRTHDAY", "String")
    body = {"username": DEMO_USERNAME, "password": DEMO_PASSWORD}
    api.put(f"{PREFIX}/credentials", json=body, headers=merchant.headers)
    response = api.post(f"{PREFIX}/enable", headers=merchant.headers)
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "field": "mapping.birthday",
            "message": "Dotdigital data field LOYALTY_BIRTHDAY is String, but birthday needs "
            "Date; rename the mapping or change the field in Dotdigital",
            "value": "LOYALTY_BIRTHDAY",
        }
    ]
    status = api.get(PREFIX, headers=merchant.headers).json()
    assert status["enabled"] is False
    assert status["field_check"]["conflicts"][0]["actual_type"] == "String"


def test_mapping_names_are_validated(api: TestClient, merchant: MerchantFixture) -> None:
    _connect(api, merchant)
    response = api.put(
        f"{PREFIX}/mapping",
        json={"points_balance": "LOYALTY POINTS", "vip_tier": None},
        headers=merchant.headers,
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["points_balance"]
    response = api.put(
        f"{PREFIX}/mapping",
        json={"points_balance": "TALLY_POINTS", "vip_tier": None},
        headers=merchant.headers,
    )
    assert response.status_code == 200
    assert response.json() == {
        "points_balance": "TALLY_POINTS",
        "referral_url": "LOYALTY_REFERRAL_URL",
        "birthday": "LOYALTY_BIRTHDAY",
        "vip_tier": None,
    }
    assert api.get(PREFIX, headers=merchant.headers).json()["mapping"]["vip_tier"] is None


def test_starting_and_reading_a_manual_sync(
    api: TestClient, merchant: MerchantFixture, session_factory: sessionmaker[Session]
) -> None:
    response = api.post(f"{PREFIX}/sync", headers=merchant.headers)
    assert response.status_code == 409
    _connect(api, merchant)
    for _ in range(3):
        make_customer(session_factory, merchant.id)
    response = api.post(f"{PREFIX}/sync", headers=merchant.headers)
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"{PREFIX}/sync/{job['id']}"
    assert {k: job[k] for k in ("status", "total", "sent", "created", "failed", "imports")} == {
        "status": "running",
        "total": 3,
        "sent": 0,
        "created": 0,
        "failed": 0,
        "imports": 0,
    }
    again = api.post(f"{PREFIX}/sync", headers=merchant.headers)
    assert again.status_code == 409
    assert again.json()["detail"] == f"manual sync {job['id']} is still running"
    with session_factory() as session:
        assert len(session.scalars(select(SyncJob)).all()) == 1

    assert api.get(f"{PREFIX}/sync/{job['id']}", headers=merchant.headers).json() == job
    other = make_merchant(session_factory)
    assert api.get(f"{PREFIX}/sync/{job['id']}", headers=other.headers).status_code == 404
    listed = api.get(PREFIX, headers=merchant.headers).json()["recent_jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
