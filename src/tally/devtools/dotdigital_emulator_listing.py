"""The emulator's ``GET /contacts/v3``: contacts in pages, with the data fields asked for.

What Dotdigital documents ("Get contacts based on your criteria"): ``data-fields`` (a pipe
delimited list of data field names, or ``[[ALL]]``; without it a contact carries only its id
and identifiers), ``include``, the filters ``~created`` / ``~modified`` (ISO 8601, not both)
and ``~listId`` / ``~segmentId`` (not both), ``limit`` (1 to 5000) and ``marker``; contacts come
in ascending order, and the answer is ``{"_items": [...], "_links": {...}}`` where
``_links.next`` (a link and its marker) is there while more pages follow (the shape the
official PHP SDK's paginator reads).

Inferred, so the emulator stays lenient there and the client does not depend on it: the
default page size (5,000), the error codes of refused parameters, and what a marker looks like
(here an opaque token naming the last contact id of the page; a marker this emulator did not
issue is refused with 400).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

MAX_LIMIT = 5000
DEFAULT_LIMIT = 5000
ALL_FIELDS = "[[ALL]]"
_MARKER_PREFIX = "after:"


class ListingRefused(ValueError):
    """A listing request Dotdigital would refuse; ``code`` and ``item`` go into the v3 error."""

    def __init__(self, code: str, item: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.item = item
        self.description = description


@dataclass(frozen=True)
class ListingQuery:
    """A checked listing request."""

    limit: int
    after_contact_id: int
    # Canonical field names to return; None for none at all (identifiers only).
    fields: tuple[str, ...] | None
    modified_since: datetime | None
    created_since: datetime | None


def encode_marker(contact_id: int) -> str:
    """The marker of the page that follows the contact ``contact_id``."""
    return base64.urlsafe_b64encode(f"{_MARKER_PREFIX}{contact_id}".encode()).decode()


def _decode_marker(marker: str) -> int:
    try:
        text = base64.urlsafe_b64decode(marker.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith(_MARKER_PREFIX) or not text[len(_MARKER_PREFIX) :].isdigit():
        raise ListingRefused(
            "contacts:invalidMarker", marker, "The pagination marker is not valid."
        )
    return int(text[len(_MARKER_PREFIX) :])


def _parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise ListingRefused(
            "contacts:invalidLimit", value, f"limit must be a whole number from 1 to {MAX_LIMIT}."
        )
    return limit


def _parse_date(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    # The official SDK sends "gte::<ISO 8601>"; a bare date is taken as "gte" too.
    text = value.removeprefix("gte::")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ListingRefused(
            "contacts:invalidDate", value, f"{name} must be an ISO 8601 date and time."
        ) from None
    if parsed.tzinfo is None:
        raise ListingRefused("contacts:invalidDate", value, f"{name} must name its time zone.")
    return parsed


def _parse_fields(value: str | None, known: Mapping[str, str]) -> tuple[str, ...] | None:
    if value is None or value == "":
        return None
    if value == ALL_FIELDS:
        return tuple(known.values())
    names = value.split("|")
    unknown = [name for name in names if name.upper() not in known]
    if unknown:
        raise ListingRefused(
            "contacts:invalidDataFields",
            "|".join(unknown),
            "Some requested data fields do not exist.",
        )
    return tuple(known[name.upper()] for name in names)


def _exclusive(params: Mapping[str, str], first: str, second: str) -> None:
    if first in params and second in params:
        raise ListingRefused(
            "contacts:badRequest", f"{first},{second}", f"{first} and {second} cannot be combined."
        )


def parse_query(params: Mapping[str, str], known_fields: Mapping[str, str]) -> ListingQuery:
    """Check the query string; ``known_fields`` maps upper-cased names to canonical ones."""
    _exclusive(params, "~created", "~modified")
    _exclusive(params, "~listId", "~segmentId")
    marker = params.get("marker")
    return ListingQuery(
        limit=_parse_limit(params.get("limit")),
        after_contact_id=_decode_marker(marker) if marker else 0,
        fields=_parse_fields(params.get("data-fields"), known_fields),
        modified_since=_parse_date("~modified", params.get("~modified")),
        created_since=_parse_date("~created", params.get("~created")),
    )


def _since(contact: Mapping[str, Any], key: str, bound: datetime | None) -> bool:
    return bound is None or datetime.fromisoformat(str(contact[key])) >= bound


def _item(contact: Mapping[str, Any], fields: tuple[str, ...] | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "contactId": contact["contactId"],
        "status": contact["status"],
        "created": contact["created"],
        "updated": contact["updated"],
        "identifiers": {"email": contact["email"]},
    }
    if fields is not None:
        values = contact["dataFields"]
        item["dataFields"] = {name: values.get(name) for name in fields}
    return item


def listing_page(
    contacts: Iterable[Mapping[str, Any]],
    query: ListingQuery,
    *,
    path: str,
    params: Mapping[str, str],
) -> dict[str, Any]:
    """One page of contacts after the marker, in ascending contact id, with its links."""
    matching = sorted(
        (
            c
            for c in contacts
            if int(c["contactId"]) > query.after_contact_id
            and _since(c, "updated", query.modified_since)
            and _since(c, "created", query.created_since)
        ),
        key=lambda c: int(c["contactId"]),
    )
    page = matching[: query.limit]
    base = {k: v for k, v in params.items() if k != "marker"}
    links: dict[str, Any] = {"self": {"link": f"{path}?{urlencode(params)}"}}
    if len(matching) > len(page):
        marker = encode_marker(int(page[-1]["contactId"]))
        following = f"{path}?{urlencode({**base, 'marker': marker})}"
        links["next"] = {"link": following, "marker": marker}
    return {"_items": [_item(c, query.fields) for c in page], "_links": links}
