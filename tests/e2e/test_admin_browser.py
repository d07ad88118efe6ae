"""The admin UI in a real browser: Debian's Chromium, headless, driven by Playwright.

Every test records every request the pages make and asserts it went to the test server (no CDN,
no fonts, no trackers), and that no page logged an error (a Content-Security-Policy violation
shows up as one). Screenshots of each page go to test-artifacts/screenshots/.

Chromium comes from `scripts/chromium.sh` (apt). Without it these tests skip, except under CI.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.routing import NoMatchFound

from tally.admin import router as admin_router
from tally.api.app import create_app
from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.engine import unit_of_work
from tally.devtools.dotdigital_emulator import (
    DEMO_PASSWORD,
    DEMO_USERNAME,
    EmulatorAccount,
    EmulatorConfig,
    EmulatorServer,
)
from tally.integrations.dotdigital.handlers import register as register_dotdigital
from tally.integrations.dotdigital.sync import SyncOptions
from tally.merchants import service as merchants
from tally.outbox.registry import default_registry
from tally.outbox.worker import Worker
from tally.state import AppState
from tests.support.factories import MerchantFixture, make_customer, make_merchant
from tests.support.server import import_worker, serve_in_thread

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PASSWORD = "correct horse battery"
TIMEOUT_MS = 30_000
# expect() has its own 5 s default, too short for a page on two busy shared cores.
playwright_sync.expect.set_options(timeout=TIMEOUT_MS)
FAST_SYNC = SyncOptions(
    flush_every=timedelta(0),
    manual_every=timedelta(0),
    import_poll_seconds=0.05,
    client_timeout_seconds=5.0,
    run_seconds=5.0,
)
EXPECTED_STATUS_MESSAGE = "Failed to load resource: the server responded with a status of 4"


@pytest.fixture(scope="module")
def browser() -> Iterator[playwright_sync.Browser]:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: run scripts/chromium.sh"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with playwright_sync.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def admin_app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    """The application with the admin router (included here until create_app includes it)."""
    app = create_app(settings, AppState(settings=settings, session_factory=session_factory))
    try:
        app.url_path_for("login_form")
    except NoMatchFound:
        app.include_router(admin_router)
    return app


@pytest.fixture
def base_url(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[str]:
    with serve_in_thread(admin_app(settings, session_factory)) as url:
        settings.public_base_url = url
        yield url


@dataclass
class Visit:
    """A browser tab plus everything it asked for and complained about."""

    page: playwright_sync.Page
    base_url: str
    backend: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def go(self, path: str) -> playwright_sync.Response | None:
        return self.page.goto(self.base_url + path)

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{self.backend}-{name}.png"), full_page=True)

    def sign_in(self, email: str, password: str = PASSWORD) -> None:
        self.page.get_by_label("Email").fill(email)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()

    def assert_stayed_home(self) -> None:
        outside = [u for u in self.requests if not u.startswith(self.base_url + "/")]
        assert outside == []
        # Pages answered with 4xx on purpose are logged by the browser itself; anything else
        # (a script error, a blocked resource, a CSP violation) is a failure.
        problems = [e for e in self.errors if not e.startswith(EXPECTED_STATUS_MESSAGE)]
        assert problems == []


@pytest.fixture
def visit(browser: playwright_sync.Browser, base_url: str, backend: str) -> Iterator[Visit]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    tab = Visit(page, base_url, backend)
    context.on("request", lambda request: tab.requests.append(request.url))
    page.on(
        "console",
        lambda message: tab.errors.append(message.text) if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: tab.errors.append(str(error)))
    try:
        yield tab
    finally:
        context.close()


@dataclass(frozen=True)
class Shop:
    merchant: MerchantFixture
    admin_email: str
    customer_id: int


def make_shop(factory: sessionmaker[Session], email: str = "owner@shop.example") -> Shop:
    merchant = make_merchant(factory, "Corner Shop")
    with unit_of_work(factory) as session:
        merchants.create_admin_user(
            session, merchant_id=merchant.id, email=email, password=PASSWORD
        )
    customer_id = make_customer(
        factory,
        merchant.id,
        email="ada@example.com",
        first_name="Ada",
        last_name="Lovelace",
        points=120,
        accepts_marketing=True,
    )
    make_customer(
        factory,
        merchant.id,
        email="grace@example.com",
        first_name="Grace",
        points=40,
        accepts_marketing=True,
    )
    return Shop(merchant, email, customer_id)


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not become true in time")
        time.sleep(0.1)


# --------------------------------------------------------------------------- flows


def test_sign_in_adjust_points_and_move_up_a_vip_tier(
    visit: Visit, session_factory: sessionmaker[Session]
) -> None:
    shop = make_shop(session_factory)
    page = visit.page
    expect = playwright_sync.expect

    visit.go("/admin/customers")
    expect(page).to_have_url(re.compile(r"/admin/login\?next="))
    visit.shot("login")
    visit.sign_in(shop.admin_email, "not the password")
    expect(page.get_by_role("alert")).to_contain_text("The email or password is not right")
    visit.sign_in(shop.admin_email)
    expect(page).to_have_url(visit.base_url + "/admin/customers")

    visit.go("/admin")
    expect(page.get_by_test_id("members")).to_have_text("2")
    expect(page.get_by_test_id("outstanding")).to_have_text("160")
    page.wait_for_function("document.querySelector('#points-chart').width > 0")
    visit.shot("dashboard")

    page.get_by_role("link", name="All customers").click()
    page.get_by_label("Search by email or name").fill("ada")
    expect(page.get_by_test_id("customer-count")).to_have_text(re.compile("^1 customer"))
    visit.shot("customers")
    page.get_by_role("link", name="Ada Lovelace").click()
    expect(page.get_by_test_id("balance")).to_have_text("120")

    page.get_by_label("Points (negative to take away)").fill("50")
    page.get_by_label("Reason").fill("Goodwill for a late delivery")
    page.get_by_role("button", name="Adjust").click()
    expect(page.get_by_role("status")).to_have_text("Points adjusted.")
    expect(page.get_by_test_id("balance")).to_have_text("170")
    expect(page.get_by_test_id("activity-earning")).to_contain_text("Goodwill for a late delivery")
    visit.shot("customer-profile")

    page.get_by_label("Points (negative to take away)").fill("-500")
    page.get_by_label("Reason").fill("Too much")
    page.get_by_role("button", name="Adjust").click()
    expect(page.get_by_role("alert")).to_contain_text("170 points; 500 cannot be taken")
    visit.go(f"/admin/customers/{shop.customer_id}")
    expect(page.get_by_test_id("balance")).to_have_text("170")

    visit.go("/admin/settings/vip")
    page.get_by_label("Name").fill("Gold")
    page.get_by_label("Reached at").fill("100")
    page.get_by_label("Entry reward (points)").fill("25")
    page.get_by_role("button", name="Add tier").click()
    expect(page.get_by_test_id("tiers")).to_contain_text("Gold")
    page.get_by_label("VIP tiers are on").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Settings saved.")
    expect(page.get_by_label("VIP tiers are on")).to_be_checked()
    visit.shot("settings-vip")

    order = httpx.post(
        f"{visit.base_url}/api/v1/orders",
        headers=shop.merchant.headers,
        json={
            "order_id": "1001",
            "email": "ada@example.com",
            "total": "150.00",
            "placed_at": datetime.now(UTC).isoformat(),
        },
        timeout=30,
    )
    assert order.status_code == 201, order.text

    visit.go(f"/admin/customers/{shop.customer_id}")
    expect(page.get_by_test_id("tier-badge")).to_have_text("Gold")
    expect(page.get_by_test_id("balance")).to_have_text("195")
    page.get_by_role("tab", name="VIP").click()
    expect(page.get_by_test_id("activity-vip")).to_contain_text("Gold")
    expect(page).to_have_url(re.compile(r"\?tab=vip$"))
    page.get_by_role("tab", name="Orders").click()
    expect(page.get_by_test_id("activity-orders")).to_contain_text("1001")
    visit.shot("customer-profile-vip")
    with session_factory() as session:
        customer = session.get(Customer, shop.customer_id)
        assert customer is not None
        assert (customer.vip_tier, customer.points_balance) == ("gold", 195)
    visit.assert_stayed_home()


def test_every_settings_page_renders_and_stays_on_the_host(
    visit: Visit, session_factory: sessionmaker[Session]
) -> None:
    shop = make_shop(session_factory)
    page = visit.page
    expect = playwright_sync.expect
    visit.go("/admin/login")
    visit.sign_in(shop.admin_email)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

    for section, heading in [
        ("earning", "Earning actions"),
        ("rewards", "Rewards"),
        ("referrals", "Referrals"),
        ("expiry", "Points expiry"),
        ("emails", "Email templates"),
    ]:
        visit.go(f"/admin/settings/{section}")
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        visit.shot(f"settings-{section}")

    visit.go("/admin/settings/emails/points_earned")
    preview = page.frame_locator('iframe[name="preview-frame"]')
    expect(preview.locator(".meta")).to_contain_text("Subject:")
    page.get_by_label("Subject").fill("Bonus: {{ points }} points for {{ customer_first_name }}")
    page.get_by_role("button", name="Preview changes").click()
    expect(preview.locator(".meta")).to_contain_text("Bonus: ")
    visit.shot("settings-email-edit")

    visit.go("/admin/settings/api-keys")
    page.get_by_label("Name").fill("Shop app")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("new-api-key").inner_text()
    assert secret.startswith("tly_")
    visit.shot("settings-api-keys")
    visit.go("/admin/settings/api-keys")
    expect(page.get_by_test_id("api-keys")).to_contain_text("Shop app")
    assert secret not in page.content()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke Shop app").click()
    expect(page.get_by_role("status")).to_have_text("API key revoked.")
    with session_factory() as session:
        assert merchants.resolve_api_key(session, secret) is None
    visit.assert_stayed_home()


def test_another_merchants_customer_is_404_and_a_form_without_csrf_is_403(
    visit: Visit, session_factory: sessionmaker[Session]
) -> None:
    shop = make_shop(session_factory)
    other = make_merchant(session_factory, "Other Shop")
    theirs = make_customer(session_factory, other.id, email="theirs@example.com", points=7)
    page = visit.page
    visit.go("/admin/login")
    visit.sign_in(shop.admin_email)
    playwright_sync.expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

    response = visit.go(f"/admin/customers/{theirs}")
    assert response is not None
    assert response.status == 404
    playwright_sync.expect(page.get_by_role("heading", level=1)).to_have_text("Not found")

    refused = page.request.post(
        f"{visit.base_url}/admin/customers/{shop.customer_id}/adjustments",
        form={"points": "1000", "reason": "forged"},
    )
    assert refused.status == 403
    with session_factory() as session:
        balances = dict(session.execute(select(Customer.id, Customer.points_balance)).all())
    assert balances[shop.customer_id] == 120
    assert balances[theirs] == 7
    visit.assert_stayed_home()


# --------------------------------------------------------------------------- imports

BAD_CUSTOMERS = (
    "email,first_name,last_name,points,birthday\n"
    "ana@example.com,Ana,Souza,1250,1990-04-17\n"
    "wei@example.com,Wei,Li,lots,\n"
    "jo@example.org,Jo,Okafor,300,\n"
)


@pytest.fixture
def imports_run(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[None]:
    """Queued imports run, as the worker would run them."""
    with import_worker(settings, session_factory):
        yield


def test_import_customers_see_the_bad_row_fix_it_apply_and_see_balances(
    visit: Visit, session_factory: sessionmaker[Session], tmp_path: Path, imports_run: None
) -> None:
    shop = make_shop(session_factory)
    page = visit.page
    expect = playwright_sync.expect
    upload = tmp_path / "customers.csv"
    upload.write_text(BAD_CUSTOMERS, encoding="utf-8")
    visit.go("/admin/login")
    visit.sign_in(shop.admin_email)
    page.get_by_role("link", name="Import customers").click()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the sample template (CSV)").click()
    assert download.value.suggested_filename == "tally-customers-template.csv"

    page.get_by_label("Award create-account points to the customers the file creates").check()
    page.get_by_label("CSV file").set_input_files(str(upload))
    page.get_by_role("button", name="Check the file").click()
    errors = page.get_by_test_id("row-errors")
    expect(errors.locator("tbody tr")).to_have_count(1)
    expect(errors.locator("tbody td").first).to_have_text("3")
    expect(errors).to_contain_text("lots")
    expect(page.get_by_test_id("preview-summary")).to_contain_text("3 rows, 1 with errors")
    expect(page.get_by_role("button", name="Apply the import")).to_have_count(0)
    expect(
        page.get_by_label("Award create-account points to the customers the file creates")
    ).to_be_checked()
    visit.shot("import-customers-errors")

    upload.write_text(BAD_CUSTOMERS.replace("lots", "80"), encoding="utf-8")
    page.get_by_label("CSV file").set_input_files(str(upload))
    page.get_by_role("button", name="Check the file").click()
    expect(page.get_by_test_id("preview-summary")).to_contain_text("3 rows, 0 with errors")
    expect(page.get_by_test_id("preview-points")).to_have_text("1,630")
    expect(page.get_by_test_id("row-errors")).to_have_count(0)
    visit.shot("import-customers-preview")
    with session_factory() as session:
        assert set(session.scalars(select(Customer.email))) == {
            "ada@example.com",
            "grace@example.com",
        }

    page.get_by_role("button", name="Apply the import").click()
    run = page.get_by_test_id("import-run")
    expect(run).to_have_attribute("data-state", "completed")
    expect(page.get_by_test_id("import-history")).to_contain_text("Completed")
    visit.shot("import-customers-applied")
    page.get_by_role("link", name="See the customers and their balances").click()
    page.get_by_label("Search by email or name").fill("ana@")
    expect(page.get_by_test_id("customer-count")).to_have_text(re.compile("^1 customer"))
    expect(page.locator("#customer-results tbody")).to_contain_text("1,250")
    with session_factory() as session:
        balances = dict(session.execute(select(Customer.email, Customer.points_balance)).all())
    assert balances == {
        "ada@example.com": 120,
        "grace@example.com": 40,
        "ana@example.com": 1250,
        "wei@example.com": 80,
        "jo@example.org": 300,
    }

    visit.go("/admin/imports/orders")
    expect(page.get_by_role("heading", level=1)).to_have_text("Import orders")
    visit.shot("import-orders")
    visit.assert_stayed_home()


# --------------------------------------------------------------------------- Dotdigital


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(
        accounts=[EmulatorAccount(DEMO_USERNAME, DEMO_PASSWORD, 1)], import_delay_seconds=0.05
    )
    with EmulatorServer(config) as server:
        yield server


@pytest.fixture
def dotdigital_url(
    settings: Settings, session_factory: sessionmaker[Session], emulator: EmulatorServer
) -> Iterator[str]:
    """The app pointed at the emulator, with a worker running the Dotdigital plugin."""
    emulator.emulator.reset()
    settings.dotdigital_base_url = emulator.base_url
    settings.dotdigital_calls_per_minute = 60_000
    settings.worker_poll_seconds = 0.1
    handlers = {event: dict(names) for event, names in default_registry.handlers.items()}
    jobs = dict(default_registry.jobs)
    # Subscribed on the default registry, where `emit` looks, for this test only.
    register_dotdigital(default_registry, FAST_SYNC)
    worker = Worker(settings=settings, session_factory=session_factory)
    thread = worker.start_thread()
    try:
        with serve_in_thread(admin_app(settings, session_factory)) as url:
            settings.public_base_url = url
            yield url
    finally:
        worker.stop()
        thread.join(timeout=30)
        default_registry.handlers.clear()
        default_registry.handlers.update(handlers)
        default_registry.jobs.clear()
        default_registry.jobs.update(jobs)


def contact_fields(emulator: EmulatorServer, email: str) -> dict[str, object]:
    contact = emulator.emulator.contacts.get(email)
    return dict(contact["dataFields"]) if contact else {}


def test_connect_dotdigital_enable_sync_changes_and_sync_now(
    browser: playwright_sync.Browser,
    dotdigital_url: str,
    backend: str,
    emulator: EmulatorServer,
    session_factory: sessionmaker[Session],
) -> None:
    shop = make_shop(session_factory)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    visit = Visit(context.new_page(), dotdigital_url, backend)
    context.on("request", lambda request: visit.requests.append(request.url))
    visit.page.on("pageerror", lambda error: visit.errors.append(str(error)))
    page = visit.page
    expect = playwright_sync.expect
    try:
        visit.go("/admin/login")
        visit.sign_in(shop.admin_email)
        page.get_by_role("link", name="Dotdigital").click()
        expect(page.get_by_test_id("sync-enabled")).to_have_text("Off")

        page.get_by_label("API username").fill(DEMO_USERNAME)
        page.get_by_label("API password").fill("not-the-password")
        page.get_by_role("button", name="Connect").click()
        expect(page.get_by_test_id("dotdigital-error")).to_contain_text(
            "Dotdigital refused the API user's username or password"
        )
        expect(page.get_by_test_id("dotdigital-state")).to_contain_text("Not connected")
        visit.shot("dotdigital-refused")

        page.get_by_label("API password").fill(DEMO_PASSWORD)
        page.get_by_role("button", name="Connect").click()
        expect(page.get_by_role("status")).to_contain_text("Dotdigital accepted the credentials")
        page.get_by_role("button", name="Enable syncing").click()
        expect(page.get_by_role("status")).to_have_text("Dotdigital syncing is on.")
        expect(page.get_by_test_id("sync-enabled")).to_have_text("On")
        names = {f["name"] for f in emulator.emulator.data_fields}
        assert {"LOYALTY_POINTS", "LOYALTY_VIP_TIER"} <= names

        visit.go(f"/admin/customers/{shop.customer_id}")
        page.get_by_label("Points (negative to take away)").fill("-20")
        page.get_by_label("Reason").fill("Price match")
        page.get_by_role("button", name="Adjust").click()
        expect(page.get_by_test_id("balance")).to_have_text("100")
        wait_for(lambda: contact_fields(emulator, "ada@example.com").get("LOYALTY_POINTS") == 100)
        page.reload()
        expect(page.get_by_test_id("dotdigital-status")).to_contain_text("Up to date")
        assert "grace@example.com" not in emulator.emulator.contacts

        visit.go("/admin/integrations/dotdigital")
        page.get_by_role("button", name="Sync now").click()
        progress = page.get_by_test_id("sync-progress")
        expect(progress).to_have_attribute("data-status", "finished")
        expect(progress).to_contain_text("2 of 2 contacts")
        assert contact_fields(emulator, "grace@example.com").get("LOYALTY_POINTS") == 40
        assert contact_fields(emulator, "ada@example.com").get("LOYALTY_POINTS") == 100
        visit.go("/admin/integrations/dotdigital")
        expect(page.get_by_test_id("recent-syncs")).to_contain_text("Finished")
        visit.shot("dotdigital")
        visit.assert_stayed_home()
    finally:
        context.close()


# What sticks out of a narrow screen (for the failure message): tag, class and right edge.
WIDER_THAN_THE_SCREEN = """
[...document.querySelectorAll('body *')]
  .filter(e => !e.closest('.table-scroll') && (
    e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5
    || e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX === 'visible'))
  .slice(0, 8)
  .map(e => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)
