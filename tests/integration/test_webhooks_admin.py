"""The admin's Webhooks pages: add an endpoint (secret once), see deliveries and attempts,
replay one, and the notice of an endpoint Tally disabled."""

from __future__ import annotations

import html
import re

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.webhooks.orm import WebhookEndpoint
from tests.integration.test_admin_pages import admin_app, csrf_of, make_store, sign_in
from tests.integration.test_webhooks import FAST, _worker
from tests.support.factories import make_customer
from tests.support.webhook_receiver import webhook_receiver

PAGE = "/admin/integrations/webhooks"


def _secret_in(html: str) -> str:
    found = re.search(r'data-testid="webhook-secret">([^<]+)<', html)
    assert found is not None, "no secret on the page"
    return found.group(1)


def test_adding_an_endpoint_shows_its_secret_once(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    store = make_store(session_factory, "owner@shop.example")
    with TestClient(admin_app(settings, session_factory)) as client:
        assert sign_in(client, store.email) == (303, "/admin")
        page = client.get(PAGE)
        assert page.status_code == 200
        assert 'href="/admin/integrations/webhooks" aria-current="page"' in page.text
        form = {
            "csrf_token": csrf_of(page.text),
            "url": "http://127.0.0.1:9/hooks",
            "event.points.changed": "on",
            "event.reward.redeemed": "on",
        }
        created = client.post(PAGE, data=form)
        assert created.status_code == 200
        secret = _secret_in(created.text)
        assert secret.startswith("whsec_")
        listed = client.get(PAGE).text
        assert "http://127.0.0.1:9/hooks" in listed
        assert secret not in listed
        with session_factory() as session:
            endpoint = session.scalars(select(WebhookEndpoint)).one()
        detail = client.get(f"{PAGE}/{endpoint.id}").text
        assert secret not in detail
        assert "points.changed" in detail

        bare = {k: v for k, v in form.items() if not k.startswith("event.")}
        no_events = client.post(PAGE, data=bare)
        assert no_events.status_code == 422
        assert "choose at least one event" in no_events.text
        no_token = client.post(PAGE, data={**form, "csrf_token": ""}, follow_redirects=False)
        assert no_token.status_code == 403
    with session_factory() as session:
        assert len(session.scalars(select(WebhookEndpoint)).all()) == 1


def test_a_disabled_endpoint_shows_the_notice_and_its_deliveries_replay(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    store = make_store(session_factory, "owner@shop.example")
    other = make_store(session_factory, "other@shop.example")
    worker = _worker(settings, session_factory, FAST)
    with webhook_receiver() as receiver, TestClient(admin_app(settings, session_factory)) as client:
        receiver.default = (500, 0.0)
        assert sign_in(client, store.email) == (303, "/admin")
        token = csrf_of(client.get(PAGE).text)
        client.post(
            PAGE, data={"csrf_token": token, "url": receiver.url, "event.customer.enrolled": "on"}
        )
        with session_factory() as session:
            endpoint_id = session.scalars(select(WebhookEndpoint.id)).one()
        for _ in range(FAST.disable_after_failed_deliveries):
            make_customer(session_factory, store.merchant_id)
            worker.drain()
        page = client.get(f"{PAGE}/{endpoint_id}").text
        notice = page[page.index('data-testid="webhook-disabled-notice"') :]
        assert "Tally disabled this endpoint" in notice
        assert "3 deliveries in a row failed" in notice
        assert "answered HTTP 500" in notice
        assert "badge bad" in client.get(PAGE).text

        enabled = client.post(
            f"{PAGE}/{endpoint_id}/enable", data={"csrf_token": token}, follow_redirects=False
        )
        assert enabled.status_code == 303
        page = client.get(enabled.headers["location"]).text
        assert 'data-testid="webhook-disabled-notice"' not in page
        replay = re.search(r'action="(/admin/integrations/webhooks/deliveries/(\d+)/replay)"', page)
        assert replay is not None
        delivery = client.get(f"{PAGE}/deliveries/{replay.group(2)}").text
        attempts = delivery[delivery.index('data-testid="webhook-attempts"') :]
        assert attempts.count('<tr><td class="num">') == FAST.max_attempts
        assert "Retry scheduled" in attempts
        assert '"type":"customer.enrolled"' in html.unescape(delivery)

        receiver.default = (200, 0.0)
        done = client.post(replay.group(1), data={"csrf_token": token}, follow_redirects=False)
        assert done.status_code == 303
        assert "The delivery is queued again" in client.get(done.headers["location"]).text
        worker.drain()
        assert receiver.requests[-1].answered == 200

    # The other store's admin cannot see or replay it.
    with TestClient(admin_app(settings, session_factory)) as intruder:
        assert sign_in(intruder, other.email) == (303, "/admin")
        assert intruder.get(f"{PAGE}/{endpoint_id}").status_code == 404
        assert intruder.get(f"{PAGE}/deliveries/{replay.group(2)}").status_code == 404
        token = csrf_of(intruder.get(PAGE).text)
        refused = intruder.post(replay.group(1), data={"csrf_token": token}, follow_redirects=False)
        assert refused.status_code == 404
