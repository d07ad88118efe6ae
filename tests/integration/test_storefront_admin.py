"""The admin's Storefront page and the hosted loyalty page, through the ASGI app."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tally.api.app import create_app
from tally.config import Settings
from tally.db.engine import unit_of_work
from tally.merchants import service as merchants
from tally.state import AppState
from tally.storefront import service
from tests.support.factories import make_merchant

PASSWORD = "correct horse battery"
PAGE = "/admin/integrations/storefront"


@pytest.fixture
def app_client(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    app = create_app(settings, AppState(settings=settings, session_factory=session_factory))
    with TestClient(app) as client:
        yield client


def _store(factory: sessionmaker[Session], email: str, role: str = "owner") -> int:
    merchant = make_merchant(factory, "Corner Shop")
    with unit_of_work(factory) as session:
        merchants.create_admin_user(
            session, merchant_id=merchant.id, email=email, password=PASSWORD, role=role
        )
    return merchant.id


@pytest.fixture
def owner(app_client: TestClient, session_factory: sessionmaker[Session]) -> tuple[int, str]:
    """A store whose owner is signed in: its id and the session's CSRF token."""
    merchant_id = _store(session_factory, "owner@shop.example")
    _sign_in(app_client, "owner@shop.example")
    return merchant_id, _csrf(app_client.get(PAGE).text)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def _sign_in(client: TestClient, email: str) -> None:
    token = _csrf(client.get("/admin/login").text)
    answer = client.post(
        "/admin/login",
        data={"email": email, "password": PASSWORD, "csrf_token": token, "next": "/admin"},
        follow_redirects=False,
    )
    assert answer.status_code == 303


def _row(factory: sessionmaker[Session], settings: Settings, merchant_id: int) -> dict[str, object]:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        row = service.settings_for(session, config=settings, merchant_id=merchant_id)
        return {
            "widget_id": row.widget_id,
            "origins": list(row.allowed_origins),
            "appearance": dict(row.appearance),
            "secret": service.reveal_secret(settings, row),
        }


