"""The admin's customer verbs: edit the profile, redeem on the customer's behalf, see coupon
codes and emails; upload a reward's code pool (admin and CLI); who may do which."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tally.cli import app as cli_app
from tally.config import Settings
from tally.customers.orm import Customer
from tally.db.engine import unit_of_work
from tally.errors import DomainError
from tally.ledger.orm import LedgerEntry
from tally.merchants import service as merchants
from tally.notifications.orm import EmailMessage
from tally.outbox.orm import OutboxMessage
from tally.program import redemptions
from tally.program.config_service import update_program
from tally.program.orm import PoolCode, Redemption
from tally.program.redemptions import CodePoolEmpty
from tests.integration.test_admin_pages import (
    PASSWORD,
    Store,
    admin_app,
    make_store,
    sign_in,
    token,
)
from tests.support.factories import make_customer

REWARDS = [
    {"id": "five-off", "type": "fixed_amount", "name": "$5 off", "points_cost": 500, "amount": "5"},
    {"id": "big", "type": "free_shipping", "name": "Free shipping", "points_cost": 5000},
]


@pytest.fixture
def store(session_factory: sessionmaker[Session]) -> Store:
    store = make_store(session_factory, "owner@shop.example")
    with unit_of_work(session_factory, merchant_id=store.merchant_id) as session:
        update_program(session, merchant_id=store.merchant_id, changes={"rewards": REWARDS})
        for role in ("manager", "support"):
            merchants.create_admin_user(
                session,
                merchant_id=store.merchant_id,
                email=f"{role}@shop.example",
                password=PASSWORD,
                role=role,
            )
    return store


def _browser(
    settings: Settings, factory: sessionmaker[Session], email: str
) -> Iterator[TestClient]:
    with TestClient(admin_app(settings, factory)) as browser:
        assert sign_in(browser, email)[0] == 303
        yield browser


@pytest.fixture
def admin(
    settings: Settings, session_factory: sessionmaker[Session], store: Store
) -> Iterator[TestClient]:
    """A manager's browser (managers may edit customers, like owners)."""
    yield from _browser(settings, session_factory, "manager@shop.example")


@pytest.fixture
def support(
    settings: Settings, session_factory: sessionmaker[Session], store: Store
) -> Iterator[TestClient]:
    """A support member's browser."""
    yield from _browser(settings, session_factory, "support@shop.example")


def _customer(factory: sessionmaker[Session], customer_id: int) -> tuple[Any, ...]:
    with factory() as session:
        c = session.get_one(Customer, customer_id)
        return (c.first_name, c.last_name, c.email, c.birthday, c.points_balance)


def _profile_form(browser: TestClient, customer_id: int, **fields: str) -> dict[str, str]:
    base = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "birthday": "",
        "csrf_token": token(browser, f"/admin/customers/{customer_id}"),
    }
    return base | fields


def _updates(factory: sessionmaker[Session]) -> list[Any]:
    with factory() as session:
        return list(
            session.scalars(
                select(OutboxMessage.payload)
                .where(OutboxMessage.event_type == "CustomerUpdated")
                .order_by(OutboxMessage.id)
            )
        )


# --------------------------------------------------------------------------- profile


