"""The httpx Dotdigital client against the emulator over real HTTP."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import httpx
import pytest

from tally.devtools.dotdigital_emulator import (
    DEMO_PASSWORD,
    DEMO_USERNAME,
    EmulatorAccount,
    EmulatorConfig,
    EmulatorServer,
)
from tally.devtools.dotdigital_validation import DATE_PROBLEM
from tally.integrations.dotdigital.client import (
    DataField,
    DotdigitalAuthError,
    DotdigitalFieldExists,
    DotdigitalRateLimited,
    DotdigitalRejected,
    DotdigitalRetryable,
    DotdigitalUnanswered,
    DotdigitalWrongRegion,
    HttpDotdigitalClient,
    ImportFailure,
    ImportStatus,
    error_from_response,
    import_entry,
)
from tally.integrations.dotdigital.errors import MAX_RESET_SECONDS
from tally.integrations.dotdigital.fields import (
    DataFieldMapping,
    FieldConflict,
    build_import_batches,
    contact_data_fields,
    ensure_fields,
)

US_USERNAME = "apiuser-us@apiconnector.com"
US_PASSWORD = "us-password"
REFERRAL_URL = "https://shop.example.com/r/ADA-42"
BUILT_INS = ["FIRSTNAME", "LASTNAME", "FULLNAME", "GENDER", "POSTCODE"]


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(
        accounts=[
            EmulatorAccount(DEMO_USERNAME, DEMO_PASSWORD, 1),
            EmulatorAccount(US_USERNAME, US_PASSWORD, 2),
        ],
        import_delay_seconds=0.2,
        hang_seconds=2.0,
    )
    with EmulatorServer(config) as running:
        yield running


@pytest.fixture
def emulator(server: EmulatorServer) -> EmulatorServer:
    server.emulator.reset()
    return server


@pytest.fixture
def client(emulator: EmulatorServer) -> Iterator[HttpDotdigitalClient]:
    with HttpDotdigitalClient(DEMO_USERNAME, DEMO_PASSWORD, emulator.base_url, 2.0) as api:
        yield api


def _wait_finished(client: HttpDotdigitalClient, import_id: str) -> ImportStatus:
    deadline = time.monotonic() + 5
    while True:
        status = client.import_status(import_id)
        if status.finished or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


# --------------------------------------------------------------------------- auth and regions


def test_account_info_returns_the_endpoint_without_trailing_slash(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    info = client.account_info()

    assert info.api_endpoint == emulator.base_url
    assert info.account_id == 1
    assert info.properties["ApiEndpoint"] == emulator.base_url + "/"
    assert info.properties["ApiCallsInLastHour"] == 1


def test_wrong_password_raises_auth_error_and_stores_nothing(emulator: EmulatorServer) -> None:
    api = HttpDotdigitalClient(DEMO_USERNAME, "not-the-password", emulator.base_url, 2.0)
    with api, pytest.raises(DotdigitalAuthError) as caught:
        api.upsert_contact("ada@example.com", {})

    assert str(caught.value) == "Authorization has been denied for this request."
    assert emulator.emulator.contacts == {}
    assert [call["status"] for call in emulator.emulator.calls] == [401]


def test_unknown_api_user_raises_auth_error(emulator: EmulatorServer) -> None:
    api = HttpDotdigitalClient("apiuser-nobody@apiconnector.com", "x", emulator.base_url)
    with api, pytest.raises(DotdigitalAuthError):
        api.account_info()


def test_password_never_appears_in_repr_or_errors(emulator: EmulatorServer) -> None:
    secret = "s3cret-Pa55word"
    api = HttpDotdigitalClient(DEMO_USERNAME, secret, emulator.base_url, 2.0)
    with api, pytest.raises(DotdigitalAuthError) as caught:
        api.account_info()

    assert secret not in repr(api)
    assert secret not in str(caught.value)
    assert repr(api) == (
        f"HttpDotdigitalClient(username='{DEMO_USERNAME}', base_url='{emulator.base_url}')"
    )


def test_region_discovery_then_wrong_region_is_refused(emulator: EmulatorServer) -> None:
    with HttpDotdigitalClient(US_USERNAME, US_PASSWORD, emulator.base_url, 2.0) as r1:
        info = r1.account_info()
        with pytest.raises(DotdigitalWrongRegion):
            r1.list_data_fields()
        with pytest.raises(DotdigitalWrongRegion):
            r1.upsert_contact("ada@example.com", {})
        with r1.with_base_url(info.api_endpoint) as r2:
            fields = r2.list_data_fields()

    assert info.api_endpoint == emulator.url_for_region(2) != emulator.base_url
    assert [f.name for f in fields] == BUILT_INS
    assert emulator.emulator.contacts_of(US_USERNAME) == {}


# --------------------------------------------------------------------------- data fields


def test_create_data_field_is_listed(client: HttpDotdigitalClient) -> None:
    created = client.create_data_field("LOYALTY_POINTS", "Numeric")

    assert created == DataField("LOYALTY_POINTS", "Numeric", "Private", None)
    assert client.list_data_fields()[-1] == created


def test_creating_an_existing_field_raises_field_exists_in_any_letter_case(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    client.create_data_field("LOYALTY_POINTS", "Numeric")

    with pytest.raises(DotdigitalFieldExists) as caught:
        client.create_data_field("loyalty_points", "String")

    assert (caught.value.status, caught.value.code) == (400, "ERROR_NON_UNIQUE_DATAFIELD")
    assert caught.value.message == "Field already exists"
    assert [f["type"] for f in emulator.emulator.data_fields if f["name"] == "LOYALTY_POINTS"] == [
        "Numeric"
    ]
    assert len(emulator.emulator.data_fields) == 6


def test_invalid_field_type_is_rejected_with_dotdigital_code(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    with pytest.raises(DotdigitalRejected) as caught:
        client.create_data_field("LOYALTY_POINTS", "Integer")

    assert not isinstance(caught.value, DotdigitalFieldExists)
    assert (caught.value.status, caught.value.code) == (400, "ERROR_DATAFIELD_INVALID")
    assert caught.value.message == ("Data field type must be one of String, Numeric, Date, Boolean")
    assert len(emulator.emulator.data_fields) == 5


def test_field_limit_is_reported_by_ensure_fields(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    emulator.emulator.set_faults(max_custom_data_fields=2)

    result = ensure_fields(client, DataFieldMapping())

    assert result.created == ["LOYALTY_POINTS", "LOYALTY_REFERRAL_URL"]
    assert [(f.name, f.code) for f in result.failures] == [
        ("LOYALTY_BIRTHDAY", "ERROR_DATAFIELD_LIMITEXCEEDED"),
        ("LOYALTY_VIP_TIER", "ERROR_DATAFIELD_LIMITEXCEEDED"),
    ]
    assert not result.ok
    assert result.usable_mapping(DataFieldMapping()) == DataFieldMapping(
        birthday=None, vip_tier=None
    )


def test_ensure_fields_creates_missing_and_reports_wrong_type(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    client.create_data_field("LOYALTY_POINTS", "Numeric")
    client.create_data_field("loyalty_vip_tier", "Numeric")

    first = ensure_fields(client, DataFieldMapping())
    second = ensure_fields(client, DataFieldMapping())

    assert first.created == ["LOYALTY_REFERRAL_URL", "LOYALTY_BIRTHDAY"]
    assert first.existing == ["LOYALTY_POINTS"]
    assert first.conflicts == [
        FieldConflict("vip_tier", "loyalty_vip_tier", expected_type="String", actual_type="Numeric")
    ]
    assert second.created == []
    assert second.existing == ["LOYALTY_POINTS", "LOYALTY_REFERRAL_URL", "LOYALTY_BIRTHDAY"]
    assert second.conflicts == first.conflicts
    # The conflicting field is reported, never changed.
    types = {f["name"]: f["type"] for f in emulator.emulator.data_fields}
    assert types == {
        **dict.fromkeys(BUILT_INS, "String"),
        "LOYALTY_POINTS": "Numeric",
        "loyalty_vip_tier": "Numeric",
        "LOYALTY_REFERRAL_URL": "String",
        "LOYALTY_BIRTHDAY": "Date",
    }


# --------------------------------------------------------------------------- contacts


def test_upsert_creates_then_updates_and_null_clears(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    mapping = DataFieldMapping()
    assert ensure_fields(client, mapping).ok

    first = client.upsert_contact(
        "ada@example.com",
        contact_data_fields(
            mapping,
            points_balance=120,
            referral_url=REFERRAL_URL,
            birthday=date(1990, 5, 1),
            vip_tier="Gold",
        ),
    )
    stored_after_create = emulator.emulator.contacts["ada@example.com"]
    second = client.upsert_contact(
        "ada@example.com",
        contact_data_fields(
            mapping, points_balance=80, referral_url=REFERRAL_URL, birthday=None, vip_tier=None
        ),
    )
    stored = emulator.emulator.contacts["ada@example.com"]

    assert first.created is True
    assert second.created is False
    assert first.contact.contact_id == second.contact.contact_id == 1001
    assert stored_after_create["dataFields"] == {
        "LOYALTY_POINTS": 120,
        "LOYALTY_REFERRAL_URL": REFERRAL_URL,
        "LOYALTY_BIRTHDAY": "1990-05-01T12:00:00+00:00",
        "LOYALTY_VIP_TIER": "Gold",
    }
    assert stored["dataFields"] == {"LOYALTY_POINTS": 80, "LOYALTY_REFERRAL_URL": REFERRAL_URL}
    assert stored["created"] == stored_after_create["created"]
    assert stored["updated"] >= stored_after_create["updated"]
    assert second.contact.data_fields["LOYALTY_BIRTHDAY"] is None
    assert list(emulator.emulator.contacts) == ["ada@example.com"]


@pytest.mark.parametrize(
    ("time_zone", "birthday"),
    [
        ("America/Los_Angeles", date(1990, 5, 1)),
        ("America/Los_Angeles", date(1990, 12, 31)),
        ("Asia/Tokyo", date(1990, 5, 1)),
        ("Pacific/Auckland", date(2000, 1, 1)),  # UTC+13 in summer
    ],
)
def test_a_birthday_is_the_same_day_for_the_merchant_after_a_round_trip(
    client: HttpDotdigitalClient, emulator: EmulatorServer, time_zone: str, birthday: date
) -> None:
    mapping = DataFieldMapping()
    assert ensure_fields(client, mapping).ok
    values = contact_data_fields(
        mapping,
        points_balance=1,
        referral_url=None,
        birthday=birthday,
        vip_tier=None,
        time_zone=time_zone,
    )

    client.upsert_contact("ada@example.com", values)
    read = client.get_contact("ada@example.com")

    assert read is not None
    stored = datetime.fromisoformat(read.data_fields["LOYALTY_BIRTHDAY"])
    # What the merchant's account shows and the UTC date a date-only reader keeps; for zones
    # less than 12 hours from UTC also what an account or contact far west or east sees.
    assert stored.astimezone(ZoneInfo(time_zone)).date() == birthday
    assert stored.astimezone(UTC).date() == birthday
    if time_zone != "Pacific/Auckland":
        seen = {
            stored.astimezone(ZoneInfo(z)).date() for z in ("America/Los_Angeles", "Asia/Tokyo")
        }
        assert seen == {birthday}


def test_upsert_sends_v3_body_with_overwrite_and_no_channel_properties(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    client.create_data_field("LOYALTY_POINTS", "Numeric")

    client.upsert_contact("ada+vip@example.com", {"LOYALTY_POINTS": 5})

    patch = emulator.emulator.calls[-1]
    assert (patch["method"], patch["path"], patch["query"]) == (
        "PATCH",
        "/contacts/v3/email/ada+vip@example.com",
        "merge-option=overwrite",
    )
    # "Import a single contact" has no matchIdentifier: the path names the identifier.
    assert patch["body"] == {
        "identifiers": {"email": "ada+vip@example.com"},
        "dataFields": {"LOYALTY_POINTS": 5},
    }
    assert patch["host"] == f"127.0.0.1:{emulator.port}"
    assert emulator.emulator.call_counts["PATCH /contacts/v3/email/{email}"] == 1


def test_upsert_passes_channel_properties_when_given(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    channel = {"email": {"emailType": "html", "optInType": "single", "status": "subscribed"}}

    result = client.upsert_contact("ada@example.com", {}, channel_properties=channel)

    assert emulator.emulator.calls[-1]["body"]["channelProperties"] == channel
    assert result.contact.raw["channelProperties"] == {
        "email": {"emailType": "Html", "optInType": "Single", "status": "Subscribed"}
    }


def test_invalid_email_is_rejected_with_the_emulator_reason(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    with pytest.raises(DotdigitalRejected) as caught:
        client.upsert_contact("not-an-email", {"FIRSTNAME": "Ada"})

    error = caught.value
    assert (error.status, error.code) == (400, "contacts:invalidContacts")
    assert error.message == "The contact identifier is not valid."
    assert error.details == [
        {"item": "email", "description": "'not-an-email' is not a valid email address"}
    ]
    assert str(error) == "400 contacts:invalidContacts: The contact identifier is not valid."
    assert emulator.emulator.contacts == {}


def test_unknown_field_and_wrong_types_are_rejected_and_nothing_changes(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    client.create_data_field("LOYALTY_POINTS", "Numeric")
    client.create_data_field("LOYALTY_BIRTHDAY", "Date")
    client.upsert_contact("ada@example.com", {"LOYALTY_POINTS": 1})
    before = emulator.emulator.contacts

    with pytest.raises(DotdigitalRejected) as caught:
        client.upsert_contact(
            "ada@example.com",
            {
                "LOYALTY_POINTS": "120",
                "LOYALTY_BIRTHDAY": "01/05/1990",
                "FIRSTNAME": "x" * 256,
                "NO_SUCH_FIELD": 1,
            },
        )

    assert caught.value.code == "contacts:invalidContacts"
    assert caught.value.details == [
        {"item": "LOYALTY_POINTS", "description": "a Numeric field takes a number"},
        {"item": "LOYALTY_BIRTHDAY", "description": DATE_PROBLEM},
        {"item": "FIRSTNAME", "description": "text is longer than 255 characters"},
        {"item": "NO_SUCH_FIELD", "description": "Data field 'NO_SUCH_FIELD' does not exist"},
    ]
    assert emulator.emulator.contacts == before


def test_get_contact_returns_none_when_missing_and_the_contact_when_present(
    client: HttpDotdigitalClient,
) -> None:
    assert client.get_contact("ada@example.com") is None
    client.upsert_contact("Ada@Example.com", {"FIRSTNAME": "Ada"})

    contact = client.get_contact("ada@example.com")

    assert contact is not None
    assert contact.email == "Ada@Example.com"
    assert contact.status == "subscribed"
    assert contact.data_fields == {
        "FIRSTNAME": "Ada",
        "LASTNAME": None,
        "FULLNAME": None,
        "GENDER": None,
        "POSTCODE": None,
    }


# --------------------------------------------------------------------------- failures


def test_rate_limit_raises_with_the_reset_seconds(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    emulator.emulator.set_faults(rate_limit_per_minute=2)
    client.account_info()
    client.list_data_fields()

    with pytest.raises(DotdigitalRateLimited) as caught:
        client.upsert_contact("ada@example.com", {})

    error = caught.value
    assert isinstance(error, DotdigitalRetryable)
    assert error.reset_seconds is not None
    assert 58 <= error.reset_seconds <= 60
    # Dotdigital documents the 429 and its headers but no error code.
    assert (error.limit, error.scope, error.code) == (2, "user", None)
    assert emulator.emulator.contacts == {}


def test_rate_limit_window_resets(client: HttpDotdigitalClient, emulator: EmulatorServer) -> None:
    emulator.emulator.set_faults(rate_limit_per_minute=1, rate_limit_window_seconds=0.3)
    client.account_info()
    with pytest.raises(DotdigitalRateLimited) as caught:
        client.account_info()
    time.sleep(0.35)

    assert client.account_info().api_endpoint == emulator.base_url
    assert caught.value.reset_seconds == 1.0


def test_a_429_refuses_every_call_until_its_reset(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    emulator.emulator.set_faults(burst_429=1, burst_429_reset_seconds=2)
    with pytest.raises(DotdigitalRateLimited) as first:
        client.upsert_contact("ada@example.com", {"FIRSTNAME": "Ada"})
    reset_at = time.monotonic() + (first.value.reset_seconds or 0)
    # Retrying before the reset is refused, not merely slowed.
    with pytest.raises(DotdigitalRateLimited) as early:
        client.upsert_contact("ada@example.com", {"FIRSTNAME": "Ada"})
    assert emulator.emulator.contacts == {}
    time.sleep(max(0.0, reset_at - time.monotonic()))

    result = client.upsert_contact("ada@example.com", {"FIRSTNAME": "Ada"})

    assert first.value.reset_seconds == 2.0
    assert early.value.reset_seconds in {1.0, 2.0}
    assert result.created is True
    faults = [call["fault"] for call in emulator.emulator.calls]
    assert faults == ["burst-429", "before-reset", None]


def test_server_errors_are_retryable_and_change_nothing(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    emulator.emulator.set_faults(error_rate=1.0)

    statuses = set()
    for _ in range(6):
        with pytest.raises(DotdigitalRetryable) as caught:
            client.upsert_contact("ada@example.com", {"FIRSTNAME": "Ada"})
        assert not isinstance(caught.value, DotdigitalRateLimited)
        statuses.add(caught.value.status)

    assert statuses <= {500, 503}
    assert statuses
    assert emulator.emulator.contacts == {}


def test_timeouts_are_retryable(emulator: EmulatorServer) -> None:
    emulator.emulator.set_faults(timeout_rate=1.0, hang_seconds=2.0)
    started = time.monotonic()

    api = HttpDotdigitalClient(DEMO_USERNAME, DEMO_PASSWORD, emulator.base_url, 0.2)
    with api, pytest.raises(DotdigitalRetryable) as caught:
        api.account_info()

    assert time.monotonic() - started < 1.5
    assert "timed out" in str(caught.value)
    assert caught.value.status is None


def test_connection_refused_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = HttpDotdigitalClient(DEMO_USERNAME, DEMO_PASSWORD, f"http://127.0.0.1:{port}", 1.0)
    with api, pytest.raises(DotdigitalRetryable):
        api.account_info()


def test_error_bodies_of_both_api_generations_are_parsed() -> None:
    v2 = error_from_response(httpx.Response(400, json={"message": "Error: ERROR_CONTACT_INVALID"}))
    v3 = error_from_response(
        httpx.Response(
            409,
            json={"errorCode": "contacts:conflict", "description": "Taken.", "details": []},
        )
    )
    plain = error_from_response(httpx.Response(502, text="<html>Bad gateway</html>"))
    limited = error_from_response(httpx.Response(429, json={"message": "slow down"}))

    assert isinstance(v2, DotdigitalRejected)
    assert (v2.status, v2.code, v2.message) == (400, "ERROR_CONTACT_INVALID", "Error")
    assert isinstance(v3, DotdigitalRejected)
    assert (v3.status, v3.code, v3.message) == (409, "contacts:conflict", "Taken.")
    assert isinstance(plain, DotdigitalRetryable)
    assert (plain.status, str(plain)) == (502, "502: <html>Bad gateway</html>")
    assert isinstance(limited, DotdigitalRateLimited)
    assert (limited.reset_seconds, limited.limit) == (None, None)


# --------------------------------------------------------------------------- bulk import


def test_bulk_import_finishes_later_with_failures_for_invalid_emails(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    client.create_data_field("LOYALTY_POINTS", "Numeric")
    client.upsert_contact("old@example.com", {"LOYALTY_POINTS": 1})

    import_id = client.start_import(
        [
            import_entry("old@example.com", {"LOYALTY_POINTS": 5}),
            import_entry("new@example.com", {"LOYALTY_POINTS": 7}),
            import_entry("broken-email", {"LOYALTY_POINTS": 9}),
        ]
    )
    pending = client.import_status(import_id)
    points_while_pending = emulator.emulator.contacts["old@example.com"]["dataFields"]
    done = _wait_finished(client, import_id)

    assert pending == ImportStatus(import_id, "NotFinished")
    assert points_while_pending == {"LOYALTY_POINTS": 1}
    assert (done.status, done.finished, done.succeeded) == ("Finished", True, True)
    assert done.summary == {
        "newContacts": 1,
        "updatedContacts": 1,
        "globallySuppressed": 0,
        "invalidEntries": 1,
        "duplicateIdentifiers": 0,
    }
    assert done.failures == [
        ImportFailure("broken-email", (("InvalidEmail", "The email is not valid"),))
    ]
    contacts = emulator.emulator.contacts
    assert {email: c["dataFields"] for email, c in contacts.items()} == {
        "old@example.com": {"LOYALTY_POINTS": 5},
        "new@example.com": {"LOYALTY_POINTS": 7},
    }


def test_more_than_25_active_imports_is_rate_limited(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    emulator.emulator.set_faults(import_delay_seconds=30)
    for number in range(25):
        client.start_import([import_entry(f"c{number}@example.com", {})])

    with pytest.raises(DotdigitalRateLimited) as caught:
        client.start_import([import_entry("one-too-many@example.com", {})])

    assert caught.value.code == "contacts:tooManyActiveImports"
    assert caught.value.reset_seconds is None
    assert len(emulator.emulator.imports) == 25


def test_unknown_import_id_is_rejected(client: HttpDotdigitalClient) -> None:
    with pytest.raises(DotdigitalRejected) as caught:
        client.import_status("00000000-0000-0000-0000-000000000000")

    assert (caught.value.status, caught.value.code) == (404, "contacts:importNotFound")


def test_oversized_import_is_rejected(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    emulator.emulator.set_faults(max_import_bytes=300)
    entries = [import_entry(f"c{n}@example.com", {"FIRSTNAME": "Ada"}) for n in range(5)]

    with pytest.raises(DotdigitalRejected) as caught:
        client.start_import(entries)

    assert (caught.value.status, caught.value.code) == (413, "contacts:badRequest")
    assert emulator.emulator.imports == {}


def test_batches_built_by_size_are_all_accepted(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    emulator.emulator.set_faults(max_import_bytes=300, import_delay_seconds=0)
    entries = [import_entry(f"c{n}@example.com", {"FIRSTNAME": "Ada"}) for n in range(5)]

    batches = list(build_import_batches(entries, max_bytes=300))
    statuses = [_wait_finished(client, client.start_import(batch)) for batch in batches]

    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert [s.summary["newContacts"] for s in statuses] == [2, 2, 1]
    assert sorted(emulator.emulator.contacts) == [f"c{n}@example.com" for n in range(5)]


def test_a_reset_read_as_an_epoch_time_becomes_the_seconds_left(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    emulator.emulator.set_faults(burst_429=1, burst_429_reset_seconds=int(time.time()) + 30)
    with pytest.raises(DotdigitalRateLimited) as caught:
        client.account_info()
    assert caught.value.reset_seconds is not None
    assert 28 <= caught.value.reset_seconds <= 31


def test_an_absurd_reset_is_capped_at_an_hour(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    emulator.emulator.set_faults(burst_429=2, burst_429_reset_seconds=10**12)
    with pytest.raises(DotdigitalRateLimited) as caught:
        client.account_info()
    assert caught.value.reset_seconds == MAX_RESET_SECONDS == 3600.0
    # Seconds beyond an hour that are not an epoch time are capped the same way.
    emulator.emulator.set_faults(burst_429=1, burst_429_reset_seconds=86_400)
    with pytest.raises(DotdigitalRateLimited) as caught:
        client.account_info()
    assert caught.value.reset_seconds == 3600.0


def test_the_flat_rate_schemes_400_is_a_rate_limit(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    emulator.emulator.set_faults(burst_api_usage_exceeded=1)
    with pytest.raises(DotdigitalRateLimited) as caught:
        client.upsert_contact("ada@example.com", {"FIRSTNAME": "Ada"})
    error = caught.value
    assert (error.status, error.code, error.reset_seconds) == (
        400,
        "ERROR_APIUSAGE_EXCEEDED",
        None,
    )
    assert emulator.emulator.contacts == {}
    assert client.upsert_contact("ada@example.com", {"FIRSTNAME": "Ada"}).created is True


def test_an_import_entry_without_identifiers_fails_the_whole_request(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    entries = [import_entry("ada@example.com", {}), {"dataFields": {"FIRSTNAME": "Bo"}}]
    with pytest.raises(DotdigitalRejected) as caught:
        client.start_import(entries)
    assert (caught.value.status, caught.value.code) == (400, "contacts:badRequest")
    assert caught.value.details == [
        {
            "item": "contacts[1]",
            "description": "A contact needs identifiers and a matchIdentifier",
        }
    ]
    assert emulator.emulator.imports == {}


def test_a_slow_import_start_gets_the_long_import_timeout(
    emulator: EmulatorServer,
) -> None:
    emulator.emulator.set_faults(import_answer_delay_seconds=0.6)
    # Single calls give up after 0.3 s; an import start waits (IMPORT_TIMEOUT_SECONDS unless told).
    with HttpDotdigitalClient(DEMO_USERNAME, DEMO_PASSWORD, emulator.base_url, 0.3) as slow:
        assert slow.import_timeout_seconds == 121.0
        import_id = slow.start_import([import_entry("ada@example.com", {})])
    assert list(emulator.emulator.imports) == [import_id]
    with (
        HttpDotdigitalClient(
            DEMO_USERNAME, DEMO_PASSWORD, emulator.base_url, 0.3, import_timeout=0.3
        ) as impatient,
        pytest.raises(DotdigitalUnanswered),
    ):
        impatient.start_import([import_entry("bo@example.com", {})])
    # Accepted all the same: why a timed-out start must never be resent blindly.
    assert len(emulator.emulator.imports) == 2


def test_an_import_can_end_refused_as_a_whole(
    client: HttpDotdigitalClient, emulator: EmulatorServer
) -> None:
    emulator.emulator.set_faults(import_statuses=["RejectedByWatchdog"])
    import_id = client.start_import([import_entry("ada@example.com", {"FIRSTNAME": "Ada"})])
    status = _wait_finished(client, import_id)
    assert (status.status, status.finished, status.succeeded) == (
        "RejectedByWatchdog",
        True,
        False,
    )
    assert emulator.emulator.contacts == {}
