"""The Team page, set-password links and "Forgot password?" through the admin's HTTP interface."""

from __future__ import annotations

import re
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.db.engine import unit_of_work
from tally.merchants import team
from tally.merchants.orm import AdminUser, Merchant
from tally.outbox.orm import OutboxMessage
from tally.outbox.worker import Worker
from tests.integration.test_admin_pages import (
    PASSWORD,
    Store,
    admin_app,
    csrf_of,
    make_store,
    sign_in,
    token,
)

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    return admin_app(settings, session_factory)


@pytest.fixture
def store(session_factory: sessionmaker[Session]) -> Store:
    return make_store(session_factory, "owner@shop.example")


@pytest.fixture
def owner(app: FastAPI, store: Store) -> TestClient:
    client = TestClient(app, client=("198.51.100.1", 5000))
    assert sign_in(client, store.email) == (303, "/admin")
    return client


def members(factory: sessionmaker[Session]) -> list[tuple[str, str, bool]]:
    with factory() as session:
        return [
            (u.email, u.role, team.is_invited(u))
            for u in session.scalars(select(AdminUser).order_by(AdminUser.email))
        ]


def user_id(factory: sessionmaker[Session], email: str) -> int:
    with factory() as session:
        return session.scalars(select(AdminUser.id).where(AdminUser.email == email)).one()


def invite(client: TestClient, email: str, role: str = "support") -> str:
    response = client.post(
        "/admin/team/invitations",
        data={"csrf_token": token(client, "/admin/team"), "email": email, "role": role},
    )
    assert response.status_code == 201, response.text
    found = re.search(r'data-testid="invitation-link">([^<]+)<', response.text)
    assert found is not None
    return found.group(1)


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


def choose_password(
    client: TestClient, link: str, password: str = NEW_PASSWORD, confirmation: str | None = None
) -> tuple[int, str]:
    page = client.get(urlsplit(link).path + "?" + urlsplit(link).query)
    assert page.status_code == 200, page.text
    response = client.post(
        "/admin/set-password",
        data={
            "csrf_token": csrf_of(page.text),
            "token": token_of(link),
            "password": password,
            "confirmation": password if confirmation is None else confirmation,
        },
        follow_redirects=False,
    )
    return response.status_code, response.headers.get("location", response.text)


