"""Signed webhooks end to end: a real receiver verifies signatures, sees retries and replays,
and the guard refuses private addresses when subscribing and again when sending."""

from __future__ import annotations

import json
import logging
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.crypto import decrypt_text
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.errors import Conflict, ValidationFailed
from tally.outbox.orm import OutboxDeliveryAttempt, OutboxMessage
from tally.outbox.registry import Registry
from tally.outbox.worker import Worker
from tally.webhooks import addresses, deliveries, handlers, service
from tally.webhooks.addresses import AddressRefused, check_subscription_url
from tally.webhooks.orm import WebhookDelivery, WebhookEndpoint
from tally.webhooks.policy import DeliveryPolicy
from tally.webhooks.signing import SIGNATURE_HEADER, verify
from tests.support.factories import make_customer, make_merchant
from tests.support.webhook_receiver import Receiver, webhook_receiver

FAST = DeliveryPolicy(
    retry_delays=(0, 0, 0),
    timeout_seconds=0.5,
    connect_timeout_seconds=0.5,
    disable_after_failed_deliveries=3,
)


def _worker(
    settings: Settings, factory: sessionmaker[Session], policy: DeliveryPolicy = FAST
) -> Worker:
    registry = Registry()
    handlers.register(registry, policy)
    return Worker(settings=settings, session_factory=factory, registry=registry)


def _production(settings: Settings) -> Settings:
    return settings.model_copy(update={"environment": "production"})


def _subscribe(
    factory: sessionmaker[Session],
    settings: Settings,
    merchant_id: int,
    url: str,
    events: tuple[str, ...] = ("customer.enrolled", "points.changed"),
) -> service.IssuedSecret:
    checked = check_subscription_url(url, development=settings.is_development)
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        return service.create_endpoint(
            session, settings=settings, merchant_id=merchant_id, url=checked, events=events
        )


def _bodies(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.requests]


def _attempts(factory: sessionmaker[Session], delivery_id: int) -> list[tuple[int, str, Any]]:
    with factory() as session:
        delivery = session.get_one(WebhookDelivery, delivery_id)
        rows = session.scalars(
            select(OutboxDeliveryAttempt)
            .where(OutboxDeliveryAttempt.message_id == delivery.message_id)
            .order_by(OutboxDeliveryAttempt.attempt)
        )
        return [(a.attempt, a.outcome, a.status_code) for a in rows]


def _deliveries(factory: sessionmaker[Session], merchant_id: int, endpoint_id: int) -> list[Any]:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        views, _total = deliveries.list_deliveries(
            session, merchant_id=merchant_id, endpoint_id=endpoint_id
        )
    return views


