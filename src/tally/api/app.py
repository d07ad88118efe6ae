"""The ASGI application: API routes, problem responses, API docs, and the in-process worker."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import text

from tally import __version__
from tally.admin import router as admin_router
from tally.api import audit as audit_api
from tally.api import customers, problems, program, rewards, storefront_pages
from tally.api import dotdigital as dotdigital_api
from tally.api import imports as imports_api
from tally.api import notifications as notifications_api
from tally.api import reports as reports_api
from tally.api import storefront as storefront_api
from tally.api import webhooks as webhooks_api
from tally.api.edge import RefuseNul
from tally.config import Settings, WorkerMode
from tally.db.engine import make_engine, make_session_factory
from tally.errors import NotFound
from tally.outbox.registry import load_plugins
from tally.outbox.worker import Worker
from tally.state import AppState

log = logging.getLogger("tally")

DOCS_ASSETS_PREFIX = "/docs/assets/"
FAVICON_URL = "/admin/static/favicon.svg"
# The vendored viewers (static/README.md says where each comes from) and their media types.
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
}
# Like the admin's: everything from this host. Swagger UI's one inline script (its settings)
# is allowed by its hash, added per page.
SWAGGER_UI_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' {script_hashes}; style-src 'self'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# ReDoc writes its styles into <style> elements at run time (styled-components) and runs its
# search index in a worker made from a blob: URL; scripts still come only from this host.
REDOC_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; worker-src blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


@cache
def docs_asset(name: str) -> bytes:
    """A vendored file of the API docs (read once)."""
    return resources.files("tally.api").joinpath("static", name).read_bytes()


def docs_asset_url(name: str) -> str:
    """The URL of a docs asset, with a content hash so a new version is never served stale."""
    version = hashlib.sha256(docs_asset(name)).hexdigest()[:10]
    return f"{DOCS_ASSETS_PREFIX}{name}?v={version}"


def _script_hashes(body: bytes) -> str:
    digests = (hashlib.sha256(script).digest() for script in _INLINE_SCRIPT.findall(body))
    return " ".join(f"'sha256-{base64.b64encode(d).decode()}'" for d in digests)


def _docs_page(page: HTMLResponse, policy: str) -> HTMLResponse:
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
    }
    return HTMLResponse(bytes(page.body), headers=headers)


def install_docs(app: FastAPI, title: str) -> None:
    """Serve Swagger UI at /docs and ReDoc at /redoc from vendored files, under a CSP."""
    openapi_url = app.openapi_url or "/openapi.json"
    swagger = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{title} - API",
        swagger_js_url=docs_asset_url("swagger-ui-bundle.js"),
        swagger_css_url=docs_asset_url("swagger-ui.css"),
        swagger_favicon_url=FAVICON_URL,
        # The default validator badge is an image from swagger.io, which the CSP blocks anyway.
        swagger_ui_parameters={"validatorUrl": None},
    )
    swagger_page = _docs_page(
        swagger,
        SWAGGER_UI_CONTENT_SECURITY_POLICY.format(
            script_hashes=_script_hashes(bytes(swagger.body))
        ),
    )
    redoc_page = _docs_page(
        get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - API",
            redoc_js_url=docs_asset_url("redoc.standalone.js"),
            redoc_favicon_url=FAVICON_URL,
            with_google_fonts=False,
        ),
        REDOC_CONTENT_SECURITY_POLICY,
    )

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return swagger_page

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return redoc_page

    @app.get(DOCS_ASSETS_PREFIX + "{name}", include_in_schema=False)
    def docs_assets(name: str) -> Response:
        media_type = DOCS_ASSETS.get(name)
        if media_type is None:
            raise NotFound(f"no docs asset {name!r}")
        return Response(
            docs_asset(name),
            media_type=media_type,
            headers={
                "Cache-Control": "public, max-age=86400",
                "X-Content-Type-Options": "nosniff",
            },
        )


def create_app(settings: Settings, state: AppState | None = None) -> FastAPI:
    """Build the application for these settings (nothing is created at import time)."""
    settings.check_for_start()
    if state is None:
        engine = make_engine(settings.database_url)
        state = AppState(settings=settings, session_factory=make_session_factory(engine))
    load_plugins(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        worker = None
        if settings.worker_mode == WorkerMode.INPROCESS:
            worker = Worker(settings=settings, session_factory=state.session_factory)
            worker.start_thread()
        yield
        if worker is not None:
            worker.stop()

    app = FastAPI(
        title="Tally",
        version=__version__,
        description="Loyalty and rewards for online stores. Authenticate with "
        "`Authorization: Bearer <api key>`; every POST honours `Idempotency-Key`.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.tally = state
    app.add_middleware(RefuseNul)
    # The storefront's CORS answers, on its refusals too (tally.api.storefront).
    app.add_middleware(storefront_api.StorefrontCors)
    problems.install(app)
    problems.document(app)
    install_docs(app, "Tally")
    app.include_router(customers.router)
    app.include_router(program.router)
    app.include_router(rewards.router)
    app.include_router(notifications_api.router)
    app.include_router(notifications_api.public_router)
    app.include_router(dotdigital_api.router)
    app.include_router(imports_api.router)
    app.include_router(webhooks_api.router)
    app.include_router(reports_api.router)
    app.include_router(audit_api.router)
    app.include_router(admin_router)
    app.include_router(program.public_router)
    # The widget's script and the hosted loyalty page (shoppers' browsers, no API key).
    app.include_router(storefront_pages.router)
    # The shopper's side: addressed by a public widget id and a shopper's signature, never
    # an API key.
    app.include_router(storefront_api.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        with state.session_factory() as session:
            session.execute(text("SELECT 1"))
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/admin")

    return app
