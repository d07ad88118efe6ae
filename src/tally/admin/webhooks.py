"""Integrations → Webhooks: endpoints (the secret appears once, after creating or rotating),
each endpoint's deliveries with every attempt, replaying one, and the notice of an endpoint
Tally disabled because it kept failing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from tally.admin.web import Admin, AdminDep, AdminRoute, FormDep, redirect, render, text
from tally.api.edge import Id
from tally.errors import DomainError
from tally.webhooks import deliveries, service
from tally.webhooks.addresses import check_subscription_url
from tally.webhooks.catalogue import DESCRIPTIONS, WEBHOOK_EVENTS

router = APIRouter(route_class=AdminRoute)

PAGE = "/admin/integrations/webhooks"
DELIVERIES_SHOWN = 50
# This page's own notices (after a redirect with ?done=...): fixed texts, nothing echoed.
NOTICES = {
    "deleted": "Webhook endpoint removed.",
    "enabled": "Endpoint enabled: new events are delivered again.",
    "disabled": "Endpoint disabled: no events are delivered to it.",
    "replayed": "The delivery is queued again; the worker sends it shortly.",
    "tested": "A test event is queued; the worker sends it shortly.",
    "saved": "Endpoint saved.",
}


def _notice(request: Request) -> dict[str, Any]:
    found = NOTICES.get(request.query_params.get("done", ""))
    return {"notice": found} if found else {}


def _list_page(
    request: Request,
    admin: Admin,
    *,
    issued: service.IssuedSecret | None = None,
    error: DomainError | None = None,
    values: dict[str, Any] | None = None,
) -> HTMLResponse:
    with admin.unit_of_work() as session:
        endpoints = service.list_endpoints(session, merchant_id=admin.merchant_id)
    return render(
        request,
        "integrations/webhooks.html",
        {
            **_notice(request),
            "title": "Webhooks",
            "nav": "webhooks",
            "endpoints": endpoints,
            "event_types": DESCRIPTIONS,
            "issued": issued,
            "error": error.detail if error else None,
            "problems": error.errors if error else [],
            "values": values or {"events": []},
        },
        status_code=error.status_code if error else 200,
    )


@router.get("/integrations/webhooks", include_in_schema=False)
def webhooks_page(request: Request, admin: AdminDep) -> Response:
    """The store's endpoints and the form to add one."""
    return _list_page(request, admin)


def _chosen_events(form: Any) -> list[str]:
    return [name for name in WEBHOOK_EVENTS if form.get(f"event.{name}") is not None]


@router.post("/integrations/webhooks", include_in_schema=False)
def create_endpoint(request: Request, admin: AdminDep, form: FormDep) -> Response:
    """Add an endpoint and show its signing secret this once."""
    url_text, description = text(form, "url"), text(form, "description")
    events = _chosen_events(form)
    values = {"url": url_text, "description": description, "events": events}
    try:
        url = check_subscription_url(url_text, development=admin.state.settings.is_development)
        with admin.unit_of_work() as session:
            issued = service.create_endpoint(
                session,
                settings=admin.state.settings,
                merchant_id=admin.merchant_id,
                url=url,
                events=events,
                description=description,
            )
    except DomainError as error:
        return _list_page(request, admin, error=error, values=values)
    return _list_page(request, admin, issued=issued)


def _endpoint_page(
    request: Request,
    admin: Admin,
    endpoint_id: int,
    *,
    issued: service.IssuedSecret | None = None,
    error: DomainError | None = None,
) -> HTMLResponse:
    with admin.unit_of_work() as session:
        endpoint = service.get_endpoint(
            session, merchant_id=admin.merchant_id, endpoint_id=endpoint_id
        )
        view = service.view_of(session, endpoint)
        items, total = deliveries.list_deliveries(
            session, merchant_id=admin.merchant_id, endpoint_id=endpoint_id, limit=DELIVERIES_SHOWN
        )
    return render(
        request,
        "integrations/webhook_endpoint.html",
        {
            **_notice(request),
            "title": f"Webhook {view.url}",
            "nav": "webhooks",
            "endpoint": view,
            "deliveries": items,
            "total": total,
            "event_types": DESCRIPTIONS,
            "issued": issued,
            "error": error.detail if error else None,
            "problems": error.errors if error else [],
        },
        status_code=error.status_code if error else 200,
    )


@router.get("/integrations/webhooks/{endpoint_id}", include_in_schema=False)
def endpoint_page(request: Request, admin: AdminDep, endpoint_id: Id) -> Response:
    """One endpoint: its state (and why it was disabled), its events and its deliveries."""
    return _endpoint_page(request, admin, endpoint_id)


