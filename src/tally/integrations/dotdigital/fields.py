"""Which Dotdigital data fields Tally fills, how values are formatted, and how imports are cut.

A merchant maps four loyalty facts to Dotdigital data fields (``DataFieldMapping``); on connect
``ensure_fields`` creates the missing ones, and every sync sends ``contact_data_fields`` for a
customer: absolute values read at send time, with ``None`` clearing a field. Large backlogs go
through bulk imports cut by ``build_import_batches``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from tally.integrations.dotdigital.client import (
    IMPORT_MERGE_OPTIONS,
    DataField,
    DataFieldValue,
    DotdigitalApi,
    DotdigitalFieldExists,
    DotdigitalRejected,
    encode_json,
)

FIELD_NAME_MAX_LENGTH = 20
# Dotdigital's documented text limit; some accounts allow more, none allow less.
TEXT_VALUE_MAX_LENGTH = 255
MAX_IMPORT_CONTACTS = 2000
# "50 MB" read the strict way (10^6 bytes), so a batch fits whichever way Dotdigital counts.
MAX_IMPORT_BYTES = 50_000_000

_FIELD_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")


class InvalidFieldNameError(ValueError):
    """A data field name Dotdigital would refuse."""


class DataFieldValueError(ValueError):
    """A value that cannot be sent to its data field (for example text over 255 characters)."""


def validate_field_name(name: str) -> str:
    """Return the name if Dotdigital accepts it, else raise InvalidFieldNameError saying why."""
    if not isinstance(name, str) or not name:
        raise InvalidFieldNameError("a data field name cannot be empty")
    if len(name) > FIELD_NAME_MAX_LENGTH:
        raise InvalidFieldNameError(
            f"data field name {name!r} is {len(name)} characters long; "
            f"Dotdigital allows at most {FIELD_NAME_MAX_LENGTH}"
        )
    if not _FIELD_NAME_RE.fullmatch(name):
        bad = sorted({char for char in name if not _FIELD_NAME_RE.fullmatch(char)})
        raise InvalidFieldNameError(
            f"data field name {name!r} contains {''.join(bad)!r}; use only letters A-Z, "
            "digits, underscores and hyphens"
        )
    return name


@dataclass(frozen=True)
class FieldSpec:
    """One mapped data field: the loyalty fact it carries, its name and Dotdigital type."""

    attribute: str
    name: str
    type: str


# Loyalty fact → Dotdigital type; the order is the order fields are created in.
FIELD_TYPES: dict[str, str] = {
    "points_balance": "Numeric",
    "referral_url": "String",
    "birthday": "Date",
    "vip_tier": "String",
}


class DataFieldMapping(BaseModel):
    """Names of the Dotdigital data fields Tally fills; None leaves a fact out of the sync."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    points_balance: str | None = "LOYALTY_POINTS"
    referral_url: str | None = "LOYALTY_REFERRAL_URL"
    birthday: str | None = "LOYALTY_BIRTHDAY"
    vip_tier: str | None = "LOYALTY_VIP_TIER"

    @field_validator("points_balance", "referral_url", "birthday", "vip_tier")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        return None if value is None else validate_field_name(value)

    @model_validator(mode="after")
    def _distinct(self) -> DataFieldMapping:
        seen: dict[str, str] = {}
        for spec in self.specs():
            other = seen.setdefault(spec.name.upper(), spec.attribute)
            if other != spec.attribute:
                raise ValueError(
                    f"{other} and {spec.attribute} both map to data field {spec.name!r}; "
                    "names are compared without regard to letter case"
                )
        return self

    def specs(self) -> list[FieldSpec]:
        """The mapped fields with their expected types, skipping facts mapped to None."""
        specs: list[FieldSpec] = []
        for attribute, field_type in FIELD_TYPES.items():
            name = getattr(self, attribute)
            if name is not None:
                specs.append(FieldSpec(attribute, name, field_type))
        return specs


# Dotdigital keeps a Date field as an instant (an ISO 8601 date-time with an offset) and shows
# it, and runs date-based programs, in the account's time zone. Midnight UTC, what production
# plugins send, is the evening before anywhere west of Greenwich: 1990-05-01T00:00Z is 30 April,
# 17:00 in Los Angeles. Noon UTC is the same calendar day in every zone less than 12 hours from
# UTC (Los Angeles, 04:00 or 05:00, and Tokyo, 21:00, alike) and in UTC itself, for a reader that
# keeps only the date. For a merchant 12 or more hours from UTC (New Zealand, Tonga, Kiribati)
# noon UTC is the next or previous day there, so the value moves to the middle of the hours that
# are the birthday both in the merchant's zone and in UTC.