def test_the_page_shows_the_widget_id_script_tag_and_a_preview_but_not_the_secret(
    app_client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant_id = _store(session_factory, "owner@shop.example")
    _sign_in(app_client, "owner@shop.example")
    page = app_client.get(PAGE)
    assert page.status_code == 200
    stored = _row(session_factory, settings, merchant_id)
    widget_id = str(stored["widget_id"])
    text = html.unescape(page.text)
    assert f'<code data-testid="widget-id">{widget_id}</code>' in page.text
    assert (
        f'<script src="http://tally.test/storefront/widget.js" data-widget-id="{widget_id}" '
        "async defer></script>"
    ) in text
    assert f'href="http://tally.test/p/{widget_id}"' in page.text
    assert str(stored["secret"]) not in page.text
    preview = re.search(r'data-appearance="([^"]+)"', page.text)
    assert preview is not None
    assert json.loads(html.unescape(preview.group(1))) == stored["appearance"]
    assert 'href="/admin/integrations/storefront" aria-current="page">Storefront<' in page.text


def test_showing_and_rotating_the_secret(
    app_client: TestClient,
    session_factory: sessionmaker[Session],
    settings: Settings,
    owner: tuple[int, str],
) -> None:
    merchant_id, token = owner
    first = str(_row(session_factory, settings, merchant_id)["secret"])

    shown = app_client.post(f"{PAGE}/secret", data={"csrf_token": token})
    assert shown.status_code == 200
    assert f'data-testid="storefront-secret">{first}</output>' in shown.text
    assert shown.headers["cache-control"] == "no-store"

    rotated = app_client.post(f"{PAGE}/rotate-secret", data={"csrf_token": token})
    second = str(_row(session_factory, settings, merchant_id)["secret"])
    assert second != first
    assert f'data-testid="storefront-secret">{second}</output>' in rotated.text
    assert "accepted for 24 hours more" in rotated.text


def test_a_post_without_the_csrf_token_changes_nothing(
    app_client: TestClient,
    session_factory: sessionmaker[Session],
    settings: Settings,
    owner: tuple[int, str],
) -> None:
    merchant_id, _token = owner
    before = _row(session_factory, settings, merchant_id)
    refused = app_client.post(f"{PAGE}/rotate-secret", data={})
    assert refused.status_code == 403
    origins = app_client.post(f"{PAGE}/origins", data={"origins": "https://evil.example"})
    assert origins.status_code == 403
    assert _row(session_factory, settings, merchant_id) == before


def test_saving_origins_checks_each_one(
    app_client: TestClient,
    session_factory: sessionmaker[Session],
    settings: Settings,
    owner: tuple[int, str],
) -> None:
    merchant_id, token = owner

    saved = app_client.post(
        f"{PAGE}/origins",
        data={"csrf_token": token, "origins": "https://shop.example\n\nhttp://127.0.0.1:8123/\n"},
        follow_redirects=False,
    )
    assert (saved.status_code, saved.headers["location"]) == (303, f"{PAGE}?done=origins")
    origins = ["https://shop.example", "http://127.0.0.1:8123"]
    assert _row(session_factory, settings, merchant_id)["origins"] == origins
    assert "Allowed origins saved." in app_client.get(saved.headers["location"]).text

    refused = app_client.post(
        f"{PAGE}/origins",
        data={"csrf_token": token, "origins": "https://shop.example/rewards"},
    )
    assert refused.status_code == 422
    assert "expected an origin such as" in refused.text
    assert "https://shop.example/rewards</textarea>" in refused.text
    assert _row(session_factory, settings, merchant_id)["origins"] == origins


def test_saving_the_look_and_refusing_a_bad_colour(
    app_client: TestClient,
    session_factory: sessionmaker[Session],
    settings: Settings,
    owner: tuple[int, str],
) -> None:
    merchant_id, token = owner
    look = {
        "primary_colour": "#0b7a4b",
        "text_colour": "#ffffff",
        "launcher_label": "Corner Club",
        "title": "Corner Shop rewards",
        "guest_message": "Sign in to collect points.",
        "position": "left",
    }
    saved = app_client.post(
        f"{PAGE}/appearance", data={"csrf_token": token, **look}, follow_redirects=False
    )
    assert saved.status_code == 303
    assert _row(session_factory, settings, merchant_id)["appearance"] == look

    refused = app_client.post(
        f"{PAGE}/appearance",
        data={"csrf_token": token, **look, "primary_colour": "red", "title": ""},
    )
    assert refused.status_code == 422
    assert 'id="look-primary-error"' in refused.text
    assert 'id="look-title-error"' in refused.text
    assert _row(session_factory, settings, merchant_id)["appearance"] == look


def test_support_cannot_open_the_page(
    app_client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant_id = _store(session_factory, "support@shop.example", role="support")
    _sign_in(app_client, "support@shop.example")
    assert app_client.get(PAGE).status_code == 403
    token = _csrf(app_client.get("/admin/customers").text)
    assert app_client.post(f"{PAGE}/secret", data={"csrf_token": token}).status_code == 403
    assert "/admin/integrations/storefront" not in app_client.get("/admin/customers").text
    del merchant_id


def test_the_hosted_page_renders_the_widget_in_page_form(
    app_client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant_id = _store(session_factory, "owner@shop.example")
    with unit_of_work(session_factory, merchant_id=merchant_id) as session:
        service.set_origins(
            session, config=settings, merchant_id=merchant_id, origins=["https://shop.example"]
        )
    widget_id = str(_row(session_factory, settings, merchant_id)["widget_id"])
    page = app_client.get(f"/p/{widget_id}")
    assert page.status_code == 200
    assert f'<tally-loyalty data-widget-id="{widget_id}" data-mode="page">' in page.text
    assert "<title>Our rewards program · Corner Shop</title>" in page.text
    assert '<a href="https://shop.example">Corner Shop</a>' in page.text
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'self' https://shop.example" in policy

    assert app_client.get("/p/wid_unknownunknownunknown").status_code == 404
    with unit_of_work(session_factory, merchant_id=merchant_id) as session:
        service.set_enabled(session, config=settings, merchant_id=merchant_id, enabled=False)
    assert app_client.get(f"/p/{widget_id}").status_code == 404
