"""What the Dotdigital emulator refuses, kept apart from its HTTP pipeline and state.

Each rule names where the fact comes from. Dotdigital's pages cited: "Error handling" (the v3
error contract and the ``contacts:invalidContacts`` example), "Import contact collection" (the
import body: ``mergeOption`` and a non-empty ``contacts`` list whose entries have a required
``matchIdentifier`` and ``identifiers`` and optional ``dataFields``, ``channelProperties``,
``lists``, ``preferences`` and ``consentRecords``), "Import a single contact" (the PATCH body: the
same keys without ``matchIdentifier``), "Get import status" (per-contact failure codes) and "Call
rate limits". ``/work/shared/dotdigital-api.md`` collects them. Where no page says what the API
answers, the rule says "inferred" and uses a documented code rather than a new one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

# v3 error codes Dotdigital documents. A request whose shape is wrong ("Import contact
# collection": a contact without identifiers makes the whole request a 400 contacts:badRequest);
# a body that is not JSON (contacts:badJson, dotdigital-api.md "Bulk import"); contact data
# that does not fit the account ("Error handling": contacts:invalidContacts, one detail per item).
BAD_REQUEST = "contacts:badRequest"
BAD_JSON = "contacts:badJson"
INVALID_CONTACTS = "contacts:invalidContacts"

# Per-contact failure codes of a finished import, spelt as "Get import status" lists them.
FAILURE_INVALID_EMAIL = "InvalidEmail"
# "The JSON passed for the contact was schema invalid": an unknown data field or a value that
# does not fit the field's type.
FAILURE_INVALID_CONTACT = "InvalidContact"

# "Import a single contact" body keys; an import entry ("Import contact collection") adds
# ``matchIdentifier``.
CONTACT_PROPERTIES = frozenset(
    {"identifiers", "dataFields", "channelProperties", "lists", "preferences", "consentRecords"}
)
IMPORT_BODY_KEYS = frozenset({"mergeOption", "contacts"})
IMPORT_ENTRY_KEYS = CONTACT_PROPERTIES | {"matchIdentifier"}
# ``matchIdentifier`` belongs to import entries, but the API tolerates it on a PATCH
# (dotdigital-api.md, "Contacts"), so the emulator does too.
CONTACT_BODY_KEYS = IMPORT_ENTRY_KEYS

# Date fields take an ISO 8601 date-time with its offset ("UTC ISO 8601", the format of every
# date-time in the v3 contract). A bare date, a basic-format "20240501" or a time without an
# offset is refused: it would be read in some server time zone and land on another day.
_DATE_TIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,7})?(?:Z|[+-]\d{2}:\d{2})$"
)

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def content_type_problem(method: str, content_type: str | None) -> str | None:
    """Why a request's Content-Type is refused, or None when it is JSON or needs none.

    Inferred: the v2 and v3 services are ASP.NET services, which answer 415 to a body that is
    not declared ``application/json``; the page "Error handling" only says JSON in and out.
    """
    if method not in BODY_METHODS:
        return None
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return None
    shown = media_type or "none"
    return f"The request entity's media type '{shown}' is not supported; send application/json."


def date_value(value: object) -> str | None:
    """A Date field value as the emulator stores it (UTC, "+00:00"), or None when refused."""
    if not isinstance(value, str) or _DATE_TIME_RE.match(value) is None:
        return None
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    # Python reads at most six fraction digits; .NET writes seven.
    text = re.sub(r"(\.\d{6})\d", r"\1", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    # Inferred: Dotdigital keeps the instant; the emulator answers it in UTC, seconds precision.
    return moment.astimezone(UTC).isoformat(timespec="seconds")


DATE_PROBLEM = (
    "a Date field takes an ISO 8601 date-time with an offset, such as 2024-05-01T12:00:00+00:00"
)


def unknown_keys(
    body: Mapping[str, Any], allowed: Iterable[str], where: str
) -> list[dict[str, str]]:
    """Details naming every key of ``body`` that the documented shape does not have."""
    known = frozenset(allowed)
    return [
        {"item": f"{where}{key}", "description": f"'{key}' is not a property of this request"}
        for key in body
        if key not in known
    ]


def import_shape_problems(body: Any, merge_options: Iterable[str]) -> list[dict[str, str]]:
    """Why an import body is not the documented shape (a synchronous 400), else []."""
    if not isinstance(body, dict):
        return [{"item": "body", "description": "The body must be an object"}]
    problems = unknown_keys(body, IMPORT_BODY_KEYS, "")
    contacts = body.get("contacts")
    if not isinstance(contacts, list) or not contacts:
        # "Import contact collection": contacts is required, length at least 1.
        problems.append({"item": "contacts", "description": "contacts must be a non-empty list"})
    options = tuple(merge_options)
    if body.get("mergeOption", "overwrite") not in options:
        problems.append({"item": "mergeOption", "description": ", ".join(options)})
    if isinstance(contacts, list):
        problems += import_entry_problems(contacts)
    return problems


def import_entry_problems(contacts: list[Any]) -> list[dict[str, str]]:
    """Entries that are not objects, lack identifiers or matchIdentifier, or have unknown keys."""
    problems: list[dict[str, str]] = []
    for index, entry in enumerate(contacts):
        where = f"contacts[{index}]"
        if not isinstance(entry, dict):
            problems.append({"item": where, "description": "A contact must be an object"})
            continue
        identifiers = entry.get("identifiers")
        match = entry.get("matchIdentifier")
        if not isinstance(identifiers, dict) or not identifiers or not isinstance(match, str):
            problems.append(
                {"item": where, "description": "A contact needs identifiers and a matchIdentifier"}
            )
        problems += unknown_keys(entry, IMPORT_ENTRY_KEYS, f"{where}.")
    return problems


__all__ = [
    "BAD_JSON",
    "BAD_REQUEST",
    "BODY_METHODS",
    "CONTACT_BODY_KEYS",
    "CONTACT_PROPERTIES",
    "DATE_PROBLEM",
    "FAILURE_INVALID_CONTACT",
    "FAILURE_INVALID_EMAIL",
    "IMPORT_BODY_KEYS",
    "IMPORT_ENTRY_KEYS",
    "INVALID_CONTACTS",
    "content_type_problem",
    "date_value",
    "import_entry_problems",
    "import_shape_problems",
    "unknown_keys",
]
