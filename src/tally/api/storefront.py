"""The storefront API: what the shopper's widget reads and does, under `/storefront/v1/{widget_id}`.

Never the admin API: a caller is addressed by the merchant's public widget id, and a signed-in
shopper by a signature the store computed (`tally.storefront.identity`); no API key is read or
accepted here. Every `/me` route acts on the one customer the signature names.

What a browser on another origin needs is done here, not by a generic middleware: CORS answers
for the merchant's own store origins (and Tally's public base URL, for the hosted page), a 403
for any other `Origin` (refused server-side too, not only by the browser), and rate limits per
client address and per shopper with 429 and `Retry-After` (in this process's memory).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tally.admin.security import limit_key_for_address
from tally.api.deps import app_state
from tally.api.edge import PagingDep
from tally.api.idempotency import stored_answer
from tally.api.problems import PROBLEM_MEDIA_TYPE
from tally.api.schemas import IsoDate, Page
from tally.audit.actor import Actor
from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.errors import DomainError, NotFound
from tally.idempotency.service import request_fingerprint, run_idempotent
from tally.program import service as program_service
from tally.state import AppState
from tally.storefront import service, shopper
from tally.storefront.appearance import Appearance, base_origin
from tally.storefront.identity import ShopperClaim, verify_hmac, verify_token
from tally.storefront.limits import RateLimiter
from tally.storefront.program_view import program_view
from tally.storefront.shapes import ActivityOut, ClaimedOut, MeOut, ProgramOut, RedeemedOut

PREFIX = "/storefront/v1"
# Where a request's CORS answer headers wait for the response (see `StorefrontCors`).
CORS_STATE_KEY = "tally_storefront_cors"
ALLOWED_HEADERS = (
    "Authorization, Content-Type, Idempotency-Key, If-None-Match, "
    "X-Tally-Customer-Id, X-Tally-Customer-Email, X-Tally-Signature"
)
EXPOSED_HEADERS = "ETag, Retry-After, Idempotent-Replayed"
ALLOWED_METHODS = "GET, POST, PUT, OPTIONS"
PREFLIGHT_MAX_AGE = "600"
PUBLIC_CACHE = "public, max-age=60"


def _problem_doc(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/Problem"}
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}}}


router = APIRouter(
    prefix=PREFIX + "/{widget_id}",
    tags=["storefront"],
    responses={
        404: _problem_doc("No enabled storefront has this widget id"),
        403: _problem_doc("The request's Origin is not one of the store's allowed origins"),
        429: _problem_doc("Too many requests from this address or shopper; see Retry-After"),
    },
)
SIGNED: dict[int | str, dict[str, Any]] = {
    401: _problem_doc("The shopper's signature is missing, wrong or expired")
}

WidgetId = Annotated[
    str,
    Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$", description="public id"),
]


class Forbidden(DomainError, status_code=403, title="Forbidden"):
    """The request comes from an origin the merchant did not allow."""


# -- the widget, its origins and the limits --------------------------------------------------


@dataclass(frozen=True)
class WidgetConfig:
    """What a request needs of a widget's settings (kept a few seconds, see `_WidgetCache`)."""

    merchant_id: int
    widget_id: str
    secrets: tuple[str, ...]
    appearance: Appearance
    allowed_origins: tuple[str, ...]


@dataclass(frozen=True)
class Widget:
    """The storefront a request addresses, and who is asking from where."""

    config: WidgetConfig
    state: AppState
    address: str

    @property
    def merchant_id(self) -> int:
        """The merchant whose storefront it is."""
        return self.config.merchant_id


class _WidgetCache:
    """Widget settings by id for `seconds`, so a shopper's request reads no settings row.

    A change (origins, a rotated secret, switching the storefront off) therefore reaches a
    process within that time; unknown ids are not kept, so random ones cannot fill it.
    """

    def __init__(self, seconds: float, max_size: int = 10_000) -> None:
        self.seconds = seconds
        self.max_size = max_size
        self._found: dict[str, tuple[float, WidgetConfig]] = {}

    def get(self, widget_id: str) -> WidgetConfig | None:
        found = self._found.get(widget_id)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def put(self, config: WidgetConfig) -> None:
        if self.seconds <= 0:
            return
        if len(self._found) >= self.max_size:
            self._found.clear()
        self._found[config.widget_id] = (time.monotonic() + self.seconds, config)


def _load_config(state: AppState, widget_id: str) -> WidgetConfig | None:
    with state.session_factory() as session:
        row = service.find_widget(session, widget_id)
        if row is None:
            return None
        return WidgetConfig(
            merchant_id=row.merchant_id,
            widget_id=row.widget_id,
            secrets=tuple(service.verifying_secrets(state.settings, row)),
            appearance=service.appearance_of(row),
            allowed_origins=tuple(row.allowed_origins),
        )


