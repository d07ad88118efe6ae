"""A real merchant's first sign-in and its team, in Chromium, with a real SMTP server.

From a fresh database: `tally merchant create --owner-email` (a real process) prints a link;
the owner sets a password, signs in and invites a `support` member from the Team page; the
invitation arrives at aiosmtpd; the member opens the emailed link, sets a password, signs in,
adjusts a customer's points and is refused the program settings.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers.orm import Customer
from tally.merchants.orm import AdminUser
from tally.outbox.worker import Worker
from tests.e2e import test_admin_browser as admin_browser
from tests.e2e.smtp_server import RecordingHandler, running_smtp_server
from tests.e2e.test_admin_browser import TIMEOUT_MS, Visit, playwright_sync, wait_for
from tests.support.factories import make_customer

# The browser, server and tab fixtures of the admin's browser tests.
browser = admin_browser.browser
base_url = admin_browser.base_url
visit = admin_browser.visit

REPO = Path(__file__).resolve().parents[2]
OWNER_PASSWORD = "owner's long passphrase"
MEMBER_PASSWORD = "support desk passphrase"
LINK = re.compile(r"^(http://127\.0\.0\.1:\d+/admin/set-password\?token=\S+)$", re.M)


def tally(settings: Settings, tmp_path: Path, *args: str) -> str:
    """Run the `tally` command as a process against the test database; its output."""
    env = {
        **os.environ,
        "TALLY_DATABASE_URL": settings.database_url,
        "TALLY_ENVIRONMENT": "test",
        "TALLY_SECRET_KEY": settings.secret_key.get_secret_value(),
        "TALLY_PUBLIC_BASE_URL": settings.public_base_url,
        "TALLY_VAR_DIR": str(settings.var_dir),
        "COLUMNS": "1000",
    }
    result = subprocess.run(
        [sys.executable, "-c", "from tally.cli import app; app()", *args],
        env=env,
        cwd=tmp_path,  # no .env of the checkout
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result.stdout


def set_password(tab: Visit, link: str, password: str) -> None:
    page = tab.page
    expect = playwright_sync.expect
    page.goto(link)
    expect(page.get_by_role("heading", name="Choose your password")).to_be_visible()
    page.get_by_label("New password", exact=True).fill(password)
    page.get_by_label("New password again", exact=True).fill(password)
    page.get_by_role("button", name="Set password").click()
    expect(page).to_have_url(re.compile(r"/admin/login\?done=password-set$"))
    expect(page.get_by_role("status")).to_have_text("Your password is set. Sign in with it.")


def test_a_new_merchant_owner_signs_in_and_invites_a_support_member(
    visit: Visit,
    browser: playwright_sync.Browser,
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    page = visit.page
    expect = playwright_sync.expect

    created = tally(
        settings,
        tmp_path,
        *("merchant", "create", "Harbour Books", "--store-url", "https://harbour.example"),
        *("--owner-email", "owner@harbour.example"),
    )
    links = LINK.findall(created)
    assert len(links) == 1, created
    with session_factory() as session:
        merchant_id = session.scalars(select(AdminUser.merchant_id)).one()
    make_customer(
        session_factory, merchant_id, email="ada@example.com", first_name="Ada", points=100
    )

    # The owner: the printed link, a password, and in.
    set_password(visit, links[0], OWNER_PASSWORD)
    visit.shot("team-set-password-done")
    visit.sign_in("owner@harbour.example", OWNER_PASSWORD)
    expect(page).to_have_url(visit.base_url + "/admin")
    # The link is used up.
    page.goto(links[0])
    expect(page.get_by_role("alert")).to_contain_text("This link is not valid")

    handler = RecordingHandler()
    with running_smtp_server(handler) as server:
        settings.smtp_host, settings.smtp_port = server.host, server.port
        visit.go("/admin")
        page.get_by_role("link", name="Team").click()
        expect(page.get_by_test_id("team")).to_contain_text("owner@harbour.example")
        page.get_by_label("Email", exact=True).fill("sam@harbour.example")
        page.get_by_label("Role", exact=True).select_option("support")
        page.get_by_role("button", name="Invite").click()
        expect(page.get_by_test_id("invitation")).to_contain_text("sam@harbour.example")
        expect(page.get_by_test_id("team")).to_contain_text("Invited")
        visit.shot("team-invited")

        Worker(settings=settings, session_factory=session_factory).drain()
        wait_for(lambda: len(handler.deliveries) == 1)

    [delivery] = handler.deliveries
    assert delivery.rcpt_tos == ["sam@harbour.example"]
    message = delivery.message
    assert message["Subject"] == "You are invited to the loyalty admin of Harbour Books"
    body = message.get_body(("plain",))
    assert body is not None
    emailed = LINK.findall(str(body.get_content()).replace("\r\n", "\n"))
    assert len(emailed) == 1

    # The member, in a browser of their own.
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    member = Visit(context.new_page(), visit.base_url, visit.backend)
    context.on("request", lambda request: member.requests.append(request.url))
    member.page.on("pageerror", lambda error: member.errors.append(str(error)))
    try:
        set_password(member, emailed[0], MEMBER_PASSWORD)
        member.sign_in("sam@harbour.example", MEMBER_PASSWORD)
        # Support starts at the customers (it has no dashboard) and sees only them.
        expect(member.page).to_have_url(visit.base_url + "/admin/customers")
        nav = member.page.get_by_role("navigation", name="Main")
        expect(nav.get_by_role("link")).to_have_count(1)
        expect(nav.get_by_role("link", name="All customers")).to_be_visible()

        member.page.get_by_role("link", name="Ada").click()
        expect(member.page.get_by_test_id("balance")).to_have_text("100")
        member.page.get_by_label("Points (negative to take away)").fill("25")
        member.page.get_by_label("Reason").fill("Parcel arrived damaged")
        member.page.get_by_role("button", name="Adjust").click()
        expect(member.page.get_by_role("status")).to_have_text("Points adjusted.")
        expect(member.page.get_by_test_id("balance")).to_have_text("125")
        member.shot("team-support-adjusted")

        refused = member.go("/admin/settings/earning")
        assert refused is not None
        assert refused.status == 403
        expect(member.page.get_by_role("heading", name="Not allowed")).to_be_visible()
        expect(member.page.get_by_role("alert")).to_contain_text("Your role (support)")
        member.shot("team-support-refused")
        member.assert_stayed_home()
    finally:
        context.close()

    with session_factory() as session:
        assert session.scalars(select(Customer.points_balance)).one() == 125
        assert sorted(session.execute(select(AdminUser.email, AdminUser.role))) == [
            ("owner@harbour.example", "owner"),
            ("sam@harbour.example", "support"),
        ]
    visit.assert_stayed_home()
