"""The webhooks REST API: the secret is shown once, URLs are guarded, deliveries are visible
and replayable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from tally.api.app import create_app
from tally.config import Settings
from tally.outbox.worker import Worker
from tally.state import AppState
from tally.webhooks.orm import WebhookEndpoint
from tally.webhooks.signing import verify
from tests.integration.test_webhooks import FAST, _worker
from tests.support.factories import make_customer, make_merchant
from tests.support.webhook_receiver import webhook_receiver

PATH = "/api/v1/webhooks"


@pytest.fixture
def production_client(
    settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[TestClient]:
    """The API as it runs in production (https only, no private addresses)."""
    production = settings.model_copy(
        update={"environment": "production", "secret_key": SecretStr("p" * 40)}
    )
    app = create_app(production, AppState(settings=production, session_factory=session_factory))
    with TestClient(app) as test_client:
        yield test_client


def test_the_secret_is_in_the_creating_answer_only(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    merchant = make_merchant(session_factory)
    body = {"url": "http://127.0.0.1:9/hook", "events": ["points.changed", "tier.changed"]}
    headers = {**merchant.headers, "Idempotency-Key": "create-1"}
    created = client.post(f"{PATH}/endpoints", json=body, headers=headers)
    assert created.status_code == 201, created.text
    out = created.json()
    assert out["secret"].startswith("whsec_")
    assert out["events"] == ["points.changed", "tier.changed"]
    assert out["state"] == "enabled"

    replayed = client.post(f"{PATH}/endpoints", json=body, headers=headers)
    assert replayed.status_code == 201
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json()["secret"] is None
    assert replayed.json()["id"] == out["id"]

    listed = client.get(f"{PATH}/endpoints", headers=merchant.headers).json()
    one = client.get(f"{PATH}/endpoints/{out['id']}", headers=merchant.headers).json()
    assert "secret" not in listed[0]
    assert "secret" not in one
    with session_factory() as session:
        stored = "\n".join(
            str(row)
            for table in ("webhook_endpoints", "idempotency_records")
            for row in session.execute(text(f"SELECT * FROM {table}"))
        )
    assert out["secret"] not in stored

    rotated = client.post(f"{PATH}/endpoints/{out['id']}/rotate-secret", headers=merchant.headers)
    assert rotated.status_code == 200
    assert rotated.json()["secret"] not in (None, out["secret"])
    assert rotated.json()["previous_secret_expires_at"] is not None


def test_bad_events_and_bad_urls_are_refused_and_nothing_is_stored(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    merchant = make_merchant(session_factory)
    for body in (
        {"url": "http://127.0.0.1:9/hook", "events": ["points.teleported"]},
        {"url": "ftp://127.0.0.1/hook", "events": ["points.changed"]},
        {"url": "http://127.0.0.1:9/hook", "events": []},
    ):
        r = client.post(f"{PATH}/endpoints", json=body, headers=merchant.headers)
        assert r.status_code == 422, r.text
    with session_factory() as session:
        assert session.scalars(select(WebhookEndpoint)).all() == []


@pytest.mark.parametrize("url", ["https://127.0.0.1/hook", "https://10.0.0.1/hook"])
def test_production_refuses_private_addresses(
    production_client: TestClient, session_factory: sessionmaker[Session], url: str
) -> None:
    merchant = make_merchant(session_factory)
    body = {"url": url, "events": ["points.changed"]}
    r = production_client.post(f"{PATH}/endpoints", json=body, headers=merchant.headers)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "url"
    assert "private" in r.json()["detail"]
    with session_factory() as session:
        assert session.scalars(select(WebhookEndpoint)).all() == []


def test_deliveries_and_their_attempts_are_listed_and_a_failed_one_is_replayed(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    worker: Worker = _worker(settings, session_factory, FAST)
    with webhook_receiver() as receiver:
        created = client.post(
            f"{PATH}/endpoints",
            json={"url": receiver.url, "events": ["customer.enrolled"]},
            headers=merchant.headers,
        ).json()
        receiver.answer(400)
        make_customer(session_factory, merchant.id)
        worker.drain()
        page = client.get(
            f"{PATH}/endpoints/{created['id']}/deliveries", headers=merchant.headers
        ).json()
        assert page["total"] == 1
        (delivery,) = page["items"]
        assert (delivery["status"], delivery["attempts"], delivery["response_status"]) == (
            "failed",
            1,
            400,
        )
        detail = client.get(f"{PATH}/deliveries/{delivery['id']}", headers=merchant.headers)
        assert [a["status_code"] for a in detail.json()["attempts_made"]] == [400]
        assert detail.json()["attempts_made"][0]["outcome"] == "failed"

        replay = client.post(f"{PATH}/deliveries/{delivery['id']}/replay", headers=merchant.headers)
        assert replay.status_code == 202
        assert replay.json()["status"] == "pending"
        again = client.post(f"{PATH}/deliveries/{delivery['id']}/replay", headers=merchant.headers)
        assert again.status_code == 409
        worker.drain()

        test = client.post(f"{PATH}/endpoints/{created['id']}/test", headers=merchant.headers)
        assert test.status_code == 202
        worker.drain()
    assert [r.answered for r in receiver.requests] == [400, 200, 200]
    assert receiver.requests[0].body == receiver.requests[1].body
    assert b'"type":"webhook.test"' in receiver.requests[2].body
    for request in receiver.requests:
        verify(created["secret"], request.headers["tally-signature"], request.body)


def test_disable_enable_update_and_delete(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    merchant = make_merchant(session_factory)
    created = client.post(
        f"{PATH}/endpoints",
        json={"url": "http://127.0.0.1:9/a", "events": ["points.changed"]},
        headers=merchant.headers,
    ).json()
    one = f"{PATH}/endpoints/{created['id']}"
    disabled = client.post(f"{one}/disable", headers=merchant.headers).json()
    assert (disabled["state"], disabled["disabled_automatically"]) == ("disabled", False)
    assert client.post(f"{one}/test", headers=merchant.headers).status_code == 409
    assert client.post(f"{one}/enable", headers=merchant.headers).json()["state"] == "enabled"
    patched = client.patch(
        one, json={"events": ["reward.redeemed"], "description": "ERP"}, headers=merchant.headers
    ).json()
    assert (patched["events"], patched["description"], patched["url"]) == (
        ["reward.redeemed"],
        "ERP",
        "http://127.0.0.1:9/a",
    )
    types = client.get(f"{PATH}/event-types", headers=merchant.headers).json()
    assert "import.finished" in [t["name"] for t in types]
    assert client.delete(one, headers=merchant.headers).status_code == 204
    assert client.get(one, headers=merchant.headers).status_code == 404
