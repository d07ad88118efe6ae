"""Admin sessions end on sign-out, password change and removal; sign-ins are limited per address
and per email, before any password is checked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from tally.admin import auth
from tally.admin.security import SESSION_COOKIE
from tally.config import Settings
from tally.db.engine import unit_of_work
from tally.merchants.orm import AdminUser
from tests.integration.test_admin_pages import (
    PASSWORD,
    Store,
    admin_app,
    csrf_of,
    make_store,
    sign_in,
    token,
)
from tests.support.factories import make_merchant


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    return admin_app(settings, session_factory)


@pytest.fixture
def store(session_factory: sessionmaker[Session]) -> Store:
    return make_store(session_factory, "owner@shop.example")


@pytest.fixture
def password_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The emails whose password the login form had checked (argon2 ran)."""
    checked: list[str] = []
    real = auth.authenticate_admin

    def counting(session: Session, *, email: str, password: str) -> AdminUser | None:
        checked.append(email)
        return real(session, email=email, password=password)

    monkeypatch.setattr(auth, "authenticate_admin", counting)
    return checked


def browser(app: FastAPI, address: str = "198.51.100.1") -> TestClient:
    return TestClient(app, client=(address, 50000))


@pytest.fixture
def signed_in(app: FastAPI, store: Store) -> Iterator[TestClient]:
    with browser(app) as client:
        assert sign_in(client, store.email) == (303, "/admin")
        yield client


def copy_of(app: FastAPI, client: TestClient, address: str = "198.51.100.2") -> TestClient:
    """Another browser holding the same session cookie (a copied or stolen cookie)."""
    other = browser(app, address)
    other.cookies.set(SESSION_COOKIE, client.cookies[SESSION_COOKIE], path="/admin")
    return other


def session_version(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.scalars(select(AdminUser.session_version)).one())


# --------------------------------------------------------------------------- ending sessions


