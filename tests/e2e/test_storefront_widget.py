"""The loyalty widget on a store's page, in Debian's Chromium driven by Playwright.

A real Tally server runs on one loopback port; the "store" is a tiny `http.server` on another
port (a different origin, as a shop on its own domain is), serving pages that embed the widget
with one script tag, signed the way the store's theme would sign them. Screenshots go to
test-artifacts/screenshots/ (ignored by git).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tally.api.app import create_app
from tally.config import Settings
from tally.db.engine import unit_of_work
from tally.ledger.orm import EntryKind, LedgerEntry
from tally.merchants import service as merchants
from tally.program.config_service import update_program
from tally.state import AppState
from tally.storefront import service
from tests.e2e.test_admin_browser import CHROMIUM, CHROMIUM_ARGS, IN_CI, PASSWORD, TIMEOUT_MS
from tests.support.factories import MerchantFixture, make_customer, make_merchant
from tests.support.server import serve_in_thread

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect
expect.set_options(timeout=TIMEOUT_MS)

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
STORE_CUSTOMER_ID = "7302114"
EMAIL = "ada@example.com"
# What a store's theme might do to everything on its pages; none of it may reach the widget.
HOSTILE_CSS = "* { color: red !important; font-size: 40px } button { display: none }"
LAUNCHER = re.compile("open the rewards panel")
PROGRAM = {
    "live": True,
    "place_order": {"enabled": True, "points_per_unit": "1", "send_email": False},
    "rewards": [
        {
            "id": "five-off",
            "name": "£5 off",
            "type": "fixed_amount",
            "points_cost": 100,
            "amount": "5",
        },
        {"id": "free-ship", "name": "Free shipping", "type": "free_shipping", "points_cost": 1000},
    ],
    "vip": {
        "enabled": True,
        "metric": "amount_spent",
        "tiers": [
            {"id": "silver", "name": "Silver", "threshold": "100", "send_email": False},
            {"id": "gold", "name": "Gold", "threshold": "400", "send_email": False},
        ],
    },
    "custom_actions": [
        {
            "id": "follow-us",
            "name": "Follow us on Instagram",
            "points": 25,
            "storefront_claimable": True,
            "limit": {"max_count": 1, "period": "ever"},
        }
    ],
    "referral": {"enabled": True, "sender_points": 200, "receiver_points": 50, "send_email": False},
}


# --------------------------------------------------------------------------- the store's site


class _StoreHandler(BaseHTTPRequestHandler):
    pages: dict[str, str] = {}

    def do_GET(self) -> None:
        body = self.pages.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@contextmanager
def store_site(pages: dict[str, str]) -> Iterator[str]:
    """Serve these pages (path -> HTML) on a loopback port of their own; yields the origin."""
    handler = type("Handler", (_StoreHandler,), {"pages": pages})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def store_page(tally: str, widget_id: str, identity: dict[str, str] | None = None) -> str:
    """A store's page: its own links and hostile CSS, and the widget's one script tag."""
    signed = "".join(f' data-{name}="{value}"' for name, value in (identity or {}).items())
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Corner Shop</title><style>{HOSTILE_CSS}</style></head><body>"
        "<h1 id='store-heading'>Corner Shop</h1><a href='#shoes'>Shoes</a> <a href='#hats'>Hats</a>"
        f"<script src='{tally}/storefront/widget.js' data-widget-id='{widget_id}'{signed} "
        "async defer></script></body></html>"
    )


def signed_identity(secret: str, customer_id: str = STORE_CUSTOMER_ID, email: str = EMAIL) -> dict:
    """The data attributes the store's theme writes: Liquid's hmac_sha256 of id + email."""
    digest = hmac.new(secret.encode(), (customer_id + email).encode(), hashlib.sha256).hexdigest()
    return {"customer-id": customer_id, "customer-email": email, "customer-signature": digest}


def shopper_token(secret: str) -> str:
    """What a headless store's backend mints for its signed-in customer: HS256, five minutes."""
    now = datetime.now(UTC)
    claims = {
        "sub": STORE_CUSTOMER_ID,
        "email": EMAIL,
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


# --------------------------------------------------------------------------- Tally and the shop


@dataclass(frozen=True)
class Shop:
    tally: str
    merchant: MerchantFixture
    widget_id: str
    secret: str
    customer_id: int


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing")
        pytest.skip(f"{CHROMIUM} is missing: run scripts/chromium.sh")
    with playwright_sync.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def tally(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[str]:
    app = create_app(settings, AppState(settings=settings, session_factory=session_factory))
    with serve_in_thread(app) as url:
        # The hosted page and the admin preview call the API from Tally's own origin.
        settings.public_base_url = url
        yield url


def open_shop(
    tally: str, settings: Settings, factory: sessionmaker[Session], origins: list[str]
) -> Shop:
    """A live program with rewards, tiers and referrals; Ada, who spent 150 and has 270 points."""
    merchant = make_merchant(factory, "Corner Shop")
    with unit_of_work(factory, merchant_id=merchant.id) as session:
        update_program(session, merchant_id=merchant.id, changes=PROGRAM, changed_by="test")
        service.set_origins(session, config=settings, merchant_id=merchant.id, origins=origins)
        row = service.settings_for(session, config=settings, merchant_id=merchant.id)
        widget_id, secret = row.widget_id, service.reveal_secret(settings, row)
    customer_id = make_customer(
        factory,
        merchant.id,
        email=EMAIL,
        first_name="Ada",
        points=120,
        external_id=STORE_CUSTOMER_ID,
    )
    order = httpx.post(
        f"{tally}/api/v1/orders",
        headers=merchant.headers,
        json={
            "order_id": "1001",
            "email": EMAIL,
            "total": "150.00",
            "placed_at": datetime.now(UTC).isoformat(),
        },
        timeout=30,
    )
    assert order.status_code == 201, order.text
    return Shop(tally, merchant, widget_id, secret, customer_id)


def spends(factory: sessionmaker[Session], customer_id: int) -> list[int]:
    with factory() as session:
        return list(
            session.scalars(
                select(LedgerEntry.points).where(
                    LedgerEntry.customer_id == customer_id, LedgerEntry.kind == EntryKind.SPEND
                )
            )
        )


def balance(factory: sessionmaker[Session], customer_id: int) -> int:
    with factory() as session:
        total = session.scalar(
            select(func.sum(LedgerEntry.points)).where(LedgerEntry.customer_id == customer_id)
        )
        return int(total or 0)


@dataclass
class Tab:
    page: Any
    backend: str
    errors: list[str]

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{self.backend}-widget-{name}.png"))

    def widget(self) -> Any:
        return self.page.locator("tally-loyalty")

    def open_panel(self) -> None:
        self.page.get_by_role("button", name=LAUNCHER).click()
        expect(self.page.get_by_role("dialog")).to_be_visible()


@pytest.fixture
def tab(browser: Any, backend: str) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield Tab(page, backend, errors)
    finally:
        context.close()


@dataclass
class Store:
    origin: str
    pages: dict[str, str]

    def show(self, tab: Tab, html: str, path: str = "/") -> None:
        self.pages[path] = html
        tab.page.goto(self.origin + path)


@pytest.fixture
def store() -> Iterator[Store]:
    pages: dict[str, str] = {}
    with store_site(pages) as origin:
        yield Store(origin, pages)


@pytest.fixture
def shop(
    tally: str, store: Store, settings: Settings, session_factory: sessionmaker[Session]
) -> Shop:
    return open_shop(tally, settings, session_factory, [store.origin])


# --------------------------------------------------------------------------- the tests


def test_a_guest_sees_ways_to_earn_rewards_tiers_and_the_referral_offer(
    tab: Tab, store: Store, shop: Shop
) -> None:
    store.show(tab, store_page(shop.tally, shop.widget_id))
    expect(tab.widget()).to_have_attribute("data-state", "guest")
    tab.open_panel()
    panel = tab.page.get_by_role("dialog", name="Our rewards program")
    expect(panel.get_by_test_id("guest-message")).to_have_text(
        "Join to earn points on every order."
    )
    expect(panel.get_by_test_id("ways-to-earn")).to_contain_text("Place an order")
    rewards = panel.get_by_test_id("rewards")
    expect(rewards).to_contain_text("£5 off")
    expect(rewards).to_contain_text("100 points")
    expect(rewards).to_contain_text("Free shipping")
    expect(panel.get_by_test_id("tiers")).to_contain_text("Silver")
    expect(panel.get_by_test_id("tiers")).to_contain_text("Gold")
    expect(panel.get_by_test_id("referral-offer")).to_contain_text("200 points")
    expect(panel.get_by_role("button", name=re.compile("^Redeem"))).to_have_count(0)
    # The widget asked Tally for nothing before the store's page had loaded.
    asked_after_load = tab.page.evaluate(
        "() => { const nav = performance.getEntriesByType('navigation')[0]; "
        "const calls = performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/storefront/v1/')); "
        "return calls.length > 0 && calls.every(e => e.startTime >= nav.loadEventStart); }"
    )
    assert asked_after_load is True
    assert tab.errors == []


def test_a_signed_in_shopper_sees_their_standing_and_redeems_once_despite_a_double_click_and_a_retry(
    tab: Tab, store: Store, shop: Shop, session_factory: sessionmaker[Session]
) -> None:
    page = tab.page
    keys: list[str | None] = []
    lost: list[bool] = []

    def lose_the_first_answer(route: Any) -> None:
        keys.append(route.request.header_value("idempotency-key"))
        if not lost:
            # The spend happens on the server; the shopper's connection drops before the answer.
            lost.append(route.fetch().status == 201)
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/me/redemptions", lose_the_first_answer)
    store.show(tab, store_page(shop.tally, shop.widget_id, signed_identity(shop.secret)))
    expect(tab.widget()).to_have_attribute("data-state", "signed-in")
    tab.open_panel()
    panel = page.get_by_role("dialog")
    expect(panel.get_by_test_id("balance")).to_have_text("270")
    expect(panel.get_by_test_id("tier")).to_have_text("Your tier: Silver")
    expect(panel.get_by_test_id("tier-progress")).to_have_text(
        re.compile(r"250\.00 more to reach Gold")
    )
    expect(panel.get_by_role("progressbar", name="Progress to Gold")).to_be_visible()
    history = panel.get_by_test_id("activity")
    expect(history).to_contain_text("opening balance")
    expect(history).to_contain_text("+150")
    expect(history).to_contain_text("+120")
    expect(panel.get_by_role("textbox", name="Your referral link")).to_have_value(
        re.compile(r"/r/\w+$")
    )
    tab.shot("signed-in-1440")

    panel.get_by_role("button", name=re.compile("^Redeem £5 off")).dblclick()
    expect(panel.get_by_role("alert")).to_contain_text("could not reach the rewards service")
    assert lost == [True]
    assert spends(session_factory, shop.customer_id) == [-100]
    panel.get_by_role("button", name=re.compile("^Redeem £5 off")).click()
    code = panel.get_by_test_id("reward-code")
    expect(code).to_contain_text("Your code:")
    expect(panel.get_by_test_id("balance")).to_have_text("170")
    expect(panel.get_by_test_id("coupons")).to_contain_text(code.locator("strong").inner_text())

    # Two requests (the double click made one), under one key: one spend in the ledger.
    assert len(keys) == 2
    assert keys[0] is not None
    assert keys[0] == keys[1]
    assert spends(session_factory, shop.customer_id) == [-100]
    assert balance(session_factory, shop.customer_id) == 170
    assert tab.errors == []


def test_a_forged_signature_is_refused_and_the_widget_says_so(
    tab: Tab, store: Store, shop: Shop, session_factory: sessionmaker[Session]
) -> None:
    forged = signed_identity("not the store's secret")
    tab.page.add_init_script(
        "window.signInProblems = 0; document.addEventListener('tally:signin-problem', "
        "() => { window.signInProblems += 1; });"
    )
    store.show(tab, store_page(shop.tally, shop.widget_id, forged))
    expect(tab.widget()).to_have_attribute("data-state", "signin-problem")
    assert tab.page.evaluate("window.signInProblems") == 1
    tab.open_panel()
    expect(tab.page.get_by_test_id("signin-problem")).to_contain_text("could not confirm")
    expect(tab.page.get_by_test_id("balance")).to_have_count(0)
    # The program a guest may see is still there; the shopper's points are not.
    expect(tab.page.get_by_test_id("rewards")).to_contain_text("£5 off")
    assert tab.errors == []
    answer = httpx.get(
        f"{shop.tally}/storefront/v1/{shop.widget_id}/me",
        headers={
            "Origin": store.origin,
            "X-Tally-Customer-Id": forged["customer-id"],
            "X-Tally-Customer-Email": forged["customer-email"],
            "X-Tally-Signature": forged["customer-signature"],
        },
        timeout=30,
    )
    assert answer.status_code == 401
    assert answer.json()["detail"] == "the shopper's signature is not valid"
    assert balance(session_factory, shop.customer_id) == 270


def test_a_store_origin_not_configured_gets_nothing(
    tab: Tab, shop: Shop, session_factory: sessionmaker[Session]
) -> None:
    signed = signed_identity(shop.secret)
    with store_site({"/": store_page(shop.tally, shop.widget_id, signed)}) as foreign:
        tab.page.goto(foreign + "/")
        expect(tab.widget()).to_have_attribute("data-state", "unavailable")
        expect(tab.page.get_by_role("button", name=LAUNCHER)).to_be_hidden()
        refused = httpx.get(
            f"{shop.tally}/storefront/v1/{shop.widget_id}/program",
            headers={"Origin": foreign},
            timeout=30,
        )
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers
    assert tab.errors == []
    assert balance(session_factory, shop.customer_id) == 270


def test_the_store_css_does_not_restyle_the_widget_and_the_widget_leaves_the_store_alone(
    tab: Tab, store: Store, shop: Shop
) -> None:
    store.show(tab, store_page(shop.tally, shop.widget_id, signed_identity(shop.secret)))
    expect(tab.widget()).to_have_attribute("data-state", "signed-in")
    launcher = tab.page.get_by_role("button", name=LAUNCHER)
    expect(launcher).to_be_visible()
    style = launcher.evaluate(
        "e => { const s = getComputedStyle(e); return [s.color, s.fontSize, s.display]; }"
    )
    # The panel's own colours and sizes: not red, not 40 px, and the store's `button` rule
    # does not hide it (a fixed inline-flex computes as flex).
    assert style == ["rgb(255, 255, 255)", "15px", "flex"]
    tab.open_panel()
    balance_style = tab.page.get_by_test_id("balance").evaluate(
        "e => [getComputedStyle(e).color, getComputedStyle(e).fontSize]"
    )
    assert balance_style == ["rgb(31, 35, 40)", "34px"]
    heading = tab.page.locator("#store-heading")
    assert heading.evaluate("e => getComputedStyle(e).color") == "rgb(255, 0, 0)"
    assert heading.evaluate("e => getComputedStyle(e).fontSize") == "40px"
    assert tab.errors == []


def _focused_in_widget(tab: Tab) -> str:
    return str(
        tab.widget().evaluate(
            "e => { const a = e.shadowRoot.activeElement; "
            "return a ? (a.closest('[role=dialog]') ? 'panel' : a.className) : 'none'; }"
        )
    )


def test_keyboard_only_tab_to_the_launcher_enter_opens_focus_stays_in_escape_closes(
    tab: Tab, store: Store, shop: Shop
) -> None:
    page = tab.page
    store.show(tab, store_page(shop.tally, shop.widget_id, signed_identity(shop.secret)))
    expect(tab.widget()).to_have_attribute("data-state", "signed-in")
    launcher = page.get_by_role("button", name=LAUNCHER)
    # The store's two links come first; the widget is last on the page.
    for _ in range(3):
        page.keyboard.press("Tab")
    expect(launcher).to_be_focused()
    expect(launcher).to_have_attribute("aria-expanded", "false")
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(launcher).to_have_attribute("aria-expanded", "true")
    expect(dialog.get_by_role("button", name="Close")).to_be_focused()
    for _ in range(30):
        page.keyboard.press("Tab")
        assert _focused_in_widget(tab) == "panel"
    for _ in range(30):
        page.keyboard.press("Shift+Tab")
        assert _focused_in_widget(tab) == "panel"
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(launcher).to_be_focused()
    expect(launcher).to_have_attribute("aria-expanded", "false")
    assert tab.errors == []


def test_screenshots_at_1440_and_390_pixels(tab: Tab, store: Store, shop: Shop) -> None:
    page = tab.page
    store.show(tab, store_page(shop.tally, shop.widget_id, signed_identity(shop.secret)))
    expect(tab.widget()).to_have_attribute("data-state", "signed-in")
    tab.open_panel()
    tab.shot("open-1440")
    page.set_viewport_size({"width": 390, "height": 844})
    dialog = page.get_by_role("dialog")
    box = dialog.bounding_box()
    assert box is not None
    # At phone width the panel fits the screen, with no sideways scrolling.
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    tab.shot("open-390")
    page.set_viewport_size({"width": 360, "height": 740})
    box = dialog.bounding_box()
    assert box is not None
    assert box["x"] + box["width"] <= 360
    assert tab.errors == []


def test_the_hosted_page_shows_the_program_in_full_page_form(tab: Tab, shop: Shop) -> None:
    tab.page.goto(f"{shop.tally}/p/{shop.widget_id}")
    expect(tab.widget()).to_have_attribute("data-state", "guest")
    region = tab.page.get_by_role("region", name="Our rewards program")
    expect(region.get_by_test_id("rewards")).to_contain_text("£5 off")
    expect(tab.page.get_by_role("button", name=LAUNCHER)).to_be_hidden()
    tab.shot("hosted-page-1440")

    # A store links a signed-in shopper with a short-lived token in the fragment.
    token = shopper_token(shop.secret)
    tab.page.goto(f"{shop.tally}/p/{shop.widget_id}#tally-token={token}")
    expect(tab.widget()).to_have_attribute("data-state", "signed-in")
    expect(region.get_by_test_id("balance")).to_have_text("270")
    expect(tab.page).to_have_url(f"{shop.tally}/p/{shop.widget_id}")
    assert tab.errors == []


def test_the_admin_preview_shows_the_draft_look_in_the_real_widget(
    tab: Tab, shop: Shop, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    page = tab.page
    console: list[str] = []
    # A style or script the admin's Content-Security-Policy refused would be logged here.
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    with unit_of_work(session_factory) as session:
        merchants.create_admin_user(
            session, merchant_id=shop.merchant.id, email="owner@shop.example", password=PASSWORD
        )
    page.goto(f"{shop.tally}/admin/login")
    page.get_by_label("Email").fill("owner@shop.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.get_by_role("link", name="Storefront").click()
    expect(page.get_by_test_id("widget-id")).to_have_text(shop.widget_id)
    preview = page.get_by_test_id("widget-preview")
    expect(preview).to_have_attribute("data-state", "guest")
    launcher = preview.get_by_role("button", name=LAUNCHER)
    expect(launcher).to_have_text("Rewards")

    page.get_by_label("Launcher button").fill("Corner Club")
    page.get_by_label("Main colour", exact=True).fill("#0b7a4b")
    expect(launcher).to_have_text("Corner Club")
    expect(launcher).to_have_css("background-color", "rgb(11, 122, 75)")
    expect(preview.get_by_role("region", name="Our rewards program")).to_be_visible()
    preview.scroll_into_view_if_needed()
    tab.shot("admin-preview")
    # White on yellow would be unreadable: the widget writes black on it instead.
    page.get_by_label("Main colour", exact=True).fill("#ffe600")
    expect(launcher).to_have_css("color", "rgb(0, 0, 0)")
    page.get_by_label("Main colour", exact=True).fill("#0b7a4b")
    expect(launcher).to_have_css("color", "rgb(255, 255, 255)")
    page.get_by_role("button", name="Save texts and colours").click()
    expect(page.get_by_role("status")).to_contain_text("Widget look saved")
    with unit_of_work(session_factory, merchant_id=shop.merchant.id) as session:
        row = service.settings_for(session, config=settings, merchant_id=shop.merchant.id)
        look = service.appearance_of(row)
    assert (look.launcher_label, look.primary_colour) == ("Corner Club", "#0b7a4b")
    assert tab.errors == []
    assert console == []


def test_a_headless_store_token_claims_an_action_once_and_sets_the_birthday_once(
    tab: Tab, store: Store, shop: Shop, session_factory: sessionmaker[Session]
) -> None:
    page = tab.page
    token = shopper_token(shop.secret)
    store.show(tab, store_page(shop.tally, shop.widget_id, {"token": token}))
    expect(tab.widget()).to_have_attribute("data-state", "signed-in")
    tab.open_panel()
    panel = page.get_by_role("dialog")
    expect(panel.get_by_test_id("balance")).to_have_text("270")

    panel.get_by_role("button", name="Claim 25 points for Follow us on Instagram").click()
    expect(panel.get_by_role("status")).to_have_text("You earned 25 points.")
    expect(panel.get_by_test_id("balance")).to_have_text("295")
    expect(panel.get_by_role("button", name=re.compile("^Claim 25 points"))).to_be_disabled()

    panel.get_by_label(re.compile("Tell us your birthday")).fill("1990-05-17")
    panel.get_by_role("button", name="Save").click()
    expect(panel.get_by_test_id("birthday")).to_contain_text("1990")
    expect(panel.get_by_label(re.compile("Tell us your birthday"))).to_have_count(0)

    # A fresh page offers the claim again; the server refuses it, and nothing changes.
    page.reload()
    expect(tab.widget()).to_have_attribute("data-state", "signed-in")
    tab.open_panel()
    expect(panel.get_by_test_id("birthday")).to_contain_text("1990")
    panel.get_by_role("button", name="Claim 25 points for Follow us on Instagram").click()
    expect(panel.get_by_role("status")).to_have_text("You have already claimed this.")
    expect(panel.get_by_test_id("balance")).to_have_text("295")
    assert balance(session_factory, shop.customer_id) == 295
    assert tab.errors == []