def format_date(value: date, time_zone: str = "UTC") -> str:
    """A calendar date as a Date field value: an instant that is that date in UTC and there."""
    day = value.date() if isinstance(value, datetime) else value
    zone = ZoneInfo(time_zone)
    next_day = day + timedelta(days=1)
    local_start = datetime.combine(day, time(0), tzinfo=zone)
    local_end = datetime.combine(next_day, time(0), tzinfo=zone)
    moment = datetime.combine(day, time(12), tzinfo=UTC)
    if not local_start < moment < local_end:
        start = max(local_start, datetime.combine(day, time(0), tzinfo=UTC))
        end = min(local_end, datetime.combine(next_day, time(0), tzinfo=UTC))
        moment = start + (end - start) / 2
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _text(attribute: str, value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > TEXT_VALUE_MAX_LENGTH:
        raise DataFieldValueError(
            f"{attribute} is {len(value)} characters long; Dotdigital text fields hold "
            f"at most {TEXT_VALUE_MAX_LENGTH}"
        )
    return value


def contact_data_fields(
    mapping: DataFieldMapping,
    *,
    points_balance: int,
    referral_url: str | None,
    birthday: date | None,
    vip_tier: str | None,
    time_zone: str = "UTC",
) -> dict[str, DataFieldValue]:
    """Data field values for one customer; None (and empty text) clears the field.

    ``time_zone`` is the merchant's, so the birthday is that date there (see ``format_date``).
    """
    if isinstance(points_balance, bool) or not isinstance(points_balance, int):
        raise DataFieldValueError("points_balance must be a whole number of points")
    values: dict[str, DataFieldValue] = {
        "points_balance": points_balance,
        "referral_url": _text("referral_url", referral_url),
        "birthday": format_date(birthday, time_zone) if birthday is not None else None,
        "vip_tier": _text("vip_tier", vip_tier),
    }
    return {spec.name: values[spec.attribute] for spec in mapping.specs()}


@dataclass(frozen=True)
class FieldConflict:
    """A mapped field that exists in Dotdigital with another type; Tally will not fill it."""

    attribute: str
    name: str
    expected_type: str
    actual_type: str

    def __str__(self) -> str:
        return (
            f"Dotdigital data field {self.name} is {self.actual_type}, but {self.attribute} "
            f"needs {self.expected_type}; rename the mapping or change the field in Dotdigital"
        )


@dataclass(frozen=True)
class FieldFailure:
    """A mapped field Dotdigital refused to create (for example the field limit is reached)."""

    attribute: str
    name: str
    code: str | None
    message: str


@dataclass
class EnsureResult:
    """What ``ensure_fields`` found and did."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    conflicts: list[FieldConflict] = field(default_factory=list)
    failures: list[FieldFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every mapped field exists with the right type."""
        return not self.conflicts and not self.failures

    def usable_mapping(self, mapping: DataFieldMapping) -> DataFieldMapping:
        """The mapping without fields that conflict or could not be created."""
        unusable = {c.attribute for c in self.conflicts} | {f.attribute for f in self.failures}
        return mapping.model_copy(update=dict.fromkeys(unusable))


def ensure_fields(client: DotdigitalApi, mapping: DataFieldMapping) -> EnsureResult:
    """Create the mapped fields that are missing; report those that exist with the wrong type.

    Retryable, auth and region errors propagate; a field Dotdigital refuses to create is
    recorded in ``failures`` and the others are still attempted.
    """
    result = EnsureResult()
    known = {f.name.upper(): f for f in client.list_data_fields()}
    for spec in mapping.specs():
        found = known.get(spec.name.upper())
        if found is None:
            try:
                client.create_data_field(spec.name, spec.type)
            except DotdigitalFieldExists:
                # Created meanwhile (another worker, or a person in Dotdigital): check its type.
                known = {f.name.upper(): f for f in client.list_data_fields()}
                found = known.get(spec.name.upper())
                if found is None:
                    result.existing.append(spec.name)
                    continue
            except DotdigitalRejected as error:
                result.failures.append(
                    FieldFailure(spec.attribute, spec.name, error.code, error.message)
                )
                continue
            else:
                result.created.append(spec.name)
                continue
        _record_existing(result, spec, found)
    return result


def _record_existing(result: EnsureResult, spec: FieldSpec, found: DataField) -> None:
    if found.type.lower() == spec.type.lower():
        result.existing.append(found.name)
    else:
        result.conflicts.append(FieldConflict(spec.attribute, found.name, spec.type, found.type))


def build_import_batches(
    contacts: Iterable[Mapping[str, Any]],
    *,
    max_contacts: int = MAX_IMPORT_CONTACTS,
    max_bytes: int = MAX_IMPORT_BYTES,
) -> Iterator[list[dict[str, Any]]]:
    """Cut v3 import entries into batches whose request body respects both limits.

    Sizes are measured with the client's own serialisation and the longest merge option, so a
    batch is never larger on the wire than it was here. An entry that alone exceeds
    ``max_bytes`` raises DataFieldValueError.
    """
    if max_contacts < 1:
        raise ValueError("max_contacts must be at least 1")
    longest_option = max(IMPORT_MERGE_OPTIONS, key=len)
    envelope = len(encode_json({"mergeOption": longest_option, "contacts": []}))
    batch: list[dict[str, Any]] = []
    size = envelope
    for contact in contacts:
        entry = dict(contact)
        entry_size = len(encode_json(entry))
        if envelope + entry_size > max_bytes:
            raise DataFieldValueError(
                f"one import entry is {entry_size} bytes, more than a whole import may be"
            )
        separator = 1 if batch else 0
        if batch and (len(batch) >= max_contacts or size + separator + entry_size > max_bytes):
            yield batch
            batch, size, separator = [], envelope, 0
        batch.append(entry)
        size += separator + entry_size
    if batch:
        yield batch


__all__ = [
    "FIELD_TYPES",
    "MAX_IMPORT_BYTES",
    "MAX_IMPORT_CONTACTS",
    "DataFieldMapping",
    "DataFieldValueError",
    "EnsureResult",
    "FieldConflict",
    "FieldFailure",
    "FieldSpec",
    "InvalidFieldNameError",
    "build_import_batches",
    "contact_data_fields",
    "ensure_fields",
    "format_date",
    "validate_field_name",
]
