"""The storefront API: the public program, the signed-in shopper, and what they may do."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from tally.api.app import create_app
from tally.config import Settings
from tally.db.base import utcnow
from tally.db.engine import unit_of_work
from tally.state import AppState
from tally.storefront import service
from tally.storefront.orm import StorefrontSettings
from tests.support.factories import make_customer, make_merchant
from tests.support.storefront import STORE_ORIGIN, Store, ledger_state, make_store

UNAUTHORIZED = {
    "type": "about:blank",
    "title": "Unauthorized",
    "status": 401,
    "detail": "the shopper's signature is not valid",
    "errors": [],
}


def _store(client: TestClient, factory: sessionmaker[Session], settings: Settings) -> Store:
    return make_store(client, factory, settings)


# -- the public program ----------------------------------------------------------------------


def test_a_guest_sees_the_program_with_an_etag(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    r = client.get(store.url("/program"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["store"] == {"name": body["store"]["name"], "currency": "USD"}
    assert body["appearance"]["launcher_label"] == "Rewards"
    assert [(w["id"], w["kind"], w["points"], w["claimable"]) for w in body["ways_to_earn"]] == [
        ("create_account", "create_account", 50, False),
        ("birthday", "birthday", 20, False),
        ("referral", "referral", 30, False),
        ("follow", "custom", 15, True),
        ("review", "custom", 40, False),
    ]
    assert body["rewards"] == [
        {
            "id": "five-off",
            "title": "5 off",
            "type": "fixed_amount",
            "points_cost": 100,
            "value": "5",
            "min_order": None,
            "description": "5 USD off your order.",
        }
    ]
    assert body["vip"] == {
        "enabled": True,
        "metric": "points_earned",
        "tiers": [
            {"id": "silver", "name": "Silver", "threshold": "100", "benefits": []},
            {
                "id": "gold",
                "name": "Gold",
                "threshold": "500",
                "benefits": ["1.5x points on orders"],
            },
        ],
    }
    assert body["referrals"] == {"enabled": True, "sender_points": 30, "friend_reward": "10 points"}
    assert r.headers["cache-control"] == "public, max-age=60"
    etag = r.headers["etag"]
    again = client.get(store.url("/program"), headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert client.get(store.url("/program"), headers={"If-None-Match": '"x"'}).status_code == 200


def test_the_etag_changes_with_the_program(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    etag = client.get(store.url("/program")).headers["etag"]
    change = {"birthday": {"enabled": True, "points": 25}}
    assert client.patch("/api/v1/program", json=change, headers=store.merchant.headers).is_success
    r = client.get(store.url("/program"), headers={"If-None-Match": etag})
    assert r.status_code == 200
    assert r.headers["etag"] != etag


def test_an_unknown_or_disabled_widget_is_not_found(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    settings.storefront_settings_cache_seconds = 0
    store = _store(client, session_factory, settings)
    assert client.get("/storefront/v1/wid_nobody/program").status_code == 404
    with unit_of_work(session_factory, merchant_id=store.merchant.id) as session:
        service.set_enabled(session, config=settings, merchant_id=store.merchant.id, enabled=False)
    assert client.get(store.url("/program")).status_code == 404
    signed = store.signed("7", "ann@example.com")
    assert client.get(store.url("/me"), headers=signed).status_code == 404


def test_a_process_keeps_the_widget_settings_for_the_cache_time(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    settings.storefront_settings_cache_seconds = 3600
    store = _store(client, session_factory, settings)
    assert client.get(store.url("/program")).status_code == 200
    with unit_of_work(session_factory, merchant_id=store.merchant.id) as session:
        service.set_enabled(session, config=settings, merchant_id=store.merchant.id, enabled=False)
    # Within the cache time this process still knows the widget as it was ...
    assert client.get(store.url("/program")).status_code == 200
    # ... and a process that reads the settings afresh sees the change.
    settings.storefront_settings_cache_seconds = 0
    fresh = create_app(settings, AppState(settings=settings, session_factory=session_factory))
    with TestClient(fresh) as other:
        assert other.get(store.url("/program")).status_code == 404


# -- identity and enrolment ------------------------------------------------------------------


def test_a_new_shopper_is_enrolled_on_first_sight_once(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    headers = store.signed("7001", "Ann@Example.com")
    first = client.get(store.url("/me"), headers=headers)
    assert first.status_code == 200, first.text
    me = first.json()["customer"]
    assert (me["email"], me["points_balance"], me["birthday"], me["birthday_editable"]) == (
        "ann@example.com",
        50,
        None,
        True,
    )
    assert me["tier"] is None
    assert me["next_tier"] == {
        "id": "silver",
        "name": "Silver",
        "threshold": "100",
        "remaining": "50",
        "progress": 50,
    }
    assert me["referral"]["link"] == f"http://tally.test/r/{me['referral']['code']}"
    assert set(me["referral"]["share"]) == {"email", "facebook", "x", "whatsapp"}
    assert first.json()["affordable_reward_ids"] == []
    assert first.json()["coupons"] == []
    assert first.headers["cache-control"] == "no-store"
    assert client.get(store.url("/me"), headers=headers).json()["customer"] == me
    customers, entries, _ = ledger_state(session_factory, store.merchant.id)
    assert customers == [("ann@example.com", "7001", "member", 50, None)]
    assert [e[1:] for e in entries] == [("earn", 50, "create_account")]


def test_a_headless_store_signs_in_with_a_token(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    r = client.get(store.url("/me"), headers=store.bearer("h-1", "head@example.com"))
    assert r.status_code == 200, r.text
    assert r.json()["customer"]["points_balance"] == 50
    # Once known, the store id alone names the shopper.
    known = client.get(store.url("/me"), headers=store.bearer("h-1", None))
    assert known.json()["customer"]["email"] == "head@example.com"


def test_every_bad_signature_gets_the_same_401_and_changes_nothing(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    other = _store(client, session_factory, settings)
    good = store.signed("7", "ann@example.com")
    before = ledger_state(session_factory, store.merchant.id)
    attempts: list[dict[str, str]] = [
        {},
        {**good, "X-Tally-Signature": "0" * 64},
        {**good, "X-Tally-Customer-Id": "8"},
        {**good, "X-Tally-Customer-Email": "bob@example.com"},
        store.signed("7", "ann@example.com", secret=other.secret),
        {"Authorization": "Bearer not-a-token"},
        store.bearer("7", "ann@example.com", lifetime=16 * 60),
        store.bearer("7", None),  # an unknown shopper without an email cannot be enrolled
        other.bearer("7", "ann@example.com"),
    ]
    for headers in attempts:
        r = client.get(store.url("/me"), headers=headers)
        assert (r.status_code, r.json()) == (401, UNAUTHORIZED), headers
    assert ledger_state(session_factory, store.merchant.id) == before


def test_the_previous_secret_verifies_for_24_hours_after_a_rotation(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    settings.storefront_settings_cache_seconds = 0
    store = _store(client, session_factory, settings)
    old = store.signed("7", "ann@example.com")
    with unit_of_work(session_factory, merchant_id=store.merchant.id) as session:
        new_secret = service.rotate_secret(session, config=settings, merchant_id=store.merchant.id)
    assert client.get(store.url("/me"), headers=old).status_code == 200
    new = store.signed("7", "ann@example.com", secret=new_secret)
    assert client.get(store.url("/me"), headers=new).status_code == 200
    with unit_of_work(session_factory) as session:
        session.execute(
            update(StorefrontSettings)
            .where(StorefrontSettings.merchant_id == store.merchant.id)
            .values(previous_secret_expires_at=utcnow() - timedelta(seconds=1))
        )
    assert client.get(store.url("/me"), headers=old).json() == UNAUTHORIZED
    assert client.get(store.url("/me"), headers=new).status_code == 200


def test_a_customer_with_the_email_and_no_store_id_is_linked(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    make_customer(session_factory, store.merchant.id, email="m@example.com", points=7)
    make_customer(session_factory, store.merchant.id, email="g@example.com", state="guest")
    me = client.get(store.url("/me"), headers=store.signed("1", "m@example.com")).json()
    assert me["customer"]["points_balance"] == 7
    # A guest becomes a member through the program's enrolment: the create-account points.
    me = client.get(store.url("/me"), headers=store.signed("2", "g@example.com")).json()
    assert me["customer"]["points_balance"] == 50
    customers, _, _ = ledger_state(session_factory, store.merchant.id)
    assert customers == [
        ("g@example.com", "2", "member", 50, None),
        ("m@example.com", "1", "member", 7, None),
    ]


def test_an_email_held_by_another_store_customer_is_refused(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    make_customer(session_factory, store.merchant.id, email="x@example.com", external_id="1")
    before = ledger_state(session_factory, store.merchant.id)
    r = client.get(store.url("/me"), headers=store.signed("2", "x@example.com"))
    assert r.status_code == 409
    assert r.json()["detail"] == "this email belongs to another customer of the store"
    assert ledger_state(session_factory, store.merchant.id) == before


def test_concurrent_first_requests_enrol_the_shopper_once(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    headers = store.signed("race", "race@example.com")
    start = threading.Barrier(6)
    statuses: list[int] = []

    def first_visit() -> None:
        start.wait()
        statuses.append(client.get(store.url("/me"), headers=headers).status_code)

    threads = [threading.Thread(target=first_visit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 6
    customers, entries, _ = ledger_state(session_factory, store.merchant.id)
    assert customers == [("race@example.com", "race", "member", 50, None)]
    assert [e[1:] for e in entries] == [("earn", 50, "create_account")]


# -- reading ---------------------------------------------------------------------------------


def _shopper_with_points(
    client: TestClient, session_factory: sessionmaker[Session], store: Store, points: int
) -> dict[str, str]:
    make_customer(
        session_factory, store.merchant.id, email="rich@example.com", external_id="r", points=points
    )
    return store.signed("r", "rich@example.com")


def test_activity_is_the_shoppers_ledger_newest_first(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    headers = _shopper_with_points(client, session_factory, store, 250)
    client.post(
        store.url("/me/redemptions"),
        json={"reward_id": "five-off"},
        headers={**headers, "Idempotency-Key": "k1"},
    )
    r = client.get(store.url("/me/activity?limit=1"), headers=headers)
    assert r.status_code == 200
    page = r.json()
    assert (page["total"], page["limit"], page["offset"]) == (2, 1, 0)
    assert [(i["kind"], i["points"], i["reason"]) for i in page["items"]] == [
        ("spend", -100, "Redeemed 5 off")
    ]
    second = client.get(store.url("/me/activity?limit=1&offset=1"), headers=headers).json()
    assert [(i["kind"], i["points"]) for i in second["items"]] == [("adjust", 250)]


# -- redeeming -------------------------------------------------------------------------------


def test_redeeming_twice_with_one_key_spends_once(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    headers = {**_shopper_with_points(client, session_factory, store, 250), "Idempotency-Key": "a"}
    first = client.post(
        store.url("/me/redemptions"), json={"reward_id": "five-off"}, headers=headers
    )
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["reward_id"], body["points_spent"], body["points_balance"]) == (
        "five-off",
        100,
        150,
    )
    again = client.post(
        store.url("/me/redemptions"), json={"reward_id": "five-off"}, headers=headers
    )
    assert (again.status_code, again.json()) == (201, body)
    assert again.headers["idempotent-replayed"] == "true"
    me = client.get(store.url("/me"), headers=headers).json()
    assert me["customer"]["points_balance"] == 150
    assert [c["code"] for c in me["coupons"]] == [body["code"]]
    assert me["coupons"][0]["used"] is False
    _, entries, redemptions = ledger_state(session_factory, store.merchant.id)
    assert [e[1:3] for e in entries if e[1] == "spend"] == [("spend", -100)]
    assert redemptions == 1


def test_a_double_click_sends_one_key_twice_at_once_and_spends_once(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    headers = {**_shopper_with_points(client, session_factory, store, 250), "Idempotency-Key": "dc"}
    start = threading.Barrier(4)
    answers: list[tuple[int, str]] = []

    def click() -> None:
        start.wait()
        r = client.post(
            store.url("/me/redemptions"), json={"reward_id": "five-off"}, headers=headers
        )
        answers.append((r.status_code, r.json()["code"]))

    threads = [threading.Thread(target=click) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 4
    assert {status for status, _ in answers} == {201}
    assert len({code for _, code in answers}) == 1
    _, entries, redemptions = ledger_state(session_factory, store.merchant.id)
    assert [e[1:3] for e in entries if e[1] == "spend"] == [("spend", -100)]
    assert redemptions == 1


def test_two_keys_are_two_redemptions(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    headers = _shopper_with_points(client, session_factory, store, 250)
    codes = []
    for key in ("one", "two"):
        r = client.post(
            store.url("/me/redemptions"),
            json={"reward_id": "five-off"},
            headers={**headers, "Idempotency-Key": key},
        )
        assert r.status_code == 201
        codes.append(r.json()["code"])
    assert codes[0] != codes[1]
    assert ledger_state(session_factory, store.merchant.id)[0][0][3] == 50


def test_a_redemption_needs_an_idempotency_key_and_enough_points(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    headers = _shopper_with_points(client, session_factory, store, 60)
    before = ledger_state(session_factory, store.merchant.id)
    missing = client.post(
        store.url("/me/redemptions"), json={"reward_id": "five-off"}, headers=headers
    )
    assert missing.status_code == 422
    poor = client.post(
        store.url("/me/redemptions"),
        json={"reward_id": "five-off"},
        headers={**headers, "Idempotency-Key": "p"},
    )
    assert (poor.status_code, poor.json()["title"]) == (409, "Insufficient points")
    unknown = client.post(
        store.url("/me/redemptions"),
        json={"reward_id": "nothing"},
        headers={**headers, "Idempotency-Key": "q"},
    )
    assert unknown.status_code == 404
    assert ledger_state(session_factory, store.merchant.id) == before


def test_two_shoppers_sending_the_same_key_each_get_their_own_redemption(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    rich = _shopper_with_points(client, session_factory, store, 250)
    make_customer(
        session_factory, store.merchant.id, email="too@example.com", external_id="t", points=100
    )
    other = store.signed("t", "too@example.com")
    body = {"reward_id": "five-off"}
    a = client.post(
        store.url("/me/redemptions"), json=body, headers={**rich, "Idempotency-Key": "k"}
    )
    b = client.post(
        store.url("/me/redemptions"), json=body, headers={**other, "Idempotency-Key": "k"}
    )
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["code"] != b.json()["code"]
    assert (a.json()["points_balance"], b.json()["points_balance"]) == (150, 0)


# -- birthday and actions --------------------------------------------------------------------


def test_the_birthday_is_set_once(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    headers = store.signed("b", "b@example.com")
    r = client.put(store.url("/me/birthday"), json={"birthday": "1990-05-17"}, headers=headers)
    assert r.status_code == 200, r.text
    me = r.json()["customer"]
    assert (me["birthday"], me["birthday_editable"]) == ("1990-05-17", False)
    before = ledger_state(session_factory, store.merchant.id)
    again = client.put(store.url("/me/birthday"), json={"birthday": "1991-01-01"}, headers=headers)
    assert again.status_code == 409
    assert ledger_state(session_factory, store.merchant.id) == before


def test_a_birthday_in_the_future_is_refused(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    headers = store.signed("c", "c@example.com")
    client.get(store.url("/me"), headers=headers)
    before = ledger_state(session_factory, store.merchant.id)
    for value in ("2999-01-01", "1800-01-01", "17/05/1990", 0):
        r = client.put(store.url("/me/birthday"), json={"birthday": value}, headers=headers)
        assert r.status_code == 422, value
    assert ledger_state(session_factory, store.merchant.id) == before


def test_a_claimable_action_gives_points_within_its_limit(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    headers = store.signed("f", "f@example.com")
    r = client.post(store.url("/me/actions/follow"), headers=headers)
    assert (r.status_code, r.json()) == (201, {"points_awarded": 15, "points_balance": 65})
    before = ledger_state(session_factory, store.merchant.id)
    again = client.post(store.url("/me/actions/follow"), headers=headers)
    assert again.status_code == 409
    assert client.post(store.url("/me/actions/review"), headers=headers).status_code == 404
    assert client.post(store.url("/me/actions/nothing"), headers=headers).status_code == 404
    assert ledger_state(session_factory, store.merchant.id) == before


def test_a_claimable_action_needs_a_limit(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    merchant = make_merchant(session_factory)
    action = {"id": "like", "name": "Like us", "points": 5, "storefront_claimable": True}
    r = client.patch("/api/v1/program", json={"custom_actions": [action]}, headers=merchant.headers)
    assert r.status_code == 422
    assert "give it a limit" in r.text


# -- CORS and limits -------------------------------------------------------------------------


def _preflight(client: TestClient, store: Store, origin: str) -> Any:
    return client.options(
        store.url("/me/redemptions"),
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "idempotency-key, x-tally-signature",
        },
    )


def test_cors_answers_the_stores_origins_and_tallys_own(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    for origin in (STORE_ORIGIN, "http://tally.test"):
        r = _preflight(client, store, origin)
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == origin
        assert "POST" in r.headers["access-control-allow-methods"]
        assert "Idempotency-Key" in r.headers["access-control-allow-headers"]
        assert "X-Tally-Signature" in r.headers["access-control-allow-headers"]
        assert r.headers["vary"] == "Origin"
    program = client.get(store.url("/program"), headers={"Origin": STORE_ORIGIN})
    assert program.headers["access-control-allow-origin"] == STORE_ORIGIN
    assert "ETag" in program.headers["access-control-expose-headers"]
    # A refusal carries the headers too, so the widget can read it.
    refused = client.get(store.url("/me"), headers={"Origin": STORE_ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == STORE_ORIGIN


def test_another_origin_is_refused_and_changes_nothing(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    store = _store(client, session_factory, settings)
    before = ledger_state(session_factory, store.merchant.id)
    for origin in ("https://evil.example", "null", "https://shop.example.evil"):
        assert _preflight(client, store, origin).status_code == 403
        headers = {**store.signed("e", "e@example.com"), "Origin": origin}
        r = client.get(store.url("/me"), headers=headers)
        assert (r.status_code, r.json()["title"]) == (403, "Forbidden")
        assert "access-control-allow-origin" not in r.headers
        posted = client.post(store.url("/me/actions/follow"), headers=headers)
        assert posted.status_code == 403
    assert ledger_state(session_factory, store.merchant.id) == before


def test_the_address_limit_answers_429_with_retry_after(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    settings.storefront_requests_per_minute_per_address = 3
    app = create_app(settings, AppState(settings=settings, session_factory=session_factory))
    with TestClient(app) as limited:
        store = _store(limited, session_factory, settings)
        statuses = [limited.get(store.url("/program")).status_code for _ in range(3)]
        refused = limited.get(store.url("/program"), headers={"Origin": STORE_ORIGIN})
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.json()["title"] == "Too many requests"
    assert 1 <= int(refused.headers["retry-after"]) <= 20


def test_the_shopper_limit_answers_429_with_retry_after(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    settings.storefront_requests_per_minute_per_shopper = 2
    app = create_app(settings, AppState(settings=settings, session_factory=session_factory))
    with TestClient(app) as limited:
        store = _store(limited, session_factory, settings)
        ann, bob = store.signed("1", "ann@example.com"), store.signed("2", "bob@example.com")
        assert [limited.get(store.url("/me"), headers=ann).status_code for _ in range(2)] == [
            200,
            200,
        ]
        refused = limited.get(store.url("/me"), headers=ann)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 30
        before = ledger_state(session_factory, store.merchant.id)
        claim = limited.post(store.url("/me/actions/follow"), headers=ann)
        assert claim.status_code == 429
        assert ledger_state(session_factory, store.merchant.id) == before
        assert limited.get(store.url("/me"), headers=bob).status_code == 200
