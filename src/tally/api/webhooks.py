"""REST endpoints of signed outbound webhooks (mounted under /api/v1/webhooks).

Creating an endpoint and rotating its secret are the only answers that carry the secret. With
an ``Idempotency-Key`` the stored response leaves the secret out (it must never be stored in
plain text), so a replayed request gets the endpoint with ``secret: null``: rotate to get a
new one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from tally.api.deps import Caller, CallerDep
from tally.api.edge import Id, PagingDep
from tally.api.idempotency import IdempotencyKey, change_post, run_post, stored_answer
from tally.api.schemas import Page, view_of
from tally.webhooks import deliveries, service
from tally.webhooks.addresses import MAX_URL_LENGTH, CheckedUrl, check_subscription_url
from tally.webhooks.catalogue import DESCRIPTIONS, WEBHOOK_EVENTS

PREFIX = "/api/v1/webhooks"
router = APIRouter(prefix=PREFIX, tags=["webhooks"])


class EndpointCreate(BaseModel):
    """A URL to receive signed events, and the event types it wants."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1, max_length=MAX_URL_LENGTH, examples=["https://example.com/tally"]
    )
    events: list[str] = Field(
        min_length=1, max_length=len(WEBHOOK_EVENTS), examples=[["points.changed"]]
    )
    description: str = Field(default="", max_length=service.MAX_DESCRIPTION)


class EndpointUpdate(BaseModel):
    """What to change; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL_LENGTH)
    events: list[str] | None = Field(default=None, min_length=1, max_length=len(WEBHOOK_EVENTS))
    description: str | None = Field(default=None, max_length=service.MAX_DESCRIPTION)


class EndpointOut(service.EndpointView):
    """An endpoint (never its secret); a disabled one says why."""


class EndpointWithSecret(EndpointOut):
    """An endpoint and its signing secret, shown in this answer only (null in a replay)."""

    secret: str | None


class EventTypeOut(BaseModel):
    """An event type an endpoint can subscribe to."""

    name: str
    description: str


class DeliveryOut(deliveries.DeliveryView):
    """One event for one endpoint, and how its delivery is going."""


class AttemptOut(deliveries.AttemptView):
    """One recorded attempt."""


class DeliveryDetailOut(DeliveryOut):
    """A delivery with every attempt and the exact body it sends."""

    attempts_made: list[AttemptOut]
    body: str | None


def endpoint_out(view: service.EndpointView) -> EndpointOut:
    """The API view of an endpoint."""
    return view_of(EndpointOut, view)


def delivery_out(view: deliveries.DeliveryView) -> DeliveryOut:
    """The API view of a delivery."""
    return view_of(DeliveryOut, view)


def _checked(caller: Caller, url: str) -> CheckedUrl:
    # Before the unit of work: the DNS lookup must not run while the transaction holds locks.
    return check_subscription_url(url, development=caller.state.settings.is_development)


def _post_with_secret(
    caller: Caller,
    request: Request,
    *,
    key: str | None,
    body: BaseModel | None,
    status: int,
    work: Callable[..., service.IssuedSecret],
) -> JSONResponse:
    """Run a POST whose answer holds a secret: stored (for replays) without it.

    `work` is a service function given the session, the settings and the merchant's id."""
    issued: list[service.IssuedSecret] = []

    def run(session: Session) -> tuple[int, Any]:
        issued.append(work(session, settings=caller.state.settings, merchant_id=caller.merchant_id))
        out = EndpointWithSecret(**endpoint_out(issued[0].endpoint).model_dump(), secret=None)
        return status, out.model_dump(mode="json")

    stored = run_post(caller, request, key=key, body=body, work=run)
    answer = dict(stored.body)
    if not stored.replayed:
        answer["secret"] = issued[0].secret
    return stored_answer(stored, answer)


@router.get("/event-types", response_model=list[EventTypeOut])
def list_event_types(caller: CallerDep) -> list[EventTypeOut]:
    """The event types an endpoint can subscribe to."""
    del caller
    return [EventTypeOut(name=name, description=DESCRIPTIONS[name]) for name in WEBHOOK_EVENTS]


@router.get("/endpoints", response_model=list[EndpointOut])
def list_endpoints(caller: CallerDep) -> list[EndpointOut]:
    """The store's endpoints, oldest first."""
    with caller.unit_of_work() as session:
        return [
            endpoint_out(v) for v in service.list_endpoints(session, merchant_id=caller.merchant_id)
        ]