def delivered(settings: Settings, factory: sessionmaker[Session]) -> list[EmailMessage]:
    """Run the worker once; the emails it wrote (no SMTP server configured: .eml files)."""
    Worker(settings=settings, session_factory=factory).drain()
    messages = []
    for path in sorted(Path(settings.mail_dir).glob("*.eml")):
        parsed = message_from_bytes(path.read_bytes(), policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        messages.append(parsed)
    return messages


def link_in(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    found = re.search(r"(http://tally\.test/admin/set-password\?token=\S+)", body.get_content())
    assert found is not None
    return found.group(1)


def store_name(factory: sessionmaker[Session]) -> str:
    with factory() as session:
        return session.scalars(select(Merchant.name)).one()


def choose_password_again(client: TestClient, link: str) -> int:
    return client.get(f"/admin/set-password?token={token_of(link)}").status_code


# --------------------------------------------------------------------------- inviting


def test_an_owner_invites_a_member_who_sets_a_password_and_signs_in(
    app: FastAPI,
    owner: TestClient,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    shown = invite(owner, "Sam@Shop.example", "support")

    assert members(session_factory) == [
        ("owner@shop.example", "owner", False),
        ("sam@shop.example", "support", True),
    ]
    page = owner.get("/admin/team").text
    assert "Invited" in page
    assert shown not in page  # the link is shown once
    emails = delivered(settings, session_factory)
    assert [(m["To"], m["Subject"]) for m in emails] == [
        (
            "sam@shop.example",
            f"You are invited to the loyalty admin of {store_name(session_factory)}",
        )
    ]
    emailed = link_in(emails[0])
    with TestClient(app, client=("198.51.100.7", 5000)) as sam:
        assert sign_in(sam, "sam@shop.example", "")[0] == 401
        assert choose_password(sam, emailed) == (303, "/admin/login?done=password-set")
        assert "Your password is set" in sam.get("/admin/login?done=password-set").text
        assert sign_in(sam, "sam@shop.example", NEW_PASSWORD) == (303, "/admin")
        assert sam.get("/admin", follow_redirects=False).headers["location"] == "/admin/customers"
    # Both links were for one password: the one shown on the page is used up too.
    with TestClient(app) as other:
        assert other.get(f"/admin/set-password?token={token_of(shown)}").status_code == 400
    assert members(session_factory)[1] == ("sam@shop.example", "support", False)


def test_a_refused_invitation_says_why_and_adds_nobody(
    owner: TestClient, session_factory: sessionmaker[Session]
) -> None:
    csrf = token(owner, "/admin/team")
    bad_email = owner.post(
        "/admin/team/invitations", data={"csrf_token": csrf, "email": "nope", "role": "support"}
    )
    bad_role = owner.post(
        "/admin/team/invitations",
        data={"csrf_token": csrf, "email": "sam@shop.example", "role": "boss"},
    )
    taken = owner.post(
        "/admin/team/invitations",
        data={"csrf_token": csrf, "email": "OWNER@shop.example", "role": "support"},
    )

    assert (bad_email.status_code, bad_role.status_code, taken.status_code) == (422, 422, 409)
    assert 'aria-invalid="true"' in bad_email.text
    assert "must be one of owner, manager, support" in bad_role.text
    assert "already has an admin account" in taken.text
    assert members(session_factory) == [("owner@shop.example", "owner", False)]
    with session_factory() as session:
        assert session.scalars(select(OutboxMessage)).all() == []


def test_a_new_link_for_an_invited_member_voids_the_old_one(
    app: FastAPI, owner: TestClient, session_factory: sessionmaker[Session]
) -> None:
    first = invite(owner, "sam@shop.example")
    sam = user_id(session_factory, "sam@shop.example")

    renewed = owner.post(
        f"/admin/team/{sam}/invitation", data={"csrf_token": token(owner, "/admin/team")}
    )

    assert renewed.status_code == 201
    second = re.search(r'data-testid="invitation-link">([^<]+)<', renewed.text)
    assert second is not None
    with TestClient(app) as browser:
        assert browser.get(f"/admin/set-password?token={token_of(first)}").status_code == 400
        assert choose_password(browser, second.group(1))[0] == 303


# --------------------------------------------------------------------------- roles and removal


def test_the_last_owner_can_be_neither_demoted_nor_removed(
    owner: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    me = user_id(session_factory, store.email)
    csrf = token(owner, "/admin/team")

    demoted = owner.post(f"/admin/team/{me}/role", data={"csrf_token": csrf, "role": "support"})
    removed = owner.post(f"/admin/team/{me}/remove", data={"csrf_token": csrf})

    assert (demoted.status_code, removed.status_code) == (409, 409)
    assert "only owner" in demoted.text
    assert "only owner" in removed.text
    assert members(session_factory) == [("owner@shop.example", "owner", False)]
    assert owner.get("/admin/team").status_code == 200


def test_a_removed_member_is_signed_out_at_once(
    app: FastAPI, owner: TestClient, session_factory: sessionmaker[Session]
) -> None:
    link = invite(owner, "sam@shop.example", "manager")
    with TestClient(app, client=("198.51.100.9", 5000)) as sam:
        choose_password(sam, link)
        assert sign_in(sam, "sam@shop.example", NEW_PASSWORD) == (303, "/admin")
        assert sam.get("/admin", follow_redirects=False).status_code == 200

        removed = owner.post(
            f"/admin/team/{user_id(session_factory, 'sam@shop.example')}/remove",
            data={"csrf_token": token(owner, "/admin/team")},
            follow_redirects=False,
        )

        assert removed.headers["location"] == "/admin/team?done=member-removed"
        assert sam.get("/admin", follow_redirects=False).status_code == 303
        assert sign_in(sam, "sam@shop.example", NEW_PASSWORD)[0] == 401
    assert members(session_factory) == [("owner@shop.example", "owner", False)]


def test_another_merchants_member_is_not_found(
    owner: TestClient, session_factory: sessionmaker[Session]
) -> None:
    other = make_store(session_factory, "them@other.example")
    theirs = user_id(session_factory, other.email)
    csrf = token(owner, "/admin/team")

    changed = owner.post(f"/admin/team/{theirs}/role", data={"csrf_token": csrf, "role": "support"})
    removed = owner.post(f"/admin/team/{theirs}/remove", data={"csrf_token": csrf})

    assert (changed.status_code, removed.status_code) == (404, 404)
    assert ("them@other.example", "owner", False) in members(session_factory)


# --------------------------------------------------------------------------- set-password links


def test_a_password_set_from_a_reset_link_ends_every_session(
    app: FastAPI, owner: TestClient, store: Store, settings: Settings
) -> None:
    with TestClient(app) as anonymous:
        csrf = csrf_of(anonymous.get("/admin/forgot-password").text)
        anonymous.post("/admin/forgot-password", data={"csrf_token": csrf, "email": store.email})
    factory = app.state.tally.session_factory
    link = link_in(delivered(settings, factory)[0])
    assert owner.get("/admin", follow_redirects=False).status_code == 200

    with TestClient(app) as browser:
        assert choose_password(browser, link) == (303, "/admin/login?done=password-set")
        assert choose_password_again(browser, link) == 400

    assert owner.get("/admin", follow_redirects=False).status_code == 303
    with TestClient(app) as browser:
        assert sign_in(browser, store.email, PASSWORD)[0] == 401
        assert sign_in(browser, store.email, NEW_PASSWORD) == (303, "/admin")


def test_a_bad_new_password_is_refused_and_the_link_still_works(
    app: FastAPI, owner: TestClient, session_factory: sessionmaker[Session]
) -> None:
    link = invite(owner, "sam@shop.example")
    with TestClient(app) as sam:
        short = choose_password(sam, link, "short")
        mismatch = choose_password(sam, link, NEW_PASSWORD, "something else entirely")
        assert short[0] == 422
        assert "at least 10 characters" in short[1]
        assert mismatch[0] == 422
        assert "same password again" in mismatch[1]
        assert members(session_factory)[1] == ("sam@shop.example", "support", True)
        assert choose_password(sam, link)[0] == 303


def test_a_tampered_or_missing_token_shows_an_error_page(app: FastAPI, owner: TestClient) -> None:
    link = invite(owner, "sam@shop.example")
    tampered = token_of(link)[:-3] + "abc"
    with TestClient(app) as browser:
        for url in (
            "/admin/set-password",
            "/admin/set-password?token=",
            f"/admin/set-password?token={tampered}",
        ):
            page = browser.get(url)
            assert page.status_code == 400
            assert "This link is not valid" in page.text
        csrf = csrf_of(browser.get("/admin/login").text)
        posted = browser.post(
            "/admin/set-password",
            data={
                "csrf_token": csrf,
                "token": tampered,
                "password": NEW_PASSWORD,
                "confirmation": NEW_PASSWORD,
            },
        )
        assert posted.status_code == 400


# --------------------------------------------------------------------------- forgot password


def _forgot(client: TestClient, email: str) -> tuple[int, str]:
    csrf = csrf_of(client.get("/admin/forgot-password").text)
    response = client.post("/admin/forgot-password", data={"csrf_token": csrf, "email": email})
    return response.status_code, response.text.replace(csrf, "CSRF")


def test_forgot_password_answers_the_same_whether_or_not_the_account_exists(
    app: FastAPI, store: Store, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with TestClient(app, client=("198.51.100.20", 5000)) as client:
        known = _forgot(client, store.email)
    with TestClient(app, client=("198.51.100.21", 5000)) as client:
        unknown = _forgot(client, "nobody@shop.example")

    assert known[0] == unknown[0] == 200
    assert known[1] == unknown[1]
    assert "If that address has an account" in known[1]
    emails = delivered(settings, session_factory)
    assert [m["To"] for m in emails] == [store.email]
    assert (
        "It works once, for 1 hour" in (emails[0].get_body(("plain",)) or emails[0]).get_content()
    )


def test_forgot_password_is_rate_limited_per_email_and_address(
    app: FastAPI, store: Store, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    statuses = []
    for number in range(4):
        with TestClient(app, client=(f"198.51.100.{30 + number}", 5000)) as client:
            statuses.append(_forgot(client, store.email)[0])
    with TestClient(app, client=("198.51.100.40", 5000)) as client:
        unknown = [_forgot(client, f"nobody{n}@shop.example")[0] for n in range(11)]

    assert statuses == [200, 200, 200, 429]
    assert unknown == [200] * 10 + [429]
    with session_factory() as session:
        assert len(session.scalars(select(OutboxMessage)).all()) == 3


def test_a_removed_members_queued_email_is_not_sent(
    owner: TestClient, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    invite(owner, "sam@shop.example")
    with unit_of_work(session_factory) as session:
        user = session.scalars(select(AdminUser).where(AdminUser.email == "sam@shop.example")).one()
        team.remove_member(session, merchant_id=user.merchant_id, user_id=user.id, actor="test")

    assert delivered(settings, session_factory) == []