_app_objects_lock = threading.Lock()
T = TypeVar("T")


def _app_object(request: Request, name: str, make: Callable[[], T]) -> T:
    """The application's object called `name` (one per app, in memory), made on first use."""
    with _app_objects_lock:
        found: T | None = getattr(request.app.state, name, None)
        if found is None:
            found = make()
            setattr(request.app.state, name, found)
        return found


def _limiter(request: Request, name: str, per_minute: int) -> RateLimiter:
    return _app_object(request, name, lambda: RateLimiter(per_minute=per_minute))


def _limit(limiter: RateLimiter, key: str) -> None:
    wait = limiter.take(key)
    if wait is not None:
        raise HTTPException(
            429, "too many requests; try again later", headers={"Retry-After": str(wait)}
        )


def _cors_headers(request: Request, allowed: tuple[str, ...], state: AppState) -> dict[str, str]:
    """The CORS answer for the request's Origin, or a 403 for an origin not allowed."""
    origin = request.headers.get("origin")
    if origin is None:
        return {}  # not a browser's cross-origin call: nothing to answer
    own = base_origin(state.settings.public_base_url)
    if origin not in allowed and origin != own:
        raise Forbidden("this origin may not call the storefront API")
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": EXPOSED_HEADERS,
    }


async def widget(
    request: Request,
    widget_id: WidgetId,
    state: Annotated[AppState, Depends(app_state)],
) -> Widget:
    """The enabled widget the path names (404 otherwise), with the Origin and address checked.

    Asynchronous, so a request whose widget is cached takes no trip to the thread pool here.
    """
    settings = state.settings
    address = limit_key_for_address(request.client.host if request.client else "unknown")
    _limit(
        _limiter(
            request,
            "tally_storefront_address_limiter",
            settings.storefront_requests_per_minute_per_address,
        ),
        address,
    )
    cache = _app_object(
        request,
        "tally_storefront_widget_cache",
        lambda: _WidgetCache(settings.storefront_settings_cache_seconds),
    )
    config = cache.get(widget_id)
    if config is None:
        config = await run_in_threadpool(_load_config, state, widget_id)
        if config is None:
            raise NotFound(f"there is no storefront {widget_id!r}")
        cache.put(config)
    setattr(request.state, CORS_STATE_KEY, _cors_headers(request, config.allowed_origins, state))
    return Widget(config, state, address)


WidgetDep = Annotated[Widget, Depends(widget)]


# -- the shopper -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Shopper:
    """A verified shopper of a widget; `customer` finds (or enrols) them in a unit of work."""

    widget: Widget
    claim: ShopperClaim

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """A session bound to the widget's merchant, acting as the shopper (audit log)."""
        actor = Actor("shopper", self.claim.customer_id, address=self.widget.address)
        with unit_of_work(
            self.widget.state.session_factory, merchant_id=self.widget.merchant_id, actor=actor
        ) as session:
            yield session

    def customer(self, session: Session) -> Customer:
        """The shopper's customer row, enrolled on first sight."""
        return shopper.find_or_enrol(session, merchant_id=self.widget.merchant_id, claim=self.claim)


def _claim(request: Request, found: Widget) -> ShopperClaim | None:
    headers = request.headers
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return verify_token(found.config.secrets, token.strip(), now=utcnow())
    return verify_hmac(
        found.config.secrets,
        headers.get("x-tally-customer-id", ""),
        headers.get("x-tally-customer-email", ""),
        headers.get("x-tally-signature", ""),
    )


async def signed_shopper(request: Request, found: WidgetDep) -> Shopper:
    """The shopper the request's signature names, within the shopper's rate limit, or 401.

    No I/O (an HMAC or a JWT check), so it runs on the event loop.
    """
    claim = _claim(request, found)
    if claim is None:
        raise shopper.InvalidSignature(shopper.INVALID_SIGNATURE)
    limiter = _limiter(
        request,
        "tally_storefront_shopper_limiter",
        found.state.settings.storefront_requests_per_minute_per_shopper,
    )
    _limit(limiter, f"{found.merchant_id}:{claim.customer_id}")
    return Shopper(found, claim)


ShopperDep = Annotated[Shopper, Depends(signed_shopper)]