@dataclass
class FakeDns:
    """Host name -> the addresses it resolves to now (tests change them), and every lookup."""

    answers: dict[str, list[str]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def __setitem__(self, host: str, found: list[str]) -> None:
        self.answers[host] = found

    def getaddrinfo(self, host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        self.calls.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in self.answers[host]
        ]


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    """The guard's DNS lookups answered by the test."""
    dns = FakeDns()
    monkeypatch.setattr(addresses, "_getaddrinfo", dns.getaddrinfo)
    return dns


# --------------------------------------------------------------------------- the receiver


def test_a_receiver_verifies_every_delivery_and_sees_the_retry_after_a_500(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    with webhook_receiver() as receiver:
        issued = _subscribe(session_factory, settings, merchant.id, receiver.url)
        receiver.answer(500)
        customer_id = make_customer(session_factory, merchant.id, points=10)
        stats = _worker(settings, session_factory).drain()

    assert stats.failed == 0
    assert [r.answered for r in receiver.requests] == [500, 200, 200]
    for request in receiver.requests:
        assert request.path == "/hooks/tally"
        assert request.headers["content-type"] == "application/json"
        verify(issued.secret, request.headers[SIGNATURE_HEADER.lower()], request.body)
    bodies = _bodies(receiver)
    # The retried delivery is byte for byte the first one, under the same event id.
    first = receiver.requests[0]
    (retried,) = [
        r for r in receiver.requests[1:] if r.headers["tally-event-id"] == bodies[0]["id"]
    ]
    assert first.body == retried.body
    assert sorted(b["type"] for b in bodies[1:]) == ["customer.enrolled", "points.changed"]
    enrolled = next(b for b in bodies if b["type"] == "customer.enrolled")
    assert enrolled["merchant_id"] == merchant.id
    assert enrolled["data"]["customer_id"] == customer_id
    assert enrolled["data"]["customer"]["id"] == customer_id
    points = next(b for b in bodies if b["type"] == "points.changed")
    assert (points["data"]["points"], points["data"]["balance"]) == (10, 10)

    views = {v.event_type: v for v in _deliveries(session_factory, merchant.id, issued.endpoint.id)}
    assert views["customer.enrolled"].status == "delivered"
    assert views["customer.enrolled"].attempts == 2
    assert views["customer.enrolled"].response_status == 200
    assert _attempts(session_factory, views["customer.enrolled"].id) == [
        (1, "retry_scheduled", 500),
        (2, "succeeded", None),
    ]


def test_a_signature_made_with_another_secret_or_too_long_ago_is_refused(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    from tally.webhooks.signing import SignatureError

    merchant = make_merchant(session_factory)
    with webhook_receiver() as receiver:
        issued = _subscribe(session_factory, settings, merchant.id, receiver.url)
        make_customer(session_factory, merchant.id)
        _worker(settings, session_factory).drain()
    (request,) = receiver.requests
    header = request.headers["tally-signature"]
    timestamp = verify(issued.secret, header, request.body)
    with pytest.raises(SignatureError):
        verify(service.new_secret(), header, request.body)
    with pytest.raises(SignatureError):
        verify(issued.secret, header, request.body + b" ")
    with pytest.raises(SignatureError):
        verify(issued.secret, header, request.body, now=timestamp + 301)


def test_a_failed_delivery_is_replayed_with_the_same_id_and_body(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    with webhook_receiver() as receiver:
        issued = _subscribe(
            session_factory, settings, merchant.id, receiver.url, ("customer.enrolled",)
        )
        receiver.answer(500, 500, 500, 500)  # every attempt FAST allows
        make_customer(session_factory, merchant.id)
        worker = _worker(settings, session_factory)
        assert worker.drain().failed == 1
        (failed,) = _deliveries(session_factory, merchant.id, issued.endpoint.id)
        assert (failed.status, failed.attempts, failed.response_status) == ("failed", 4, 500)

        with unit_of_work(session_factory, merchant_id=merchant.id) as session:
            replayed = deliveries.replay_delivery(
                session, merchant_id=merchant.id, delivery_id=failed.id
            )
        assert replayed.status == "pending"
        assert worker.drain().done == 1
    assert [r.answered for r in receiver.requests] == [500, 500, 500, 500, 200]
    assert len({r.body for r in receiver.requests}) == 1
    assert len({r.headers["tally-event-id"] for r in receiver.requests}) == 1
    for request in receiver.requests:
        verify(issued.secret, request.headers["tally-signature"], request.body)
    (delivered,) = _deliveries(session_factory, merchant.id, issued.endpoint.id)
    assert (delivered.status, delivered.attempts) == ("delivered", 5)
    assert _attempts(session_factory, delivered.id)[-1] == (5, "succeeded", None)
    # A replay of what is still queued is refused, and changes nothing.
    with unit_of_work(session_factory, merchant_id=merchant.id) as session:
        session.execute(update(OutboxMessage).values(status="pending"))
    with pytest.raises(Conflict), unit_of_work(session_factory, merchant_id=merchant.id) as s:
        deliveries.replay_delivery(s, merchant_id=merchant.id, delivery_id=failed.id)


def test_a_timeout_is_retried(session_factory: sessionmaker[Session], settings: Settings) -> None:
    merchant = make_merchant(session_factory)
    with webhook_receiver() as receiver:
        issued = _subscribe(
            session_factory, settings, merchant.id, receiver.url, ("customer.enrolled",)
        )
        receiver.answer((200, 1.5))  # answers after the sender stopped waiting
        make_customer(session_factory, merchant.id)
        _worker(settings, session_factory).drain()
        (view,) = _deliveries(session_factory, merchant.id, issued.endpoint.id)
        assert view.status == "delivered"
        assert [a[1] for a in _attempts(session_factory, view.id)] == [
            "retry_scheduled",
            "succeeded",
        ]
    with session_factory() as session:
        attempt = session.scalars(
            select(OutboxDeliveryAttempt).where(OutboxDeliveryAttempt.outcome == "retry_scheduled")
        ).first()
        assert attempt is not None
        assert "timeout" in (attempt.error or "")


def test_a_4xx_fails_at_once_and_a_redirect_is_not_followed(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    with webhook_receiver() as receiver:
        issued = _subscribe(session_factory, settings, merchant.id, receiver.url)
        receiver.answer(400, 302)
        make_customer(session_factory, merchant.id, points=5)
        _worker(settings, session_factory).drain()
    assert sorted(r.answered for r in receiver.requests) == [302, 400]
    views = _deliveries(session_factory, merchant.id, issued.endpoint.id)
    assert sorted((v.status, v.attempts, v.response_status) for v in views) == [
        ("failed", 1, 302),
        ("failed", 1, 400),
    ]


def test_an_endpoint_failing_in_a_row_is_disabled_with_a_notice(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    with webhook_receiver() as receiver:
        receiver.default = (503, 0.0)
        issued = _subscribe(
            session_factory, settings, merchant.id, receiver.url, ("customer.enrolled",)
        )
        worker = _worker(settings, session_factory)
        for _ in range(FAST.disable_after_failed_deliveries):
            make_customer(session_factory, merchant.id)
            worker.drain()
        sent = len(receiver.requests)
        make_customer(session_factory, merchant.id)  # not queued for a disabled endpoint
        worker.drain()
        assert len(receiver.requests) == sent == 3 * FAST.max_attempts
    first = _deliveries(session_factory, merchant.id, issued.endpoint.id)[0]
    with unit_of_work(session_factory, merchant_id=merchant.id) as session:
        endpoint = session.get_one(WebhookEndpoint, issued.endpoint.id)
        assert endpoint.state == "disabled"
        assert endpoint.disabled_automatically
        assert endpoint.disabled_reason is not None
        assert "3 deliveries in a row failed" in endpoint.disabled_reason
        assert "HTTP 503" in endpoint.disabled_reason
        with pytest.raises(Conflict):
            deliveries.replay_delivery(session, merchant_id=merchant.id, delivery_id=first.id)
        enabled = service.enable_endpoint(session, merchant_id=merchant.id, endpoint_id=endpoint.id)
    assert (enabled.state, enabled.failed_deliveries, enabled.disabled_reason) == (
        "enabled",
        0,
        None,
    )
    assert len(_deliveries(session_factory, merchant.id, issued.endpoint.id)) == 3


def test_failing_for_days_without_a_success_disables_too(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    with webhook_receiver() as receiver:
        receiver.default = (500, 0.0)
        issued = _subscribe(
            session_factory, settings, merchant.id, receiver.url, ("customer.enrolled",)
        )
        with unit_of_work(session_factory) as session:
            session.execute(
                update(WebhookEndpoint).values(failing_since=utcnow() - timedelta(days=3, hours=1))
            )
        make_customer(session_factory, merchant.id)
        _worker(settings, session_factory).drain()
        assert len(receiver.requests) == 1  # disabled by the first failure: no retries follow
    with session_factory() as session:
        endpoint = session.get_one(WebhookEndpoint, issued.endpoint.id)
        assert endpoint.state == "disabled"
        assert "no delivery has succeeded since" in (endpoint.disabled_reason or "")


# --------------------------------------------------------------------------- the secret


def test_the_secret_is_encrypted_at_rest_and_never_logged(
    session_factory: sessionmaker[Session], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    merchant = make_merchant(session_factory)
    with webhook_receiver() as receiver:
        receiver.answer(500, 400)
        issued = _subscribe(
            session_factory, settings, merchant.id, receiver.url, ("customer.enrolled",)
        )
        make_customer(session_factory, merchant.id)
        _worker(settings, session_factory).drain()
        with unit_of_work(session_factory, merchant_id=merchant.id) as session:
            rotated = service.rotate_secret(
                session, settings=settings, merchant_id=merchant.id, endpoint_id=issued.endpoint.id
            )
        assert rotated.secret != issued.secret
        make_customer(session_factory, merchant.id)
        _worker(settings, session_factory).drain()
    # During the overlap the delivery carries a signature for each secret.
    last = receiver.requests[-1]
    verify(rotated.secret, last.headers["tally-signature"], last.body)
    verify(issued.secret, last.headers["tally-signature"], last.body)
    with session_factory() as session:
        endpoint = session.get_one(WebhookEndpoint, issued.endpoint.id)
        assert (
            decrypt_text(settings, service.SECRET_PURPOSE, endpoint.secret_encrypted)
            == rotated.secret
        )
        dump = "\n".join(
            str(row)
            for table in ("webhook_endpoints", "outbox_messages", "outbox_delivery_attempts")
            for row in session.execute(text(f"SELECT * FROM {table}"))
        )
    for secret in (issued.secret, rotated.secret):
        assert secret not in dump
        assert secret not in caplog.text
        assert secret not in repr(issued) + repr(endpoint)


# --------------------------------------------------------------------------- the guard


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://100.64.0.1/hook",
        "https://0.0.0.0/hook",
        "http://93.184.216.34/hook",  # public, but not https
        "https://user:pass@93.184.216.34/hook",
    ],
)
def test_private_addresses_plain_http_and_credentials_are_refused_outside_development(
    session_factory: sessionmaker[Session], settings: Settings, url: str
) -> None:
    production = _production(settings)
    with pytest.raises(AddressRefused) as refused:
        check_subscription_url(url, development=production.is_development)
    assert refused.value.errors[0].field == "url"


def test_a_host_name_is_refused_when_any_of_its_addresses_is_private(
    fake_dns: FakeDns,
) -> None:
    fake_dns["hooks.example.com"] = ["93.184.216.34", "10.1.2.3"]
    with pytest.raises(AddressRefused, match=r"resolves to 10\.1\.2\.3"):
        check_subscription_url("https://hooks.example.com/x", development=False)
    fake_dns["hooks.example.com"] = ["93.184.216.34", "2606:2800:220:1::1"]
    assert check_subscription_url("https://hooks.example.com/x", development=False).host == (
        "hooks.example.com"
    )
    with pytest.raises(AddressRefused, match="does not resolve"):
        check_subscription_url("https://nowhere.example.com/x", development=False)


def test_development_allows_a_local_http_receiver(settings: Settings) -> None:
    assert settings.is_development
    checked = check_subscription_url("http://127.0.0.1:9000/hook", development=True)
    assert (checked.scheme, checked.host, checked.port) == ("http", "127.0.0.1", 9000)


def test_an_address_that_turned_private_since_subscribing_is_refused_at_send_time(
    session_factory: sessionmaker[Session], settings: Settings, fake_dns: FakeDns
) -> None:
    production = _production(settings)
    merchant = make_merchant(session_factory)
    with webhook_receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        fake_dns["hooks.example.com"] = ["93.184.216.34"]
        issued = _subscribe(
            session_factory, production, merchant.id, f"https://hooks.example.com:{port}/hooks"
        )
        # The DNS answer changes to the receiver on loopback, as a rebinding attack would.
        fake_dns["hooks.example.com"] = ["127.0.0.1"]
        make_customer(session_factory, merchant.id)
        stats = _worker(production, session_factory).drain()
        assert receiver.requests == []
    assert stats.failed == 1  # refused for good, not retried
    (view,) = _deliveries(session_factory, merchant.id, issued.endpoint.id)
    assert (view.status, view.attempts) == ("failed", 1)
    assert "refused before sending" in (view.last_error or "")
    assert "127.0.0.1" in (view.last_error or "")


def test_the_sender_connects_to_the_address_it_checked(
    session_factory: sessionmaker[Session], settings: Settings, fake_dns: FakeDns
) -> None:
    # `.invalid` never resolves in real DNS: the delivery arrives only because the sender
    # connected to the one address the guard looked up and checked, keeping the name for Host.
    merchant = make_merchant(session_factory)
    with webhook_receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        fake_dns["hooks.tally.invalid"] = ["127.0.0.1"]
        _subscribe(
            session_factory,
            settings,
            merchant.id,
            f"http://hooks.tally.invalid:{port}/in",
            ("customer.enrolled",),
        )
        make_customer(session_factory, merchant.id)
        _worker(settings, session_factory).drain()
    (request,) = receiver.requests
    assert request.headers["host"] == f"hooks.tally.invalid:{port}"
    assert fake_dns.calls == ["hooks.tally.invalid"]


def test_unknown_events_and_an_empty_choice_are_refused(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    for events in ((), ("points.changed", "points.teleported")):
        with pytest.raises(ValidationFailed):
            _subscribe(session_factory, settings, merchant.id, "http://127.0.0.1:1/x", events)
    with session_factory() as session:
        assert session.scalars(select(WebhookEndpoint)).all() == []


def test_a_deleted_endpoint_gets_nothing_more(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    merchant = make_merchant(session_factory)
    with webhook_receiver() as receiver:
        issued = _subscribe(session_factory, settings, merchant.id, receiver.url)
        make_customer(session_factory, merchant.id)
        with unit_of_work(session_factory, merchant_id=merchant.id) as session:
            service.delete_endpoint(
                session, merchant_id=merchant.id, endpoint_id=issued.endpoint.id
            )
        stats = _worker(settings, session_factory).drain()
        assert receiver.requests == []
    assert stats.failed == 0
    with session_factory() as session:
        assert session.scalars(select(WebhookDelivery)).all() == []


def test_import_finished_is_announced(
    session_factory: sessionmaker[Session], settings: Settings, tmp_path: Any
) -> None:
    from tally.imports import service as imports
    from tally.imports.service import CustomerImportOptions

    merchant = make_merchant(session_factory)
    path = tmp_path / "customers.csv"
    path.write_text("email,points\na@example.com,5\nb@example.com,7\n")
    with webhook_receiver() as receiver:
        _subscribe(session_factory, settings, merchant.id, receiver.url, ("import.finished",))
        imports.run_import(
            session_factory,
            merchant_id=merchant.id,
            path=path,
            options=CustomerImportOptions(),
            created_by="test",
        )
        _worker(settings, session_factory).drain()
    (body,) = _bodies(receiver)
    assert body["type"] == "import.finished"
    assert body["data"]["status"] == "completed"
    assert (body["data"]["new_count"], body["data"]["points_issued"]) == (2, 12)
