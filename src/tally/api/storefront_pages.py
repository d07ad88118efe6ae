"""What shoppers' browsers load from Tally itself: the widget's script (`/storefront/widget.js`),
the Liquid snippet for Shopify themes, and the hosted loyalty page (`/p/{widget_id}`).

The JSON the widget reads is `api/storefront.py`'s; this module only serves files and one page.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from urllib.parse import urlsplit

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from tally.api.deps import app_state
from tally.errors import NotFound
from tally.merchants.orm import Merchant
from tally.storefront import service

router = APIRouter(include_in_schema=False)

STATIC_PREFIX = "/storefront/"


@dataclass(frozen=True)
class StaticFile:
    """A file under api/static/storefront/ and how it is served."""

    name: str
    media_type: str


# Stores paste the script tag once and never change it, so its URL carries no version: a short
# max-age with revalidation (the ETag) brings a new widget to every store within minutes.
FILES = {
    f.name: f
    for f in (
        StaticFile("widget.js", "text/javascript; charset=utf-8"),
        StaticFile("page.css", "text/css; charset=utf-8"),
        StaticFile("tally-loyalty.liquid", "text/plain; charset=utf-8"),
    )
}
CACHE_CONTROL = "public, max-age=300, stale-while-revalidate=86400"

# The hosted page runs only the widget from this host and talks only to this host; stores that
# are allowed to call the storefront API may also frame it.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'{origins}"
)


@cache
def static_file(name: str) -> bytes:
    """The bytes of a storefront file (read once per process)."""
    return resources.files("tally.api").joinpath("static", "storefront", name).read_bytes()


@cache
def file_etag(name: str) -> str:
    """A strong ETag of a storefront file: a hash of its content."""
    return '"' + hashlib.sha256(static_file(name)).hexdigest()[:20] + '"'


def static_url(name: str) -> str:
    """The URL of a storefront file with its content hash (for pages Tally renders itself)."""
    return f"{STATIC_PREFIX}{name}?v={file_etag(name).strip(chr(34))[:10]}"


def _etag_matches(request: Request, etag: str) -> bool:
    given = request.headers.get("If-None-Match", "")
    return any(part.strip().removeprefix("W/") in {etag, "*"} for part in given.split(","))


def _serve(request: Request, name: str) -> Response:
    found = FILES.get(name)
    if found is None:
        raise NotFound(f"there is no storefront file {name!r}")
    etag = file_etag(name)
    headers = {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "X-Content-Type-Options": "nosniff",
        # Stores that isolate their pages (COEP) or load the script with `crossorigin` (for
        # subresource integrity or error reports) may still use it: it is public.
        "Cross-Origin-Resource-Policy": "cross-origin",
        "Access-Control-Allow-Origin": "*",
    }
    if _etag_matches(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(static_file(name), media_type=found.media_type, headers=headers)


@router.get("/storefront/widget.js")
def widget_script(request: Request) -> Response:
    """The widget: one script, no dependencies, cacheable."""
    return _serve(request, "widget.js")


@router.get("/storefront/page.css")
def page_styles(request: Request) -> Response:
    """The hosted page's own styles (the widget carries its own)."""
    return _serve(request, "page.css")


@router.get("/storefront/tally-loyalty.liquid")
def liquid_snippet(request: Request) -> Response:
    """The Shopify theme snippet, to download from the admin's Storefront page."""
    return _serve(request, "tally-loyalty.liquid")


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("tally.api", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )


def render_page(*, widget_id: str, store_name: str, store_url: str | None, title: str) -> str:
    """The hosted loyalty page's HTML."""
    return (
        _environment()
        .get_template("storefront/page.html")
        .render(
            widget_id=widget_id,
            store_name=store_name,
            store_url=store_url,
            title=title,
            script_url=static_url("widget.js"),
            css_url=static_url("page.css"),
        )
    )


def page_headers(allowed_origins: list[str]) -> dict[str, str]:
    """Security headers of the hosted page (the store's own origins may frame it)."""
    origins = "".join(f" {origin}" for origin in allowed_origins)
    return {
        "Content-Security-Policy": PAGE_POLICY.format(origins=origins),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "Cache-Control": "public, max-age=60",
    }


def _link(url: str) -> str | None:
    # Only a web address becomes a link back to the store (never javascript: or data:).
    return url if urlsplit(url).scheme in {"http", "https"} else None


@router.get("/p/{widget_id}")
def hosted_page(request: Request, widget_id: str) -> HTMLResponse:
    """The hosted loyalty page: the store's widget in full-page form, for stores that link to it."""
    state = app_state(request)
    # The widget id is public and names its merchant: this read is across merchants on purpose,
    # as the storefront API's is, and it reads only what the page shows.
    with state.session_factory() as session:
        row = service.find_widget(session, widget_id)
        merchant = session.get(Merchant, row.merchant_id) if row is not None else None
        if row is None or merchant is None:
            raise NotFound("there is no loyalty page here")
        title = service.appearance_of(row).title
        origins = list(row.allowed_origins or [])
        store_name, store_url = merchant.name, _link(merchant.store_url)
    body = render_page(
        widget_id=row.widget_id, store_name=store_name, store_url=store_url, title=title
    )
    return HTMLResponse(body, headers=page_headers(origins))
