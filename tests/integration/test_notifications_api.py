"""The notification API (/api/v1) and the public unsubscribe page (/u/{token})."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tally.api.app import create_app
from tally.api.notifications import public_router, router
from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.engine import unit_of_work
from tally.notifications import service
from tally.notifications.handlers import register
from tally.notifications.orm import EmailMessage, MailSettings, StoredEmailTemplate
from tally.notifications.templates import EmailType, default_template
from tally.notifications.unsubscribe import make_token
from tally.outbox.registry import Registry
from tally.state import AppState
from tests.support.factories import make_customer, make_merchant


def with_notification_routes(app: FastAPI) -> FastAPI:
    """Add the routers unless the application already includes them."""
    paths = {getattr(route, "path", None) for route in app.routes}
    if "/u/{token}" not in paths:
        app.include_router(router)
        app.include_router(public_router)
    return app


@pytest.fixture
def api(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    """A client for the application with the notification routes."""
    app = with_notification_routes(
        create_app(settings, AppState(settings=settings, session_factory=session_factory))
    )
    with TestClient(app, raise_server_exceptions=True) as client:
        yield client


def _customer(factory: sessionmaker[Session], customer_id: int) -> Customer:
    with factory() as session:
        customer = session.get(Customer, customer_id)
        assert customer is not None
        return customer


def _count(factory: sessionmaker[Session], model: type) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def _token(settings: Settings, merchant_id: int, customer_id: int) -> str:
    return make_token(settings.secret_key.get_secret_value(), merchant_id, customer_id)


def test_templates_list_get_put_switch_and_reset(
    api: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    listed = api.get("/api/v1/email-templates", headers=m.headers)
    assert listed.status_code == 200
    assert [t["email_type"] for t in listed.json()] == [t.value for t in EmailType]
    assert {(t["enabled"], t["customized"]) for t in listed.json()} == {(True, False)}

    got = api.get("/api/v1/email-templates/points_earned", headers=m.headers).json()
    default = default_template(EmailType.POINTS_EARNED)
    assert (got["subject"], got["text_body"], got["customized"]) == (
        default.subject,
        default.text_body,
        False,
    )
    assert sorted(got["variables"]) == sorted(
        service.template_variable_docs(EmailType.POINTS_EARNED)
    )

    body = {
        "subject": "{{ points }} points!",
        "html_body": "<p>{{ points }}</p>",
        "text_body": "{{ points }}",
    }
    put = api.put("/api/v1/email-templates/points_earned", json=body, headers=m.headers)
    assert put.status_code == 200, put.text
    assert (put.json()["subject"], put.json()["customized"], put.json()["enabled"]) == (
        "{{ points }} points!",
        True,
        True,
    )
    off = api.patch(
        "/api/v1/email-templates/points_earned", json={"enabled": False}, headers=m.headers
    )
    assert (off.json()["enabled"], off.json()["subject"]) == (False, "{{ points }} points!")
    reset = api.delete("/api/v1/email-templates/points_earned", headers=m.headers)
    assert (reset.json()["subject"], reset.json()["customized"], reset.json()["enabled"]) == (
        default.subject,
        False,
        False,
    )


def test_put_refuses_a_broken_template_with_the_line_and_changes_nothing(
    api: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    body = {
        "subject": "Hello",
        "html_body": "<p>Hi {{ customer_first_name }}</p>\n<p>{{ customer_nmae }}</p>",
        "text_body": "Hi\n{% if points %}you have points",
    }
    r = api.put("/api/v1/email-templates/points_earned", json=body, headers=m.headers)
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"] == [
        {
            "field": "html_body",
            "message": "line 2: unknown variable 'customer_nmae' (did you mean 'customer_name'?)",
        },
        {
            "field": "text_body",
            "message": "line 2: Unexpected end of template. Jinja was looking for the following "
            "tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be closed "
            "is 'if'.",
        },
    ]
    assert _count(session_factory, StoredEmailTemplate) == 0
    got = api.get("/api/v1/email-templates/points_earned", headers=m.headers).json()
    assert got["customized"] is False

    unknown = api.put("/api/v1/email-templates/birthday", json=body, headers=m.headers)
    assert unknown.status_code == 404
    assert unknown.json()["detail"].startswith("there is no email type 'birthday'")
    assert api.get("/api/v1/email-templates/points_earned").status_code == 401


def test_preview_for_a_customer_a_sample_and_a_draft(
    api: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory, "Harbour Books")
    cid = make_customer(session_factory, m.id, first_name="Ada", points=40)
    url = "/api/v1/email-templates/points_earned/preview"

    for_customer = api.post(url, json={"customer_id": cid}, headers=m.headers)
    assert for_customer.status_code == 200, for_customer.text
    assert for_customer.json()["subject"] == "You earned 150 points at Harbour Books"
    assert "Hi Ada," in for_customer.json()["text"]
    assert "bringing your balance to 40 points" in for_customer.json()["text"]
    assert "Hi Ada," in for_customer.json()["html"]

    sample = api.post(url, json={}, headers=m.headers).json()
    assert sample["subject"] == "You earned 150 points at Harbour Books"
    assert "Hi Alex," in sample["text"]

    draft = {
        "subject": "Hey {{ customer_first_name }}",
        "html_body": "<b>hi</b>",
        "text_body": "hi",
    }
    drafted = api.post(url, json={**draft, "customer_id": cid}, headers=m.headers).json()
    assert (drafted["subject"], drafted["html"], drafted["text"]) == ("Hey Ada", "<b>hi</b>", "hi")

    # Only the subject drafted: the other parts come from the stored template.
    subject_only = api.post(url, json={"subject": "Hi {{ store_name }}"}, headers=m.headers)
    assert subject_only.json()["subject"] == "Hi Harbour Books"
    assert "Hi Alex," in subject_only.json()["text"]

    broken = api.post(url, json={**draft, "text_body": "{{ nope }}"}, headers=m.headers)
    assert broken.status_code == 422
    assert broken.json()["errors"] == [
        {"field": "text_body", "message": "line 1: 'nope' is undefined"}
    ]
    assert _count(session_factory, StoredEmailTemplate) == 0


def test_a_merchant_cannot_preview_or_unsubscribe_another_merchants_customer(
    api: TestClient, session_factory: sessionmaker[Session]
) -> None:
    a, b = make_merchant(session_factory), make_merchant(session_factory)
    cb = make_customer(session_factory, b.id)
    preview = api.post(
        "/api/v1/email-templates/points_earned/preview",
        json={"customer_id": cb},
        headers=a.headers,
    )
    assert preview.status_code == 404
    assert preview.json()["detail"] == f"customer {cb} does not exist"
    for action in ("unsubscribe", "resubscribe"):
        r = api.post(f"/api/v1/customers/{cb}/{action}", headers=a.headers)
        assert r.status_code == 404
    assert _customer(session_factory, cb).unsubscribed_at is None
    assert api.get("/api/v1/emails", headers=a.headers).json()["total"] == 0


def test_unsubscribe_and_resubscribe_through_the_api(
    api: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    r = api.post(f"/api/v1/customers/{cid}/unsubscribe", headers=m.headers)
    assert r.status_code == 200
    assert (r.json()["customer_id"], r.json()["subscribed"]) == (cid, False)
    unsubscribed_at = _customer(session_factory, cid).unsubscribed_at
    assert unsubscribed_at is not None
    assert r.json()["unsubscribed_at"] is not None
    again = api.post(f"/api/v1/customers/{cid}/unsubscribe", headers=m.headers)
    assert again.status_code == 200
    assert _customer(session_factory, cid).unsubscribed_at == unsubscribed_at

    back = api.post(f"/api/v1/customers/{cid}/resubscribe", headers=m.headers)
    assert back.json() == {"customer_id": cid, "subscribed": True, "unsubscribed_at": None}
    assert _customer(session_factory, cid).unsubscribed_at is None


def test_mail_log_lists_pages_and_filters(
    api: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    unsubscribed = make_customer(session_factory, m.id)
    registry = Registry()
    register(registry)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        service.unsubscribe(session, merchant_id=m.id, customer_id=unsubscribed)
        for key, customer in (("a", cid), ("b", unsubscribed), ("c", cid)):
            service.queue_email(
                session,
                merchant_id=m.id,
                customer_id=customer,
                email_type="points_earned",
                variables={"points": 5},
                dedupe_key=key,
                registry=registry,
            )
    page = api.get("/api/v1/emails", params={"limit": 2}, headers=m.headers).json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    assert [(e["status"], e["customer_id"]) for e in page["items"]] == [
        ("queued", cid),
        ("suppressed", unsubscribed),
    ]
    suppressed = api.get("/api/v1/emails", params={"status": "suppressed"}, headers=m.headers)
    [item] = suppressed.json()["items"]
    assert (item["last_error"], item["subject"], item["attempts"]) == (
        "the customer unsubscribed",
        None,
        0,
    )
    bad = api.get("/api/v1/emails", params={"status": "lost"}, headers=m.headers)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "status"


def test_unsubscribe_page_asks_and_a_one_click_post_unsubscribes(
    api: TestClient, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory, "Harbour <Books>")
    cid = make_customer(session_factory, m.id, email="zoe@example.org")
    token = _token(settings, m.id, cid)

    page = api.get(f"/u/{token}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert f'<form method="post" action="/u/{token}">' in page.text
    assert "Harbour &lt;Books&gt;" in page.text
    assert "z***@example.org" in page.text
    assert "zoe@example.org" not in page.text
    # Looking at the page (or a link scanner fetching it) changes nothing.
    assert _customer(session_factory, cid).unsubscribed_at is None

    done = api.post(
        f"/u/{token}",
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200
    assert "You&#x27;re unsubscribed" in done.text
    assert _customer(session_factory, cid).unsubscribed_at is not None
    assert "You&#x27;re unsubscribed" in api.get(f"/u/{token}").text
    # The page's own button posts an empty form; that works too (and changes nothing now).
    assert api.post(f"/u/{token}").status_code == 200


def test_invalid_unsubscribe_links_are_404_and_change_nothing(
    api: TestClient, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    other = make_customer(session_factory, m.id)
    token = _token(settings, m.id, cid)
    forged = f"{m.id}.{other}.{token.rsplit('.', 1)[1]}"
    for bad in (forged, "nonsense", _token(settings, m.id, 999_999), token[:-1] + "A"):
        for method in ("GET", "POST"):
            r = api.request(method, f"/u/{bad}", content="List-Unsubscribe=One-Click")
            assert r.status_code == 404, (bad, method)
            assert r.json()["detail"] == "this unsubscribe link is not valid"
    assert _customer(session_factory, cid).unsubscribed_at is None
    assert _customer(session_factory, other).unsubscribed_at is None


def test_mail_settings_api_never_shows_the_password(
    api: TestClient, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    assert api.get("/api/v1/mail-settings", headers=m.headers).json()["configured"] is False
    body = {
        "host": "smtp.shop.example",
        "port": 587,
        "security": "starttls",
        "username": "shop",
        "password": "hunter2-hunter2",
        "sender": "Shop <hi@shop.example>",
    }
    saved = api.put("/api/v1/mail-settings", json=body, headers=m.headers)
    assert saved.status_code == 200, saved.text
    assert "hunter2" not in saved.text
    assert (saved.json()["password_set"], saved.json()["host"]) == (True, "smtp.shop.example")
    with session_factory() as session:
        row = session.scalar(select(MailSettings))
        assert row is not None
        assert row.password_encrypted is not None
        stored = row.password_encrypted
        assert "hunter2" not in stored

    refused = api.put("/api/v1/mail-settings", json={**body, "port": 70000}, headers=m.headers)
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["port"]
    assert api.get("/api/v1/mail-settings", headers=m.headers).json()["port"] == 587
    without_password = {k: v for k, v in body.items() if k != "password"}
    kept = api.put(
        "/api/v1/mail-settings", json={**without_password, "port": 2525}, headers=m.headers
    )
    assert (kept.json()["port"], kept.json()["password_set"]) == (2525, True)
    with session_factory() as session:
        row = session.scalar(select(MailSettings))
        assert row is not None
        assert (row.port, row.password_encrypted) == (2525, stored)

    assert api.delete("/api/v1/mail-settings", headers=m.headers).status_code == 204
    assert _count(session_factory, MailSettings) == 0
    assert _count(session_factory, EmailMessage) == 0
