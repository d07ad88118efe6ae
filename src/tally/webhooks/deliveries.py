"""Deliveries: one per event and endpoint, carried by an outbox message, every attempt recorded.

The fan-out (an outbox handler for each domain event a webhook announces) builds the JSON body
once, with an event id derived from the event's outbox message, and stores it in the delivery's
message: every retry and every replay sends the same bytes under the same id, so a receiver
can drop duplicates by ``id``. Only the signature's timestamp is new on each attempt.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.db.pages import page
from tally.db.rows import merchant_row, reloaded_row
from tally.db.upsert import insert_unless_exists
from tally.errors import Conflict
from tally.outbox import service as outbox
from tally.outbox.orm import MessageStatus, OutboxMessage
from tally.outbox.registry import PermanentFailure
from tally.webhooks.catalogue import TEST_EVENT
from tally.webhooks.orm import EndpointState, WebhookDelivery, WebhookEndpoint, WebhookSubscription
from tally.webhooks.policy import DeliveryPolicy
from tally.webhooks.service import get_endpoint, signing_secrets

DELIVERY_EVENT = "WebhookDelivery"
DELIVERY_HANDLER = "webhooks.deliver"
FAN_OUT_HANDLER = "webhooks.fan_out"
_EVENT_IDS = uuid.UUID("4f1f8c1e-7f7e-4d5e-9a51-2b8f0d6c3a10")


class EndpointDisabled(PermanentFailure):
    """The endpoint was disabled after the delivery was queued; a replay sends it later."""


def event_id_for(message_id: int, created_at: datetime) -> str:
    """The id of an event, the same whenever its fan-out runs (the message's id and time)."""
    return "evt_" + uuid.uuid5(_EVENT_IDS, f"{message_id}:{created_at.isoformat()}").hex


def body_text(
    event_id: str, event_type: str, merchant_id: int, created_at: datetime, data: Any
) -> str:
    """The exact JSON a delivery sends (compact, keys sorted, so it never changes)."""
    body = {
        "id": event_id,
        "type": event_type,
        "created_at": created_at.isoformat(timespec="seconds"),
        "merchant_id": merchant_id,
        "data": data,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def event_data(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
    """An event's facts for receivers, with the customer's identity where there is one."""
    data = {key: value for key, value in payload.items() if key != "merchant_id"}
    customer_id = data.get("customer_id")
    if isinstance(customer_id, int):
        customer = session.get(Customer, customer_id)
        data["customer"] = (
            None  # deleted since the event
            if customer is None
            else {"id": customer.id, "email": customer.email, "external_id": customer.external_id}
        )
    return data


def queue_delivery(
    session: Session, *, endpoint: WebhookEndpoint, event_id: str, event_type: str, body: str
) -> WebhookDelivery | None:
    """One delivery and its outbox message; None when this event is already queued for it."""
    now = utcnow()
    delivery = insert_unless_exists(
        session,
        WebhookDelivery,
        {
            "merchant_id": endpoint.merchant_id,
            "endpoint_id": endpoint.id,
            "event_id": event_id,
            "event_type": event_type,
            "created_at": now,
        },
        ("endpoint_id", "event_id"),
    )
    if delivery is None:
        return None
    message = OutboxMessage(
        merchant_id=endpoint.merchant_id,
        event_type=DELIVERY_EVENT,
        handler=DELIVERY_HANDLER,
        payload={"merchant_id": endpoint.merchant_id, "delivery_id": delivery.id, "body": body},
        available_at=now,
        created_at=now,
    )
    session.add(message)
    session.flush()
    delivery.message_id = message.id
    session.flush()
    return delivery


def fan_out(
    session: Session,
    *,
    merchant_id: int,
    event_type: str,
    source_message_id: int,
    payload: dict[str, Any],
) -> list[WebhookDelivery]:
    """Queue one delivery of an event for each enabled endpoint subscribed to its type."""
    endpoints = list(
        session.scalars(
            select(WebhookEndpoint)
            .join(WebhookSubscription, WebhookSubscription.endpoint_id == WebhookEndpoint.id)
            .where(
                WebhookSubscription.merchant_id == merchant_id,
                WebhookSubscription.event_type == event_type,
                WebhookEndpoint.state == EndpointState.ENABLED,
            )
            .order_by(WebhookEndpoint.id)
        )
    )
    if not endpoints:
        return []
    source = session.get(OutboxMessage, source_message_id)
    created_at = source.created_at if source is not None else utcnow()
    event_id = event_id_for(source_message_id, created_at)
    body = body_text(event_id, event_type, merchant_id, created_at, event_data(session, payload))
    queued = [
        queue_delivery(session, endpoint=e, event_id=event_id, event_type=event_type, body=body)
        for e in endpoints
    ]
    return [d for d in queued if d is not None]


def send_test_event(session: Session, *, merchant_id: int, endpoint_id: int) -> WebhookDelivery:
    """Queue a `webhook.test` delivery to one endpoint (to check the receiver end to end)."""
    endpoint = get_endpoint(session, merchant_id=merchant_id, endpoint_id=endpoint_id)
    if not endpoint.enabled:
        raise Conflict(f"webhook endpoint {endpoint_id} is disabled: enable it first")
    now = utcnow()
    event_id = "evt_" + uuid.uuid4().hex
    data = {"message": "A test event from Tally: your endpoint is connected."}
    body = body_text(event_id, TEST_EVENT, merchant_id, now, data)
    delivery = queue_delivery(
        session, endpoint=endpoint, event_id=event_id, event_type=TEST_EVENT, body=body
    )
    assert delivery is not None  # a fresh random id cannot be taken
    return delivery


def queue_test_event(session: Session, *, merchant_id: int, endpoint_id: int) -> DeliveryView:
    """`send_test_event`, answered with the view of the queued delivery."""
    delivery = send_test_event(session, merchant_id=merchant_id, endpoint_id=endpoint_id)
    view, _attempts, _body = delivery_details(
        session, merchant_id=merchant_id, delivery_id=delivery.id
    )
    return view


# --------------------------------------------------------------------------- attempts


@dataclass(frozen=True)
class PreparedAttempt:
    """What the sender needs for one attempt (the secrets only in memory, never stored)."""

    endpoint_id: int
    delivery_id: int
    url: str
    event_id: str
    event_type: str
    secrets: list[str]

    def __repr__(self) -> str:
        return f"PreparedAttempt(delivery_id={self.delivery_id!r}, secrets='***')"


def prepare_attempt(
    session: Session, *, settings: Settings, delivery_id: int
) -> PreparedAttempt | None:
    """The delivery's endpoint and secrets; None when either was deleted since it was queued."""
    delivery = session.get(WebhookDelivery, delivery_id)
    endpoint = None if delivery is None else session.get(WebhookEndpoint, delivery.endpoint_id)
    if delivery is None or endpoint is None:
        return None
    if not endpoint.enabled:
        raise EndpointDisabled(f"webhook endpoint {endpoint.id} is disabled")
    return PreparedAttempt(
        endpoint_id=endpoint.id,
        delivery_id=delivery.id,
        url=endpoint.url,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        secrets=signing_secrets(settings, endpoint),
    )


def record_success(session: Session, *, attempt: PreparedAttempt, status: int) -> None:
    """The endpoint answered 2xx: the failure streak ends."""
    now = utcnow()
    session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == attempt.endpoint_id)
        .values(failed_deliveries=0, failing_since=None, last_success_at=now)
    )
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == attempt.delivery_id)
        .values(response_status=status, delivered_at=now)
    )


