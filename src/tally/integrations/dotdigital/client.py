"""Client for the part of the Dotdigital API that Tally uses.

``DotdigitalApi`` is the Protocol the rest of Tally depends on; ``HttpDotdigitalClient`` talks to
the real API (or the local emulator) over httpx and ``FakeDotdigitalClient`` keeps everything in
memory for unit tests. The exception types live in ``errors.py`` and are re-exported here.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from tally.integrations.dotdigital.errors import (
    FIELD_EXISTS_CODE,
    DotdigitalAuthError,
    DotdigitalError,
    DotdigitalFieldExists,
    DotdigitalRateLimited,
    DotdigitalRejected,
    DotdigitalRetryable,
    DotdigitalUnanswered,
    DotdigitalWrongRegion,
    error_from_response,
)

DEFAULT_BASE_URL = "https://r1-api.dotdigital.com"
DEFAULT_TIMEOUT_SECONDS = 30.0
# Dotdigital's docs tell clients to allow 121 s per call. Giving up on a bulk import sooner is
# worse than waiting: an import that was slow to answer but accepted is still started, and
# sending it again starts a second one. Single calls keep the caller's shorter timeout.
IMPORT_TIMEOUT_SECONDS = 121.0
CONTACT_MERGE_OPTIONS = ("overwrite", "overwrite-if-not-empty", "overwrite-if-empty")
IMPORT_MERGE_OPTIONS = ("overwrite", "overwriteIfNotEmpty", "overwriteIfEmpty")
# GET /contacts/v3 answers 1 to 5,000 contacts a page.
MAX_LIST_LIMIT = 5000
IMPORT_STATUS_NOT_FINISHED = "NotFinished"
IMPORT_STATUS_FINISHED = "Finished"

DataFieldValue = str | int | float | bool | None
JsonObject = dict[str, Any]

# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class AccountInfo:
    """What ``GET /v2/account-info`` says about the account."""

    account_id: int | None
    api_endpoint: str
    # Property name → value, as Dotdigital returned them.
    properties: dict[str, Any]


@dataclass(frozen=True)
class DataField:
    """A data field defined on the account."""

    name: str
    type: str
    visibility: str = "Private"
    default_value: DataFieldValue = None


@dataclass(frozen=True)
class Contact:
    """A contact as Dotdigital returns it (v3)."""

    contact_id: int | None
    email: str
    status: str | None
    data_fields: dict[str, Any]
    created: str | None = None
    updated: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class ContactPage:
    """One page of ``GET /contacts/v3``, and the marker of the next (None on the last page)."""

    contacts: list[Contact]
    next_marker: str | None


@dataclass(frozen=True)
class ContactUpsert:
    """The outcome of an upsert: whether the contact was created, and the contact."""

    created: bool
    contact: Contact


@dataclass(frozen=True)
class ImportFailure:
    """One contact of a bulk import that Dotdigital refused."""

    email: str | None
    # (failureCode, description) pairs.
    reasons: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ImportStatus:
    """Progress and, when finished, the result of a bulk import."""

    import_id: str
    status: str
    summary: dict[str, int] = field(default_factory=dict)
    created: list[Any] = field(default_factory=list)
    updated: list[Any] = field(default_factory=list)
    failures: list[ImportFailure] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """True once Dotdigital stopped working on the import, successfully or not."""
        return self.status != IMPORT_STATUS_NOT_FINISHED

    @property
    def succeeded(self) -> bool:
        """True when the import ran to the end (individual contacts may still have failed)."""
        return self.status == IMPORT_STATUS_FINISHED


# --------------------------------------------------------------------------- protocol


@runtime_checkable
class DotdigitalApi(Protocol):
    """The Dotdigital operations Tally needs."""

    def account_info(self) -> AccountInfo:
        """Check the credentials and find the account's regional API endpoint."""
        ...

    def list_data_fields(self) -> list[DataField]:
        """Every data field of the account, built-in ones included."""
        ...

    def create_data_field(
        self,
        name: str,
        type: str,
        visibility: str = "Private",
        default: DataFieldValue = None,
    ) -> DataField:
        """Create a data field; DotdigitalFieldExists when the name is taken."""
        ...

    def upsert_contact(
        self,
        email: str,
        data_fields: Mapping[str, DataFieldValue],
        *,
        channel_properties: Mapping[str, Any] | None = None,
        merge_option: str = "overwrite",
    ) -> ContactUpsert:
        """Create or update one contact by email; only the given fields change, None clears."""
        ...

    def get_contact(self, email: str) -> Contact | None:
        """The contact with this email, or None when Dotdigital has none."""
        ...

    def list_contacts(
        self, data_fields: Sequence[str], *, limit: int, marker: str | None = None
    ) -> ContactPage:
        """A page of contacts (ascending contact id) with these data fields, after ``marker``."""
        ...

    def start_import(
        self, contacts: Sequence[Mapping[str, Any]], *, merge_option: str = "overwrite"
    ) -> str:
        """Start a bulk import of v3 contact entries (see ``import_entry``); the import id."""
        ...

    def import_status(self, import_id: str) -> ImportStatus:
        """Progress or result of a bulk import."""
        ...


