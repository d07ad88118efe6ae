"""Notification emails through the database and the outbox worker (the .eml file transport).

Real SMTP delivery is covered in tests/e2e/test_email_delivery.py.
"""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.errors import NotFound, ValidationFailed
from tally.merchants.orm import Merchant
from tally.notifications import service
from tally.notifications.handlers import HANDLER_NAME, register
from tally.notifications.message import message_id
from tally.notifications.orm import EmailMessage, EmailStatus, MailSettings, StoredEmailTemplate
from tally.notifications.templates import EmailTemplate, EmailType, default_template
from tally.notifications.transport import SmtpTransport, find_stored, list_messages
from tally.outbox.orm import OutboxMessage
from tally.outbox.registry import Registry, load_plugins
from tally.outbox.service import emit
from tally.outbox.worker import Worker
from tests.support.factories import make_customer, make_merchant


@pytest.fixture
def registry() -> Registry:
    """A registry with only the email handler, so no other plugin's rows get in the way."""
    reg = Registry()
    register(reg)
    return reg


def test_the_handler_module_is_a_plugin(settings: Settings) -> None:
    reg = Registry()
    settings.plugin_modules = "tally.notifications.handlers"
    load_plugins(settings, reg)
    assert reg.handler_names("EmailQueued") == [HANDLER_NAME]


def _worker(settings: Settings, factory: sessionmaker[Session], registry: Registry) -> Worker:
    return Worker(settings=settings, session_factory=factory, registry=registry)


def _queue(
    factory: sessionmaker[Session],
    registry: Registry,
    merchant_id: int,
    customer_id: int,
    key: str,
    *,
    email_type: EmailType = EmailType.POINTS_EARNED,
    variables: dict[str, object] | None = None,
) -> int | None:
    with unit_of_work(factory, merchant_id=merchant_id) as session:
        row = service.queue_email(
            session,
            merchant_id=merchant_id,
            customer_id=customer_id,
            email_type=email_type,
            variables=variables if variables is not None else {"points": 25},
            dedupe_key=key,
            registry=registry,
        )
        return None if row is None else row.id


def _emails(factory: sessionmaker[Session]) -> list[EmailMessage]:
    with factory() as session:
        return list(session.scalars(select(EmailMessage).order_by(EmailMessage.id)))


def _email_outbox(factory: sessionmaker[Session]) -> list[OutboxMessage]:
    with factory() as session:
        return list(
            session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.event_type == "EmailQueued")
                .order_by(OutboxMessage.id)
            )
        )


def _count(factory: sessionmaker[Session], model: type) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def _eml_files(settings: Settings) -> list[Path]:
    return sorted(settings.mail_dir.glob("*.eml")) if settings.mail_dir.exists() else []


def test_without_smtp_the_email_is_written_as_an_eml_file(
    settings: Settings, session_factory: sessionmaker[Session], registry: Registry
) -> None:
    m = make_merchant(session_factory, "Harbour Books")
    cid = make_customer(
        session_factory, m.id, email="ada@example.com", first_name="Ada", last_name="Lovelace"
    )
    email_id = _queue(session_factory, registry, m.id, cid, "order:1")
    assert email_id is not None
    [queued] = _emails(session_factory)
    assert (queued.status, queued.recipient, queued.subject, queued.attempts) == (
        "queued",
        "ada@example.com",
        None,
        0,
    )
    assert [(o.handler, o.payload) for o in _email_outbox(session_factory)] == [
        (HANDLER_NAME, {"merchant_id": m.id, "email_id": email_id, "customer_id": cid})
    ]

    _worker(settings, session_factory, registry).drain()

    [sent] = _emails(session_factory)
    expected_id = message_id(f"{m.id}:order:1", "localhost")
    assert sent.status == "sent"
    assert sent.attempts == 1
    assert sent.subject == "You earned 25 points at Harbour Books"
    assert sent.message_id == expected_id
    assert sent.sent_at is not None
    assert sent.last_error is None
    [stored] = list_messages(settings.mail_dir)
    assert stored.subject == "You earned 25 points at Harbour Books"
    assert stored.to == "Ada Lovelace <ada@example.com>"
    assert find_stored(settings.mail_dir, expected_id) == stored.path
    parsed = message_from_bytes(stored.path.read_bytes(), policy=default_policy)
    assert parsed["Message-ID"] == expected_id
    assert parsed["From"] == "Harbour Books <loyalty@localhost>"
    text = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "You just earned 25 points, bringing your balance to 0 points." in text
    assert [o.status for o in _email_outbox(session_factory)] == ["done"]


