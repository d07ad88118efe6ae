"""The Dotdigital emulator's HTTP surface: shapes, statuses, headers, faults and tooling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tally.devtools.dotdigital_emulator import (
    DEMO_PASSWORD,
    DEMO_USERNAME,
    DotdigitalEmulator,
    EmulatorAccount,
    EmulatorConfig,
    EmulatorServer,
    build_argument_parser,
    config_from_options,
    is_valid_email,
)

US_USERNAME = "apiuser-us@apiconnector.com"
US_PASSWORD = "us-password"
ASIA_USERNAME = "apiuser-apac@apiconnector.com"
ASIA_PASSWORD = "apac-password"
DENIED = {"message": "Authorization has been denied for this request."}
# One TLS context for every client: httpx builds a new one per client otherwise (~0.1 s each).
TLS = httpx.create_ssl_context()


def _send(method: str, url: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, url, verify=TLS, timeout=5, **kwargs)


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(
        accounts=[
            EmulatorAccount(DEMO_USERNAME, DEMO_PASSWORD, 1),
            EmulatorAccount(US_USERNAME, US_PASSWORD, 2),
            EmulatorAccount(ASIA_USERNAME, ASIA_PASSWORD, 3),
        ],
        import_delay_seconds=0.15,
    )
    with EmulatorServer(config) as running:
        yield running


@pytest.fixture
def emulator(server: EmulatorServer) -> EmulatorServer:
    server.emulator.reset()
    return server


@pytest.fixture
def http(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        verify=TLS, base_url=emulator.base_url, auth=(DEMO_USERNAME, DEMO_PASSWORD), timeout=5
    ) as client:
        yield client


def _create_field(http: httpx.Client, name: str, field_type: str) -> None:
    response = http.post("/v2/data-fields", json={"name": name, "type": field_type})
    assert response.status_code == 201, response.text


def _patch(
    http: httpx.Client, email: str, fields: dict[str, Any], merge: str = "overwrite"
) -> httpx.Response:
    return http.patch(
        f"/contacts/v3/email/{email}",
        params={"merge-option": merge},
        json={"identifiers": {"email": email}, "dataFields": fields},
    )


# --------------------------------------------------------------------------- auth and regions


def test_every_api_route_needs_basic_auth(emulator: EmulatorServer) -> None:
    base = emulator.base_url
    answers = [
        _send("GET", f"{base}/v2/account-info"),
        _send("GET", f"{base}/v2/data-fields", auth=(DEMO_USERNAME, "wrong")),
        _send("PATCH", f"{base}/contacts/v3/email/a@b.io", json={}, auth=("nobody@x.io", "x")),
        _send("PUT", f"{base}/contacts/v3/import", json={}, headers={"Authorization": "Basic !!"}),
    ]

    assert [(r.status_code, r.json()) for r in answers] == [(401, DENIED)] * 4
    assert answers[0].headers["www-authenticate"] == 'Basic realm="dotdigital"'
    assert emulator.emulator.contacts == {}
    assert emulator.emulator.imports == {}


def test_account_info_reports_region_endpoints(emulator: EmulatorServer) -> None:
    r1 = _send("GET", f"{emulator.base_url}/v2/account-info", auth=(DEMO_USERNAME, DEMO_PASSWORD))
    r2 = _send("GET", f"{emulator.base_url}/v2/account-info", auth=(US_USERNAME, US_PASSWORD))
    on_r2 = _send(
        "GET", f"{emulator.url_for_region(2)}/v2/account-info", auth=(DEMO_USERNAME, DEMO_PASSWORD)
    )

    def endpoint(response: httpx.Response) -> str:
        properties = {p["name"]: p["value"] for p in response.json()["properties"]}
        return str(properties["ApiEndpoint"])

    assert r1.status_code == r2.status_code == on_r2.status_code == 200
    assert r1.json()["id"] == 1
    assert r2.json()["id"] == 2
    assert endpoint(r1) == f"{emulator.url_for_region(1)}/"
    assert endpoint(r2) == f"{emulator.url_for_region(2)}/"
    assert endpoint(on_r2) == f"{emulator.url_for_region(1)}/"
    assert r1.headers["x-ratelimit-limit"] == "0"


def test_each_region_has_its_own_port(emulator: EmulatorServer) -> None:
    urls = [emulator.url_for_region(region) for region in (1, 2, 3)]

    assert len(set(emulator.ports.values())) == 3
    assert urls == [f"http://127.0.0.1:{emulator.ports[region]}" for region in (1, 2, 3)]
    assert emulator.base_url == urls[0]


def test_wrong_region_answers_403_without_an_invented_code(emulator: EmulatorServer) -> None:
    us = (US_USERNAME, US_PASSWORD)
    asia = (ASIA_USERNAME, ASIA_PASSWORD)
    answers = [
        _send("GET", f"{emulator.base_url}/v2/data-fields", auth=us),
        _send("GET", f"{emulator.base_url}/contacts/v3/email/a@b.io", auth=us),
        # Region 3 is not region 1 either: the two used to share a host.
        _send("GET", f"{emulator.base_url}/v2/data-fields", auth=asia),
        _send("GET", f"{emulator.url_for_region(2)}/v2/data-fields", auth=asia),
    ]
    right = [
        _send("GET", f"{emulator.url_for_region(2)}/v2/data-fields", auth=us),
        _send("GET", f"{emulator.url_for_region(3)}/v2/data-fields", auth=asia),
    ]

    message = "This account is hosted in another region; use the ApiEndpoint from /v2/account-info."
    assert [(r.status_code, r.json()) for r in answers] == [(403, {"message": message})] * 4
    assert [r.status_code for r in right] == [200, 200]


def test_the_port_decides_the_region_whatever_the_host_name(emulator: EmulatorServer) -> None:
    def data_fields(url: str) -> int:
        return _send(
            "GET",
            f"{url}/v2/data-fields",
            auth=(US_USERNAME, US_PASSWORD),
            headers={"Host": "dotdigital-emulator"},
        ).status_code

    assert (data_fields(emulator.url_for_region(2)), data_fields(emulator.base_url)) == (200, 403)


# --------------------------------------------------------------------------- data fields


def test_built_in_fields_pre_exist(http: httpx.Client) -> None:
    response = http.get("/v2/data-fields")

    assert response.status_code == 200
    assert response.json() == [
        {"name": name, "type": "String", "visibility": "Private", "defaultValue": None}
        for name in ("FIRSTNAME", "LASTNAME", "FULLNAME", "GENDER", "POSTCODE")
    ]


def test_creating_a_field_echoes_it(http: httpx.Client, emulator: EmulatorServer) -> None:
    response = http.post(
        "/v2/data-fields",
        json={"name": "Tier-2", "type": "String", "visibility": "Public", "defaultValue": "None"},
    )

    assert response.status_code == 201
    assert response.json() == {
        "name": "Tier-2",
        "type": "String",
        "visibility": "Public",
        "defaultValue": "None",
    }
    assert emulator.emulator.data_fields[-1] == response.json()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"name": "A" * 21, "type": "String"},
            "Data field names are 1 to 20 letters, digits, underscores or hyphens. "
            "ERROR_DATAFIELD_INVALID",
        ),
        (
            {"name": "LOYALTY POINTS", "type": "String"},
            "Data field names are 1 to 20 letters, digits, underscores or hyphens. "
            "ERROR_DATAFIELD_INVALID",
        ),
        (
            {"name": "", "type": "String"},
            "Data field names are 1 to 20 letters, digits, underscores or hyphens. "
            "ERROR_DATAFIELD_INVALID",
        ),
        (
            {"name": "POINTS", "type": "Integer"},
            "Data field type must be one of String, Numeric, Date, Boolean. "
            "ERROR_DATAFIELD_INVALID",
        ),
        (
            {"name": "POINTS", "type": "Numeric", "visibility": "Hidden"},
            "Visibility must be Private or Public. ERROR_DATAFIELD_INVALID",
        ),
        (
            {"name": "POINTS", "type": "Numeric", "defaultValue": "zero"},
            "Invalid default value: a Numeric field takes a number. ERROR_DATAFIELD_INVALID",
        ),
        (
            {"name": "firstname", "type": "String"},
            "Field already exists. ERROR_NON_UNIQUE_DATAFIELD",
        ),
    ],
)
def test_invalid_fields_are_refused_and_nothing_is_added(
    http: httpx.Client, emulator: EmulatorServer, body: dict[str, Any], message: str
) -> None:
    response = http.post("/v2/data-fields", json=body)

    assert (response.status_code, response.json()) == (400, {"message": message})
    assert len(emulator.emulator.data_fields) == 5


def test_field_limit_is_enforced(http: httpx.Client, emulator: EmulatorServer) -> None:
    emulator.emulator.set_faults(max_custom_data_fields=1)
    _create_field(http, "ONE", "Boolean")

    response = http.post("/v2/data-fields", json={"name": "TWO", "type": "Boolean"})

    assert response.status_code == 400
    assert response.json() == {
        "message": "The account has reached its data field limit. ERROR_DATAFIELD_LIMITEXCEEDED"
    }
    assert [f["name"] for f in emulator.emulator.data_fields][-1] == "ONE"


# --------------------------------------------------------------------------- contacts


def test_patch_creates_201_then_updates_200(http: httpx.Client, emulator: EmulatorServer) -> None:
    _create_field(http, "POINTS", "Numeric")

    created = _patch(http, "ada@example.com", {"POINTS": 10, "FIRSTNAME": "Ada"})
    updated = _patch(http, "ADA@example.com", {"points": 12.5})

    assert (created.status_code, updated.status_code) == (201, 200)
    body = updated.json()
    assert body["contactId"] == created.json()["contactId"] == 1001
    assert body["identifiers"] == {"email": "ada@example.com"}
    assert body["dataFields"]["POINTS"] == 12.5
    assert body["dataFields"]["FIRSTNAME"] == "Ada"
    assert body["channelProperties"] == {
        "email": {"emailType": "Html", "optInType": "Unknown", "status": "Subscribed"}
    }
    assert list(emulator.emulator.contacts) == ["ada@example.com"]


def test_merge_options(http: httpx.Client, emulator: EmulatorServer) -> None:
    _patch(http, "ada@example.com", {"FIRSTNAME": "Ada", "LASTNAME": "Lovelace"})

    kept = _patch(http, "ada@example.com", {"FIRSTNAME": None}, "overwrite-if-not-empty")
    not_overwritten = _patch(
        http, "ada@example.com", {"LASTNAME": "Byron", "GENDER": "f"}, "overwrite-if-empty"
    )
    cleared = _patch(http, "ada@example.com", {"FIRSTNAME": None}, "overwrite")
    refused = _patch(http, "ada@example.com", {"FIRSTNAME": "X"}, "merge")

    assert kept.json()["dataFields"]["FIRSTNAME"] == "Ada"
    assert not_overwritten.json()["dataFields"]["LASTNAME"] == "Lovelace"
    assert not_overwritten.json()["dataFields"]["GENDER"] == "f"
    assert cleared.json()["dataFields"]["FIRSTNAME"] is None
    assert refused.status_code == 400
    assert refused.json()["errorCode"] == "contacts:badRequest"
    assert emulator.emulator.contacts["ada@example.com"]["dataFields"] == {
        "LASTNAME": "Lovelace",
        "GENDER": "f",
    }


@pytest.mark.parametrize(
    ("field_type", "value", "stored"),
    [
        ("Date", "1990-05-01T00:00:00+00:00", "1990-05-01T00:00:00+00:00"),
        # Stored as the instant in UTC, whatever offset it was sent with.
        ("Date", "2024-05-01T10:30:00Z", "2024-05-01T10:30:00+00:00"),
        ("Date", "1990-05-01T12:00:00-07:00", "1990-05-01T19:00:00+00:00"),
        ("Date", "1990-05-01T12:00:00.1234567+09:00", "1990-05-01T03:00:00+00:00"),
        # A date without a time, a basic-format date or a time without an offset is refused.
        ("Date", "1990-05-01", None),
        ("Date", "19900501", None),
        ("Date", "1990-05-01T00:00:00", None),
        ("Date", "1990-05-01 00:00:00+00:00", None),
        ("Date", "1990-02-30T00:00:00Z", None),
        ("Date", "01/05/1990", None),
        ("Date", 19900501, None),
        ("Numeric", 120, 120),
        ("Numeric", -3.5, -3.5),
        ("Numeric", "120", None),
        ("Numeric", True, None),
        ("Boolean", False, False),
        ("Boolean", "false", None),
        ("String", "x" * 255, "x" * 255),
        ("String", "x" * 256, None),
        ("String", 5, None),
    ],
)
def test_values_are_checked_against_the_field_type(
    http: httpx.Client, emulator: EmulatorServer, field_type: str, value: Any, stored: Any
) -> None:
    _create_field(http, "FIELD", field_type)

    response = _patch(http, "ada@example.com", {"FIELD": value})

    assert response.status_code == (400 if stored is None else 201)
    contact = emulator.emulator.contacts.get("ada@example.com")
    assert (contact["dataFields"] if contact else None) == (
        None if stored is None else {"FIELD": stored}
    )
    if stored is None:
        assert response.json()["errorCode"] == "contacts:invalidContacts"
        assert [d["item"] for d in response.json()["details"]] == ["FIELD"]


def test_invalid_email_and_bad_json_are_refused(http: httpx.Client) -> None:
    invalid = _patch(http, "ada@", {})
    bad_json = http.patch(
        "/contacts/v3/email/ada@example.com",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    not_an_object = http.patch("/contacts/v3/email/ada@example.com", json=[1])

    assert (invalid.status_code, invalid.json()) == (
        400,
        {
            "errorCode": "contacts:invalidContacts",
            "description": "The contact identifier is not valid.",
            "details": [{"item": "email", "description": "'ada@' is not a valid email address"}],
        },
    )
    assert (bad_json.status_code, bad_json.json()["errorCode"]) == (400, "contacts:badJson")
    assert (not_an_object.status_code, not_an_object.json()["errorCode"]) == (
        400,
        "contacts:badRequest",
    )
    assert http.get("/contacts/v3/email/ada@example.com").status_code == 404


@pytest.mark.parametrize(
    ("body", "items"),
    [
        # A typo of dataFields would otherwise lose the data without a word.
        ({"dataField": {"FIRSTNAME": "Ada"}}, ["dataField"]),
        (
            {"dataFields": {}, "status": "subscribed", "email": "ada@example.com"},
            ["status", "email"],
        ),
    ],
)
def test_unknown_keys_of_a_contact_are_refused(
    http: httpx.Client, emulator: EmulatorServer, body: dict[str, Any], items: list[str]
) -> None:
    response = http.patch("/contacts/v3/email/ada@example.com", json=body)

    assert response.status_code == 400
    assert response.json()["errorCode"] == "contacts:badRequest"
    assert [detail["item"] for detail in response.json()["details"]] == items
    assert emulator.emulator.contacts == {}


def test_an_unknown_data_field_is_refused_not_dropped(
    http: httpx.Client, emulator: EmulatorServer
) -> None:
    response = _patch(http, "ada@example.com", {"FIRSTNAME": "Ada", "LOYALTY_PIONTS": 5})

    assert (response.status_code, response.json()) == (
        400,
        {
            "errorCode": "contacts:invalidContacts",
            "description": "Invalid contact data.",
            "details": [
                {
                    "item": "LOYALTY_PIONTS",
                    "description": "Data field 'LOYALTY_PIONTS' does not exist",
                }
            ],
        },
    )
    assert emulator.emulator.contacts == {}


def test_match_identifier_is_tolerated_on_a_patch(http: httpx.Client) -> None:
    body = {"identifiers": {"email": "ada@example.com"}, "matchIdentifier": "email"}

    assert http.patch("/contacts/v3/email/ada@example.com", json=body).status_code == 201


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_bodies_not_declared_json_are_refused(
    http: httpx.Client, emulator: EmulatorServer, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    contact = b'{"dataFields": {"FIRSTNAME": "Ada"}}'
    field = b'{"name": "POINTS", "type": "Numeric"}'
    entries = b'{"contacts": [{"matchIdentifier": "email", "identifiers": {"email": "a@b.io"}}]}'

    patch = http.patch("/contacts/v3/email/ada@example.com", content=contact, headers=headers)
    put = http.put("/contacts/v3/import", content=entries, headers=headers)
    post = http.post("/v2/data-fields", content=field, headers=headers)

    assert [r.status_code for r in (patch, put, post)] == [415] * 3
    assert patch.json()["errorCode"] == put.json()["errorCode"] == "contacts:badRequest"
    assert "application/json" in post.json()["message"]
    assert emulator.emulator.contacts == {}
    assert emulator.emulator.imports == {}
    assert "POINTS" not in [f["name"] for f in emulator.emulator.data_fields]


def test_a_json_content_type_with_a_charset_is_accepted(http: httpx.Client) -> None:
    response = http.patch(
        "/contacts/v3/email/ada@example.com",
        content=b'{"dataFields": {"FIRSTNAME": "Ada"}}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )

    assert response.status_code == 201


def test_get_unknown_contact_is_404_contact_not_found(http: httpx.Client) -> None:
    response = http.get("/contacts/v3/email/nobody@example.com")

    assert (response.status_code, response.json()) == (
        404,
        {
            "errorCode": "contacts:contactNotFound",
            "description": "The contact was not found.",
            "details": [
                {
                    "item": "nobody@example.com",
                    "description": "Not found using the identifier 'email'",
                }
            ],
        },
    )


@pytest.mark.parametrize(
    ("email", "valid"),
    [
        ("ada@example.com", True),
        ("ada.lovelace+loyalty@mail.example.co.uk", True),
        ("ada@example", False),
        ("ada example@example.com", False),
        (".ada@example.com", False),
        ("ada..l@example.com", False),
        ("a" * 65 + "@example.com", False),
        ("", False),
    ],
)
def test_email_validation(email: str, valid: bool) -> None:
    assert is_valid_email(email) is valid


# --------------------------------------------------------------------------- bulk import


def _import(http: httpx.Client, contacts: list[Any], merge: str = "overwrite") -> httpx.Response:
    return http.put("/contacts/v3/import", json={"mergeOption": merge, "contacts": contacts})


def _entry(email: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"matchIdentifier": "email", "identifiers": {"email": email}, "dataFields": fields}


def test_import_is_not_finished_then_finished(http: httpx.Client, emulator: EmulatorServer) -> None:
    _patch(http, "old@example.com", {"FIRSTNAME": "Old", "LASTNAME": "Kept"})

    started = _import(
        http,
        [
            _entry("old@example.com", {"FIRSTNAME": "Renamed", "LASTNAME": None}),
            _entry("new@example.com", {"FIRSTNAME": "New"}),
            _entry("NEW@example.com", {"FIRSTNAME": "Duplicate"}),
            _entry("not-an-email", {"FIRSTNAME": "X"}),
            _entry("bad-field@example.com", {"NOPE": 1}),
        ],
        "overwriteIfNotEmpty",
    )
    import_id = started.json()["importId"]
    pending = http.get(f"/contacts/v3/import/{import_id}")
    time.sleep(0.2)
    finished = http.get(f"/contacts/v3/import/{import_id}")

    assert started.status_code == 202
    assert pending.json() == {"importId": import_id, "status": "NotFinished"}
    body = finished.json()
    assert body["status"] == "Finished"
    assert body["summary"] == {
        "newContacts": 1,
        "updatedContacts": 1,
        "globallySuppressed": 0,
        "invalidEntries": 2,
        "duplicateIdentifiers": 1,
    }
    assert body["created"] == [{"contactId": 1002, "identifiers": {"email": "new@example.com"}}]
    assert body["updated"] == [{"contactId": 1001, "identifiers": {"email": "old@example.com"}}]
    assert body["failures"] == [
        {
            "identifiers": {"email": "not-an-email"},
            "failures": [{"failureCode": "InvalidEmail", "description": "The email is not valid"}],
        },
        {
            "identifiers": {"email": "bad-field@example.com"},
            "failures": [
                {
                    "failureCode": "InvalidContact",
                    "description": "Data field 'NOPE' does not exist",
                }
            ],
        },
    ]
    # overwriteIfNotEmpty: the null did not clear LASTNAME.
    assert emulator.emulator.contacts["old@example.com"]["dataFields"] == {
        "FIRSTNAME": "Renamed",
        "LASTNAME": "Kept",
    }


@pytest.mark.parametrize("body", [b"{", b"NaN", b'{"contacts": [}'])
def test_imports_that_are_not_json_are_bad_json(
    http: httpx.Client, emulator: EmulatorServer, body: bytes
) -> None:
    response = http.put(
        "/contacts/v3/import", content=body, headers={"Content-Type": "application/json"}
    )

    assert (response.status_code, response.json()["errorCode"]) == (400, "contacts:badJson")
    assert emulator.emulator.imports == {}


ENTRY = {"matchIdentifier": "email", "identifiers": {"email": "a@example.com"}}


@pytest.mark.parametrize(
    ("body", "item"),
    [
        ([], "body"),
        ({"contacts": {}}, "contacts"),
        ({"contacts": []}, "contacts"),
        ({"mergeOption": "merge", "contacts": [ENTRY]}, "mergeOption"),
        ({"contacts": [ENTRY], "merge": "overwrite"}, "merge"),
        ({"contacts": [{**ENTRY, "dataField": {"FIRSTNAME": "A"}}]}, "contacts[0].dataField"),
        ({"contacts": [{"identifiers": {"email": "a@example.com"}}]}, "contacts[0]"),
        ({"contacts": [ENTRY, {"matchIdentifier": "email"}]}, "contacts[1]"),
        ({"contacts": ["a@example.com"]}, "contacts[0]"),
    ],
)
def test_imports_of_the_wrong_shape_are_refused_at_once(
    http: httpx.Client, emulator: EmulatorServer, body: Any, item: str
) -> None:
    response = http.put("/contacts/v3/import", json=body)

    assert response.status_code == 400
    assert response.json()["errorCode"] == "contacts:badRequest"
    assert [detail["item"] for detail in response.json()["details"]] == [item]
    assert emulator.emulator.imports == {}


def test_import_size_and_concurrency_limits(http: httpx.Client, emulator: EmulatorServer) -> None:
    emulator.emulator.set_faults(max_active_imports=2, import_delay_seconds=30)
    assert _import(http, [_entry("a@example.com", {})]).status_code == 202
    assert _import(http, [_entry("b@example.com", {})]).status_code == 202

    third = _import(http, [_entry("c@example.com", {})])
    emulator.emulator.set_faults(max_import_bytes=50)
    too_large = _import(http, [_entry("d@example.com", {"FIRSTNAME": "x" * 40})])

    assert third.status_code == 429
    assert third.json() == {
        "errorCode": "contacts:tooManyActiveImports",
        "description": "The account already has 2 imports in progress.",
        "details": [],
    }
    assert too_large.status_code == 413
    assert too_large.json()["errorCode"] == "contacts:badRequest"
    assert len(emulator.emulator.imports) == 2


def test_unknown_import_is_404(http: httpx.Client) -> None:
    response = http.get("/contacts/v3/import/nope")

    assert response.status_code == 404
    assert response.json()["errorCode"] == "contacts:importNotFound"


# --------------------------------------------------------------------------- limits and faults


def test_rate_limit_429_headers(http: httpx.Client, emulator: EmulatorServer) -> None:
    emulator.emulator.set_faults(rate_limit_per_minute=2)
    first = http.get("/v2/data-fields")
    http.get("/v2/data-fields")

    refused = http.get("/v2/data-fields")

    assert first.headers["x-ratelimit-limit"] == "2"
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-scope"] == "user"
    assert refused.headers["x-ratelimit-limit"] == "2"
    assert refused.headers["x-ratelimit-reset"] in {"59", "60"}
    # Dotdigital documents the 429 and its headers, not a code: none is invented.
    assert refused.json() == {"message": "You have exceeded the API call rate limit."}


def test_every_call_before_the_reset_answers_429(
    http: httpx.Client, emulator: EmulatorServer
) -> None:
    emulator.emulator.set_faults(burst_429=1, burst_429_reset_seconds=2)
    first = http.get("/v2/data-fields")
    reset_at = time.monotonic() + float(first.headers["x-ratelimit-reset"])
    early = [_patch(http, "ada@example.com", {"FIRSTNAME": "Ada"}) for _ in range(3)]
    time.sleep(max(0.0, reset_at - time.monotonic()))

    later = _patch(http, "ada@example.com", {"FIRSTNAME": "Ada"})

    assert [r.status_code for r in (first, *early)] == [429] * 4
    assert {r.headers["x-ratelimit-reset"] for r in early} <= {"1", "2"}
    assert later.status_code == 201
    assert [call["fault"] for call in emulator.emulator.calls] == [
        "burst-429",
        *["before-reset"] * 3,
        None,
    ]


def test_rate_limit_is_per_api_user(emulator: EmulatorServer) -> None:
    emulator.emulator.set_faults(rate_limit_per_minute=1)
    demo = (DEMO_USERNAME, DEMO_PASSWORD)
    us = (US_USERNAME, US_PASSWORD)
    url = f"{emulator.base_url}/v2/account-info"

    statuses = [_send("GET", url, auth=auth).status_code for auth in (demo, us, demo, us)]

    assert statuses == [200, 200, 429, 429]


def test_faults_can_be_changed_over_http(http: httpx.Client, emulator: EmulatorServer) -> None:
    changed = _send("POST", f"{emulator.base_url}/_emulator/faults", json={"burst_429": 1})
    refused = _send("POST", f"{emulator.base_url}/_emulator/faults", json={"error_rate": 2})
    unknown = _send("POST", f"{emulator.base_url}/_emulator/faults", json={"explode": True})

    burst = http.get("/v2/account-info")
    after = http.get("/v2/account-info")

    assert changed.status_code == 200
    assert changed.json()["burst_429"] == 1
    assert refused.status_code == 400
    assert refused.json() == {"detail": "error_rate is a fraction between 0 and 1"}
    assert unknown.status_code == 400
    assert burst.status_code == 429
    assert int(burst.headers["x-ratelimit-reset"]) >= 1
    # The burst reported the rest of the window as its reset: the next call is refused too.
    assert after.status_code == 429
    assert emulator.emulator.config.error_rate == 0


def test_latency_delays_answers(http: httpx.Client, emulator: EmulatorServer) -> None:
    emulator.emulator.set_faults(latency_ms=150)
    started = time.monotonic()

    http.get("/v2/account-info")

    assert time.monotonic() - started >= 0.15


def test_the_same_seed_replays_the_same_faults() -> None:
    def statuses() -> list[int]:
        config = EmulatorConfig(error_rate=0.5, seed=7)
        with (
            EmulatorServer(config) as running,
            httpx.Client(
                verify=TLS, base_url=running.base_url, auth=(DEMO_USERNAME, DEMO_PASSWORD)
            ) as http,
        ):
            return [http.get("/v2/account-info").status_code for _ in range(12)]

    first = statuses()

    assert first == statuses()
    assert set(first) == {200, 500, 503}


def test_hung_calls_are_processed_after_hanging(emulator: EmulatorServer) -> None:
    emulator.emulator.set_faults(timeout_rate=1.0, hang_seconds=0.3)
    with (
        httpx.Client(
            verify=TLS, base_url=emulator.base_url, auth=(DEMO_USERNAME, DEMO_PASSWORD), timeout=0.1
        ) as http,
        pytest.raises(httpx.ReadTimeout),
    ):
        _patch(http, "ada@example.com", {"FIRSTNAME": "Ada"})
    assert emulator.emulator.contacts == {}

    time.sleep(0.45)

    assert emulator.emulator.contacts["ada@example.com"]["dataFields"] == {"FIRSTNAME": "Ada"}
    assert emulator.emulator.calls[0]["fault"] == "timeout"


def test_calls_hung_before_a_reset_do_not_write_afterwards(emulator: EmulatorServer) -> None:
    emulator.emulator.set_faults(timeout_rate=1.0, hang_seconds=0.2)
    with (
        httpx.Client(
            verify=TLS,
            base_url=emulator.base_url,
            auth=(DEMO_USERNAME, DEMO_PASSWORD),
            timeout=0.05,
        ) as http,
        pytest.raises(httpx.ReadTimeout),
    ):
        _patch(http, "ada@example.com", {"FIRSTNAME": "Ada"})

    emulator.emulator.reset()
    time.sleep(0.35)

    assert emulator.emulator.contacts == {}


# --------------------------------------------------------------------------- tooling


def test_state_and_calls_endpoints(http: httpx.Client, emulator: EmulatorServer) -> None:
    _patch(http, "ada@example.com", {"FIRSTNAME": "Ada"})
    http.get("/contacts/v3/email/ada@example.com")

    state = _send("GET", f"{emulator.base_url}/_emulator/state").json()
    calls = _send("GET", f"{emulator.base_url}/_emulator/calls").json()

    demo = state["accounts"][DEMO_USERNAME]
    assert demo["region"] == 1
    assert demo["contacts"]["ada@example.com"]["dataFields"] == {"FIRSTNAME": "Ada"}
    assert set(demo["contacts"]["ada@example.com"]) >= {"created", "updated", "contactId"}
    assert state["accounts"][US_USERNAME]["contacts"] == {}
    assert state["callCounts"] == {
        "PATCH /contacts/v3/email/{email}": 1,
        "GET /contacts/v3/email/{email}": 1,
    }
    assert [(c["method"], c["route"], c["status"], c["account"]) for c in calls["calls"]] == [
        ("PATCH", "/contacts/v3/email/{email}", 201, DEMO_USERNAME),
        ("GET", "/contacts/v3/email/{email}", 200, DEMO_USERNAME),
    ]
    assert "Authorization" not in str(calls)
    assert DEMO_PASSWORD not in str(calls)


def test_reset_endpoint_forgets_everything(http: httpx.Client, emulator: EmulatorServer) -> None:
    _patch(http, "ada@example.com", {"FIRSTNAME": "Ada"})
    emulator.emulator.set_faults(latency_ms=5)

    response = _send("POST", f"{emulator.base_url}/_emulator/reset")

    assert response.status_code == 200
    assert emulator.emulator.contacts == {}
    assert emulator.emulator.calls == []
    assert emulator.emulator.config.latency_ms == 0


def test_config_from_command_line_options() -> None:
    options = build_argument_parser().parse_args(
        [
            "--port", "9000", "--latency-ms", "20", "--error-rate", "0.1",
            "--timeout-rate", "0.05", "--burst-429", "3", "--rate-limit", "35",
            "--import-delay", "2.5", "--account", "apiuser-x@apiconnector.com:pw:3",
        ]
    )  # fmt: skip

    config = config_from_options(
        latency_ms=options.latency_ms,
        error_rate=options.error_rate,
        timeout_rate=options.timeout_rate,
        burst_429=options.burst_429,
        rate_limit=options.rate_limit,
        import_delay=options.import_delay,
        accounts=options.account,
    )

    assert options.port == 9000
    assert (config.latency_ms, config.error_rate, config.timeout_rate) == (20, 0.1, 0.05)
    assert (config.burst_429, config.rate_limit_per_minute, config.import_delay_seconds) == (
        3,
        35,
        2.5,
    )
    assert config.accounts == [EmulatorAccount("apiuser-x@apiconnector.com", "pw", 3)]
    assert config_from_options().accounts == [EmulatorAccount(DEMO_USERNAME, DEMO_PASSWORD, 1)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user", "an account is written username:password or username:password:region"),
        ("user:", "an account is written username:password or username:password:region"),
        (":pw", "an account is written username:password or username:password:region"),
        ("a:b:c:d", "an account is written username:password or username:password:region"),
        ("user:pw:4", "an account's region is 1, 2 or 3, not '4'"),
        ("user:pw:eu", "an account's region is 1, 2 or 3, not 'eu'"),
    ],
)
def test_bad_account_options_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^an account") as caught:
        config_from_options(accounts=[text])

    assert str(caught.value) == message


def test_account_repr_hides_the_password() -> None:
    assert "demo-password" not in repr(EmulatorAccount(DEMO_USERNAME, DEMO_PASSWORD))


def test_the_call_log_keeps_only_the_latest_calls_but_counts_all() -> None:
    emulator = DotdigitalEmulator(EmulatorConfig(max_logged_calls=3))

    async def call_five_times() -> None:
        transport = httpx.ASGITransport(app=emulator.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", auth=(DEMO_USERNAME, DEMO_PASSWORD)
        ) as client:
            for number in range(5):
                await client.get(f"/contacts/v3/email/c{number}@example.com")

    asyncio.run(call_five_times())

    assert [call["path"] for call in emulator.calls] == [
        f"/contacts/v3/email/c{number}@example.com" for number in (2, 3, 4)
    ]
    assert emulator.call_counts == {"GET /contacts/v3/email/{email}": 5}


def test_import_end_statuses_are_checked_and_used_once_each(emulator: EmulatorServer) -> None:
    faults = f"{emulator.base_url}/_emulator/faults"
    refused = _send("POST", faults, json={"import_statuses": ["Exploded"]})
    changed = _send("POST", faults, json={"import_statuses": ["RejectedByWatchdog", "Finished"]})

    assert refused.status_code == 400
    assert refused.json()["detail"].startswith("import_statuses is a list of Finished, ")
    assert changed.status_code == 200
    assert changed.json()["import_statuses"] == ["RejectedByWatchdog", "Finished"]
    assert emulator.emulator.config.import_statuses == ("RejectedByWatchdog", "Finished")
