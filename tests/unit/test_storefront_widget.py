"""The widget's files as the store's browser gets them: the size budget, types and caching."""

from __future__ import annotations

import gzip
import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tally.api import storefront_pages
from tally.api.storefront_pages import file_etag, page_headers, render_page, static_file

# Issue 15: script and styles together, gzipped, at most 40 KB.
SIZE_BUDGET_BYTES = 40 * 1024


def _client() -> TestClient:
    app = FastAPI()
    app.include_router(storefront_pages.router)
    return TestClient(app)


def test_the_widget_script_and_its_styles_fit_the_size_budget() -> None:
    # The styles live inside widget.js (they go into the Shadow DOM as a constructed sheet), so
    # the one file is everything a store's visitor downloads.
    script = static_file("widget.js")
    assert b"const STYLE = `" in script
    assert len(gzip.compress(script, compresslevel=9)) <= SIZE_BUDGET_BYTES


def test_the_widget_needs_no_build_step_and_loads_nothing_else() -> None:
    script = static_file("widget.js").decode()
    assert "import " not in script.split("(() => {", 1)[0]
    assert not re.search(r"\bimport\s*\(|\brequire\(|https?://(?!TALLY)", script)
    # Nothing from the API is ever parsed as HTML.
    assert "innerHTML" not in script
    assert "insertAdjacentHTML" not in script


def test_widget_js_is_served_as_javascript_and_cacheable() -> None:
    client = _client()
    answer = client.get("/storefront/widget.js")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
    assert answer.headers["cache-control"] == storefront_pages.CACHE_CONTROL
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["etag"] == file_etag("widget.js")
    assert answer.headers["access-control-allow-origin"] == "*"
    assert answer.content == static_file("widget.js")


def test_widget_js_answers_304_to_its_own_etag() -> None:
    client = _client()
    etag = file_etag("widget.js")
    again = client.get("/storefront/widget.js", headers={"If-None-Match": f"W/{etag}"})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    other = client.get("/storefront/widget.js", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200


def test_the_liquid_snippet_and_page_styles_are_served() -> None:
    client = _client()
    snippet = client.get("/storefront/tally-loyalty.liquid")
    assert snippet.status_code == 200
    assert snippet.headers["content-type"] == "text/plain; charset=utf-8"
    assert "hmac_sha256: tally_secret" in snippet.text
    assert client.get("/storefront/page.css").headers["content-type"] == "text/css; charset=utf-8"


def test_the_liquid_snippet_signs_only_a_signed_in_customer() -> None:
    snippet = static_file("tally-loyalty.liquid").decode()
    signed = snippet.index("{%- if customer and tally_secret != blank -%}")
    signature = snippet.index("customer.id | append: customer.email | hmac_sha256: tally_secret")
    guest = snippet.index("{%- else -%}")
    assert signed < signature < guest
    # The secret itself is never written into the page.
    assert "{{ tally_secret" not in snippet


def test_the_hosted_page_escapes_the_store_and_loads_only_this_host() -> None:
    html = render_page(
        widget_id="wid_abc",
        store_name="<Ada's & Co>",
        store_url="https://shop.example",
        title="Our rewards program",
    )
    assert "&lt;Ada&#39;s &amp; Co&gt;" in html
    assert '<tally-loyalty data-widget-id="wid_abc" data-mode="page">' in html
    assert re.search(r'<script src="/storefront/widget\.js\?v=[0-9a-f]{10}" defer>', html)
    headers = page_headers(["https://shop.example"])
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy
    assert policy.endswith("frame-ancestors 'self' https://shop.example")


def test_an_unknown_storefront_file_is_not_served() -> None:
    assert _client().get("/storefront/secrets.txt").status_code == 404
