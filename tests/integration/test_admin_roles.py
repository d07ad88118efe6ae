"""Roles in the admin: every route declares a permission, and each role gets exactly its pages.

The walks below request every admin route there is (found from the application, not from a
list here), so a new page that forgets its permission fails them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tally.admin.permissions import requirements_of
from tally.admin.web import current_admin
from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.engine import unit_of_work
from tally.ledger.orm import LedgerEntry
from tally.merchants import service as merchants
from tally.merchants import team
from tally.merchants.orm import AdminUser, ApiKey, Merchant
from tally.outbox.orm import OutboxMessage
from tests.integration.test_admin_pages import PASSWORD, admin_app, sign_in, token
from tests.support.factories import make_customer, make_merchant

# Pages anyone may open: signing in and out, choosing a password, the static files.
PUBLIC = {
    ("GET", "/admin/login"),
    ("POST", "/admin/login"),
    ("POST", "/admin/logout"),
    ("GET", "/admin/static/{path}"),
    ("GET", "/admin/set-password"),
    ("POST", "/admin/set-password"),
    ("GET", "/admin/forgot-password"),
    ("POST", "/admin/forgot-password"),
}
# What support may do besides: the customers and their points. The dashboard sends it there.
SUPPORT_ALLOWED = {
    ("GET", "/admin/customers"),
    ("GET", "/admin/customers/{customer_id}"),
    ("GET", "/admin/customers/{customer_id}/activity"),
    ("POST", "/admin/customers/{customer_id}/adjustments"),
}
CATCH_ALL = ("GET", "/admin/{path}")


def admin_routes(app: FastAPI) -> list[tuple[str, str, Any]]:
    """Every admin route as (method, path template, route), as the application serves them."""
    found: list[Any] = []
    for route in app.routes:
        # FastAPI keeps included routers as such; their effective routes carry the
        # dependencies declared where the router was included.
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            found.extend(contexts())
        elif isinstance(route, APIRoute):
            found.append(route)
    routes = [
        (method, getattr(r, "path_format", getattr(r, "path", "")), r)
        for r in found
        for method in sorted(getattr(r, "methods", ()) or ())
    ]
    return sorted(
        (item for item in routes if item[1] == "/admin" or item[1].startswith("/admin/")),
        key=lambda item: (item[1], item[0]),
    )


def _calls(dependant: Any) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    return admin_app(settings, session_factory)


def test_every_admin_route_is_public_or_declares_a_permission(app: FastAPI) -> None:
    routes = admin_routes(app)
    assert len(routes) > 50
    undeclared, unchecked, public_but_signed_in = [], [], []
    for method, path, route in routes:
        uses_admin = current_admin in set(_calls(route.dependant))
        if (method, path) in PUBLIC:
            if uses_admin or requirements_of(route):
                public_but_signed_in.append((method, path))
            continue
        if not requirements_of(route):
            undeclared.append((method, path))
        if not uses_admin:
            unchecked.append((method, path))
    assert undeclared == []
    assert unchecked == []
    assert public_but_signed_in == []
    declared = {(m, p) for m, p, _ in routes}
    assert declared >= PUBLIC | SUPPORT_ALLOWED | {CATCH_ALL}


# --------------------------------------------------------------------------- walking every route


class World:
    """A merchant with an owner, a manager and a support member, and something of each kind."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory
        self.merchant_id = make_merchant(factory).id
        self.customer_id = make_customer(factory, self.merchant_id, points=100)
        with unit_of_work(factory) as session:
            for role in team.Role:
                merchants.create_admin_user(
                    session,
                    merchant_id=self.merchant_id,
                    email=f"{role}@shop.example",
                    password=PASSWORD,
                    role=role,
                )
            self.bystander_id = merchants.create_admin_user(
                session,
                merchant_id=self.merchant_id,
                email="bystander@shop.example",
                password=PASSWORD,
                role="support",
            ).id
            self.key_id = merchants.create_api_key(session, merchant_id=self.merchant_id).id

    def url(self, path: str) -> str:
        values = {
            "customer_id": self.customer_id,
            "key_id": self.key_id,
            "user_id": self.bystander_id,
            "kind": "customers",
            "section": "earning",
            "email_type": "points_earned",
            "job_id": 1,
            "message_id": 1,
            "token": "x",
            "path": "no-such-page",
        }
        return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: str(values.get(m.group(1), "x")), path)

    def snapshot(self) -> dict[str, Any]:
        with self.factory() as session:
            return {
                "users": sorted(
                    session.execute(
                        select(AdminUser.email, AdminUser.role, AdminUser.password_hash)
                    )
                ),
                "keys": sorted(session.execute(select(ApiKey.id, ApiKey.revoked_at))),
                "program": session.scalars(select(Merchant.program_settings)).all(),
                "entries": session.scalar(select(func.count(LedgerEntry.id))),
                "balance": session.scalar(select(Customer.points_balance)),
                # Other than the balance changes an adjustment announces.
                "outbox": session.scalars(
                    select(OutboxMessage.event_type)
                    .where(OutboxMessage.event_type != "PointsBalanceChanged")
                    .order_by(OutboxMessage.id)
                ).all(),
            }


@pytest.fixture
def world(session_factory: sessionmaker[Session]) -> World:
    return World(session_factory)