@router.post("/integrations/webhooks/{endpoint_id}", include_in_schema=False)
def update_endpoint(request: Request, admin: AdminDep, form: FormDep, endpoint_id: Id) -> Response:
    """Change the URL, the events or the description."""
    try:
        url = check_subscription_url(
            text(form, "url"), development=admin.state.settings.is_development
        )
        with admin.unit_of_work() as session:
            service.update_endpoint(
                session,
                merchant_id=admin.merchant_id,
                endpoint_id=endpoint_id,
                url=url,
                events=_chosen_events(form),
                description=text(form, "description"),
            )
    except DomainError as error:
        return _endpoint_page(request, admin, endpoint_id, error=error)
    return redirect(f"{PAGE}/{endpoint_id}?done=saved")


@router.post("/integrations/webhooks/{endpoint_id}/rotate-secret", include_in_schema=False)
def rotate_secret(request: Request, admin: AdminDep, form: FormDep, endpoint_id: Id) -> Response:
    """A new signing secret, shown this once; the old one keeps signing for 24 hours."""
    del form
    with admin.unit_of_work() as session:
        issued = service.rotate_secret(
            session,
            settings=admin.state.settings,
            merchant_id=admin.merchant_id,
            endpoint_id=endpoint_id,
        )
    return _endpoint_page(request, admin, endpoint_id, issued=issued)


def _act(request: Request, admin: AdminDep, endpoint_id: int, action: str) -> Response:
    try:
        with admin.unit_of_work() as session:
            if action == "enabled":
                service.enable_endpoint(
                    session, merchant_id=admin.merchant_id, endpoint_id=endpoint_id
                )
            elif action == "disabled":
                service.disable_endpoint(
                    session,
                    merchant_id=admin.merchant_id,
                    endpoint_id=endpoint_id,
                    reason=f"Disabled by {admin.email}.",
                )
            elif action == "tested":
                deliveries.send_test_event(
                    session, merchant_id=admin.merchant_id, endpoint_id=endpoint_id
                )
            else:
                service.delete_endpoint(
                    session, merchant_id=admin.merchant_id, endpoint_id=endpoint_id
                )
                return redirect(f"{PAGE}?done=deleted")
    except DomainError as error:
        return _endpoint_page(request, admin, endpoint_id, error=error)
    return redirect(f"{PAGE}/{endpoint_id}?done={action}#deliveries")


# The buttons of an endpoint's page: the path's last part, the notice key, the route's doc.
_ACTIONS = (
    ("enable", "enabled", "Deliver to the endpoint again, with a fresh failure count."),
    ("disable", "disabled", "Stop delivering to the endpoint."),
    ("test", "tested", "Queue a `webhook.test` event to the endpoint."),
    ("delete", "deleted", "Remove the endpoint and its delivery history."),
)


def _add_action_route(path: str, action: str, doc: str) -> None:
    def act(request: Request, admin: AdminDep, form: FormDep, endpoint_id: Id) -> Response:
        del form
        return _act(request, admin, endpoint_id, action)

    act.__name__ = act.__qualname__ = f"{path}_endpoint"
    act.__doc__ = doc
    router.post(f"/integrations/webhooks/{{endpoint_id}}/{path}", include_in_schema=False)(act)


for _path, _action, _doc in _ACTIONS:
    _add_action_route(_path, _action, _doc)


@router.get("/integrations/webhooks/deliveries/{delivery_id}", include_in_schema=False)
def delivery_page(request: Request, admin: AdminDep, delivery_id: Id) -> Response:
    """One delivery: every attempt (when, how long, status, error) and the body it sends."""
    with admin.unit_of_work() as session:
        view, attempts, body = deliveries.delivery_details(
            session, merchant_id=admin.merchant_id, delivery_id=delivery_id
        )
    return render(
        request,
        "integrations/webhook_delivery.html",
        {
            "title": f"Delivery {view.id}",
            "nav": "webhooks",
            "delivery": view,
            "attempts": attempts,
            "body": body,
        },
    )


@router.post("/integrations/webhooks/deliveries/{delivery_id}/replay", include_in_schema=False)
def replay(request: Request, admin: AdminDep, form: FormDep, delivery_id: Id) -> Response:
    """Send a failed or delivered delivery again (same event id, same body)."""
    del form
    with admin.unit_of_work() as session:
        endpoint_id = deliveries.get_delivery(
            session, merchant_id=admin.merchant_id, delivery_id=delivery_id
        ).endpoint_id
    try:
        with admin.unit_of_work() as session:
            deliveries.replay_delivery(
                session, merchant_id=admin.merchant_id, delivery_id=delivery_id
            )
    except DomainError as error:
        return _endpoint_page(request, admin, endpoint_id, error=error)
    return redirect(f"{PAGE}/{endpoint_id}?done=replayed#deliveries")