def test_the_same_dedupe_key_queues_one_email(
    settings: Settings, session_factory: sessionmaker[Session], registry: Registry
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    first = _queue(session_factory, registry, m.id, cid, "order:7")
    again = _queue(session_factory, registry, m.id, cid, "order:7", variables={"points": 99})
    assert again == first
    # Both in one transaction, too.
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        rows = [
            service.queue_email(
                session,
                merchant_id=m.id,
                customer_id=cid,
                email_type="points_earned",
                variables={"points": 1},
                dedupe_key="order:8",
                registry=registry,
            )
            for _ in range(2)
        ]
        assert rows[0] is rows[1]
    assert [(e.dedupe_key, e.variables) for e in _emails(session_factory)] == [
        ("order:7", {"points": 25}),
        ("order:8", {"points": 1}),
    ]
    assert len(_email_outbox(session_factory)) == 2
    _worker(settings, session_factory, registry).drain()
    assert len(_eml_files(settings)) == 2


def test_the_same_key_for_another_merchant_is_another_email(
    session_factory: sessionmaker[Session], registry: Registry
) -> None:
    a, b = make_merchant(session_factory), make_merchant(session_factory)
    ca, cb = make_customer(session_factory, a.id), make_customer(session_factory, b.id)
    assert _queue(session_factory, registry, a.id, ca, "order:1") is not None
    assert _queue(session_factory, registry, b.id, cb, "order:1") is not None
    assert len(_emails(session_factory)) == 2


def test_unsubscribed_customer_is_suppressed_and_logged(
    session_factory: sessionmaker[Session], registry: Registry
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        customer = service.unsubscribe(session, merchant_id=m.id, customer_id=cid)
        first_time = customer.unsubscribed_at
        assert first_time is not None
        # Again: nothing changes, the first time is kept.
        assert service.unsubscribe(session, merchant_id=m.id, customer_id=cid).unsubscribed_at == (
            first_time
        )
    assert _queue(session_factory, registry, m.id, cid, "order:1") is None
    assert _queue(session_factory, registry, m.id, cid, "order:1") is None
    [row] = _emails(session_factory)
    assert (row.status, row.last_error) == ("suppressed", "the customer unsubscribed")
    assert _email_outbox(session_factory) == []

    with unit_of_work(session_factory, merchant_id=m.id) as session:
        assert service.resubscribe(session, merchant_id=m.id, customer_id=cid).unsubscribed_at is (
            None
        )
    # The suppressed key stays used up; a new event is sent.
    assert _queue(session_factory, registry, m.id, cid, "order:1") is None
    assert _queue(session_factory, registry, m.id, cid, "order:2") is not None


def test_a_switched_off_type_is_suppressed(
    session_factory: sessionmaker[Session], registry: Registry
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        view = service.set_template_enabled(
            session, merchant_id=m.id, email_type=EmailType.POINTS_EARNED, enabled=False
        )
        assert (view.enabled, view.customized) == (False, False)
    assert _queue(session_factory, registry, m.id, cid, "order:1") is None
    [row] = _emails(session_factory)
    assert (row.status, row.last_error) == ("suppressed", "points_earned emails are switched off")
    # Other types still go out.
    assert (
        _queue(
            session_factory,
            registry,
            m.id,
            cid,
            "tier:1",
            email_type=EmailType.VIP_TIER_EARNED,
            variables={"tier_name": "Gold"},
        )
        is not None
    )
    assert len(_email_outbox(session_factory)) == 1


def test_unsubscribing_after_queueing_suppresses_at_send_time(
    settings: Settings, session_factory: sessionmaker[Session], registry: Registry
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    _queue(session_factory, registry, m.id, cid, "order:1")
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        service.unsubscribe(session, merchant_id=m.id, customer_id=cid)
    _worker(settings, session_factory, registry).drain()
    [row] = _emails(session_factory)
    assert (row.status, row.last_error, row.attempts) == (
        "suppressed",
        "the customer unsubscribed",
        0,
    )
    assert _eml_files(settings) == []
    assert [o.status for o in _email_outbox(session_factory)] == ["done"]


def test_redelivered_event_for_a_sent_email_sends_nothing(
    settings: Settings, session_factory: sessionmaker[Session], registry: Registry
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    email_id = _queue(session_factory, registry, m.id, cid, "order:1")
    assert email_id is not None
    worker = _worker(settings, session_factory, registry)
    worker.drain()
    with unit_of_work(session_factory) as session:
        emit(
            session,
            service.EmailQueued(merchant_id=m.id, email_id=email_id, customer_id=cid),
            registry=registry,
        )
    worker.drain()
    [row] = _emails(session_factory)
    assert (row.status, row.attempts) == ("sent", 1)
    assert len(_eml_files(settings)) == 1
    assert [o.status for o in _email_outbox(session_factory)] == ["done", "done"]


def test_an_email_left_sending_by_a_crash_is_sent_again_with_the_same_message_id(
    settings: Settings, session_factory: sessionmaker[Session], registry: Registry
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    email_id = _queue(session_factory, registry, m.id, cid, "order:1")
    assert email_id is not None
    worker = _worker(settings, session_factory, registry)
    worker.drain()
    # As if the process died after the file was written but before `sent` was committed.
    with unit_of_work(session_factory) as session:
        session.execute(
            update(EmailMessage)
            .where(EmailMessage.id == email_id)
            .values(status=EmailStatus.SENDING, sent_at=None)
        )
        emit(
            session,
            service.EmailQueued(merchant_id=m.id, email_id=email_id, customer_id=cid),
            registry=registry,
        )
    worker.drain()
    [row] = _emails(session_factory)
    assert (row.status, row.attempts) == ("sent", 2)
    files = _eml_files(settings)
    assert len(files) == 2
    ids = {message_from_bytes(f.read_bytes(), policy=default_policy)["Message-ID"] for f in files}
    assert ids == {message_id(f"{m.id}:order:1", "localhost")}


def test_a_template_that_fails_at_send_time_fails_the_email_for_good(
    settings: Settings, session_factory: sessionmaker[Session], registry: Registry
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    default = default_template(EmailType.POINTS_EARNED)
    # Stored without validation, as an older version of Tally might have left it.
    with unit_of_work(session_factory) as session:
        session.add(
            StoredEmailTemplate(
                merchant_id=m.id,
                email_type="points_earned",
                enabled=True,
                subject=default.subject,
                html_body=default.html_body,
                text_body="Hello\n{{ points / 0 }}",
            )
        )
    _queue(session_factory, registry, m.id, cid, "order:1")
    stats = _worker(settings, session_factory, registry).drain()
    assert (stats.done, stats.failed, stats.retried) == (0, 1, 0)
    [row] = _emails(session_factory)
    assert row.status == "failed"
    assert row.last_error == (
        "the points_earned template cannot be used: "
        "text line 2: ZeroDivisionError: division by zero"
    )
    [outbox] = _email_outbox(session_factory)
    assert (outbox.status, outbox.attempts) == ("failed", 1)
    assert _eml_files(settings) == []


def test_queue_refuses_another_merchants_customer_and_bad_variables(
    session_factory: sessionmaker[Session], registry: Registry
) -> None:
    a, b = make_merchant(session_factory), make_merchant(session_factory)
    cb = make_customer(session_factory, b.id)
    with pytest.raises(NotFound), unit_of_work(session_factory, merchant_id=a.id) as session:
        service.queue_email(
            session,
            merchant_id=a.id,
            customer_id=cb,
            email_type="points_earned",
            variables={"points": 1},
            dedupe_key="x",
            registry=registry,
        )
    for variables, message in [
        ({}, r"points_earned emails need the variables \['points'\]"),
        ({"points": 1, "tier_name": "Gold"}, r"have no variables \['tier_name'\]"),
        ({"points": [1]}, "must be a string or a number"),
        ({"points": None}, "must be a string or a number"),
    ]:
        with pytest.raises(ValueError, match=message):
            _queue(session_factory, registry, b.id, cb, "y", variables=variables)
    assert _emails(session_factory) == []
    assert _email_outbox(session_factory) == []


def test_save_template_refuses_with_the_line_and_changes_nothing(
    session_factory: sessionmaker[Session],
) -> None:
    m = make_merchant(session_factory)
    default = default_template(EmailType.POINTS_EARNED)
    cases = [
        (
            EmailTemplate(default.subject, "<p>Hi</p>\n<p>You have\n{{ pointz }} points</p>", "Hi"),
            "html_body",
            "html",
            "line 3: unknown variable 'pointz' (did you mean 'points'?)",
        ),
        (
            EmailTemplate(default.subject, default.html_body, "Hi\n{{ points }\nbye"),
            "text_body",
            "text",
            "line 2: unexpected '}'",
        ),
        (
            EmailTemplate("Your tier: {{ tier_name }}", default.html_body, default.text_body),
            "subject",
            "subject",
            "line 1: variable 'tier_name' is not available in points_earned emails",
        ),
    ]
    for template, field, part, message in cases:
        with pytest.raises(ValidationFailed) as refused, unit_of_work(session_factory) as session:
            service.save_template(
                session, merchant_id=m.id, email_type=EmailType.POINTS_EARNED, template=template
            )
        assert [(e.field, e.message) for e in refused.value.errors] == [(field, message)]
        assert refused.value.detail == (
            f"the points_earned template cannot be used: {part} {message}"
        )
    assert _count(session_factory, StoredEmailTemplate) == 0
    with session_factory() as session:
        view = service.get_template(session, merchant_id=m.id, email_type=EmailType.POINTS_EARNED)
    assert (view.customized, view.enabled, view.template) == (False, True, default)


def test_save_and_reset_template(
    settings: Settings, session_factory: sessionmaker[Session], registry: Registry
) -> None:
    m = make_merchant(session_factory, "Harbour Books")
    cid = make_customer(session_factory, m.id, first_name="Ada")
    edited = EmailTemplate(
        "{{ points }} points for {{ customer_first_name }}",
        "<p>{{ points }} for you</p> <a href='{{ unsubscribe_url }}'>stop</a>",
        "{{ points }} for you\n{{ unsubscribe_url }}",
    )
    with unit_of_work(session_factory) as session:
        view = service.save_template(
            session, merchant_id=m.id, email_type=EmailType.POINTS_EARNED, template=edited
        )
        assert (view.customized, view.enabled, view.template) == (True, True, edited)
        preview = service.render_for_customer(
            session,
            settings=settings,
            merchant_id=m.id,
            customer_id=cid,
            email_type=EmailType.POINTS_EARNED,
        )
        assert preview.subject == "150 points for Ada"  # 150: the sample points
    _queue(session_factory, registry, m.id, cid, "order:1")
    _worker(settings, session_factory, registry).drain()
    assert [e.subject for e in _emails(session_factory)] == ["25 points for Ada"]

    with unit_of_work(session_factory) as session:
        service.set_template_enabled(
            session, merchant_id=m.id, email_type=EmailType.POINTS_EARNED, enabled=False
        )
        view = service.reset_template(session, merchant_id=m.id, email_type=EmailType.POINTS_EARNED)
    # Back to the shipped text, still switched off.
    assert (view.customized, view.enabled) == (False, False)
    assert view.template == default_template(EmailType.POINTS_EARNED)
    with unit_of_work(session_factory) as session:
        service.set_template_enabled(
            session, merchant_id=m.id, email_type=EmailType.POINTS_EARNED, enabled=True
        )
        service.reset_template(session, merchant_id=m.id, email_type=EmailType.POINTS_EARNED)
    # The default, switched on, needs no row at all.
    assert _count(session_factory, StoredEmailTemplate) == 0


def test_render_for_customer_uses_live_customer_values(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory, "Harbour Books")
    cid = make_customer(session_factory, m.id, first_name="Ada", last_name="Lovelace", points=40)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        customer = session.get(Customer, cid)
        assert customer is not None
        rendered = service.render_for_customer(
            session,
            settings=settings,
            merchant_id=m.id,
            customer_id=cid,
            email_type=EmailType.REFERRAL_SENDER_REWARD,
            variables={"reward_name": "$5 off", "coupon_code": "FIVE"},
        )
        merchant = session.get(Merchant, m.id)
        assert merchant is not None
        values = service.customer_variables(settings, merchant, customer)
    assert values == {
        "customer_first_name": "Ada",
        "customer_last_name": "Lovelace",
        "customer_name": "Ada Lovelace",
        "customer_email": customer.email,
        "balance": 40,
        "store_name": "Harbour Books",
        "store_url": "https://shop.example",
        "unsubscribe_url": service.unsubscribe_link(settings, m.id, cid),
        "referral_url": f"http://tally.test/r/{customer.referral_code}",
    }
    assert f"http://tally.test/r/{customer.referral_code}" in rendered.text
    assert "FIVE" in rendered.text
    assert service.unsubscribe_link(settings, m.id, cid).startswith(f"http://tally.test/u/{m.id}.")


def test_bulk_queue_pages_through_customers_once(
    settings: Settings, session_factory: sessionmaker[Session], registry: Registry
) -> None:
    m = make_merchant(session_factory)
    other = make_merchant(session_factory)
    ids = [make_customer(session_factory, m.id, points=10 * (i + 1)) for i in range(5)]
    make_customer(session_factory, other.id)
    with unit_of_work(session_factory, merchant_id=m.id) as session:
        service.unsubscribe(session, merchant_id=m.id, customer_id=ids[1])

    def run() -> service.BulkQueueResult:
        with unit_of_work(session_factory, merchant_id=m.id) as session:
            return service.queue_bulk(
                session,
                merchant_id=m.id,
                email_type=EmailType.EXPIRY_REMINDER,
                dedupe_key_prefix="expiry:2026-03",
                variables=lambda c: {"points": c.points_balance, "expiry_date": "31 March 2026"},
                where=[Customer.points_balance >= 20],
                batch_size=2,
                registry=registry,
            )

    assert run() == service.BulkQueueResult(queued=3, suppressed=1, duplicates=0)
    assert run() == service.BulkQueueResult(queued=0, suppressed=0, duplicates=4)
    assert [(e.customer_id, e.dedupe_key, e.status) for e in _emails(session_factory)] == [
        (ids[1], f"expiry:2026-03:{ids[1]}", "suppressed"),
        (ids[2], f"expiry:2026-03:{ids[2]}", "queued"),
        (ids[3], f"expiry:2026-03:{ids[3]}", "queued"),
        (ids[4], f"expiry:2026-03:{ids[4]}", "queued"),
    ]
    _worker(settings, session_factory, registry).drain()
    assert [e.status for e in _emails(session_factory)] == ["suppressed", "sent", "sent", "sent"]
    assert sorted(s.subject for s in list_messages(settings.mail_dir)) == [
        "Reminder: 30 points expiring on 31 March 2026",
        "Reminder: 40 points expiring on 31 March 2026",
        "Reminder: 50 points expiring on 31 March 2026",
    ]


def test_mail_settings_password_is_encrypted_at_rest(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory, "Harbour Books")
    with unit_of_work(session_factory) as session:
        service.save_mail_settings(
            session,
            settings=settings,
            merchant_id=m.id,
            host="smtp.harbour.example",
            port=587,
            security="starttls",
            sender="hello@harbour.example",
            username="harbour",
            password="s3cret-pass",
        )
    with session_factory() as session:
        row = session.scalar(select(MailSettings))
        assert row is not None
        assert row.password_encrypted is not None
        assert "s3cret-pass" not in row.password_encrypted
        assert service.decrypt_password(settings, row.password_encrypted) == "s3cret-pass"
        delivery = service.delivery_for(session, settings=settings, merchant_id=m.id)
    assert isinstance(delivery.transport, SmtpTransport)
    assert (delivery.transport.host, delivery.transport.port) == ("smtp.harbour.example", 587)
    assert (delivery.transport.username, delivery.transport.password) == ("harbour", "s3cret-pass")
    assert delivery.sender == "Harbour Books <hello@harbour.example>"
    assert (delivery.message_id_domain, delivery.file_directory) == ("harbour.example", None)

    # Saving again without a new password keeps the stored one.
    with unit_of_work(session_factory) as session:
        service.save_mail_settings(
            session,
            settings=settings,
            merchant_id=m.id,
            host="smtp2.harbour.example",
            port=465,
            security="tls",
            sender="Harbour <hello@harbour.example>",
            username="harbour",
            keep_password=True,
        )
        delivery = service.delivery_for(session, settings=settings, merchant_id=m.id)
    assert isinstance(delivery.transport, SmtpTransport)
    assert delivery.transport.password == "s3cret-pass"
    assert delivery.sender == "Harbour <hello@harbour.example>"

    other_secret = settings.model_copy(update={"secret_key": SecretStr("another-secret")})
    with session_factory() as session:
        row = session.scalar(select(MailSettings))
        assert row is not None
        assert row.password_encrypted is not None
        with pytest.raises(service.PasswordUnreadable):
            service.decrypt_password(other_secret, row.password_encrypted)


def test_mail_settings_are_validated_and_deleted(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    m = make_merchant(session_factory)
    with pytest.raises(ValidationFailed) as refused, unit_of_work(session_factory) as session:
        service.save_mail_settings(
            session,
            settings=settings,
            merchant_id=m.id,
            host="",
            port=0,
            security="ssl",
            sender="not an address",
        )
    assert [e.field for e in refused.value.errors] == ["host", "port", "security", "sender"]
    assert _count(session_factory, MailSettings) == 0
    with unit_of_work(session_factory) as session:
        service.save_mail_settings(
            session,
            settings=settings,
            merchant_id=m.id,
            host="smtp.example",
            port=25,
            security="none",
            sender="a@example.com",
        )
        assert service.file_directory_for(session, settings=settings, merchant_id=m.id) is None
        assert service.delete_mail_settings(session, merchant_id=m.id) is True
        assert service.delete_mail_settings(session, merchant_id=m.id) is False
        assert service.file_directory_for(session, settings=settings, merchant_id=m.id) == (
            settings.mail_dir
        )


def test_mail_log_pages_and_filters(
    session_factory: sessionmaker[Session], registry: Registry
) -> None:
    m = make_merchant(session_factory)
    cid = make_customer(session_factory, m.id)
    for key in ("a", "b", "c"):
        _queue(session_factory, registry, m.id, cid, key)
    with unit_of_work(session_factory) as session:
        session.execute(
            update(EmailMessage)
            .where(EmailMessage.dedupe_key == "b")
            .values(status=EmailStatus.SENT, sent_at=utcnow())
        )
    with session_factory() as session:
        rows, total = service.list_emails(session, merchant_id=m.id, limit=2)
        assert ([r.dedupe_key for r in rows], total) == (["c", "b"], 3)
        rows, total = service.list_emails(session, merchant_id=m.id, status="queued")
        assert ([r.dedupe_key for r in rows], total) == (["c", "a"], 2)
        with pytest.raises(ValidationFailed):
            service.list_emails(session, merchant_id=m.id, status="lost")
