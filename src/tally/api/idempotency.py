"""`Idempotency-Key` for API writes: the HTTP side of `tally.idempotency.service`.

The same key and body replay the stored response (with `Idempotent-Replayed: true`); how keys
are claimed and responses stored is described in `tally.idempotency.service`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from tally.api.deps import Caller
from tally.idempotency.service import StoredResponse, request_fingerprint, run_idempotent

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Replays of the same key and body return the first response",
    ),
]
"""The optional `Idempotency-Key` header of a POST that may be retried."""


def run_post(
    caller: Caller,
    request: Request,
    *,
    key: str | None,
    body: BaseModel | None,
    work: Callable[[Session], tuple[int, Any]],
) -> StoredResponse:
    """Run a POST's work in one unit of work under its Idempotency-Key (or replay it)."""
    payload = body.model_dump(mode="json") if body is not None else None
    with caller.unit_of_work() as session:
        return run_idempotent(
            session,
            merchant_id=caller.merchant_id,
            key=key,
            fingerprint=request_fingerprint("POST", request.url.path, payload),
            work=lambda: work(session),
        )


def stored_answer(stored: StoredResponse, body: Any) -> JSONResponse:
    """The response of a POST run by `run_post`, with `body` (a replay says it is one)."""
    headers = {"Idempotent-Replayed": "true"} if stored.replayed else None
    return JSONResponse(body, status_code=stored.status, headers=headers)


def change_post(
    caller: Caller,
    request: Request,
    key: str | None,
    change: Callable[..., Any],
    out: Callable[[Any], BaseModel],
    *,
    status: int = 200,
) -> JSONResponse:
    """A POST without a body that changes one thing: ``change(session, merchant_id=...)`` under
    the Idempotency-Key, answered with ``out`` of what it returns."""

    def work(session: Session) -> tuple[int, Any]:
        return status, out(change(session, merchant_id=caller.merchant_id)).model_dump(mode="json")

    return idempotent_post(caller, request, key=key, body=None, work=work)


def idempotent_post(
    caller: Caller,
    request: Request,
    *,
    key: str | None,
    body: BaseModel | None,
    work: Callable[[Session], tuple[int, Any]],
) -> JSONResponse:
    """Run a POST's work in one unit of work under its Idempotency-Key and build the response."""
    stored = run_post(caller, request, key=key, body=body, work=work)
    return stored_answer(stored, stored.body)
