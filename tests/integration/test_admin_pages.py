"""Admin pages through the ASGI app: sign-in, CSRF, tenancy, adjustments and settings forms."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.routing import NoMatchFound

from tally.admin import router as admin_router
from tally.admin.dashboard import points_by_day
from tally.admin.security import SESSION_COOKIE
from tally.api.app import create_app
from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.engine import unit_of_work
from tally.imports import queue
from tally.ledger import service as ledger
from tally.ledger.orm import EntryKind, LedgerEntry
from tally.merchants import service as merchants
from tally.merchants.orm import AdminUser, ApiKey
from tally.program.config_service import load_program, program_history, update_program
from tally.state import AppState
from tests.support.factories import make_customer, make_merchant

PASSWORD = "correct horse battery"


def admin_app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    """The application with the admin router (included here until create_app includes it)."""
    app = create_app(settings, AppState(settings=settings, session_factory=session_factory))
    try:
        app.url_path_for("login_form")
    except NoMatchFound:
        app.include_router(admin_router)
    return app


@dataclass(frozen=True)
class Store:
    merchant_id: int
    email: str


def make_store(factory: sessionmaker[Session], email: str) -> Store:
    merchant = make_merchant(factory)
    with unit_of_work(factory) as session:
        merchants.create_admin_user(
            session, merchant_id=merchant.id, email=email, password=PASSWORD
        )
    return Store(merchant.id, email)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, "the page has no CSRF field"
    return found.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> tuple[int, str]:
    token = csrf_of(client.get("/admin/login").text)
    response = client.post(
        "/admin/login",
        data={"email": email, "password": password, "csrf_token": token, "next": "/admin"},
        follow_redirects=False,
    )
    return response.status_code, response.headers.get("location", "")


def token(client: TestClient, path: str = "/admin") -> str:
    return csrf_of(client.get(path).text)


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    return admin_app(settings, session_factory)


@pytest.fixture
def store(session_factory: sessionmaker[Session]) -> Store:
    return make_store(session_factory, "owner@shop.example")


@pytest.fixture
def client(app: FastAPI, store: Store) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        assert sign_in(test_client, store.email) == (303, "/admin")
        yield test_client


def balance(factory: sessionmaker[Session], customer_id: int) -> int:
    with factory() as session:
        return int(
            session.scalar(select(Customer.points_balance).where(Customer.id == customer_id))
        )


def entries(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count(LedgerEntry.id))) or 0)


# --------------------------------------------------------------------------- signing in


def test_pages_need_a_signed_in_admin(app: FastAPI) -> None:
    with TestClient(app) as anonymous:
        response = anonymous.get("/admin/customers?q=ada", follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login?next=%2Fadmin%2Fcustomers%3Fq%3Dada"


def test_the_session_cookie_is_signed_http_only_and_lax(app: FastAPI, store: Store) -> None:
    with TestClient(app) as browser:
        browser.get("/admin/login")
        token_value = csrf_of(browser.get("/admin/login").text)
        response = browser.post(
            "/admin/login",
            data={"email": store.email, "password": PASSWORD, "csrf_token": token_value},
            follow_redirects=False,
        )

    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/admin" in cookie
    assert "Secure" not in cookie
    assert response.headers["content-security-policy"].startswith("default-src 'self'")


def test_the_cookie_is_secure_when_served_over_https(
    settings: Settings, session_factory: sessionmaker[Session], store: Store
) -> None:
    https = settings.model_copy(update={"public_base_url": "https://loyalty.shop.example"})
    with TestClient(admin_app(https, session_factory)) as browser:
        response = browser.get("/admin/login")

    assert "Secure" in response.headers["set-cookie"]


def test_a_wrong_password_is_refused_and_nobody_is_signed_in(
    app: FastAPI, store: Store, session_factory: sessionmaker[Session]
) -> None:
    with TestClient(app) as browser:
        status, _ = sign_in(browser, store.email, "wrong password")
        after = browser.get("/admin", follow_redirects=False)

    assert status == 401
    assert after.status_code == 303
    with session_factory() as session:
        assert session.scalar(select(AdminUser.last_login_at)) is None


def test_sign_in_is_rate_limited_per_email_and_address(app: FastAPI, store: Store) -> None:
    with TestClient(app) as browser:
        for _ in range(5):
            assert sign_in(browser, store.email, "wrong password")[0] == 401
        blocked = sign_in(browser, store.email)
        page = browser.get("/admin", follow_redirects=False)
        other_email = sign_in(browser, "someone@else.example", "wrong password")

    assert blocked == (429, "")
    assert page.status_code == 303
    assert other_email[0] == 401


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/admin/customers?q=ada", "/admin/customers?q=ada"),
        ("https://evil.example/admin", "/admin"),
        ("//evil.example/admin", "/admin"),
        ("/admin/..//evil.example", "/admin"),
        ("/adminx", "/admin"),
    ],
)
def test_sign_in_returns_only_to_admin_pages(
    app: FastAPI, store: Store, target: str, expected: str
) -> None:
    with TestClient(app) as browser:
        token_value = csrf_of(browser.get("/admin/login").text)
        response = browser.post(
            "/admin/login",
            data={
                "email": store.email,
                "password": PASSWORD,
                "csrf_token": token_value,
                "next": target,
            },
            follow_redirects=False,
        )

    assert response.headers["location"] == expected


def test_an_unknown_admin_page_is_an_html_404(client: TestClient) -> None:
    response = client.get("/admin/no/such/page")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert client.get("/admin/", follow_redirects=False).headers["location"] == "/admin"


def test_sign_out_ends_the_session(client: TestClient) -> None:
    response = client.post(
        "/admin/logout", data={"csrf_token": token(client)}, follow_redirects=False
    )

    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login"
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_a_password_change_ends_existing_sessions(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with unit_of_work(session_factory) as session:
        user = session.scalars(select(AdminUser)).one()
        user.password_hash = "$argon2id$v=19$m=65536,t=3,p=4$changed$changed"

    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_a_tampered_cookie_is_not_a_session(app: FastAPI, client: TestClient) -> None:
    value = client.cookies[SESSION_COOKIE]
    with TestClient(app) as forger:
        forger.cookies.set(SESSION_COOKIE, value[:-3] + "AAA", path="/admin")
        response = forger.get("/admin", follow_redirects=False)

    assert response.status_code == 303


# --------------------------------------------------------------------------- CSRF and tenancy


def test_a_form_without_the_csrf_token_is_refused(
    client: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    customer_id = make_customer(session_factory, store.merchant_id, points=10)
    before = entries(session_factory)

    missing = client.post(
        f"/admin/customers/{customer_id}/adjustments", data={"points": "5", "reason": "x"}
    )
    wrong = client.post(
        f"/admin/customers/{customer_id}/adjustments",
        data={"points": "5", "reason": "x", "csrf_token": "not-the-token"},
    )

    assert missing.status_code == 403
    assert wrong.status_code == 403
    assert "security token" in missing.text
    assert balance(session_factory, customer_id) == 10
    assert entries(session_factory) == before


def test_htmx_sends_the_csrf_token_in_a_header(
    client: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    customer_id = make_customer(session_factory, store.merchant_id)

    response = client.post(
        f"/admin/customers/{customer_id}/adjustments",
        data={"points": "5", "reason": "header"},
        headers={"X-CSRF-Token": token(client), "HX-Request": "true"},
        follow_redirects=False,
    )

    assert response.status_code == 303
    assert balance(session_factory, customer_id) == 5


def test_another_merchants_customer_is_not_found(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    other = make_store(session_factory, "owner@other.example")
    theirs = make_customer(session_factory, other.merchant_id, points=40)
    before = entries(session_factory)

    page = client.get(f"/admin/customers/{theirs}")
    tab = client.get(
        f"/admin/customers/{theirs}/activity?tab=orders", headers={"HX-Request": "true"}
    )
    adjust = client.post(
        f"/admin/customers/{theirs}/adjustments",
        data={"points": "100", "reason": "steal", "csrf_token": token(client)},
    )
    listing = client.get("/admin/customers")

    assert page.status_code == 404
    assert tab.status_code == 404
    assert adjust.status_code == 404
    assert f"/admin/customers/{theirs}" not in listing.text
    assert balance(session_factory, theirs) == 40
    assert entries(session_factory) == before


# --------------------------------------------------------------------------- customers


def test_an_adjustment_moves_the_balance_once_per_form(
    client: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    customer_id = make_customer(session_factory, store.merchant_id, points=100)
    page = client.get(f"/admin/customers/{customer_id}").text
    key = re.search(r'name="adjust_key" value="([^"]+)"', page)
    assert key is not None
    form = {"points": "-30", "reason": "Damaged item", "adjust_key": key.group(1)}
    form["csrf_token"] = csrf_of(page)

    first = client.post(
        f"/admin/customers/{customer_id}/adjustments", data=form, follow_redirects=False
    )
    again = client.post(
        f"/admin/customers/{customer_id}/adjustments", data=form, follow_redirects=False
    )

    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == f"/admin/customers/{customer_id}?done=adjusted"
    assert balance(session_factory, customer_id) == 70
    shown = client.get(first.headers["location"]).text
    assert 'data-testid="balance">70<' in shown
    assert "Damaged item" in client.get(f"/admin/customers/{customer_id}?tab=spending").text


def test_an_adjustment_below_zero_is_refused(
    client: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    customer_id = make_customer(session_factory, store.merchant_id, points=10)
    before = entries(session_factory)

    response = client.post(
        f"/admin/customers/{customer_id}/adjustments",
        data={"points": "-11", "reason": "too much", "csrf_token": token(client)},
    )
    no_reason = client.post(
        f"/admin/customers/{customer_id}/adjustments",
        data={"points": "5", "reason": "", "csrf_token": token(client)},
    )

    assert response.status_code == 409
    assert "the customer has 10 points; 11 cannot be taken" in response.text
    assert no_reason.status_code == 422
    assert balance(session_factory, customer_id) == 10
    assert entries(session_factory) == before


def test_customers_are_searched_sorted_and_paged(
    client: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    for n in range(27):
        make_customer(session_factory, store.merchant_id, email=f"c{n:02d}@shop.example", points=n)
    make_customer(session_factory, store.merchant_id, email="ada@shop.example", first_name="Ada")

    found = client.get("/admin/customers?q=ADA")
    by_points = client.get("/admin/customers?sort=points&dir=desc")
    second = client.get("/admin/customers?sort=email&dir=asc&page=2")
    fragment = client.get(
        "/admin/customers?q=c0",
        headers={"HX-Request": "true", "HX-Target": "customer-results"},
    )

    assert "1 customer matching" in found.text
    assert "ada@shop.example" in found.text
    assert "c26@shop.example" in by_points.text.split("c25@shop.example")[0]
    assert "Page 2 of 2" in second.text
    assert "c25@shop.example" in second.text
    assert "c00@shop.example" not in second.text
    assert "<html" not in fragment.text
    assert "10 customers" in fragment.text


def test_the_dashboard_counts_members_and_points(
    client: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    make_customer(session_factory, store.merchant_id, points=120)
    make_customer(session_factory, store.merchant_id, points=30)

    page = client.get("/admin").text

    assert 'data-testid="members">2<' in page
    assert 'data-testid="issued">150<' in page
    assert 'data-testid="outstanding">150<' in page
    assert '"issued": [' in page or '"issued":[' in page


# --------------------------------------------------------------------------- program settings


def test_a_vip_tier_is_added_and_the_program_enabled(
    client: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    tier = client.post(
        "/admin/settings/vip/tiers",
        data={
            "form": "tier",
            "tier.name": "Gold",
            "tier.threshold": "100",
            "tier.multiplier": "1.5",
            "csrf_token": token(client),
        },
        follow_redirects=False,
    )
    program = client.post(
        "/admin/settings/vip",
        data={
            "form": "vip",
            "vip.enabled": "on",
            "vip.metric": "amount_spent",
            "vip.window_kind": "lifetime",
            "csrf_token": token(client),
        },
        follow_redirects=False,
    )

    assert tier.status_code == program.status_code == 303
    with session_factory() as session:
        _, settings = load_program(session, store.merchant_id)
    assert settings.vip.enabled
    assert [(t.id, t.name, str(t.threshold), str(t.multiplier)) for t in settings.vip.tiers] == [
        ("gold", "Gold", "100", "1.5")
    ]


def test_refused_settings_show_why_and_change_nothing(
    client: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        _, before = load_program(session, store.merchant_id)

    empty_vip = client.post(
        "/admin/settings/vip",
        data={"form": "vip", "vip.enabled": "on", "csrf_token": token(client)},
    )
    bad_points = client.post(
        "/admin/settings/earning",
        data={"form": "birthday", "birthday.points": "lots", "csrf_token": token(client)},
    )

    assert empty_vip.status_code == 422
    assert "needs at least one tier" in empty_vip.text
    assert bad_points.status_code == 422
    assert "enter a whole number" in bad_points.text
    assert 'value="lots"' in bad_points.text
    with session_factory() as session:
        _, after = load_program(session, store.merchant_id)
    assert after == before


def test_earning_rewards_referrals_and_expiry_are_saved(
    client: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    posts = [
        (
            "/admin/settings/earning",
            {
                "form": "place_order",
                "place_order.enabled": "on",
                "place_order.mode": "per_currency_unit",
                "place_order.points_per_unit": "2",
                "place_order.count_discounts": "on",
            },
        ),
        (
            "/admin/settings/earning/custom",
            {
                "form": "custom",
                "custom.name": "Write a review",
                "custom.points": "50",
                "custom.limit_count": "1",
                "custom.limit_period": "month",
            },
        ),
        (
            "/admin/settings/rewards",
            {
                "form": "reward",
                "reward.name": "$5 off",
                "reward.type": "fixed_amount",
                "reward.points_cost": "500",
                "reward.amount": "5",
            },
        ),
        (
            "/admin/settings/referrals",
            {
                "form": "referral",
                "referral.enabled": "on",
                "referral.sender_points": "200",
                "referral.receiver_points": "100",
            },
        ),
        (
            "/admin/settings/expiry",
            {
                "form": "expiry",
                "expiry.mode": "rolling",
                "expiry.days": "365",
                "expiry.reminder_days_before": "30",
            },
        ),
    ]
    for path, data in posts:
        response = client.post(
            path, data=data | {"csrf_token": token(client)}, follow_redirects=False
        )
        assert response.status_code == 303, (path, response.text[:2000])

    with session_factory() as session:
        _, settings = load_program(session, store.merchant_id)
    assert settings.place_order.enabled
    assert settings.place_order.points_per_unit == 2
    assert [
        (a.id, a.points, a.limit.max_count if a.limit else None) for a in settings.custom_actions
    ] == [("write_a_review", 50, 1)]
    assert [(r.id, r.points_cost) for r in settings.rewards] == [("5-off", 500)]
    assert (settings.referral.sender_points, settings.referral.receiver_points) == (200, 100)
    assert settings.expiry.mode == "rolling"
    assert settings.expiry.enabled_at is not None
    assert settings.version == 6
    with session_factory() as session:
        history = program_history(session, store.merchant_id)
    assert [(v.version, v.changed_by) for v in history][:5] == [
        (version, store.email) for version in (6, 5, 4, 3, 2)
    ]


def test_an_api_key_is_shown_once_and_can_be_revoked(
    client: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    created = client.post(
        "/admin/settings/api-keys", data={"name": "Shop app", "csrf_token": token(client)}
    )
    secret = re.search(r'data-testid="new-api-key">([^<]+)<', created.text)
    assert created.status_code == 201
    assert secret is not None
    with session_factory() as session:
        key = session.scalars(select(ApiKey).where(ApiKey.name == "Shop app")).one()
        assert merchants.resolve_api_key(session, secret.group(1)) == store.merchant_id

    listing = client.get("/admin/settings/api-keys")
    revoked = client.post(
        f"/admin/settings/api-keys/{key.id}/revoke",
        data={"csrf_token": token(client)},
        follow_redirects=False,
    )

    assert secret.group(1) not in listing.text
    assert revoked.status_code == 303
    with session_factory() as session:
        assert merchants.resolve_api_key(session, secret.group(1)) is None


def test_an_email_template_is_previewed_validated_and_saved(client: TestClient) -> None:
    form = {
        "subject": "You earned {{ points }} points",
        "html_body": "<p style='color:red'>Hi {{ customer_first_name }}</p>",
        "text_body": "Hi {{ customer_first_name }}",
        "enabled": "on",
    }
    preview = client.post(
        "/admin/settings/emails/points_earned/preview", data=form | {"csrf_token": token(client)}
    )
    broken = client.post(
        "/admin/settings/emails/points_earned",
        data=form | {"subject": "{{ nope }}", "csrf_token": token(client)},
    )
    saved = client.post(
        "/admin/settings/emails/points_earned",
        data=form | {"csrf_token": token(client)},
        follow_redirects=False,
    )

    assert preview.status_code == 200
    assert "You earned" in preview.text
    assert "frame-ancestors 'self'" in preview.headers["content-security-policy"]
    assert broken.status_code == 422
    assert "nope" in broken.text
    assert saved.status_code == 303
    assert (
        "You earned {{ points }} points" in client.get("/admin/settings/emails/points_earned").text
    )


def test_points_are_counted_per_day_in_the_merchants_time_zone(
    store: Store, session_factory: sessionmaker[Session]
) -> None:
    customer_id = make_customer(session_factory, store.merchant_id)
    with unit_of_work(session_factory, merchant_id=store.merchant_id) as session:
        merchant = merchants.get_merchant(session, store.merchant_id)
        merchant.timezone = "America/New_York"
        customer = session.get_one(Customer, customer_id)
        moves = [
            ("2026-01-08T12:00:00+00:00", 999, EntryKind.EARN),  # before the window
            ("2026-01-10T03:00:00+00:00", 100, EntryKind.EARN),  # 9 January in New York
            ("2026-01-10T15:00:00+00:00", 50, EntryKind.IMPORT),
            ("2026-01-10T16:00:00+00:00", -30, EntryKind.SPEND),
            ("2026-01-11T12:00:00+00:00", -20, EntryKind.EXPIRE),
        ]
        for n, (at, points, kind) in enumerate(moves):
            ledger.post(
                session,
                customer=customer,
                points=points,
                kind=kind,
                idempotency_key=f"day-test:{n}",
                created_at=datetime.fromisoformat(at),
            )

    with unit_of_work(session_factory, merchant_id=store.merchant_id) as session:
        days = points_by_day(
            session,
            store.merchant_id,
            ZoneInfo("America/New_York"),
            datetime(2026, 1, 11, 17, 0, tzinfo=UTC),
            days=3,
        )

    assert [(d.day.isoformat(), d.issued, d.redeemed, d.expired) for d in days] == [
        ("2026-01-09", 100, 0, 0),
        ("2026-01-10", 50, 30, 0),
        ("2026-01-11", 0, 0, 20),
    ]


# --------------------------------------------------------------------------- imports

CUSTOMERS_FILE = b"email,first_name,points\nana@example.com,Ana,500\nwei@example.com,Wei,80\n"


def apply_import(client: TestClient, kind: str, content: bytes, **options: str) -> str:
    """Upload, preview and apply a file; wait for the run and return its final fragment."""
    preview = client.post(
        f"/admin/imports/{kind}/preview",
        data={"csrf_token": token(client), **options},
        files={"file": ("upload.csv", content, "text/csv")},
    )
    assert preview.status_code == 200, preview.text[-3000:]
    job_id = re.search(r'name="job_id" value="(\d+)"', preview.text)
    assert job_id is not None
    applied = client.post(
        f"/admin/imports/{kind}/apply",
        data={"csrf_token": csrf_of(preview.text), "job_id": job_id.group(1)},
        follow_redirects=False,
    )
    assert applied.status_code == 303
    run_token = applied.headers["location"].rsplit("run=", 1)[1]
    # The tests run no background worker: run the queued import here, as a worker would.
    state = client.app.state.tally  # type: ignore[attr-defined]
    queue.work(state.settings, state.session_factory)
    for _ in range(300):
        fragment = client.get(
            f"/admin/imports/{kind}/runs/{run_token}", headers={"HX-Request": "true"}
        ).text
        if 'data-state="running"' not in fragment:
            return fragment
        time.sleep(0.1)
    raise AssertionError("the import did not finish")


def balances(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as session:
        return dict(session.execute(select(Customer.email, Customer.points_balance)).all())


def test_a_file_with_errors_is_previewed_and_not_applied(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    response = client.post(
        "/admin/imports/customers/preview",
        data={"csrf_token": token(client)},
        files={"file": ("bad.csv", b"email,points\nana@example.com,lots\n", "text/csv")},
    )

    assert response.status_code == 422
    assert "lots" in response.text
    assert 'name="job_id"' not in response.text
    assert balances(session_factory) == {}


def test_an_orders_preview_notes_what_the_program_leaves_out(
    client: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    with unit_of_work(session_factory, merchant_id=store.merchant_id) as session:
        update_program(
            session, merchant_id=store.merchant_id, changes={"place_order": {"enabled": False}}
        )
    response = client.post(
        "/admin/imports/orders/preview",
        data={"csrf_token": token(client)},
        files={
            "file": (
                "orders.csv",
                b"order_id,email,total,placed_at\nA1,ana@example.com,40.00,2025-01-05\n",
                "text/csv",
            )
        },
    )
    assert response.status_code == 200, response.text[-2000:]
    notes = re.findall(r'data-testid="preview-note">([^<]*)<', response.text)
    assert any("the place-order rule is off in the program" in note for note in notes), notes


def test_an_import_is_applied_and_reverted(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    done = apply_import(client, "customers", CUSTOMERS_FILE)

    assert 'data-state="completed"' in done
    assert balances(session_factory) == {"ana@example.com": 500, "wei@example.com": 80}
    page = client.get("/admin/imports/customers").text
    job_id = re.search(r'action="/admin/imports/jobs/(\d+)/revert"', page)
    assert job_id is not None

    reverted = client.post(
        f"/admin/imports/jobs/{job_id.group(1)}/revert",
        data={"csrf_token": token(client), "kind": "customers"},
        follow_redirects=False,
    )

    assert reverted.status_code == 303
    assert balances(session_factory) == {"ana@example.com": 0, "wei@example.com": 0}
    assert "Reverted" in client.get("/admin/imports/customers").text


def test_a_revert_is_refused_when_points_were_spent(
    client: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    apply_import(client, "customers", CUSTOMERS_FILE)
    with unit_of_work(session_factory, merchant_id=store.merchant_id) as session:
        ana = session.scalars(select(Customer).where(Customer.email == "ana@example.com")).one()
        ledger.adjust(session, customer=ana, points=-400, reason="spent", idempotency_key="spend")
    job_id = re.search(
        r'action="/admin/imports/jobs/(\d+)/revert"', client.get("/admin/imports/customers").text
    )
    assert job_id is not None

    refused = client.post(
        f"/admin/imports/jobs/{job_id.group(1)}/revert",
        data={"csrf_token": token(client), "kind": "customers"},
    )

    assert refused.status_code == 409
    assert "cannot be reverted" in refused.text
    assert balances(session_factory) == {"ana@example.com": 100, "wei@example.com": 80}


def test_another_merchants_import_cannot_be_reverted(
    client: TestClient, session_factory: sessionmaker[Session], app: FastAPI
) -> None:
    other = make_store(session_factory, "owner@other.example")
    with TestClient(app) as theirs:
        assert sign_in(theirs, other.email) == (303, "/admin")
        apply_import(theirs, "customers", CUSTOMERS_FILE)
        page = theirs.get("/admin/imports/customers").text
    job_id = re.search(r'action="/admin/imports/jobs/(\d+)/revert"', page)
    assert job_id is not None

    response = client.post(
        f"/admin/imports/jobs/{job_id.group(1)}/revert",
        data={"csrf_token": token(client), "kind": "customers"},
    )

    assert response.status_code == 404
    assert balances(session_factory) == {"ana@example.com": 500, "wei@example.com": 80}
    assert (
        f"/admin/imports/jobs/{job_id.group(1)}/revert"
        not in client.get("/admin/imports/customers").text
    )