def walk(app: FastAPI, world: World, role: str) -> dict[tuple[str, str], int]:
    """Sign in with the role and request every signed-in admin route; the statuses."""
    statuses: dict[tuple[str, str], int] = {}
    with TestClient(app, client=(f"198.51.100.{list(team.Role).index(role) + 10}", 5000)) as client:
        assert sign_in(client, f"{role}@shop.example")[0] == 303
        csrf = token(client, "/admin/customers")
        for method, path, _ in admin_routes(app):
            if (method, path) in PUBLIC:
                continue
            url = world.url(path)
            if method == "GET":
                response = client.get(url, follow_redirects=False)
            else:
                response = client.post(
                    url,
                    data={"csrf_token": csrf, "points": "5", "reason": "walk", "role": "owner"},
                    follow_redirects=False,
                )
            statuses[(method, path)] = response.status_code
            if response.status_code == 403:
                assert "Not allowed" in response.text, (method, path)
                assert "declares no permission" not in response.text, (method, path)
    return statuses


def test_support_gets_403_on_every_page_but_customers(app: FastAPI, world: World) -> None:
    before = world.snapshot()

    statuses = walk(app, world, "support")

    refused = {route for route, status in statuses.items() if status == 403}
    others = {route: status for route, status in statuses.items() if status != 403}
    assert others == {
        ("GET", "/admin"): 303,  # to the customer list
        ("GET", "/admin/customers"): 200,
        ("GET", "/admin/customers/{customer_id}"): 200,
        ("GET", "/admin/customers/{customer_id}/activity"): 303,  # not htmx: to the profile
        ("POST", "/admin/customers/{customer_id}/adjustments"): 303,
        CATCH_ALL: 404,
    }
    assert refused == set(statuses) - set(others)
    after = world.snapshot()
    # The one change: the adjustment support may make.
    assert (after["balance"], after["entries"]) == (before["balance"] + 5, before["entries"] + 1)
    assert {k: v for k, v in after.items() if k not in {"balance", "entries"}} == {
        k: v for k, v in before.items() if k not in {"balance", "entries"}
    }


def test_a_manager_gets_403_only_on_the_team_api_keys_and_smtp_server(
    app: FastAPI, world: World
) -> None:
    before = world.snapshot()

    statuses = walk(app, world, "manager")

    refused = {route for route, status in statuses.items() if status == 403}
    assert refused == {
        ("GET", "/admin/settings/api-keys"),
        ("POST", "/admin/settings/api-keys"),
        ("POST", "/admin/settings/api-keys/{key_id}/revoke"),
        ("GET", "/admin/mail/smtp"),
        ("POST", "/admin/mail/smtp"),
        ("POST", "/admin/mail/smtp/remove"),
        ("POST", "/admin/mail/smtp/test"),
        ("GET", "/admin/team"),
        ("POST", "/admin/team/invitations"),
        ("POST", "/admin/team/{user_id}/invitation"),
        ("POST", "/admin/team/{user_id}/remove"),
        ("POST", "/admin/team/{user_id}/role"),
    }
    after = world.snapshot()
    assert (after["users"], after["keys"]) == (before["users"], before["keys"])


def test_an_owner_is_refused_nothing(app: FastAPI, world: World) -> None:
    statuses = walk(app, world, "owner")

    assert sorted(route for route, status in statuses.items() if status == 403) == []


# --------------------------------------------------------------------------- what each role sees


def nav_links(html: str) -> list[str]:
    nav = html.split('<nav class="sidebar"', 1)[1].split("</nav>", 1)[0]
    return re.findall(r'href="([^"]+)"', nav)


def test_the_navigation_shows_only_what_the_role_may_use(app: FastAPI, world: World) -> None:
    links = {}
    for role in team.Role:
        with TestClient(app) as client:
            sign_in(client, f"{role}@shop.example")
            links[role] = nav_links(client.get("/admin/customers").text)
    assert links[team.Role.SUPPORT] == ["/admin/customers"]
    assert "/admin/team" not in links[team.Role.MANAGER]
    assert "/admin/settings/api-keys" not in links[team.Role.MANAGER]
    assert {"/admin", "/admin/settings/earning", "/admin/imports/orders", "/admin/mail/log"} <= set(
        links[team.Role.MANAGER]
    )
    assert set(links[team.Role.OWNER]) == set(links[team.Role.MANAGER]) | {
        "/admin/team",
        "/admin/settings/api-keys",
        "/admin/mail/smtp",
    }


def test_a_role_change_applies_to_the_next_request(
    app: FastAPI, world: World, session_factory: sessionmaker[Session]
) -> None:
    with TestClient(app) as support, TestClient(app) as owner:
        sign_in(support, "support@shop.example")
        sign_in(owner, "owner@shop.example")
        assert support.get("/admin/settings/earning").status_code == 403
        with session_factory() as session:
            support_id = session.scalars(
                select(AdminUser.id).where(AdminUser.email == "support@shop.example")
            ).one()

        changed = owner.post(
            f"/admin/team/{support_id}/role",
            data={"csrf_token": token(owner), "role": "manager"},
            follow_redirects=False,
        )

        assert (changed.status_code, changed.headers["location"]) == (
            303,
            "/admin/team?done=role-changed",
        )
        assert support.get("/admin/settings/earning").status_code == 200
        owner.post(
            f"/admin/team/{support_id}/role", data={"csrf_token": token(owner), "role": "support"}
        )
        assert support.get("/admin/settings/earning").status_code == 403