def record_failure(
    session: Session,
    *,
    attempt: PreparedAttempt,
    status: int | None,
    error: str,
    final: bool,
    policy: DeliveryPolicy,
) -> str | None:
    """Count a failed attempt against the endpoint; returns the notice if it got disabled.

    The counters move in single UPDATEs so concurrent workers delivering to one endpoint
    never lose a failure, and the disabling is conditional on the endpoint still being enabled
    so its notice is written once.
    """
    now = utcnow()
    values: dict[str, Any] = {"last_error": error, "last_failure_at": now}
    if final:
        values["failed_deliveries"] = WebhookEndpoint.failed_deliveries + 1
    session.execute(
        update(WebhookEndpoint).where(WebhookEndpoint.id == attempt.endpoint_id).values(**values)
    )
    session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == attempt.endpoint_id, WebhookEndpoint.failing_since.is_(None))
        .values(failing_since=now)
    )
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == attempt.delivery_id)
        .values(response_status=status)
    )
    endpoint = reloaded_row(session, WebhookEndpoint, attempt.endpoint_id)
    notice = _disabling_notice(endpoint, now, error, policy)
    if notice is None:
        return None
    disabled = session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint.id, WebhookEndpoint.state == EndpointState.ENABLED)
        .values(
            state=EndpointState.DISABLED,
            disabled_reason=notice,
            disabled_at=now,
            disabled_automatically=True,
            updated_at=now,
        )
    )
    return notice if disabled.rowcount else None  # type: ignore[attr-defined]