class StorefrontCors:
    """ASGI middleware: puts a storefront request's CORS headers on whatever answers it.

    The `widget` dependency decides them (it knows the merchant's origins); this adds them to
    the response, the problem responses of refusals included, so a browser can read a 401 or a
    429. Every storefront response varies by Origin.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.add_vary_header("Origin")
                for name, value in state.get(CORS_STATE_KEY, {}).items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, sending)


# -- routes ----------------------------------------------------------------------------------


@router.options("/{path:path}", include_in_schema=False)
def preflight(found: WidgetDep, path: str) -> Response:
    """A browser's CORS preflight: which methods and headers the store's page may send."""
    del found, path  # the dependency checked the widget and the Origin
    return Response(
        status_code=204,
        headers={
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        },
    )


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


@router.get("/program", response_model=ProgramOut)
def get_program(
    found: WidgetDep,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=2000)] = None,
) -> Response:
    """The program as a guest sees it; cacheable (`ETag`, `If-None-Match` answers 304)."""
    with unit_of_work(found.state.session_factory, merchant_id=found.merchant_id) as session:
        program = program_service.load(session, found.merchant_id)
        view = program_view(program, found.config.appearance)
    body = json.dumps(view.model_dump(mode="json"), separators=(",", ":")).encode()
    etag = _etag(body)
    headers = {"ETag": etag, "Cache-Control": PUBLIC_CACHE}
    if _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


PRIVATE = {"Cache-Control": "no-store"}


def _private(model: BaseModel, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status, headers=PRIVATE)


def _standing(session: Session, found: Widget, customer: Customer) -> MeOut:
    return shopper.standing(
        session,
        program=program_service.load(session, found.merchant_id),
        customer=customer,
        public_base_url=found.state.settings.public_base_url,
    )


@router.get("/me", response_model=MeOut, responses=SIGNED)
def get_me(signed: ShopperDep) -> JSONResponse:
    """The signed-in shopper's balance, expiry, tier, referral link, rewards and coupons."""
    with signed.unit_of_work() as session:
        return _private(_standing(session, signed.widget, signed.customer(session)))


@router.get("/me/activity", response_model=Page[ActivityOut], responses=SIGNED)
def get_activity(signed: ShopperDep, paging: PagingDep) -> JSONResponse:
    """The shopper's point movements, newest first."""
    with signed.unit_of_work() as session:
        customer = signed.customer(session)
        found = shopper.activity(
            session, customer=customer, limit=paging.limit, offset=paging.offset
        )
        return _private(Page[ActivityOut].of(found, lambda item: item, paging))


class RedeemIn(BaseModel):
    """Spend points on a reward."""

    model_config = ConfigDict(extra="forbid")

    reward_id: str = Field(min_length=1, max_length=64)
    points: int | None = Field(default=None, ge=1, description="for variable rewards")


RequiredKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Required: a retried request with the same key spends once",
    ),
]


@router.post("/me/redemptions", status_code=201, response_model=RedeemedOut, responses=SIGNED)
def redeem(
    body: RedeemIn, signed: ShopperDep, request: Request, idempotency_key: RequiredKey
) -> JSONResponse:
    """Redeem a reward for the shopper: the admin API's rules, once per Idempotency-Key."""
    with signed.unit_of_work() as session:
        customer = signed.customer(session)
        stored = run_idempotent(
            session,
            merchant_id=customer.merchant_id,
            key=shopper.shopper_key(customer, idempotency_key),
            fingerprint=request_fingerprint("POST", request.url.path, body.model_dump()),
            work=lambda: (
                201,
                shopper.redeem(
                    session,
                    customer=customer,
                    reward_id=body.reward_id,
                    points=body.points,
                    idempotency_key=idempotency_key,
                ).model_dump(mode="json"),
            ),
        )
    answer = stored_answer(stored, stored.body)
    answer.headers.update(PRIVATE)
    return answer


class BirthdayIn(BaseModel):
    """The shopper's birthday."""

    model_config = ConfigDict(extra="forbid")

    birthday: IsoDate


@router.put(
    "/me/birthday",
    response_model=MeOut,
    responses=SIGNED | {409: _problem_doc("The birthday is already set")},
)
def put_birthday(body: BirthdayIn, signed: ShopperDep) -> JSONResponse:
    """Set the shopper's birthday, once (the birthday rule's conditions apply)."""
    with signed.unit_of_work() as session:
        customer = signed.customer(session)
        birthday: date = body.birthday
        shopper.set_birthday(session, customer=customer, birthday=birthday)
        return _private(_standing(session, signed.widget, customer))


@router.post(
    "/me/actions/{action_id}",
    status_code=201,
    response_model=ClaimedOut,
    responses=SIGNED | {409: _problem_doc("The action's limit is reached")},
)
def claim_action(
    signed: ShopperDep,
    action_id: Annotated[str, Path(min_length=1, max_length=64)],
) -> JSONResponse:
    """Claim a custom action the merchant lets shoppers claim (e.g. "follow us")."""
    with signed.unit_of_work() as session:
        customer = signed.customer(session)
        program = program_service.load(session, signed.widget.merchant_id)
        claimed = shopper.claim_action(
            session, program=program, customer=customer, action_id=action_id
        )
        return _private(claimed, 201)