"""


def test_a_phone_wide_screen_folds_the_menu_and_scrolls_tables_not_the_page(
    browser: playwright_sync.Browser, base_url: str, session_factory: sessionmaker[Session]
) -> None:
    shop = make_shop(session_factory)
    make_customer(
        session_factory,
        shop.merchant.id,
        email="a.customer.with.a.very.long.address@subdomain.example.com",
        first_name="Maximiliana",
        last_name="Wolfeschlegelsteinhausen",
    )
    context = browser.new_context(viewport={"width": 390, "height": 844})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    expect = playwright_sync.expect
    try:
        page.goto(base_url + "/admin/login")
        page.get_by_label("Email").fill(shop.admin_email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

        for path in [
            "/admin",
            "/admin/customers",
            f"/admin/customers/{shop.customer_id}",
            "/admin/imports/orders",
            "/admin/settings/rewards",
            "/admin/settings/emails",
            "/admin/integrations/webhooks",
        ]:
            page.goto(base_url + path)
            expect(page.locator("main h1")).to_be_visible()
            width = page.evaluate("document.scrollingElement.scrollWidth")
            assert width <= 390, (path, width, page.evaluate(WIDER_THAN_THE_SCREEN))

        # The sidebar is folded behind the menu button, which opens it (mouse or keyboard).
        menu = page.get_by_role("button", name="Menu")
        nav = page.get_by_role("navigation", name="Main")
        expect(menu).to_have_attribute("aria-expanded", "false")
        expect(nav).to_be_hidden()
        menu.click()
        expect(menu).to_have_attribute("aria-expanded", "true")
        expect(nav.get_by_role("link", name="All customers")).to_be_visible()
        menu.focus()
        page.keyboard.press("Enter")
        expect(menu).to_have_attribute("aria-expanded", "false")
        expect(nav).to_be_hidden()
        page.keyboard.press("Space")
        expect(nav).to_be_visible()
        nav.get_by_role("link", name="All customers").click()
        expect(page.get_by_test_id("customer-count")).to_have_text(re.compile("^3 customers"))

        # The customers table is wider than the screen: it scrolls inside its own wrapper.
        wrapper = page.locator(".table-scroll").first
        sizes = wrapper.evaluate("w => [w.scrollWidth, w.clientWidth]")
        assert sizes[0] > sizes[1], sizes
        assert sizes[1] <= 390, sizes
        scrolled = wrapper.evaluate("w => { w.scrollLeft = 120; return w.scrollLeft; }")
        assert scrolled > 0
        assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "narrow-customers.png"), full_page=True)
    finally:
        context.close()
