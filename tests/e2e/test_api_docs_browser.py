"""/docs and /redoc in a real browser: they render from Tally's own files under their CSP.

Chromium comes from `scripts/chromium.sh` (apt). Without it these tests skip, except under CI.
The pages never touch the database, so they run once, not per backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tally.api.app import create_app
from tally.config import Settings, WorkerMode
from tally.db.engine import make_engine, make_session_factory
from tally.state import AppState
from tests.support.server import serve_in_thread

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
TIMEOUT_MS = 30_000
# expect() has its own 5 s default, too short for a page on two busy shared cores.
playwright_sync.expect.set_options(timeout=TIMEOUT_MS)
# ReDoc's sidebar shows its maker's logo from a CDN (and hides it when it fails to load): the
# CSP blocks it, which is the point.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


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


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    var = tmp_path_factory.mktemp("docs")
    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{var / 'unused.db'}",
        worker_mode=WorkerMode.OFF,
        var_dir=var,
        _env_file=None,  # type: ignore[call-arg]
    )
    factory = make_session_factory(make_engine(settings.database_url))
    app = create_app(settings, AppState(settings=settings, session_factory=factory))
    with serve_in_thread(app) as url:
        yield url


@pytest.mark.parametrize(
    ("path", "rendered", "blocked"),
    [
        ("/docs", ".opblock-summary-path", []),
        ("/redoc", "[data-section-id]", [REDOC_LOGO]),
    ],
)
def test_the_docs_render_from_this_host_and_the_csp_blocks_the_rest(
    browser: playwright_sync.Browser,
    base_url: str,
    path: str,
    rendered: str,
    blocked: list[str],
) -> None:
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    requests: list[str] = []
    console: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: console.append(message.text))
    page.on("pageerror", lambda error: console.append(f"page error: {error}"))

    page.goto(base_url + path)
    page.wait_for_selector(rendered)

    assert page.locator(rendered).count() > 10
    assert page.locator("text=Create Customer").count() >= 1
    outside = [u for u in requests if not u.startswith((base_url + "/", "blob:", "data:"))]
    assert outside == blocked
    # Every complaint is the CSP refusing one of those outside requests; no script failed.
    assert all("Content Security Policy" in text for text in console), console
    assert len(console) == len(blocked)
    page.close()