def _disabling_notice(
    endpoint: WebhookEndpoint, now: datetime, error: str, policy: DeliveryPolicy
) -> str | None:
    if endpoint.failed_deliveries >= policy.disable_after_failed_deliveries:
        why = f"{endpoint.failed_deliveries} deliveries in a row failed"
    elif endpoint.failing_since is not None and (
        now - endpoint.failing_since >= policy.disable_after_failing_for
    ):
        why = f"no delivery has succeeded since {endpoint.failing_since:%Y-%m-%d %H:%M} UTC"
    else:
        return None
    return (
        f"Tally disabled this endpoint on {now:%Y-%m-%d %H:%M} UTC: {why}. Fix the receiver,"
        f" enable the endpoint again, then replay the failed deliveries. Last error: {error}"
    )


# --------------------------------------------------------------------------- history


class DeliveryView(BaseModel):
    """A delivery and how it is going (the API answers with these fields)."""

    model_config = ConfigDict(frozen=True)

    id: int
    endpoint_id: int
    event_id: str
    event_type: str
    status: str  # pending, processing, delivered, failed
    attempts: int
    response_status: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


class AttemptView(BaseModel):
    """One recorded attempt of a delivery."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    attempt: int
    started_at: datetime
    duration_ms: int
    outcome: str
    status_code: int | None
    error: str | None


def _delivery_view(delivery: WebhookDelivery, message: OutboxMessage | None) -> DeliveryView:
    status = "failed" if message is None else outbox.status_name(message.status)
    pending = message is not None and message.status == MessageStatus.PENDING
    return DeliveryView(
        id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=status,
        attempts=0 if message is None else message.attempts,
        response_status=delivery.response_status,
        last_error=None if message is None else message.last_error,
        next_attempt_at=message.available_at if pending and message is not None else None,
        delivered_at=delivery.delivered_at,
        created_at=delivery.created_at,
    )


def list_deliveries(
    session: Session, *, merchant_id: int, endpoint_id: int, limit: int = 50, offset: int = 0
) -> tuple[list[DeliveryView], int]:
    """An endpoint's deliveries, newest first, and how many there are."""
    get_endpoint(session, merchant_id=merchant_id, endpoint_id=endpoint_id)
    stmt = select(WebhookDelivery).where(
        WebhookDelivery.merchant_id == merchant_id, WebhookDelivery.endpoint_id == endpoint_id
    )
    rows, total = page(
        session, stmt, order_by=WebhookDelivery.id.desc(), limit=limit, offset=offset
    )
    ids = [d.message_id for d in rows if d.message_id is not None]
    messages = {
        m.id: m for m in session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(ids)))
    }
    return [_delivery_view(d, messages.get(d.message_id or 0)) for d in rows], total


def get_delivery(session: Session, *, merchant_id: int, delivery_id: int) -> WebhookDelivery:
    """One of the merchant's deliveries, or NotFound."""
    return merchant_row(session, WebhookDelivery, delivery_id, merchant_id, "webhook delivery")


def delivery_details(
    session: Session, *, merchant_id: int, delivery_id: int
) -> tuple[DeliveryView, list[AttemptView], str | None]:
    """A delivery, every attempt at it, and the body it sends."""
    delivery = get_delivery(session, merchant_id=merchant_id, delivery_id=delivery_id)
    message = (
        None if delivery.message_id is None else session.get(OutboxMessage, delivery.message_id)
    )
    attempts = (
        []
        if message is None
        else [
            AttemptView.model_validate(a)
            for a in outbox.message_attempts(session, message_id=message.id)
        ]
    )
    body = None if message is None else str(message.payload.get("body"))
    return _delivery_view(delivery, message), attempts, body


def replay_delivery(session: Session, *, merchant_id: int, delivery_id: int) -> DeliveryView:
    """Send a failed (or delivered) delivery again: same event id, same body, due now.

    Its attempts keep counting: a delivery that had retries left continues its schedule, one
    that used them all gets this one attempt.
    """
    delivery = get_delivery(session, merchant_id=merchant_id, delivery_id=delivery_id)
    endpoint = get_endpoint(session, merchant_id=merchant_id, endpoint_id=delivery.endpoint_id)
    if not endpoint.enabled:
        raise Conflict(f"webhook endpoint {endpoint.id} is disabled: enable it before replaying")
    if delivery.message_id is None:
        raise Conflict(f"webhook delivery {delivery_id} has no stored body to send again")
    # Conditional on the status, so a replay racing the worker or another replay wins once.
    changed = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == delivery.message_id,
            OutboxMessage.status.in_([MessageStatus.FAILED, MessageStatus.DONE]),
        )
        .values(**outbox.requeued())
        .execution_options(synchronize_session=False)
    )
    message = reloaded_row(session, OutboxMessage, delivery.message_id)
    if not changed.rowcount:  # type: ignore[attr-defined]
        raise Conflict(
            f"webhook delivery {delivery_id} is {outbox.status_name(message.status)}:"
            " only failed or delivered deliveries can be replayed"
        )
    return _delivery_view(delivery, message)
