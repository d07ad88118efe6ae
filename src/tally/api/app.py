"""The ASGI application: API routes, problem responses, and the in-process worker when asked."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from sqlalchemy import text

from tally import __version__
from tally.admin import router as admin_router
from tally.api import customers, problems, program, rewards
from tally.api.deps import AppState
from tally.config import Settings, WorkerMode
from tally.db.engine import make_engine, make_session_factory
from tally.imports import api as imports_api
from tally.integrations.dotdigital import api as dotdigital_api
from tally.notifications import api as notifications_api
from tally.outbox.registry import load_plugins
from tally.outbox.worker import Worker

log = logging.getLogger("tally")


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
    )
    app.state.tally = state
    problems.install(app)
    app.include_router(customers.router)
    app.include_router(program.router)
    app.include_router(rewards.router)
    app.include_router(notifications_api.router)
    app.include_router(notifications_api.public_router)
    app.include_router(dotdigital_api.router)
    app.include_router(imports_api.router)
    app.include_router(admin_router)
    app.include_router(program.public_router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        with state.session_factory() as session:
            session.execute(text("SELECT 1"))
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/admin")

    return app
