"""Request-scoped plumbing: the app's state, the authenticated merchant, units of work."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from tally.audit.actor import Actor
from tally.db.engine import unit_of_work
from tally.merchants.service import find_api_key
from tally.state import AppState


def app_state(request: Request) -> AppState:
    """The AppState stored on the application."""
    state: AppState = request.app.state.tally
    return state


@dataclass(frozen=True)
class Caller:
    """An authenticated API caller: which merchant, and how to open its units of work."""

    merchant_id: int
    state: AppState
    # Who is acting, for the records that keep it (program versions): `api-key:<id>`.
    actor: str = "api"
    # The same caller for the audit log: `api-key:<key name>`, with the request's address.
    audit_actor: Actor | None = None

    def unit_of_work(self) -> AbstractContextManager[Session]:
        """A session bound to this merchant, acting as the key; commits when it succeeds."""
        return unit_of_work(
            self.state.session_factory, merchant_id=self.merchant_id, actor=self.audit_actor
        )


def authenticated(request: Request, state: Annotated[AppState, Depends(app_state)]) -> Caller:
    """Resolve `Authorization: Bearer <api key>` to a merchant, or answer 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            401,
            "missing API key: send 'Authorization: Bearer <api key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    with state.session_factory() as session:
        key = find_api_key(session, token.strip())
        found = None if key is None else (key.merchant_id, key.id, key.name)
    if found is None:
        raise HTTPException(
            401, "the API key is unknown or revoked", headers={"WWW-Authenticate": "Bearer"}
        )
    merchant_id, key_id, key_name = found
    actor = Actor(
        "api-key",
        key_name,
        id=str(key_id),
        request_id=request.headers.get("x-request-id", "")[:100] or None,
        address=request.client.host if request.client else None,
    )
    return Caller(
        merchant_id=merchant_id, state=state, actor=f"api-key:{key_id}", audit_actor=actor
    )


CallerDep = Annotated[Caller, Depends(authenticated)]