@router.post("/endpoints", status_code=201, response_model=EndpointWithSecret)
def create_endpoint(
    body: EndpointCreate,
    caller: CallerDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Subscribe a URL; the answer holds the signing secret, which is not shown again."""
    url = _checked(caller, body.url)
    return _post_with_secret(
        caller,
        request,
        key=idempotency_key,
        body=body,
        status=201,
        work=partial(
            service.create_endpoint, url=url, events=body.events, description=body.description
        ),
    )


@router.get("/endpoints/{endpoint_id}", response_model=EndpointOut)
def get_endpoint(endpoint_id: Id, caller: CallerDep) -> EndpointOut:
    """One endpoint."""
    with caller.unit_of_work() as session:
        endpoint = service.get_endpoint(
            session, merchant_id=caller.merchant_id, endpoint_id=endpoint_id
        )
        return endpoint_out(service.view_of(session, endpoint))


@router.patch("/endpoints/{endpoint_id}", response_model=EndpointOut)
def update_endpoint(endpoint_id: Id, body: EndpointUpdate, caller: CallerDep) -> EndpointOut:
    """Change the URL (checked again), the event types or the description."""
    url = _checked(caller, body.url) if body.url is not None else None
    with caller.unit_of_work() as session:
        view = service.update_endpoint(
            session,
            merchant_id=caller.merchant_id,
            endpoint_id=endpoint_id,
            url=url,
            events=body.events,
            description=body.description,
        )
    return endpoint_out(view)


@router.delete("/endpoints/{endpoint_id}", status_code=204)
def delete_endpoint(endpoint_id: Id, caller: CallerDep) -> Response:
    """Remove an endpoint with its delivery history; queued deliveries are dropped."""
    with caller.unit_of_work() as session:
        service.delete_endpoint(session, merchant_id=caller.merchant_id, endpoint_id=endpoint_id)
    return Response(status_code=204)


@router.post("/endpoints/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret)
def rotate_secret(
    endpoint_id: Id, caller: CallerDep, request: Request, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """A new secret (in this answer only); the old one also signs for 24 hours."""
    return _post_with_secret(
        caller,
        request,
        key=idempotency_key,
        body=None,
        status=200,
        work=partial(service.rotate_secret, endpoint_id=endpoint_id),
    )


@router.post("/endpoints/{endpoint_id}/enable", response_model=EndpointOut)
def enable_endpoint(
    endpoint_id: Id, caller: CallerDep, request: Request, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Deliver again (after a disable), with a fresh failure count."""
    change = partial(service.enable_endpoint, endpoint_id=endpoint_id)
    return change_post(caller, request, idempotency_key, change, endpoint_out)


@router.post("/endpoints/{endpoint_id}/disable", response_model=EndpointOut)
def disable_endpoint(
    endpoint_id: Id, caller: CallerDep, request: Request, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Stop delivering to the endpoint until it is enabled again."""
    change = partial(service.disable_endpoint, endpoint_id=endpoint_id)
    return change_post(caller, request, idempotency_key, change, endpoint_out)


@router.post("/endpoints/{endpoint_id}/test", status_code=202, response_model=DeliveryOut)
def send_test_event(
    endpoint_id: Id, caller: CallerDep, request: Request, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Queue a `webhook.test` event to the endpoint."""
    queue = partial(deliveries.queue_test_event, endpoint_id=endpoint_id)
    return change_post(caller, request, idempotency_key, queue, delivery_out, status=202)


@router.get("/endpoints/{endpoint_id}/deliveries", response_model=Page[DeliveryOut])
def list_deliveries(endpoint_id: Id, caller: CallerDep, paging: PagingDep) -> Page[DeliveryOut]:
    """An endpoint's deliveries, newest first."""
    with caller.unit_of_work() as session:
        return Page[DeliveryOut].listed(
            deliveries.list_deliveries,
            delivery_out,
            paging,
            session,
            merchant_id=caller.merchant_id,
            endpoint_id=endpoint_id,
        )


@router.get("/deliveries/{delivery_id}", response_model=DeliveryDetailOut)
def get_delivery(delivery_id: Id, caller: CallerDep) -> DeliveryDetailOut:
    """A delivery, every attempt at it, and its body."""
    with caller.unit_of_work() as session:
        view, attempts, body = deliveries.delivery_details(
            session, merchant_id=caller.merchant_id, delivery_id=delivery_id
        )
    return DeliveryDetailOut(
        **delivery_out(view).model_dump(),
        attempts_made=[view_of(AttemptOut, a) for a in attempts],
        body=body,
    )


@router.post("/deliveries/{delivery_id}/replay", status_code=202, response_model=DeliveryOut)
def replay_delivery(
    delivery_id: Id, caller: CallerDep, request: Request, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Send a failed or delivered delivery again: the same event id and body."""
    replay = partial(deliveries.replay_delivery, delivery_id=delivery_id)
    return change_post(caller, request, idempotency_key, replay, delivery_out, status=202)
