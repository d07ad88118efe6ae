"""Webhook endpoints: create (the secret is returned this once), list, change, rotate the
secret, enable, disable and delete. Services never commit; the caller's unit of work does.

A URL is checked before any of this (``addresses.check_subscription_url``, which may look the
host up): the functions here take only a ``CheckedUrl``, so no caller can skip the check, and
the DNS lookup happens before the caller's transaction has taken any lock.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from tally.config import Settings
from tally.crypto import decrypt_text, encrypt_text
from tally.db.base import utcnow
from tally.db.rows import merchant_row
from tally.errors import Conflict, FieldProblem, ValidationFailed
from tally.webhooks.addresses import CheckedUrl
from tally.webhooks.catalogue import WEBHOOK_EVENTS
from tally.webhooks.orm import EndpointState, WebhookEndpoint, WebhookSubscription
from tally.webhooks.policy import DEFAULT_POLICY, DeliveryPolicy

SECRET_PURPOSE = b"tally webhook signing secret"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a label in front of each random secret
MAX_ENDPOINTS = 20
MAX_DESCRIPTION = 200


class EndpointView(BaseModel):
    """An endpoint as every entry point shows it (never its secret).

    A pydantic model, so the API answers with these same fields (``api.webhooks.EndpointOut``).
    """

    model_config = ConfigDict(frozen=True)

    id: int
    url: str
    description: str
    events: list[str]
    state: str
    disabled_reason: str | None
    disabled_at: datetime | None
    disabled_automatically: bool
    failed_deliveries: int
    failing_since: datetime | None
    last_error: str | None
    last_failure_at: datetime | None
    last_success_at: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime

    @property
    def enabled(self) -> bool:
        """True while the endpoint receives deliveries."""
        return self.state == EndpointState.ENABLED


@dataclass(frozen=True)
class IssuedSecret:
    """An endpoint with its signing secret, which is shown this once and never again."""

    endpoint: EndpointView
    secret: str

    def __repr__(self) -> str:
        return f"IssuedSecret(endpoint={self.endpoint.id!r}, secret='***')"


def new_secret() -> str:
    """A fresh signing secret: 256 random bits."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _encrypt(settings: Settings, secret: str) -> str:
    return encrypt_text(settings, SECRET_PURPOSE, secret)


def signing_secrets(settings: Settings, endpoint: WebhookEndpoint) -> list[str]:
    """The secrets a delivery is signed with now: the current one, then a rotated-out one."""
    found = [decrypt_text(settings, SECRET_PURPOSE, endpoint.secret_encrypted)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires is not None and expires > utcnow():
        found.append(decrypt_text(settings, SECRET_PURPOSE, endpoint.previous_secret_encrypted))
    return found


def parse_events(names: Iterable[str]) -> list[str]:
    """Event type names, checked and de-duplicated in a stable order."""
    chosen = sorted({name.strip() for name in names if name.strip()})
    unknown = [name for name in chosen if name not in WEBHOOK_EVENTS]
    if unknown or not chosen:
        message = (
            f"unknown event types: {', '.join(unknown)}" if unknown else "choose at least one event"
        )
        raise ValidationFailed(
            message,
            [FieldProblem("events", f"{message}; choose from {', '.join(WEBHOOK_EVENTS)}")],
        )
    return chosen


def _description(text: str) -> str:
    text = text.strip()
    if len(text) > MAX_DESCRIPTION:
        raise ValidationFailed(
            "the description is too long",
            [FieldProblem("description", f"at most {MAX_DESCRIPTION} characters")],
        )
    return text


def _events_of(session: Session, endpoint_ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {endpoint_id: [] for endpoint_id in endpoint_ids}
    rows = session.execute(
        select(WebhookSubscription.endpoint_id, WebhookSubscription.event_type)
        .where(WebhookSubscription.endpoint_id.in_(endpoint_ids))
        .order_by(WebhookSubscription.event_type)
    )
    for endpoint_id, event_type in rows:
        found[endpoint_id].append(event_type)
    return found


def _view(endpoint: WebhookEndpoint, events: list[str]) -> EndpointView:
    # Every field but the events is the endpoint's column of the same name.
    columns = {
        name: getattr(endpoint, name) for name in EndpointView.model_fields if name != "events"
    }
    return EndpointView(**columns, events=events)


def view_of(session: Session, endpoint: WebhookEndpoint) -> EndpointView:
    """The view of one endpoint."""
    return _view(endpoint, _events_of(session, [endpoint.id])[endpoint.id])


def _set_events(session: Session, endpoint: WebhookEndpoint, events: list[str]) -> None:
    session.execute(
        delete(WebhookSubscription).where(WebhookSubscription.endpoint_id == endpoint.id)
    )
    session.add_all(
        WebhookSubscription(merchant_id=endpoint.merchant_id, endpoint_id=endpoint.id, event_type=e)
        for e in events
    )
    session.flush()


def create_endpoint(
    session: Session,
    *,
    settings: Settings,
    merchant_id: int,
    url: CheckedUrl,
    events: Iterable[str],
    description: str = "",
) -> IssuedSecret:
    """Subscribe a checked URL to event types; returns the secret, which is not shown again."""
    chosen = parse_events(events)
    text = _description(description)
    count = session.scalar(select(func.count()).where(WebhookEndpoint.merchant_id == merchant_id))
    if (count or 0) >= MAX_ENDPOINTS:
        raise Conflict(f"a store can have at most {MAX_ENDPOINTS} webhook endpoints")
    secret = new_secret()
    endpoint = WebhookEndpoint(
        merchant_id=merchant_id,
        url=url.url,
        description=text,
        secret_encrypted=_encrypt(settings, secret),
        state=EndpointState.ENABLED,
    )
    session.add(endpoint)
    session.flush()
    _set_events(session, endpoint, chosen)
    return IssuedSecret(endpoint=_view(endpoint, chosen), secret=secret)


def get_endpoint(session: Session, *, merchant_id: int, endpoint_id: int) -> WebhookEndpoint:
    """One of the merchant's endpoints, or NotFound."""
    return merchant_row(session, WebhookEndpoint, endpoint_id, merchant_id, "webhook endpoint")


def list_endpoints(session: Session, *, merchant_id: int) -> list[EndpointView]:
    """The merchant's endpoints, oldest first."""
    endpoints = list(
        session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.merchant_id == merchant_id)
            .order_by(WebhookEndpoint.id)
        )
    )
    events = _events_of(session, [e.id for e in endpoints])
    return [_view(e, events[e.id]) for e in endpoints]


