"""`tally webhooks`: add, list and remove endpoints, rotate a secret, enable or disable one,
send a test event, list an endpoint's deliveries, show one with its attempts, replay one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table
from rich.text import Text

from tally.cli.support import (
    MerchantOption,
    command_unit_of_work,
    console,
    fail,
    load_settings,
    resolve_merchant,
)
from tally.errors import DomainError
from tally.webhooks import deliveries, service
from tally.webhooks.addresses import check_subscription_url
from tally.webhooks.catalogue import WEBHOOK_EVENTS

_T = TypeVar("_T")

webhooks_app = typer.Typer(
    help="Signed webhooks: endpoints, their deliveries and every attempt.", no_args_is_help=True
)

MAX_ID = 2**63 - 1
EndpointId = Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The endpoint's id.")]
DeliveryId = Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The delivery's id.")]


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def _plain(value: object) -> Text:
    # URLs and error texts come from outside: Text keeps Rich from reading [brackets] as markup.
    return Text("" if value is None else str(value))


def _print_secret(secret: str) -> None:
    console.print("signing secret: ", Text(secret), sep="")
    console.print("[dim]The secret is shown only once; store it with your receiver.[/]")


@webhooks_app.command("add")
def add(
    url: Annotated[str, typer.Argument(help="Where to POST events (https outside development).")],
    events: Annotated[
        str, typer.Option(help=f"Comma-separated event types: {', '.join(WEBHOOK_EVENTS)}.")
    ],
    description: Annotated[str, typer.Option(help="A note on what receives it.")] = "",
    merchant: MerchantOption = None,
) -> None:
    """Subscribe a URL to events and print its signing secret (shown only this once)."""
    settings = load_settings()
    try:
        checked = check_subscription_url(url, development=settings.is_development)
    except DomainError as error:
        fail(error.detail)
    with command_unit_of_work(settings) as session:
        merchant_id = resolve_merchant(session, merchant)
        issued = service.create_endpoint(
            session,
            settings=settings,
            merchant_id=merchant_id,
            url=checked,
            events=events.split(","),
            description=description,
        )
    console.print(f"endpoint {issued.endpoint.id}: ", _plain(issued.endpoint.url), sep="")
    console.print(f"events: {', '.join(issued.endpoint.events)}")
    _print_secret(issued.secret)


@webhooks_app.command("list")
def list_endpoints(merchant: MerchantOption = None) -> None:
    """Show the endpoints with their state (and why a disabled one was disabled)."""
    with command_unit_of_work() as session:
        merchant_id = resolve_merchant(session, merchant)
        views = service.list_endpoints(session, merchant_id=merchant_id)
    table = Table("id", "url", "events", "state", "last success", "last error")
    for view in views:
        state = view.state + (" (by Tally)" if view.disabled_automatically else "")
        table.add_row(
            str(view.id),
            _plain(view.url),
            ", ".join(view.events),
            state,
            _when(view.last_success_at),
            _plain(view.last_error),
        )
    console.print(table)
    for view in views:
        if not view.enabled and view.disabled_reason:
            console.print(f"[yellow]endpoint {view.id}:[/] ", _plain(view.disabled_reason), sep="")


def _on_endpoint(
    merchant: int | None, endpoint_id: int, change: Callable[..., _T], **extra: Any
) -> _T:
    """``change(session, merchant_id=..., endpoint_id=..., **extra)`` in one unit of work."""
    with command_unit_of_work() as session:
        merchant_id = resolve_merchant(session, merchant)
        return change(session, merchant_id=merchant_id, endpoint_id=endpoint_id, **extra)


@webhooks_app.command("remove")
def remove(endpoint_id: EndpointId, merchant: MerchantOption = None) -> None:
    """Remove an endpoint and its delivery history."""
    _on_endpoint(merchant, endpoint_id, service.delete_endpoint)
    console.print(f"endpoint {endpoint_id} removed")


@webhooks_app.command("rotate-secret")
def rotate_secret(endpoint_id: EndpointId, merchant: MerchantOption = None) -> None:
    """Print a new signing secret; the old one also signs for 24 hours."""
    settings = load_settings()
    with command_unit_of_work(settings) as session:
        merchant_id = resolve_merchant(session, merchant)
        issued = service.rotate_secret(
            session, settings=settings, merchant_id=merchant_id, endpoint_id=endpoint_id
        )
    _print_secret(issued.secret)


@webhooks_app.command("enable")
def enable(endpoint_id: EndpointId, merchant: MerchantOption = None) -> None:
    """Deliver to an endpoint again, with a fresh failure count."""
    _on_endpoint(merchant, endpoint_id, service.enable_endpoint)
    console.print(f"endpoint {endpoint_id} is enabled")


@webhooks_app.command("disable")
def disable(endpoint_id: EndpointId, merchant: MerchantOption = None) -> None:
    """Stop delivering to an endpoint."""
    _on_endpoint(merchant, endpoint_id, service.disable_endpoint, reason="Disabled from the CLI.")
    console.print(f"endpoint {endpoint_id} is disabled")


@webhooks_app.command("test")
def send_test(endpoint_id: EndpointId, merchant: MerchantOption = None) -> None:
    """Queue a `webhook.test` event to an endpoint."""
    delivery = _on_endpoint(merchant, endpoint_id, deliveries.send_test_event)
    console.print(f"delivery {delivery.id} queued ({delivery.event_id})")


@webhooks_app.command("deliveries")
def list_deliveries(
    endpoint_id: EndpointId,
    merchant: MerchantOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
) -> None:
    """Show an endpoint's deliveries, newest first."""
    with command_unit_of_work() as session:
        merchant_id = resolve_merchant(session, merchant)
        views, total = deliveries.list_deliveries(
            session, merchant_id=merchant_id, endpoint_id=endpoint_id, limit=limit
        )
    table = Table("id", "created", "event", "event id", "status", "attempts", "http", "last error")
    for view in views:
        table.add_row(
            str(view.id),
            _when(view.created_at),
            view.event_type,
            view.event_id,
            view.status,
            str(view.attempts),
            str(view.response_status or ""),
            _plain(view.last_error),
        )
    console.print(table)
    console.print(f"{len(views)} of {total} deliveries")


@webhooks_app.command("show")
def show_delivery(delivery_id: DeliveryId, merchant: MerchantOption = None) -> None:
    """Show one delivery, every attempt at it, and its body."""
    with command_unit_of_work() as session:
        merchant_id = resolve_merchant(session, merchant)
        view, attempts, body = deliveries.delivery_details(
            session, merchant_id=merchant_id, delivery_id=delivery_id
        )
    console.print(f"delivery {view.id} of endpoint {view.endpoint_id}: {view.event_type}")
    console.print(f"event id {view.event_id}, {view.status}, {view.attempts} attempts")
    table = Table("#", "started", "ms", "outcome", "status", "error", title="attempts")
    for a in attempts:
        table.add_row(
            str(a.attempt),
            _when(a.started_at),
            str(a.duration_ms),
            a.outcome,
            str(a.status_code or ""),
            _plain(a.error),
        )
    console.print(table if attempts else "no attempts yet")
    console.print(_plain(body))


@webhooks_app.command("replay")
def replay(delivery_id: DeliveryId, merchant: MerchantOption = None) -> None:
    """Send a failed or delivered delivery again (same event id and body), due now."""
    with command_unit_of_work() as session:
        merchant_id = resolve_merchant(session, merchant)
        view = deliveries.replay_delivery(session, merchant_id=merchant_id, delivery_id=delivery_id)
    console.print(f"delivery {view.id} ({view.event_id}) is queued again")