def test_a_profile_edit_saves_the_canonical_email_and_announces_the_change(
    admin: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    cid = make_customer(session_factory, store.merchant_id, email="ada@example.com")

    saved = admin.post(
        f"/admin/customers/{cid}/profile",
        data=_profile_form(
            admin, cid, email="  Ada.L@Example.COM ", birthday="1990-04-21", first_name=" Ada "
        ),
        follow_redirects=False,
    )

    assert (saved.status_code, saved.headers["location"]) == (
        303,
        f"/admin/customers/{cid}?done=profile-saved",
    )
    first, last, email, birthday, _ = _customer(session_factory, cid)
    assert (first, last, email, str(birthday)) == (
        "Ada",
        "Lovelace",
        "ada.l@example.com",
        "1990-04-21",
    )
    # Dotdigital and webhooks hear of it through the event (the handlers are subscribed to it).
    fields = {tuple(p["fields"]) for p in _updates(session_factory)}
    assert fields == {("email", "first_name", "last_name", "birthday")}
    page = admin.get(f"/admin/customers/{cid}?done=profile-saved")
    assert "Profile saved." in page.text
    assert 'value="ada.l@example.com"' in page.text


def test_a_profile_edit_refuses_a_taken_email_and_bad_birthdays_and_changes_nothing(
    admin: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    cid = make_customer(session_factory, store.merchant_id, email="ada@example.com")
    make_customer(session_factory, store.merchant_id, email="grace@example.com")
    before = _customer(session_factory, cid)

    taken = admin.post(
        f"/admin/customers/{cid}/profile",
        data=_profile_form(admin, cid, email="GRACE@example.com", first_name="Changed"),
    )
    assert taken.status_code == 409
    assert "another customer already has the email &#39;grace@example.com&#39;" in taken.text
    # What was typed stays in the form.
    assert 'value="GRACE@example.com"' in taken.text
    for birthday, message in [
        ("1899-12-31", "must be in 1900 or later"),
        ("2999-01-01", "must not be in the future"),
        ("21/04/1990", "enter a date as YYYY-MM-DD"),
        ("1993-02-30", "enter a date as YYYY-MM-DD"),
    ]:
        refused = admin.post(
            f"/admin/customers/{cid}/profile",
            data=_profile_form(admin, cid, birthday=birthday, first_name="Changed"),
        )
        assert (refused.status_code, message in refused.text) == (422, True), birthday
    not_an_email = admin.post(
        f"/admin/customers/{cid}/profile", data=_profile_form(admin, cid, email="ada at home")
    )
    assert not_an_email.status_code == 422
    assert _customer(session_factory, cid) == before
    assert _updates(session_factory) == []


# --------------------------------------------------------------------------- redeeming


def _redeem(browser: TestClient, customer_id: int, reward_id: str, key: str | None) -> Any:
    data = {"reward_id": reward_id, "csrf_token": token(browser, f"/admin/customers/{customer_id}")}
    if key is not None:
        data["redeem_key"] = key
    return browser.post(
        f"/admin/customers/{customer_id}/redemptions", data=data, follow_redirects=False
    )


def _redemptions(factory: sessionmaker[Session]) -> list[tuple[str, int]]:
    with factory() as session:
        rows = session.execute(
            select(Redemption.coupon_code, Redemption.points_spent).order_by(Redemption.id)
        )
        return [(code, points) for code, points in rows]


def test_a_redemption_for_the_customer_spends_once_per_form_and_shows_its_code_and_email(
    admin: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    cid = make_customer(session_factory, store.merchant_id, points=1200)
    page = admin.get(f"/admin/customers/{cid}")
    # Only what the balance pays for is offered.
    assert '<option value="five-off"' in page.text
    assert '<option value="big"' not in page.text

    first = _redeem(admin, cid, "five-off", "form-1")
    again = _redeem(admin, cid, "five-off", "form-1")  # a double submit of the same form

    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == f"/admin/customers/{cid}?tab=spending&done=redeemed"
    issued = _redemptions(session_factory)
    assert [points for _, points in issued] == [500]
    assert _customer(session_factory, cid)[4] == 700
    spending = admin.get(f"/admin/customers/{cid}?tab=spending")
    assert f'<code data-testid="coupon">{issued[0][0]}</code>' in spending.text
    assert "$5 off" in spending.text
    # The same path as the API: the reward-redeemed email is in the mail log.
    with session_factory() as session:
        kinds = session.scalars(select(EmailMessage.email_type)).all()
    assert kinds == ["reward_redeemed"]
    emails = admin.get(f"/admin/customers/{cid}?tab=emails")
    assert 'data-testid="activity-emails"' in emails.text
    assert "Reward redeemed" in emails.text

    short = _redeem(admin, cid, "big", "form-2")
    assert short.status_code == 409
    assert "the customer has 700 points; 5000 cannot be taken" in short.text
    no_token = _redeem(admin, cid, "five-off", None)
    assert no_token.status_code == 422
    unknown = _redeem(admin, cid, "nope", "form-3")
    assert unknown.status_code == 404
    assert "reward &#39;nope&#39; does not exist" in unknown.text
    assert len(_redemptions(session_factory)) == 1
    assert _customer(session_factory, cid)[4] == 700


# --------------------------------------------------------------------------- roles


def test_support_sees_the_profile_but_may_not_edit_redeem_upload_or_change_rewards(
    support: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    cid = make_customer(session_factory, store.merchant_id, email="ada@example.com", points=900)
    page = support.get(f"/admin/customers/{cid}")
    assert page.status_code == 200
    assert "Edit profile" not in page.text
    assert "Redeem a reward" not in page.text
    before = (_customer(session_factory, cid), _redemptions(session_factory))
    csrf = token(support, f"/admin/customers/{cid}")

    calls = [
        (f"/admin/customers/{cid}/profile", {"email": "new@example.com"}, None),
        (f"/admin/customers/{cid}/redemptions", {"reward_id": "five-off", "redeem_key": "k"}, None),
        ("/admin/settings/rewards/five-off/codes", {}, {"file": ("c.csv", b"A-1\n", "text/csv")}),
        ("/admin/settings/rewards/five-off/edit", {"step": "save"}, None),
        ("/admin/settings/vip/tiers/gold/edit", {"step": "preview"}, None),
    ]
    for path, data, files in calls:
        response = support.post(path, data={"csrf_token": csrf, **data}, files=files)
        assert response.status_code == 403, path
    assert (_customer(session_factory, cid), _redemptions(session_factory)) == before
    with session_factory() as session:
        assert session.scalar(select(func.count(PoolCode.id))) == 0


# --------------------------------------------------------------------------- code pools


def _upload(browser: TestClient, reward_id: str, content: bytes) -> Any:
    return browser.post(
        f"/admin/settings/rewards/{reward_id}/codes",
        data={"csrf_token": token(browser, "/admin/settings/rewards")},
        files={"file": ("codes.csv", content, "text/csv")},
        follow_redirects=False,
    )


def _pool(factory: sessionmaker[Session]) -> list[str]:
    with factory() as session:
        return list(session.scalars(select(PoolCode.code).order_by(PoolCode.id)))


def test_a_code_pool_is_uploaded_in_the_admin_and_a_bad_file_stores_nothing(
    admin: TestClient, store: Store, session_factory: sessionmaker[Session]
) -> None:
    added = _upload(admin, "five-off", b"\xef\xbb\xbfcode\r\nAAA-1\r\nBBB-2\r\nCCC-3\r\n\r\n")
    assert (added.status_code, added.headers["location"]) == (
        303,
        "/admin/settings/rewards?done=codes-uploaded",
    )
    page = admin.get("/admin/settings/rewards")
    assert "3 of 3 left" in page.text

    bad = _upload(admin, "five-off", b"DDD-4\nEEE-5\nddd-4\n")
    assert bad.status_code == 422
    assert "row 3: duplicate of row 1: ddd-4" in bad.text
    elsewhere = _upload(admin, "big", b"NEW-1\naaa-1\n")
    assert elsewhere.status_code == 422
    assert "already in the code pool of reward &#39;five-off&#39;: aaa-1" in elsewhere.text
    empty = _upload(admin, "five-off", b"")
    assert (empty.status_code, "choose a file of codes" in empty.text) == (422, True)
    assert _pool(session_factory) == ["AAA-1", "BBB-2", "CCC-3"]


def test_the_cli_uploads_a_code_pool_and_refuses_a_bad_file_by_row(
    store: Store,
    session_factory: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TALLY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TALLY_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("TALLY_ENVIRONMENT", "test")
    good, bad = tmp_path / "good.txt", tmp_path / "bad.csv"
    good.write_text("X-1\nX-2\n", encoding="utf-8")
    bad.write_text("Y-1\n\nY-1\n", encoding="utf-8")
    runner = CliRunner()

    ok = runner.invoke(cli_app, ["rewards", "codes", "upload", "five-off", str(good)])
    refused = runner.invoke(cli_app, ["rewards", "codes", "upload", "five-off", str(bad)])
    unknown = runner.invoke(cli_app, ["rewards", "codes", "upload", "nope", str(good)])

    assert ok.exit_code == 0, ok.output
    assert "2 codes added, 0 already in the pool; 2 of 2 left for five-off" in ok.output
    assert refused.exit_code == 2
    assert "row 2: the row is blank" in refused.output
    assert "row 3: duplicate of row 1: Y-1" in refused.output
    assert unknown.exit_code == 2
    assert "reward 'nope' does not exist" in unknown.output
    assert _pool(session_factory) == ["X-1", "X-2"]


def test_20_parallel_redemptions_of_a_10_code_pool_issue_10_codes_and_10_refusals(
    store: Store, session_factory: sessionmaker[Session]
) -> None:
    m = store.merchant_id
    codes = [f"POOL-{n:02}" for n in range(10)]
    with unit_of_work(session_factory, merchant_id=m) as session:
        redemptions.upload_code_pool(session, merchant_id=m, reward_id="five-off", lines=codes)
    customers = [make_customer(session_factory, m, points=500) for _ in range(20)]

    def redeem(customer_id: int) -> str | DomainError:
        try:
            with unit_of_work(session_factory, merchant_id=m) as session:
                return redemptions.redeem_reward(
                    session,
                    merchant_id=m,
                    customer_id=customer_id,
                    reward_id="five-off",
                    idempotency_key=f"race-{customer_id}",
                ).coupon_code
        except DomainError as error:
            return error

    with ThreadPoolExecutor(20) as threads:
        outcomes = list(threads.map(redeem, customers))

    issued = sorted(o for o in outcomes if isinstance(o, str))
    refused = [o for o in outcomes if not isinstance(o, str)]
    assert issued == codes
    assert {(type(e), e.detail) for e in refused} == {
        (CodePoolEmpty, "the code pool of reward 'five-off' is empty")
    }
    with session_factory() as session:
        balances = sorted(session.scalars(select(Customer.points_balance)))
        spends = session.scalar(select(func.count()).where(LedgerEntry.kind == "spend"))
        free = session.scalar(select(func.count()).where(PoolCode.redemption_id.is_(None)))
    # The ten refused customers kept their points; nothing of a refusal was written.
    assert balances == [0] * 10 + [500] * 10
    assert (spends, free) == (10, 0)