def update_endpoint(
    session: Session,
    *,
    merchant_id: int,
    endpoint_id: int,
    url: CheckedUrl | None = None,
    events: Iterable[str] | None = None,
    description: str | None = None,
) -> EndpointView:
    """Change the URL, the event types or the description (what is not given stays)."""
    endpoint = get_endpoint(session, merchant_id=merchant_id, endpoint_id=endpoint_id)
    if url is not None:
        endpoint.url = url.url
    if description is not None:
        endpoint.description = _description(description)
    if events is not None:
        _set_events(session, endpoint, parse_events(events))
    endpoint.updated_at = utcnow()
    session.flush()
    return view_of(session, endpoint)


def rotate_secret(
    session: Session,
    *,
    settings: Settings,
    merchant_id: int,
    endpoint_id: int,
    policy: DeliveryPolicy = DEFAULT_POLICY,
) -> IssuedSecret:
    """A new signing secret; the old one also signs for a while so receivers can switch."""
    endpoint = get_endpoint(session, merchant_id=merchant_id, endpoint_id=endpoint_id)
    secret = new_secret()
    now = utcnow()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = now + policy.previous_secret_valid_for
    endpoint.secret_encrypted = _encrypt(settings, secret)
    endpoint.updated_at = now
    session.flush()
    return IssuedSecret(endpoint=view_of(session, endpoint), secret=secret)


def enable_endpoint(session: Session, *, merchant_id: int, endpoint_id: int) -> EndpointView:
    """Deliver to the endpoint again, with a fresh failure streak."""
    endpoint = get_endpoint(session, merchant_id=merchant_id, endpoint_id=endpoint_id)
    endpoint.state = EndpointState.ENABLED
    endpoint.disabled_reason = None
    endpoint.disabled_at = None
    endpoint.disabled_automatically = False
    endpoint.failed_deliveries = 0
    endpoint.failing_since = None
    endpoint.updated_at = utcnow()
    session.flush()
    return view_of(session, endpoint)


def disable_endpoint(
    session: Session, *, merchant_id: int, endpoint_id: int, reason: str = "Disabled by hand."
) -> EndpointView:
    """Stop delivering: new events are not queued for it, queued ones fail until re-enabled."""
    endpoint = get_endpoint(session, merchant_id=merchant_id, endpoint_id=endpoint_id)
    if endpoint.enabled:
        endpoint.state = EndpointState.DISABLED
        endpoint.disabled_reason = reason
        endpoint.disabled_at = utcnow()
        endpoint.disabled_automatically = False
        endpoint.updated_at = utcnow()
        session.flush()
    return view_of(session, endpoint)


def delete_endpoint(session: Session, *, merchant_id: int, endpoint_id: int) -> None:
    """Remove the endpoint with its subscriptions and delivery history."""
    endpoint = get_endpoint(session, merchant_id=merchant_id, endpoint_id=endpoint_id)
    session.delete(endpoint)
    session.flush()