def test_sign_out_ends_copies_of_the_cookie_too(
    app: FastAPI, signed_in: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with copy_of(app, signed_in) as copy:
        assert copy.get("/admin", follow_redirects=False).status_code == 200

        response = signed_in.post(
            "/admin/logout", data={"csrf_token": token(signed_in)}, follow_redirects=False
        )

        assert response.status_code == 303
        assert copy.get("/admin", follow_redirects=False).status_code == 303
        # The dead cookie gets the sign-in form (not a redirect loop) and a fresh cookie.
        form = copy.get("/admin/login", follow_redirects=False)
        assert form.status_code == 200
        assert copy.get("/admin", follow_redirects=False).status_code == 303
    assert session_version(session_factory) == 1


def test_sign_out_ends_the_users_other_sessions(
    app: FastAPI, signed_in: TestClient, store: Store
) -> None:
    with browser(app, "198.51.100.3") as laptop:
        assert sign_in(laptop, store.email) == (303, "/admin")

        signed_in.post("/admin/logout", data={"csrf_token": token(signed_in)})

        assert laptop.get("/admin", follow_redirects=False).status_code == 303


def test_signing_in_again_after_sign_out_works(
    app: FastAPI, signed_in: TestClient, store: Store
) -> None:
    signed_in.post("/admin/logout", data={"csrf_token": token(signed_in)})

    assert sign_in(signed_in, store.email) == (303, "/admin")
    assert signed_in.get("/admin", follow_redirects=False).status_code == 200


def test_an_ended_cookie_cannot_sign_out_newer_sessions(
    app: FastAPI, signed_in: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    old_cookie = signed_in.cookies[SESSION_COOKIE]
    old_token = token(signed_in)
    signed_in.post("/admin/logout", data={"csrf_token": old_token})
    with browser(app, "198.51.100.3") as fresh:
        assert sign_in(fresh, store.email) == (303, "/admin")
        with browser(app, "198.51.100.4") as replay:
            replay.cookies.set(SESSION_COOKIE, old_cookie, path="/admin")
            replay.post("/admin/logout", data={"csrf_token": old_token}, follow_redirects=False)

        assert fresh.get("/admin", follow_redirects=False).status_code == 200
    assert session_version(session_factory) == 1


def test_other_users_sessions_survive_a_sign_out(
    app: FastAPI, signed_in: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    colleague = make_store(session_factory, "colleague@shop.example")
    with browser(app, "198.51.100.5") as other:
        assert sign_in(other, colleague.email) == (303, "/admin")

        signed_in.post("/admin/logout", data={"csrf_token": token(signed_in)})

        assert other.get("/admin", follow_redirects=False).status_code == 200


def test_a_password_change_ends_copies_of_the_cookie(
    app: FastAPI, signed_in: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with copy_of(app, signed_in) as copy:
        with unit_of_work(session_factory) as session:
            user = session.scalars(select(AdminUser)).one()
            user.password_hash = "$argon2id$v=19$m=65536,t=3,p=4$changed$changed"

        assert copy.get("/admin", follow_redirects=False).status_code == 303
        assert signed_in.get("/admin", follow_redirects=False).status_code == 303


def test_a_removed_users_cookie_is_refused(
    app: FastAPI, signed_in: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with unit_of_work(session_factory) as session:
        session.execute(delete(AdminUser))

    assert signed_in.get("/admin", follow_redirects=False).status_code == 303
    assert signed_in.get("/admin/login", follow_redirects=False).status_code == 200
    response = signed_in.post(
        "/admin/logout", data={"csrf_token": token(signed_in, "/admin/login")}
    )
    assert response.status_code == 200


def test_a_user_moved_to_another_merchant_is_signed_out(
    app: FastAPI, signed_in: TestClient, session_factory: sessionmaker[Session]
) -> None:
    other = make_merchant(session_factory)
    with unit_of_work(session_factory) as session:
        session.scalars(select(AdminUser)).one().merchant_id = other.id

    assert signed_in.get("/admin", follow_redirects=False).status_code == 303


# --------------------------------------------------------------------------- the login limits


WRONG = "wrong password"


def attempt(client: TestClient, email: str, password: str = WRONG) -> int:
    html = client.get("/admin/login").text
    return client.post(
        "/admin/login",
        data={"email": email, "password": password, "csrf_token": csrf_of(html)},
        follow_redirects=False,
    ).status_code


def test_one_address_trying_many_emails_is_stopped_before_any_password_check(
    app: FastAPI, store: Store, password_checks: list[str]
) -> None:
    with browser(app, "203.0.113.10") as sprayer:
        statuses = [attempt(sprayer, f"user{n}@shop.example") for n in range(12)]
        refused = sprayer.post(
            "/admin/login",
            data={
                "email": store.email,
                "password": PASSWORD,
                "csrf_token": csrf_of(sprayer.get("/admin/login").text),
            },
            follow_redirects=False,
        )
    with browser(app, "203.0.113.11") as elsewhere:
        allowed = attempt(elsewhere, store.email, PASSWORD)

    assert statuses == [401] * 10 + [429] * 2
    assert refused.status_code == 429
    assert 15 * 60 - 60 < int(refused.headers["retry-after"]) <= 15 * 60
    assert "Too many failed sign-ins" in refused.text
    # The refused attempts never reached argon2; the right password from elsewhere did.
    assert password_checks == [f"user{n}@shop.example" for n in range(10)] + [store.email]
    assert allowed == 303


def test_one_email_tried_from_rotating_addresses_is_locked(
    app: FastAPI, store: Store, password_checks: list[str]
) -> None:
    statuses = []
    for n in range(30):
        with browser(app, f"203.0.113.{100 + n}") as guesser:
            statuses.append(attempt(guesser, store.email))
    with browser(app, "203.0.113.200") as owner:
        # Even the right password waits out the window: it is not checked at all.
        locked = attempt(owner, store.email, PASSWORD)
        other_email = attempt(owner, "colleague@shop.example")

    assert statuses == [401] * 5 + [429] * 25
    assert locked == 429
    assert other_email == 401
    assert password_checks == [store.email] * 5 + ["colleague@shop.example"]


def test_forwarded_for_does_not_change_the_address_counted(
    app: FastAPI, store: Store, password_checks: list[str]
) -> None:
    # The ASGI app sees the peer address; only `tally serve` with TALLY_TRUSTED_PROXIES would
    # replace it from the header (tested in test_admin_security).
    statuses = []
    with browser(app, "203.0.113.50") as client:
        for n in range(11):
            html = client.get("/admin/login").text
            statuses.append(
                client.post(
                    "/admin/login",
                    data={
                        "email": f"user{n}@shop.example",
                        "password": WRONG,
                        "csrf_token": csrf_of(html),
                    },
                    headers={"X-Forwarded-For": f"192.0.2.{n}"},
                    follow_redirects=False,
                ).status_code
            )

    assert statuses == [401] * 10 + [429]
    assert len(password_checks) == 10


def test_a_right_password_clears_the_emails_failures(
    app: FastAPI, store: Store, password_checks: list[str]
) -> None:
    with browser(app) as client:
        for _ in range(4):
            assert attempt(client, store.email) == 401
        assert attempt(client, store.email, PASSWORD) == 303
        client.post("/admin/logout", data={"csrf_token": token(client)})
        statuses = [attempt(client, store.email) for _ in range(6)]

    # The email starts again from zero; the address's 4 + 5 failures stay under its 10.
    assert statuses == [401] * 5 + [429]
    assert len(password_checks) == 4 + 1 + 5
