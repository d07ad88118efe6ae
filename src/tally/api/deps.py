"""Request-scoped plumbing: the app's state, the authenticated merchant, units of work."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

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

    def unit_of_work(self) -> AbstractContextManager[Session]:
        """A session bound to this merchant; commits when the block succeeds."""
        return unit_of_work(self.state.session_factory, merchant_id=self.merchant_id)


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
        found = None if key is None else (key.merchant_id, key.id)
    if found is None:
        raise HTTPException(
            401, "the API key is unknown or revoked", headers={"WWW-Authenticate": "Bearer"}
        )
    return Caller(merchant_id=found[0], state=state, actor=f"api-key:{found[1]}")


CallerDep = Annotated[Caller, Depends(authenticated)]
