"""The webhooks worker plugin: fan events out to endpoints, then deliver each one.

The fan-out handler is subscribed to every domain event a webhook announces; it costs one
indexed lookup for a merchant without endpoints. The delivery handler makes one attempt:
5xx, 429, 408, timeouts and connection errors are retried on the policy's schedule, any other
answer that is not 2xx (and an address the guard refuses) fails the delivery at once. Every
attempt is recorded by the worker in ``outbox_delivery_attempts``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tally.db.engine import unit_of_work
from tally.outbox.registry import HandlerContext, PermanentFailure, Registry, RetryLater
from tally.webhooks import deliveries, sender
from tally.webhooks.addresses import (
    AddressRefused,
    ResolutionFailed,
    allowed_addresses,
    parse_url,
)
from tally.webhooks.catalogue import WEBHOOK_EVENTS
from tally.webhooks.deliveries import DELIVERY_EVENT, DELIVERY_HANDLER, FAN_OUT_HANDLER
from tally.webhooks.policy import DEFAULT_POLICY, DeliveryPolicy

log = logging.getLogger("tally.webhooks")
RETRYABLE_STATUSES = frozenset({408, 429})


class ResponseStatus(Exception):
    """The status an endpoint answered, as the cause the worker reads `status_code` from."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def fan_out_handler(webhook_type: str) -> Callable[[HandlerContext, dict[str, Any]], None]:
    """The handler that queues one delivery of a `webhook_type` event per endpoint."""

    def fan_out(context: HandlerContext, payload: dict[str, Any]) -> None:
        merchant_id = int(payload["merchant_id"])
        with unit_of_work(context.session_factory, merchant_id=merchant_id) as session:
            deliveries.fan_out(
                session,
                merchant_id=merchant_id,
                event_type=webhook_type,
                source_message_id=context.message_id,
                payload=payload,
            )

    return fan_out


def _send(
    context: HandlerContext,
    attempt: deliveries.PreparedAttempt,
    body: bytes,
    policy: DeliveryPolicy,
) -> sender.Response:
    """The HTTP call, after the address check; raises AddressRefused, ResolutionFailed, httpx."""
    development = context.settings.is_development
    target = parse_url(attempt.url, allow_insecure=development)
    addresses = allowed_addresses(target, allow_private=development)
    return sender.post(
        target,
        addresses,
        body=body,
        secrets=attempt.secrets,
        event_id=attempt.event_id,
        event_type=attempt.event_type,
        policy=policy,
    )


@dataclass(frozen=True)
class _Outcome:
    """How an attempt went: the status (if any answer came), the error, whether to retry."""

    status: int | None
    error: str = ""  # empty on success
    retryable: bool = False
    retry_after: float | None = None


def _attempt(
    context: HandlerContext,
    attempt: deliveries.PreparedAttempt,
    body: bytes,
    policy: DeliveryPolicy,
) -> _Outcome:
    """Run the attempt and classify what happened."""
    try:
        response = _send(context, attempt, body, policy)
    except AddressRefused as exc:
        return _Outcome(None, f"refused before sending: {exc}")
    except ResolutionFailed as exc:
        return _Outcome(None, str(exc), retryable=True)
    except httpx.TimeoutException:
        return _Outcome(None, f"no answer within {policy.timeout_seconds:g} s (timeout)", True)
    except httpx.TransportError as exc:
        return _Outcome(None, f"could not connect: {type(exc).__name__}: {exc}", True)
    status = response.status_code
    if 200 <= status < 300:
        return _Outcome(status)
    excerpt = " ".join(response.excerpt.split())[:300]
    error = f"answered HTTP {status}" + (f": {excerpt}" if excerpt else "")
    retryable = status >= 500 or status in RETRYABLE_STATUSES
    return _Outcome(status, error, retryable, response.retry_after if retryable else None)


def deliver(context: HandlerContext, payload: dict[str, Any], policy: DeliveryPolicy) -> None:
    """One attempt of one delivery; raises RetryLater or PermanentFailure when it failed."""
    merchant_id = int(payload["merchant_id"])
    with unit_of_work(context.session_factory, merchant_id=merchant_id) as session:
        prepared = deliveries.prepare_attempt(
            session, settings=context.settings, delivery_id=int(payload["delivery_id"])
        )
    if prepared is None:
        return  # the endpoint (and with it the delivery) was deleted: nothing left to send
    outcome = _attempt(context, prepared, str(payload["body"]).encode("utf-8"), policy)
    final = not outcome.retryable or context.attempt >= policy.max_attempts
    with unit_of_work(context.session_factory, merchant_id=merchant_id) as session:
        if not outcome.error:
            deliveries.record_success(session, attempt=prepared, status=outcome.status or 200)
            return
        notice = deliveries.record_failure(
            session,
            attempt=prepared,
            status=outcome.status,
            error=outcome.error,
            final=final,
            policy=policy,
        )
    if notice is not None:
        log.warning("webhook endpoint %s disabled: %s", prepared.endpoint_id, notice)
    cause = ResponseStatus(outcome.status) if outcome.status is not None else None
    if final:
        raise PermanentFailure(outcome.error) from cause
    delay = policy.retry_delays[min(context.attempt, policy.max_attempts - 1) - 1]
    if outcome.retry_after is not None:
        delay = min(outcome.retry_after, policy.max_retry_after_seconds)
    raise RetryLater(outcome.error, delay_seconds=delay) from cause


def register(registry: Registry, policy: DeliveryPolicy = DEFAULT_POLICY) -> None:
    """Subscribe the fan-out to every announced event, and the delivery handler."""
    for webhook_type, event in WEBHOOK_EVENTS.items():
        registry.subscribe(event.event_type, FAN_OUT_HANDLER, fan_out_handler(webhook_type))

    def deliver_with_policy(context: HandlerContext, payload: dict[str, Any]) -> None:
        deliver(context, payload, policy)

    registry.subscribe(DELIVERY_EVENT, DELIVERY_HANDLER, deliver_with_policy)
