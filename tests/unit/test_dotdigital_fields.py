"""Data field mapping, value formatting, field provisioning and import batching."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tally.integrations.dotdigital.client import (
    FIELD_EXISTS_CODE,
    DataField,
    DataFieldValue,
    DotdigitalApi,
    DotdigitalFieldExists,
    DotdigitalRejected,
    DotdigitalRetryable,
    FakeDotdigitalClient,
    ImportFailure,
    encode_json,
    import_entry,
)
from tally.integrations.dotdigital.fields import (
    MAX_IMPORT_BYTES,
    MAX_IMPORT_CONTACTS,
    DataFieldMapping,
    DataFieldValueError,
    FieldConflict,
    FieldFailure,
    FieldSpec,
    InvalidFieldNameError,
    build_import_batches,
    contact_data_fields,
    ensure_fields,
    format_date,
    validate_field_name,
)

URL = "https://shop.example.com/r/ADA-42"
# The envelope build_import_batches reserves: the longest merge option and an empty list.
ENVELOPE = len(b'{"mergeOption":"overwriteIfNotEmpty","contacts":[]}')


# --------------------------------------------------------------------------- names and mapping


@pytest.mark.parametrize("name", ["LOYALTY_POINTS", "a", "A" * 20, "tier-2", "x_1-Y"])
def test_valid_field_names_are_returned(name: str) -> None:
    assert validate_field_name(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "a data field name cannot be empty"),
        (
            "LOYALTY_REFERRAL_LINK_URL",
            "data field name 'LOYALTY_REFERRAL_LINK_URL' is 25 characters long; "
            "Dotdigital allows at most 20",
        ),
        (
            "LOYALTY POINTS",
            "data field name 'LOYALTY POINTS' contains ' '; use only letters A-Z, digits, "
            "underscores and hyphens",
        ),
        (
            "PUNKTE.STAND!",
            "data field name 'PUNKTE.STAND!' contains '!.'; use only letters A-Z, digits, "
            "underscores and hyphens",
        ),
        (
            "PÜNKTE",
            "data field name 'PÜNKTE' contains 'Ü'; use only letters A-Z, digits, "
            "underscores and hyphens",
        ),
    ],
)
def test_invalid_field_names_say_why(name: str, message: str) -> None:
    with pytest.raises(InvalidFieldNameError) as caught:
        validate_field_name(name)

    assert str(caught.value) == message


def test_default_mapping() -> None:
    assert DataFieldMapping().specs() == [
        FieldSpec("points_balance", "LOYALTY_POINTS", "Numeric"),
        FieldSpec("referral_url", "LOYALTY_REFERRAL_URL", "String"),
        FieldSpec("birthday", "LOYALTY_BIRTHDAY", "Date"),
        FieldSpec("vip_tier", "LOYALTY_VIP_TIER", "String"),
    ]


def test_mapping_refuses_invalid_and_duplicate_names() -> None:
    with pytest.raises(ValidationError, match="at most 20"):
        DataFieldMapping(points_balance="LOYALTY_POINTS_BALANCE")
    with pytest.raises(ValidationError, match="points_balance and vip_tier both map to"):
        DataFieldMapping(points_balance="TIER", vip_tier="tier")
    with pytest.raises(ValidationError):
        DataFieldMapping.model_validate({"points": "X"})


def test_mapping_round_trips_through_json_and_can_leave_facts_out() -> None:
    mapping = DataFieldMapping(birthday=None, vip_tier="VIP")

    restored = DataFieldMapping.model_validate_json(mapping.model_dump_json())

    assert restored == mapping
    assert [spec.name for spec in restored.specs()] == [
        "LOYALTY_POINTS",
        "LOYALTY_REFERRAL_URL",
        "VIP",
    ]


# --------------------------------------------------------------------------- values


def test_contact_data_fields_formats_each_type() -> None:
    values = contact_data_fields(
        DataFieldMapping(),
        points_balance=120,
        referral_url=URL,
        birthday=date(1990, 5, 1),
        vip_tier="Gold",
    )

    assert values == {
        "LOYALTY_POINTS": 120,
        "LOYALTY_REFERRAL_URL": URL,
        "LOYALTY_BIRTHDAY": "1990-05-01T12:00:00+00:00",
        "LOYALTY_VIP_TIER": "Gold",
    }


def test_the_birthday_is_sent_in_the_merchants_time_zone() -> None:
    def birthday(time_zone: str) -> Any:
        values = contact_data_fields(
            DataFieldMapping(),
            points_balance=1,
            referral_url=None,
            birthday=date(2000, 1, 1),
            vip_tier=None,
            time_zone=time_zone,
        )
        return values["LOYALTY_BIRTHDAY"]

    # Noon UTC is 1 January from Los Angeles (04:00) to Tokyo (21:00); Auckland (UTC+13 in
    # January) gets the middle of the hours that are 1 January both there and in UTC.
    assert birthday("America/Los_Angeles") == "2000-01-01T12:00:00+00:00"
    assert birthday("Asia/Tokyo") == "2000-01-01T12:00:00+00:00"
    assert birthday("Pacific/Auckland") == "2000-01-01T05:30:00+00:00"


@pytest.mark.parametrize(
    "time_zone",
    [
        "UTC",
        "America/Los_Angeles",
        "Pacific/Honolulu",
        "Etc/GMT+12",
        "Asia/Tokyo",
        "Asia/Kathmandu",
        "Pacific/Auckland",
        "Pacific/Chatham",
        "Pacific/Kiritimati",
        "Pacific/Tongatapu",
    ],
)
@pytest.mark.parametrize("day", [date(1990, 5, 1), date(2024, 1, 15), date(2024, 3, 10)])
def test_a_birthday_is_its_date_in_the_merchants_zone_and_in_utc(time_zone: str, day: date) -> None:
    moment = datetime.fromisoformat(format_date(day, time_zone))

    assert moment.utcoffset() == timedelta(0)
    assert moment.date() == day
    assert moment.astimezone(ZoneInfo(time_zone)).date() == day


def test_missing_values_clear_their_fields() -> None:
    values = contact_data_fields(
        DataFieldMapping(), points_balance=0, referral_url=None, birthday=None, vip_tier=""
    )

    assert values == {
        "LOYALTY_POINTS": 0,
        "LOYALTY_REFERRAL_URL": None,
        "LOYALTY_BIRTHDAY": None,
        "LOYALTY_VIP_TIER": None,
    }


def test_unmapped_facts_are_not_sent() -> None:
    values = contact_data_fields(
        DataFieldMapping(referral_url=None, birthday=None, vip_tier="TIER"),
        points_balance=5,
        referral_url=URL,
        birthday=date(2000, 1, 1),
        vip_tier="Silver",
    )

    assert values == {"LOYALTY_POINTS": 5, "TIER": "Silver"}


def test_format_date_uses_the_calendar_date_even_of_a_datetime() -> None:
    assert format_date(date(2024, 2, 29)) == "2024-02-29T12:00:00+00:00"
    assert format_date(datetime(2024, 5, 1, 23, 59, tzinfo=UTC)) == "2024-05-01T12:00:00+00:00"


def test_values_dotdigital_would_refuse_are_refused_here() -> None:
    mapping = DataFieldMapping()
    with pytest.raises(DataFieldValueError, match="referral_url is 256 characters long"):
        contact_data_fields(
            mapping, points_balance=1, referral_url="x" * 256, birthday=None, vip_tier=None
        )
    with pytest.raises(DataFieldValueError, match="whole number"):
        contact_data_fields(
            mapping, points_balance=True, referral_url=None, birthday=None, vip_tier=None
        )
    text = "x" * 255
    assert (
        contact_data_fields(
            mapping, points_balance=1, referral_url=text, birthday=None, vip_tier=None
        )["LOYALTY_REFERRAL_URL"]
        == text
    )


# --------------------------------------------------------------------------- ensure_fields


def test_ensure_fields_creates_every_missing_field() -> None:
    fake = FakeDotdigitalClient()

    result = ensure_fields(fake, DataFieldMapping())

    assert result.created == [
        "LOYALTY_POINTS",
        "LOYALTY_REFERRAL_URL",
        "LOYALTY_BIRTHDAY",
        "LOYALTY_VIP_TIER",
    ]
    assert (result.existing, result.conflicts, result.failures, result.ok) == ([], [], [], True)
    assert fake.data_fields["LOYALTY_BIRTHDAY"] == DataField("LOYALTY_BIRTHDAY", "Date")
    assert [name for name, _ in fake.calls] == ["list_data_fields"] + ["create_data_field"] * 4


def test_ensure_fields_reports_wrong_types_without_touching_them() -> None:
    fake = FakeDotdigitalClient()
    fake.create_data_field("loyalty_points", "String")
    # Types compare without regard to letter case.
    fake.data_fields["LOYALTY_BIRTHDAY"] = DataField("LOYALTY_BIRTHDAY", "date")

    result = ensure_fields(fake, DataFieldMapping())

    assert result.created == ["LOYALTY_REFERRAL_URL", "LOYALTY_VIP_TIER"]
    assert result.existing == ["LOYALTY_BIRTHDAY"]
    assert result.conflicts == [
        FieldConflict("points_balance", "loyalty_points", "Numeric", "String")
    ]
    assert str(result.conflicts[0]) == (
        "Dotdigital data field loyalty_points is String, but points_balance needs Numeric; "
        "rename the mapping or change the field in Dotdigital"
    )
    assert fake.data_fields["LOYALTY_POINTS"].type == "String"
    assert not result.ok
    assert result.usable_mapping(DataFieldMapping()) == DataFieldMapping(points_balance=None)


def test_ensure_fields_treats_a_field_created_meanwhile_as_existing() -> None:
    class RacingFake(FakeDotdigitalClient):
        def create_data_field(
            self,
            name: str,
            type: str,
            visibility: str = "Private",
            default: DataFieldValue = None,
        ) -> DataField:
            # Someone else created it first, with the type they chose.
            other_type = "Numeric" if name == "LOYALTY_VIP_TIER" else type
            super().create_data_field(name, other_type)
            raise DotdigitalFieldExists(400, FIELD_EXISTS_CODE, "Field already exists")

    result = ensure_fields(RacingFake(), DataFieldMapping())

    assert result.created == []
    assert result.existing == ["LOYALTY_POINTS", "LOYALTY_REFERRAL_URL", "LOYALTY_BIRTHDAY"]
    assert result.conflicts == [FieldConflict("vip_tier", "LOYALTY_VIP_TIER", "String", "Numeric")]


def test_ensure_fields_records_refusals_and_carries_on() -> None:
    fake = FakeDotdigitalClient()
    limit = DotdigitalRejected(400, "ERROR_DATAFIELD_LIMITEXCEEDED", "Too many fields")
    fake.fail_next(None, limit)

    result = ensure_fields(fake, DataFieldMapping())

    assert result.failures == [
        FieldFailure(
            "points_balance", "LOYALTY_POINTS", "ERROR_DATAFIELD_LIMITEXCEEDED", "Too many fields"
        )
    ]
    assert result.created == ["LOYALTY_REFERRAL_URL", "LOYALTY_BIRTHDAY", "LOYALTY_VIP_TIER"]
    assert "LOYALTY_POINTS" not in fake.data_fields


def test_ensure_fields_lets_retryable_errors_through() -> None:
    fake = FakeDotdigitalClient()
    fake.fail_next(DotdigitalRetryable("503", status=503))

    with pytest.raises(DotdigitalRetryable):
        ensure_fields(fake, DataFieldMapping())

    assert set(fake.data_fields) == {"FIRSTNAME", "LASTNAME", "FULLNAME", "GENDER", "POSTCODE"}


# --------------------------------------------------------------------------- the fake


def test_fake_implements_the_protocol_and_behaves_like_dotdigital() -> None:
    fake = FakeDotdigitalClient(import_polls_until_finished=2)
    assert isinstance(fake, DotdigitalApi)
    ensure_fields(fake, DataFieldMapping())

    created = fake.upsert_contact("Ada@Example.com", {"loyalty_points": 5, "FIRSTNAME": "Ada"})
    updated = fake.upsert_contact("ada@example.com", {"FIRSTNAME": None})
    with pytest.raises(DotdigitalRejected) as unknown:
        fake.upsert_contact("ada@example.com", {"NOPE": 1})
    with pytest.raises(DotdigitalRejected) as invalid:
        fake.upsert_contact("ada", {})
    import_id = fake.start_import(
        [import_entry("bob@example.com", {"LOYALTY_POINTS": 3}), import_entry("bad", {})]
    )
    pending = fake.import_status(import_id)
    done = fake.import_status(import_id)

    assert (created.created, updated.created) == (True, False)
    assert fake.contacts == {
        "ada@example.com": {"LOYALTY_POINTS": 5},
        "bob@example.com": {"LOYALTY_POINTS": 3},
    }
    # The codes Dotdigital documents ("Error handling", "Get import status").
    assert unknown.value.code == invalid.value.code == "contacts:invalidContacts"
    assert [d["item"] for d in unknown.value.details + invalid.value.details] == ["NOPE", "email"]
    assert (pending.finished, done.finished) == (False, True)
    assert done.summary["newContacts"] == 1
    assert done.failures == [ImportFailure("bad", (("InvalidEmail", invalid.value.message),))]
    assert fake.get_contact("nobody@example.com") is None


# --------------------------------------------------------------------------- batches


def _entries(count: int, padding: int = 0) -> list[dict[str, Any]]:
    return [
        import_entry(f"c{n:03}@example.com", {"FIRSTNAME": "x" * padding}) for n in range(count)
    ]


def test_batches_respect_the_contact_count() -> None:
    batches = list(build_import_batches(_entries(5), max_contacts=2))

    assert [len(b) for b in batches] == [2, 2, 1]
    assert [e for b in batches for e in b] == _entries(5)


def test_default_limits_match_production_plugins() -> None:
    assert (MAX_IMPORT_CONTACTS, MAX_IMPORT_BYTES) == (2000, 50_000_000)
    assert [len(b) for b in build_import_batches(_entries(4001))] == [2000, 2000, 1]


def test_batches_respect_the_byte_limit_exactly() -> None:
    entries = _entries(4)
    size = len(encode_json(entries[0]))
    two_fit = ENVELOPE + 2 * size + 1

    exact = list(build_import_batches(entries, max_bytes=two_fit))
    one_short = list(build_import_batches(entries, max_bytes=two_fit - 1))

    assert [len(b) for b in exact] == [2, 2]
    assert [len(b) for b in one_short] == [1, 1, 1, 1]


def test_an_entry_larger_than_an_import_is_refused() -> None:
    entries = _entries(1, padding=100)

    with pytest.raises(DataFieldValueError, match="more than a whole import may be"):
        list(build_import_batches(entries, max_bytes=100))


def test_no_entries_no_batches() -> None:
    assert list(build_import_batches([])) == []
    with pytest.raises(ValueError, match="max_contacts"):
        list(build_import_batches(_entries(1), max_contacts=0))


@given(
    paddings=st.lists(st.integers(min_value=0, max_value=200), max_size=40),
    max_contacts=st.integers(min_value=1, max_value=10),
    spare=st.integers(min_value=0, max_value=1000),
)
def test_every_batch_body_fits_and_order_is_kept(
    paddings: list[int], max_contacts: int, spare: int
) -> None:
    entries = [
        import_entry(f"c{n}@example.com", {"FIRSTNAME": "é" * pad})
        for n, pad in enumerate(paddings)
    ]
    largest = max((len(encode_json(e)) for e in entries), default=0)
    max_bytes = ENVELOPE + largest + spare

    batches = list(build_import_batches(entries, max_contacts=max_contacts, max_bytes=max_bytes))

    assert [e for b in batches for e in b] == entries
    for batch in batches:
        assert 1 <= len(batch) <= max_contacts
        for option in ("overwrite", "overwriteIfEmpty", "overwriteIfNotEmpty"):
            assert len(encode_json({"mergeOption": option, "contacts": batch})) <= max_bytes
    # Greedy: joining a batch with the next contact would break a limit.
    for batch, following in itertools.pairwise(batches):
        joined = [*batch, following[0]]
        body = encode_json({"mergeOption": "overwriteIfNotEmpty", "contacts": joined})
        assert len(joined) > max_contacts or len(body) > max_bytes