def import_entry(
    email: str,
    data_fields: Mapping[str, DataFieldValue],
    *,
    channel_properties: Mapping[str, Any] | None = None,
) -> JsonObject:
    """One contact of a bulk import in Dotdigital's v3 shape."""
    entry: JsonObject = {
        "matchIdentifier": "email",
        "identifiers": {"email": email},
        "dataFields": dict(data_fields),
    }
    if channel_properties is not None:
        entry["channelProperties"] = copy.deepcopy(dict(channel_properties))
    return entry


def encode_json(value: Any) -> bytes:
    """Serialise a request body exactly as the client sends it (compact UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


# --------------------------------------------------------------------------- parsing


def _parse_data_field(item: Mapping[str, Any]) -> DataField:
    return DataField(
        name=str(item.get("name", "")),
        type=str(item.get("type", "")),
        visibility=str(item.get("visibility") or "Private"),
        default_value=item.get("defaultValue"),
    )


def _parse_contact(body: Mapping[str, Any], email: str) -> Contact:
    identifiers = body.get("identifiers")
    found = identifiers.get("email") if isinstance(identifiers, dict) else None
    data_fields = body.get("dataFields")
    contact_id = body.get("contactId")
    return Contact(
        contact_id=contact_id if isinstance(contact_id, int) else None,
        email=str(found or email),
        status=body.get("status"),
        data_fields=dict(data_fields) if isinstance(data_fields, dict) else {},
        created=body.get("created"),
        updated=body.get("updated"),
        raw=dict(body),
    )


def _parse_import_status(body: Mapping[str, Any], import_id: str) -> ImportStatus:
    failures: list[ImportFailure] = []
    for item in body.get("failures") or []:
        if not isinstance(item, dict):
            continue
        identifiers = item.get("identifiers")
        email = identifiers.get("email") if isinstance(identifiers, dict) else None
        reasons = tuple(
            (str(reason.get("failureCode", "")), str(reason.get("description", "")))
            for reason in item.get("failures") or []
            if isinstance(reason, dict)
        )
        failures.append(ImportFailure(email=email, reasons=reasons))
    summary = body.get("summary")
    return ImportStatus(
        import_id=str(body.get("importId") or import_id),
        status=str(body.get("status", "")),
        summary={
            str(key): value
            for key, value in (summary.items() if isinstance(summary, dict) else ())
            if isinstance(value, int)
        },
        created=list(body.get("created") or []),
        updated=list(body.get("updated") or []),
        failures=failures,
    )


def _next_marker(body: Mapping[str, Any]) -> str | None:
    """The next page's marker from ``_links.next``: its ``marker``, else its link's query."""
    links = body.get("_links")
    following = links.get("next") if isinstance(links, dict) else None
    if not isinstance(following, dict):
        return None
    marker = following.get("marker")
    if isinstance(marker, str) and marker:
        return marker
    link = following.get("link")
    if isinstance(link, str):
        found = parse_qs(urlsplit(link).query).get("marker")
        if found and found[0]:
            return found[0]
    return None


def _parse_contact_page(body: Mapping[str, Any]) -> ContactPage:
    items = body.get("_items")
    contacts = [
        _parse_contact(item, "")
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict)
    ]
    return ContactPage(contacts=[c for c in contacts if c.email], next_marker=_next_marker(body))


def _check_page_size(limit: int) -> None:
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"a page holds 1 to {MAX_LIST_LIMIT} contacts, not {limit}")


def _check_merge_option(value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"merge option must be one of {', '.join(allowed)}, not {value!r}")


# --------------------------------------------------------------------------- httpx client


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes ~0.1 s; one verified context serves every client.
    return httpx.create_ssl_context()


class HttpDotdigitalClient:
    """DotdigitalApi over HTTP; one instance per API user and endpoint, closed when done."""

    def __init__(
        self,
        username: str,
        password: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        *,
        import_timeout: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.username = username
        self.base_url = base_url.rstrip("/")
        self._password = password
        self._timeout = httpx.Timeout(timeout)
        self._timeout_seconds = timeout
        # Never shorter than a single call's timeout; IMPORT_TIMEOUT_SECONDS unless told.
        self.import_timeout_seconds = max(
            timeout, IMPORT_TIMEOUT_SECONDS if import_timeout is None else import_timeout
        )
        self._transport = transport
        # The password lives only inside the auth object, never in URLs, logs or reprs.
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=httpx.BasicAuth(username, password),
            headers={"Accept": "application/json", "User-Agent": "Tally loyalty (dotdigital)"},
            timeout=self._timeout,
            transport=transport,
            verify=_ssl_context(),
        )

    def __repr__(self) -> str:
        return f"HttpDotdigitalClient(username={self.username!r}, base_url={self.base_url!r})"

    def with_base_url(self, base_url: str) -> HttpDotdigitalClient:
        """A client for the same API user on another endpoint (after region discovery)."""
        return HttpDotdigitalClient(
            self.username,
            self._password,
            base_url,
            self._timeout_seconds,
            import_timeout=self.import_timeout_seconds,
            transport=self._transport,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> HttpDotdigitalClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        content = encode_json(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = self._http.request(
                method,
                path,
                content=content,
                headers=headers,
                params=params,
                timeout=self._timeout if timeout is None else httpx.Timeout(timeout),
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            # The request never left: sending it again cannot repeat anything.
            raise DotdigitalRetryable(f"{method} {path} failed: {error!r}") from None
        except httpx.TimeoutException as error:
            raise DotdigitalUnanswered(f"{method} {path} timed out: {error}") from None
        except httpx.TransportError as error:
            raise DotdigitalUnanswered(f"{method} {path} failed: {error!r}") from None
        if response.is_success:
            return response
        raise error_from_response(response)

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise DotdigitalRetryable(
                f"Dotdigital answered {response.status_code} with a body that is not JSON",
                status=response.status_code,
            ) from None

    def account_info(self) -> AccountInfo:
        """Check the credentials and find the account's regional API endpoint."""
        body = self._json(self._request("GET", "/v2/account-info"))
        if not isinstance(body, dict):
            raise DotdigitalRetryable("account-info answered something other than an object")
        properties: dict[str, Any] = {}
        for item in body.get("properties") or []:
            if isinstance(item, dict) and "name" in item:
                properties[str(item["name"])] = item.get("value")
        endpoint = properties.get("ApiEndpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise DotdigitalRetryable("account-info did not name an ApiEndpoint")
        account_id = body.get("id")
        return AccountInfo(
            account_id=account_id if isinstance(account_id, int) else None,
            api_endpoint=endpoint.rstrip("/"),
            properties=properties,
        )

    def list_data_fields(self) -> list[DataField]:
        """Every data field of the account, built-in ones included."""
        body = self._json(self._request("GET", "/v2/data-fields"))
        return [_parse_data_field(item) for item in body or [] if isinstance(item, dict)]

    def create_data_field(
        self,
        name: str,
        type: str,
        visibility: str = "Private",
        default: DataFieldValue = None,
    ) -> DataField:
        """Create a data field; DotdigitalFieldExists when the name is taken."""
        payload = {"name": name, "type": type, "visibility": visibility, "defaultValue": default}
        body = self._json(self._request("POST", "/v2/data-fields", body=payload))
        return _parse_data_field(body if isinstance(body, dict) else payload)

    @staticmethod
    def _contact_path(email: str) -> str:
        # Encode everything but "@" so "+" and "/" in addresses survive the path.
        return f"/contacts/v3/email/{quote(email, safe='@')}"

    def upsert_contact(
        self,
        email: str,
        data_fields: Mapping[str, DataFieldValue],
        *,
        channel_properties: Mapping[str, Any] | None = None,
        merge_option: str = "overwrite",
    ) -> ContactUpsert:
        """Create or update one contact by email; only the given fields change, None clears."""
        _check_merge_option(merge_option, CONTACT_MERGE_OPTIONS)
        # "Import a single contact" has no matchIdentifier (the path names the identifier); it
        # belongs to import entries only.
        payload: JsonObject = {"identifiers": {"email": email}, "dataFields": dict(data_fields)}
        if channel_properties is not None:
            payload["channelProperties"] = dict(channel_properties)
        response = self._request(
            "PATCH",
            self._contact_path(email),
            body=payload,
            params={"merge-option": merge_option},
        )
        body = self._json(response)
        contact = _parse_contact(body if isinstance(body, dict) else {}, email)
        return ContactUpsert(created=response.status_code == 201, contact=contact)

    def get_contact(self, email: str) -> Contact | None:
        """The contact with this email, or None when Dotdigital has none."""
        try:
            response = self._request("GET", self._contact_path(email))
        except DotdigitalRejected as error:
            if error.status == 404:
                return None
            raise
        body = self._json(response)
        return _parse_contact(body if isinstance(body, dict) else {}, email)

    def list_contacts(
        self, data_fields: Sequence[str], *, limit: int, marker: str | None = None
    ) -> ContactPage:
        """A page of contacts (ascending contact id) with these data fields, after ``marker``."""
        _check_page_size(limit)
        params = {"limit": str(limit)}
        if data_fields:
            params["data-fields"] = "|".join(data_fields)
        if marker:
            params["marker"] = marker
        body = self._json(self._request("GET", "/contacts/v3", params=params))
        return _parse_contact_page(body if isinstance(body, dict) else {})

    def start_import(
        self, contacts: Sequence[Mapping[str, Any]], *, merge_option: str = "overwrite"
    ) -> str:
        """Start a bulk import of v3 contact entries (see ``import_entry``); the import id."""
        _check_merge_option(merge_option, IMPORT_MERGE_OPTIONS)
        payload = {"mergeOption": merge_option, "contacts": [dict(c) for c in contacts]}
        response = self._request(
            "PUT", "/contacts/v3/import", body=payload, timeout=self.import_timeout_seconds
        )
        body = self._json(response)
        import_id = body.get("importId") if isinstance(body, dict) else None
        if not isinstance(import_id, str) or not import_id:
            raise DotdigitalRetryable("the import was accepted without an importId")
        return import_id

    def import_status(self, import_id: str) -> ImportStatus:
        """Progress or result of a bulk import."""
        path = f"/contacts/v3/import/{quote(import_id, safe='')}"
        body = self._json(self._request("GET", path))
        return _parse_import_status(body if isinstance(body, dict) else {}, import_id)


# --------------------------------------------------------------------------- in-memory fake


_FAKE_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_FAKE_TYPES = ("String", "Numeric", "Date", "Boolean")
_FAKE_BUILT_INS = ("FIRSTNAME", "LASTNAME", "FULLNAME", "GENDER", "POSTCODE")


class FakeDotdigitalClient:
    """An in-memory DotdigitalApi for unit tests.

    It keeps fields, contacts and imports, records every call in ``calls``, refuses unknown data
    fields and invalid emails like Dotdigital does, and raises queued errors
    (``fail_next(error)``) before doing anything, so retry paths can be driven exactly. Imports
    finish after ``import_polls_until_finished`` status reads.
    """

    def __init__(
        self,
        *,
        api_endpoint: str = "https://r1-api.dotdigital.com",
        import_polls_until_finished: int = 1,
    ) -> None:
        self.api_endpoint = api_endpoint
        self.import_polls_until_finished = import_polls_until_finished
        self.data_fields: dict[str, DataField] = {
            name: DataField(name, "String") for name in _FAKE_BUILT_INS
        }
        # Lower-cased email → contact's data fields (canonical names, None never stored).
        self.contacts: dict[str, dict[str, DataFieldValue]] = {}
        self.imports: dict[str, list[JsonObject]] = {}
        self.calls: list[tuple[str, Any]] = []
        self._errors: list[DotdigitalError | None] = []
        self._polls: dict[str, int] = {}
        self._results: dict[str, ImportStatus] = {}

    def fail_next(self, *errors: DotdigitalError | None) -> None:
        """Raise these errors, one per call, before the next calls do anything (None: succeed)."""
        self._errors.extend(errors)

    def _call(self, name: str, argument: Any) -> None:
        self.calls.append((name, copy.deepcopy(argument)))
        error = self._errors.pop(0) if self._errors else None
        if error is not None:
            raise error

    def _field(self, name: str) -> DataField | None:
        return self.data_fields.get(name.upper())

    def account_info(self) -> AccountInfo:
        """The configured endpoint, as account-info would report it."""
        self._call("account_info", None)
        return AccountInfo(1, self.api_endpoint, {"ApiEndpoint": self.api_endpoint + "/"})

    def list_data_fields(self) -> list[DataField]:
        """Every data field, built-in ones included."""
        self._call("list_data_fields", None)
        return list(self.data_fields.values())

    def create_data_field(
        self,
        name: str,
        type: str,
        visibility: str = "Private",
        default: DataFieldValue = None,
    ) -> DataField:
        """Create a field; DotdigitalFieldExists for a name taken in any letter case."""
        self._call("create_data_field", {"name": name, "type": type})
        if self._field(name) is not None:
            raise DotdigitalFieldExists(400, FIELD_EXISTS_CODE, "Field already exists")
        if type not in _FAKE_TYPES or not re.fullmatch(r"[A-Za-z0-9_-]{1,20}", name):
            raise DotdigitalRejected(400, "ERROR_DATAFIELD_INVALID", "Invalid data field")
        created = DataField(name, type, visibility, default)
        self.data_fields[name.upper()] = created
        return created

    def _validate(self, email: str, data_fields: Mapping[str, DataFieldValue]) -> dict[str, Any]:
        # The codes and shapes the emulator answers with (Dotdigital's "Error handling" page).
        if not _FAKE_EMAIL_RE.match(email):
            raise DotdigitalRejected(
                400,
                "contacts:invalidContacts",
                "The contact identifier is not valid.",
                [{"item": "email", "description": f"'{email}' is not a valid email address"}],
            )
        values: dict[str, Any] = {}
        unknown = [name for name in data_fields if self._field(name) is None]
        if unknown:
            raise DotdigitalRejected(
                400,
                "contacts:invalidContacts",
                "Invalid contact data.",
                [
                    {"item": name, "description": f"Data field '{name}' does not exist"}
                    for name in unknown
                ],
            )
        for name, value in data_fields.items():
            known = self._field(name)
            assert known is not None
            values[known.name] = value
        return values

    def _apply(self, email: str, values: Mapping[str, Any]) -> bool:
        stored = self.contacts.get(email.lower())
        created = stored is None
        stored = self.contacts.setdefault(email.lower(), {})
        for name, value in values.items():
            if value is None:
                stored.pop(name, None)
            else:
                stored[name] = value
        return created

    def _contact(self, email: str) -> Contact:
        stored = self.contacts[email.lower()]
        values = {f.name: stored.get(f.name) for f in self.data_fields.values()}
        number = list(self.contacts).index(email.lower()) + 1
        return Contact(number, email, "subscribed", values)

    def upsert_contact(
        self,
        email: str,
        data_fields: Mapping[str, DataFieldValue],
        *,
        channel_properties: Mapping[str, Any] | None = None,
        merge_option: str = "overwrite",
    ) -> ContactUpsert:
        """Create or update a contact (always with overwrite semantics)."""
        self._call("upsert_contact", {"email": email, "dataFields": dict(data_fields)})
        _check_merge_option(merge_option, CONTACT_MERGE_OPTIONS)
        created = self._apply(email, self._validate(email, data_fields))
        return ContactUpsert(created=created, contact=self._contact(email))

    def get_contact(self, email: str) -> Contact | None:
        """The stored contact or None."""
        self._call("get_contact", email)
        return self._contact(email) if email.lower() in self.contacts else None

    def list_contacts(
        self, data_fields: Sequence[str], *, limit: int, marker: str | None = None
    ) -> ContactPage:
        """Contacts in the order they were created; the marker is the position to go on from."""
        self._call("list_contacts", {"fields": list(data_fields), "limit": limit, "marker": marker})
        _check_page_size(limit)
        start = int(marker or 0)
        emails = list(self.contacts)[start : start + limit]
        contacts = []
        for email in emails:
            stored = self._contact(email)
            wanted = {f.upper() for f in data_fields}
            values = {k: v for k, v in stored.data_fields.items() if k.upper() in wanted}
            contacts.append(replace(stored, data_fields=values))
        more = start + limit < len(self.contacts)
        return ContactPage(contacts, str(start + limit) if more else None)

    def start_import(
        self, contacts: Sequence[Mapping[str, Any]], *, merge_option: str = "overwrite"
    ) -> str:
        """Accept an import; it is applied when its status is read often enough."""
        self._call("start_import", [dict(c) for c in contacts])
        _check_merge_option(merge_option, IMPORT_MERGE_OPTIONS)
        import_id = f"fake-import-{len(self.imports) + 1}"
        self.imports[import_id] = [copy.deepcopy(dict(c)) for c in contacts]
        self._polls[import_id] = 0
        return import_id

    def import_status(self, import_id: str) -> ImportStatus:
        """NotFinished until polled enough, then Finished with created/updated/failures."""
        self._call("import_status", import_id)
        if import_id not in self.imports:
            raise DotdigitalRejected(404, "contacts:importNotFound", "The import was not found.")
        if import_id in self._results:
            return self._results[import_id]
        self._polls[import_id] += 1
        if self._polls[import_id] < self.import_polls_until_finished:
            return ImportStatus(import_id, IMPORT_STATUS_NOT_FINISHED)
        created: list[Any] = []
        updated: list[Any] = []
        failures: list[ImportFailure] = []
        for entry in self.imports[import_id]:
            email = str(entry.get("identifiers", {}).get("email", ""))
            try:
                values = self._validate(email, entry.get("dataFields") or {})
            except DotdigitalRejected as error:
                # Failure codes as "Get import status" spells them.
                on_email = bool(error.details) and error.details[0].get("item") == "email"
                code = "InvalidEmail" if on_email else "InvalidContact"
                failures.append(ImportFailure(email, ((code, error.message),)))
                continue
            (created if self._apply(email, values) else updated).append({"email": email})
        summary = {
            "newContacts": len(created),
            "updatedContacts": len(updated),
            "globallySuppressed": 0,
            "invalidEntries": len(failures),
            "duplicateIdentifiers": 0,
        }
        result = ImportStatus(
            import_id, IMPORT_STATUS_FINISHED, summary, created, updated, failures
        )
        self._results[import_id] = result
        return result


__all__ = [
    "AccountInfo",
    "Contact",
    "ContactPage",
    "ContactUpsert",
    "DataField",
    "DataFieldValue",
    "DotdigitalApi",
    "DotdigitalAuthError",
    "DotdigitalError",
    "DotdigitalFieldExists",
    "DotdigitalRateLimited",
    "DotdigitalRejected",
    "DotdigitalRetryable",
    "DotdigitalUnanswered",
    "DotdigitalWrongRegion",
    "FakeDotdigitalClient",
    "HttpDotdigitalClient",
    "ImportFailure",
    "ImportStatus",
    "encode_json",
    "error_from_response",
    "import_entry",
]
