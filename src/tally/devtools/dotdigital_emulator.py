"""A local emulator of the part of the Dotdigital API that Tally uses.

It is a real HTTP server (Starlette served by uvicorn) so that the production httpx client is
exercised end to end: Basic auth, region discovery, v2 data fields, v3 contact upserts and reads,
v3 bulk imports that finish asynchronously, per-user rate limiting with Dotdigital's
``x-ratelimit-*`` headers, and injectable faults (latency, 5xx, hung calls, bursts of 429).

Regions. Dotdigital hosts each account in one region (r1/r2/r3, each its own host) and a call
to the wrong region answers 403. ``EmulatorServer`` listens on one port per region (region 1 on
the first, ``url_for_region`` names each) and tells regions apart by the port a call arrives on,
so a client that keeps using the wrong region's base URL fails as it would against Dotdigital,
whatever host name it uses (Docker service names work). ``GET /v2/account-info`` answers on
every region, as the real r1 host does for every account, and reports ``ApiEndpoint`` as the
account's region on the same host name. An app served without region ports (mounted in-process)
serves every region.

Strictness. The emulator refuses what Dotdigital documents it refuses (the rules and their
sources are in ``dotdigital_validation``): bodies not declared ``application/json``, Date values
that are not ISO 8601 date-times with an offset, unknown keys in contact and import bodies,
unknown data fields, imports whose entries lack ``identifiers`` or ``matchIdentifier``, and, once
a 429 reported a reset, every call of that API user until the reset. Where the documentation is
silent (the body of a 403, 429 or 5xx; the exact shape of import results) it answers plausibly,
with documented codes only, and the client must not depend on those details.

Test and tooling endpoints (no auth, no faults, not logged): ``GET /_emulator/state``,
``GET /_emulator/calls``, ``POST /_emulator/faults`` and ``POST /_emulator/reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import copy
import hmac
import json
import math
import random
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tally.devtools import dotdigital_emulator_listing as listing
from tally.devtools.dotdigital_validation import (
    BAD_JSON,
    BAD_REQUEST,
    CONTACT_BODY_KEYS,
    DATE_PROBLEM,
    FAILURE_INVALID_CONTACT,
    FAILURE_INVALID_EMAIL,
    INVALID_CONTACTS,
    content_type_problem,
    date_value,
    import_shape_problems,
    unknown_keys,
)

DEMO_USERNAME = "apiuser-demo@apiconnector.com"
DEMO_PASSWORD = "demo-password"  # noqa: S105 - a published demo credential of a local emulator

AUTH_DENIED_MESSAGE = "Authorization has been denied for this request."
DATA_FIELD_TYPES = ("String", "Numeric", "Date", "Boolean")
DATA_FIELD_VISIBILITIES = ("Private", "Public")
BUILT_IN_FIELDS = ("FIRSTNAME", "LASTNAME", "FULLNAME", "GENDER", "POSTCODE")
CONTACT_MERGE_OPTIONS = ("overwrite", "overwrite-if-not-empty", "overwrite-if-empty")
# Bulk imports spell the same options in camelCase.
IMPORT_MERGE_OPTIONS = {
    "overwrite": "overwrite",
    "overwriteIfNotEmpty": "overwrite-if-not-empty",
    "overwriteIfEmpty": "overwrite-if-empty",
}
IMPORT_STATUS_NOT_FINISHED = "NotFinished"
IMPORT_STATUS_FINISHED = "Finished"
# How Dotdigital may end an import (its status enum, NotFinished aside).
IMPORT_END_STATUSES = (
    IMPORT_STATUS_FINISHED,
    "RejectedByWatchdog",
    "Failed",
    "ExceedsAllowedContactLimit",
)

_FIELD_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,20}$")
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)

Json = Any
Handler = Callable[[Request, "_CallContext"], Awaitable[Response]]


def is_valid_email(value: object) -> bool:
    """Whether a value looks like an email address Dotdigital would accept."""
    if not isinstance(value, str) or len(value) > 254:
        return False
    local, _, _domain = value.rpartition("@")
    return len(local) <= 64 and _EMAIL_RE.match(value) is not None


@dataclass(frozen=True)
class EmulatorAccount:
    """One API user of the emulator and the region its account lives in."""

    username: str
    password: str
    region: int = 1

    def __repr__(self) -> str:
        return f"EmulatorAccount(username={self.username!r}, region={self.region})"


def _default_accounts() -> list[EmulatorAccount]:
    return [EmulatorAccount(DEMO_USERNAME, DEMO_PASSWORD, 1)]


# Settings that can change while the server runs (``set_faults`` and ``POST /_emulator/faults``):
# faults, rate limits and the account limits tests want to reach quickly.
RUNTIME_SETTINGS = (
    "rate_limit_per_minute",
    "rate_limit_window_seconds",
    "latency_ms",
    "error_rate",
    "timeout_rate",
    "hang_seconds",
    "burst_429",
    "burst_429_reset_seconds",
    "burst_api_usage_exceeded",
    "import_delay_seconds",
    "import_answer_delay_seconds",
    "import_statuses",
    "max_custom_data_fields",
    "max_active_imports",
    "max_import_bytes",
)


@dataclass
class EmulatorConfig:
    """Accounts, limits and injected faults of one emulator."""

    accounts: list[EmulatorAccount] = field(default_factory=_default_accounts)
    # Calls per API user per window; 0 means unlimited (the header then reports 0).
    rate_limit_per_minute: int = 0
    rate_limit_window_seconds: float = 60.0
    latency_ms: int = 0
    # Fraction of calls answering 500 or 503.
    error_rate: float = 0.0
    # Fraction of calls that hang for ``hang_seconds`` (longer than a client's timeout) and are
    # then processed anyway, so the caller cannot tell whether the write happened.
    timeout_rate: float = 0.0
    hang_seconds: float = 5.0
    # Answer 429 to the next N authenticated calls.
    burst_429: int = 0
    # ``x-ratelimit-reset`` of injected 429s; None reports the rest of the user's window.
    burst_429_reset_seconds: int | None = None
    # Answer 400 ERROR_APIUSAGE_EXCEEDED to the next N authenticated calls: how an API user on
    # the deprecated flat-rate scheme is throttled.
    burst_api_usage_exceeded: int = 0
    # How long a bulk import stays NotFinished.
    import_delay_seconds: float = 1.0
    # How long an accepted import waits before answering 202 (a slow but successful start).
    import_answer_delay_seconds: float = 0.0
    # How the next N imports end instead of Finished (each entry is used once, in order): a
    # status Dotdigital reports for imports it refused as a whole.
    import_statuses: tuple[str, ...] = ()
    seed: int | None = None
    max_custom_data_fields: int = 100
    max_active_imports: int = 25
    max_import_bytes: int = 50 * 1024 * 1024
    max_text_length: int = 255
    # The call log keeps the most recent calls only; counts cover every call.
    max_logged_calls: int = 10_000

    def __post_init__(self) -> None:
        validate_runtime_settings({name: getattr(self, name) for name in RUNTIME_SETTINGS})
        if not self.accounts:
            raise ValueError("the emulator needs at least one account")
        for account in self.accounts:
            if account.region not in (1, 2, 3):
                raise ValueError(f"region must be 1, 2 or 3, not {account.region}")
        if len({account.username.lower() for account in self.accounts}) != len(self.accounts):
            raise ValueError("account usernames must be unique")


def validate_runtime_settings(values: dict[str, Any]) -> None:
    """Raise ValueError for an unknown setting name or an out-of-range value."""
    for name, value in values.items():
        if name not in RUNTIME_SETTINGS:
            raise ValueError(f"unknown setting {name!r}")
        if name == "burst_429_reset_seconds" and value is None:
            continue
        if name == "import_statuses":
            _validate_import_statuses(value)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number")
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{name} must be zero or more")
        if name in {"error_rate", "timeout_rate"} and value > 1:
            raise ValueError(f"{name} is a fraction between 0 and 1")
        if name == "rate_limit_window_seconds" and value == 0:
            raise ValueError("rate_limit_window_seconds must be more than zero")


def _validate_import_statuses(value: Any) -> None:
    if not isinstance(value, list | tuple) or not all(
        isinstance(item, str) and item in IMPORT_END_STATUSES for item in value
    ):
        raise ValueError(f"import_statuses is a list of {', '.join(IMPORT_END_STATUSES)}")


def config_from_options(
    *,
    latency_ms: int = 0,
    error_rate: float = 0.0,
    timeout_rate: float = 0.0,
    hang_seconds: float = 5.0,
    burst_429: int = 0,
    rate_limit: int = 0,
    import_delay: float = 1.0,
    seed: int | None = None,
    accounts: Sequence[str] = (),
) -> EmulatorConfig:
    """Build a config from command-line style options (accounts as ``user:password[:region]``)."""
    parsed = [parse_account(text) for text in accounts] or _default_accounts()
    return EmulatorConfig(
        accounts=parsed,
        rate_limit_per_minute=rate_limit,
        latency_ms=latency_ms,
        error_rate=error_rate,
        timeout_rate=timeout_rate,
        hang_seconds=hang_seconds,
        burst_429=burst_429,
        import_delay_seconds=import_delay,
        seed=seed,
    )


def parse_account(text: str) -> EmulatorAccount:
    """Parse ``username:password[:region]`` (the password may not contain a colon)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError("an account is written username:password or username:password:region")
    region_text = parts[2] if len(parts) == 3 else "1"
    if region_text not in {"1", "2", "3"}:
        raise ValueError(f"an account's region is 1, 2 or 3, not {region_text!r}")
    return EmulatorAccount(parts[0], parts[1], int(region_text))


def _now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _json_response(status: int, body: Json, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json_response(status, {"message": message}, headers)


def _v3_error(
    status: int,
    code: str,
    description: str,
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"errorCode": code, "description": description, "details": details or []}
    return _json_response(status, body, headers)


def _gateway_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """A refusal in front of the services (wrong region, rate limit, 5xx) on any route.

    Dotdigital documents these statuses ("Error handling", "Call rate limits") but no error code
    or body for them (its PHP SDK reads only the status and the ``x-ratelimit-*`` headers of a
    429), so the emulator sends a bare message and invents no code.
    """
    return _v2_error(status, message, headers)


def _unsupported_media_type(route: str, description: str) -> Response:
    """415 for a body not declared JSON, in the route's API generation style (inferred)."""
    if route.startswith("/contacts/v3"):
        return _v3_error(415, BAD_REQUEST, description)
    return _v2_error(415, description)


def _seconds_until_reset(reset: int) -> float:
    """How long an injected ``x-ratelimit-reset`` blocks: seconds, or an epoch time's rest."""
    if reset >= 1_000_000_000:
        return max(0.0, reset - time.time())
    return float(reset)


def _loads_strict(raw: bytes) -> Json:
    """Parse JSON refusing NaN and Infinity, which no JSON API accepts."""

    def refuse(constant: str) -> Json:
        raise ValueError(f"invalid JSON constant {constant}")

    return json.loads(raw, parse_constant=refuse)


def _contact_patch_body(raw: bytes) -> dict[str, Json] | Response:
    """The parsed body of a contact PATCH, or the 400 that refuses it."""
    try:
        body = _loads_strict(raw) if raw.strip() else {}
    except ValueError:
        return _v3_error(400, BAD_JSON, "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return _v3_error(400, BAD_REQUEST, "The request body must be a contact.")
    unknown = unknown_keys(body, CONTACT_BODY_KEYS, "")
    if unknown:
        # A typo such as "dataField" would otherwise lose the data without a word.
        return _v3_error(400, BAD_REQUEST, "The request is not valid.", unknown)
    return body


def _failure(identifiers: Json, code: str, description: str) -> dict[str, Json]:
    """One failed entry of a bulk import result."""
    return {
        "identifiers": copy.deepcopy(identifiers),
        "failures": [{"failureCode": code, "description": description}],
    }


def _is_empty(value: Json) -> bool:
    return value is None or value == ""


@dataclass
class _AccountState:
    """Everything stored for one Dotdigital account."""

    account_id: int
    account: EmulatorAccount
    # Upper-cased name → {"name","type","visibility","defaultValue"}.
    data_fields: dict[str, dict[str, Json]] = field(default_factory=dict)
    # Lower-cased email → stored contact.
    contacts: dict[str, dict[str, Json]] = field(default_factory=dict)
    imports: dict[str, dict[str, Json]] = field(default_factory=dict)
    next_contact_id: int = 1001


@dataclass
class _Window:
    started: float
    count: int = 0


@dataclass
class _CallContext:
    """What the pipeline learnt about a call before its handler runs."""

    route: str
    state: _AccountState


class DotdigitalEmulator:
    """The emulator's state, fault controls and ASGI application (``.app``); thread-safe."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self._initial_config = replace(config) if config is not None else EmulatorConfig()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._config = replace(self._initial_config)
        self._generation = 0
        # Local port → region, set by the server that binds them; empty serves every region.
        self._region_ports: dict[int, int] = {}
        self._reset_locked()
        self.app = self._build_app()

    # ----------------------------------------------------------------- state and inspection

    def _reset_locked(self) -> None:
        self._config = replace(self._initial_config)
        self._random = random.Random(self._config.seed)
        self._accounts: dict[str, _AccountState] = {}
        for index, account in enumerate(self._config.accounts, start=1):
            state = _AccountState(account_id=index, account=account)
            for name in BUILT_IN_FIELDS:
                state.data_fields[name] = {
                    "name": name,
                    "type": "String",
                    "visibility": "Private",
                    "defaultValue": None,
                }
            self._accounts[account.username.lower()] = state
        self._windows: dict[str, _Window] = {}
        # API user → monotonic time until which every call answers 429 (a reported reset).
        self._blocked_until: dict[str, float] = {}
        self._calls: list[dict[str, Json]] = []
        self._call_counts: dict[str, int] = {}
        # Calls still running from before a reset are dropped when they finish hanging.
        self._generation += 1

    def reset(self) -> None:
        """Forget all contacts, fields, imports, calls and runtime fault changes."""
        with self._lock:
            self._reset_locked()

    @property
    def config(self) -> EmulatorConfig:
        """A copy of the current configuration, including runtime fault changes."""
        with self._lock:
            return replace(self._config)

    def set_faults(self, **changes: Any) -> EmulatorConfig:
        """Change rate limits or injected faults while the server runs (see RUNTIME_SETTINGS)."""
        validate_runtime_settings(changes)
        if "import_statuses" in changes:
            changes["import_statuses"] = tuple(changes["import_statuses"])
        with self._lock:
            self._config = replace(self._config, **changes)
            return replace(self._config)

    def _account_state(self, username: str | None) -> _AccountState:
        if username is None:
            return next(iter(self._accounts.values()))
        return self._accounts[username.lower()]

    def contacts_of(self, username: str | None = None) -> dict[str, dict[str, Json]]:
        """Contacts of an account (default: the first), keyed by lower-cased email."""
        with self._lock:
            state = self._account_state(username)
            self._settle_imports(state)
            return {email: self._contact_snapshot(c) for email, c in state.contacts.items()}

    def seed_contact(
        self, email: str, *, status: str = "subscribed", username: str | None = None
    ) -> None:
        """Add a contact as if the merchant had it before Tally (tests, demos)."""
        with self._lock:
            state = self._account_state(username)
            self._apply(state, email, {}, "overwrite", {"email": {"status": status}})

    @property
    def contacts(self) -> dict[str, dict[str, Json]]:
        """Contacts of the first account: email → dataFields, created, updated and more."""
        return self.contacts_of(None)

    def data_fields_of(self, username: str | None = None) -> list[dict[str, Json]]:
        """Data fields of an account (default: the first), built-in ones included."""
        with self._lock:
            return copy.deepcopy(list(self._account_state(username).data_fields.values()))

    @property
    def data_fields(self) -> list[dict[str, Json]]:
        """Data fields of the first account."""
        return self.data_fields_of(None)

    def imports_of(self, username: str | None = None) -> dict[str, dict[str, Json]]:
        """Bulk imports of an account: id → status, contact count and (when done) result."""
        with self._lock:
            state = self._account_state(username)
            self._settle_imports(state)
            return {
                import_id: {
                    "status": record["status"],
                    "contactCount": len(record["contacts"]),
                    "mergeOption": record["mergeOption"],
                    "result": copy.deepcopy(record["result"]),
                }
                for import_id, record in state.imports.items()
            }

    @property
    def imports(self) -> dict[str, dict[str, Json]]:
        """Bulk imports of the first account."""
        return self.imports_of(None)

    @property
    def call_counts(self) -> dict[str, int]:
        """Number of API calls per ``"METHOD /route/{template}"``."""
        with self._lock:
            return dict(self._call_counts)

    @property
    def calls(self) -> list[dict[str, Json]]:
        """Every API call in arrival order: method, route, path, account, status, fault, body."""
        with self._lock:
            return copy.deepcopy(self._calls)

    def snapshot(self) -> dict[str, Json]:
        """All state as JSON-ready data (what ``GET /_emulator/state`` answers)."""
        with self._lock:
            accounts: dict[str, Json] = {}
            for state in self._accounts.values():
                username = state.account.username
                accounts[username] = {
                    "accountId": state.account_id,
                    "region": state.account.region,
                    "dataFields": self.data_fields_of(username),
                    "contacts": self.contacts_of(username),
                    "imports": self.imports_of(username),
                }
            faults = {name: getattr(self._config, name) for name in RUNTIME_SETTINGS}
            return {"accounts": accounts, "callCounts": self.call_counts, "faults": faults}

    def stop_hanging_calls(self) -> None:
        """Release every hung call at once (used when the server stops)."""
        self._stopping.set()

    def allow_hanging_calls(self) -> None:
        """Let injected hangs last their full time again (used when a server starts)."""
        self._stopping.clear()

    @staticmethod
    def _contact_snapshot(contact: dict[str, Json]) -> dict[str, Json]:
        return copy.deepcopy(contact)

    def plant_values(
        self, email: str, values: dict[str, Json], username: str | None = None
    ) -> None:
        """Change a contact's data fields behind the API's back (drift, for tests; None clears)."""
        with self._lock:
            stored = self._account_state(username).contacts[email.lower()]["dataFields"]
            for name, value in values.items():
                if value is None:
                    stored.pop(name, None)
                else:
                    stored[name] = value

    def delete_contact(self, email: str, username: str | None = None) -> None:
        """Remove a contact as a person deleting it in Dotdigital would (for tests)."""
        with self._lock:
            del self._account_state(username).contacts[email.lower()]

    # ----------------------------------------------------------------- HTTP pipeline

    def _build_app(self) -> Starlette:
        api: list[tuple[str, str, Handler, bool]] = [
            ("GET", "/v2/account-info", self._account_info, False),
            ("GET", "/v2/data-fields", self._list_data_fields, True),
            ("POST", "/v2/data-fields", self._create_data_field, True),
            ("GET", "/contacts/v3", self._list_contacts, True),
            ("GET", "/contacts/v3/email/{email}", self._get_contact, True),
            ("PATCH", "/contacts/v3/email/{email}", self._patch_contact, True),
            ("PUT", "/contacts/v3/import", self._start_import, True),
            ("GET", "/contacts/v3/import/{import_id}", self._import_status, True),
        ]
        routes = [
            Route(path, self._endpoint(method, path, handler, regional), methods=[method])
            for method, path, handler, regional in api
        ]
        routes += [
            Route("/_emulator/state", self._state_endpoint, methods=["GET"]),
            Route("/_emulator/calls", self._calls_endpoint, methods=["GET"]),
            Route("/_emulator/faults", self._faults_endpoint, methods=["POST"]),
            Route("/_emulator/reset", self._reset_endpoint, methods=["POST"]),
        ]
        return Starlette(routes=routes)

    def _endpoint(
        self, method: str, route: str, handler: Handler, regional: bool
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._handle(request, method, route, handler, regional)

        return endpoint

    async def _handle(
        self, request: Request, method: str, route: str, handler: Handler, regional: bool
    ) -> Response:
        raw = await request.body()
        entry: dict[str, Json] = {
            "at": _now_text(),
            "method": method,
            "route": route,
            "path": request.url.path,
            "query": request.url.query,
            "host": request.headers.get("host", ""),
            "account": None,
            "status": None,
            "fault": None,
            "body": self._loggable_body(raw),
        }
        key = f"{method} {route}"
        with self._lock:
            self._calls.append(entry)
            overflow = len(self._calls) - self._config.max_logged_calls
            if overflow > 0:
                del self._calls[:overflow]
            self._call_counts[key] = self._call_counts.get(key, 0) + 1
            generation = self._generation
            latency = self._config.latency_ms
        if latency:
            await asyncio.sleep(latency / 1000)
        response = await self._respond(request, route, handler, regional, raw, entry, generation)
        with self._lock:
            entry["status"] = response.status_code
            limit = self._config.rate_limit_per_minute
        # Every answer reports the user's limit, as Dotdigital's gateway does.
        response.headers.setdefault("x-ratelimit-limit", str(limit))
        return response

    @staticmethod
    def _loggable_body(raw: bytes) -> Json:
        if not raw or len(raw) > 65536:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    async def _respond(
        self,
        request: Request,
        route: str,
        handler: Handler,
        regional: bool,
        raw: bytes,
        entry: dict[str, Json],
        generation: int,
    ) -> Response:
        state = self._authenticate(request)
        if state is None:
            return _v2_error(
                401, AUTH_DENIED_MESSAGE, {"www-authenticate": 'Basic realm="dotdigital"'}
            )
        with self._lock:
            entry["account"] = state.account.username
        if regional and not self._serves_region(request, state.account.region):
            return _gateway_error(
                403,
                "This account is hosted in another region; use the ApiEndpoint from "
                "/v2/account-info.",
            )
        with self._lock:
            limited = self._rate_limit(state.account.username, entry)
            fault = self._draw_fault() if limited is None else None
            hang = self._config.hang_seconds
        if limited is None and self._api_usage_exceeded(entry):
            # The flat-rate scheme predates v3; it answers in v2's shape on every route.
            return _v2_error(
                400, "You have exceeded your hourly API call limit. ERROR_APIUSAGE_EXCEEDED"
            )
        if limited is not None:
            return _gateway_error(429, "You have exceeded the API call rate limit.", limited)
        if fault is not None:
            with self._lock:
                entry["fault"] = fault
            if fault == "timeout":
                finished = await self._hang(hang)
                with self._lock:
                    stale = generation != self._generation
                if not finished or stale:
                    return _gateway_error(503, "The service is unavailable.")
            else:
                status = 500 if fault == "error-500" else 503
                return _gateway_error(status, "An error has occurred.")
        media_problem = content_type_problem(request.method, request.headers.get("content-type"))
        if media_problem is not None:
            return _unsupported_media_type(route, media_problem)
        context = _CallContext(route=route, state=state)
        request.state.raw_body = raw
        return await handler(request, context)

    def _authenticate(self, request: Request) -> _AccountState | None:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, separator, password = decoded.partition(":")
        if not separator:
            return None
        with self._lock:
            state = self._accounts.get(username.lower())
        if state is None:
            return None
        if not hmac.compare_digest(password.encode(), state.account.password.encode()):
            return None
        return state

    def set_region_ports(self, ports: dict[int, int]) -> None:
        """Tell the app which local port serves which region (``EmulatorServer`` does)."""
        with self._lock:
            self._region_ports = dict(ports)

    def _region_of_call(self, request: Request) -> int | None:
        """The region whose port the call arrived on; None when no region ports are known."""
        server = request.scope.get("server")
        port = server[1] if isinstance(server, tuple | list) and len(server) == 2 else None
        with self._lock:
            ports = self._region_ports
        if not ports:
            return None
        return next((region for region, known in ports.items() if known == port), None)

    def _serves_region(self, request: Request, region: int) -> bool:
        arrived_on = self._region_of_call(request)
        with self._lock:
            unrouted = not self._region_ports
        return unrouted or arrived_on == region

    def _rate_limit(self, username: str, entry: dict[str, Json]) -> dict[str, str] | None:
        """Count a call in the user's fixed window; headers of a 429 when refused (lock held).

        "Call rate limits": over the limit, calls answer 429 until the limit resets. So once a
        429 reported a reset, every call before it answers 429 too (a client that retries early
        is refused, not merely slowed), injected bursts included.
        """
        config = self._config
        now = time.monotonic()
        window = self._windows.get(username)
        if window is None or now - window.started >= config.rate_limit_window_seconds:
            window = _Window(started=now)
            self._windows[username] = window
        window.count += 1
        window_end = window.started + config.rate_limit_window_seconds
        headers = {
            "x-ratelimit-scope": "user",
            "x-ratelimit-limit": str(config.rate_limit_per_minute),
        }
        if config.burst_429 > 0:
            self._config = replace(config, burst_429=config.burst_429 - 1)
        blocked_until = self._blocked_until.get(username, 0.0)
        if now < blocked_until:
            entry["fault"] = "before-reset"
            headers["x-ratelimit-reset"] = str(max(1, math.ceil(blocked_until - now)))
            return headers
        if config.burst_429 > 0:
            entry["fault"] = "burst-429"
            given = config.burst_429_reset_seconds
            reset = given if given is not None else max(1, math.ceil(window_end - now))
            self._blocked_until[username] = now + _seconds_until_reset(reset)
            headers["x-ratelimit-reset"] = str(reset)
            return headers
        if config.rate_limit_per_minute and window.count > config.rate_limit_per_minute:
            entry["fault"] = "rate-limited"
            self._blocked_until[username] = window_end
            headers["x-ratelimit-reset"] = str(max(1, math.ceil(window_end - now)))
            return headers
        return None

    def _api_usage_exceeded(self, entry: dict[str, Json]) -> bool:
        """Whether this call is one of an injected burst of flat-rate refusals."""
        with self._lock:
            config = self._config
            if config.burst_api_usage_exceeded <= 0:
                return False
            self._config = replace(
                config, burst_api_usage_exceeded=config.burst_api_usage_exceeded - 1
            )
            entry["fault"] = "api-usage-exceeded"
            return True

    def _draw_fault(self) -> str | None:
        """One random draw per call decides hang, error or nothing, so a seed replays exactly."""
        config = self._config
        if not config.timeout_rate and not config.error_rate:
            return None
        draw = self._random.random()
        if draw < config.timeout_rate:
            return "timeout"
        if draw < config.timeout_rate + config.error_rate:
            return "error-500" if self._random.random() < 0.5 else "error-503"
        return None

    async def _hang(self, seconds: float) -> bool:
        """Sleep like a stuck backend; False when the server is stopping meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._stopping.is_set():
                return False
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return True

    # ----------------------------------------------------------------- v2 endpoints

    async def _account_info(self, request: Request, context: _CallContext) -> Response:
        account = context.state.account
        with self._lock:
            port = self._region_ports.get(account.region)
        host = request.url.hostname or "127.0.0.1"
        shown = f"[{host}]" if ":" in host else host
        endpoint_host = request.headers.get("host", shown) if port is None else f"{shown}:{port}"
        with self._lock:
            calls = sum(1 for call in self._calls if call["account"] == account.username)
            limit = self._config.rate_limit_per_minute
        endpoint = f"{request.url.scheme}://{endpoint_host}/"
        remaining = max(0, limit - calls) if limit else 2000
        properties = [
            {"name": "Name", "type": "String", "value": "Emulated account"},
            {"name": "MainEmail", "type": "String", "value": "owner@example.com"},
            {"name": "ApiEndpoint", "type": "String", "value": endpoint},
            {"name": "ApiCallsInLastHour", "type": "Int32", "value": calls},
            {"name": "ApiCallsRemaining", "type": "Int32", "value": remaining},
            {"name": "TimeZone", "type": "String", "value": "UTC"},
        ]
        return _json_response(200, {"id": context.state.account_id, "properties": properties})

    async def _list_data_fields(self, request: Request, context: _CallContext) -> Response:
        with self._lock:
            body = copy.deepcopy(list(context.state.data_fields.values()))
        return _json_response(200, body)

    async def _create_data_field(self, request: Request, context: _CallContext) -> Response:
        try:
            body = _loads_strict(request.state.raw_body)
        except ValueError:
            # No v2 code is documented for a body that is not JSON; the data-field one fits.
            return _v2_error(400, "The request body is not valid JSON. ERROR_DATAFIELD_INVALID")
        if not isinstance(body, dict):
            return _v2_error(400, "The request body must be a data field. ERROR_DATAFIELD_INVALID")
        name = body.get("name")
        field_type = body.get("type")
        visibility = body.get("visibility", "Private")
        default = body.get("defaultValue")
        if not isinstance(name, str) or not _FIELD_NAME_RE.match(name):
            return _v2_error(
                400,
                "Data field names are 1 to 20 letters, digits, underscores or hyphens. "
                "ERROR_DATAFIELD_INVALID",
            )
        if field_type not in DATA_FIELD_TYPES:
            allowed = ", ".join(DATA_FIELD_TYPES)
            return _v2_error(
                400, f"Data field type must be one of {allowed}. ERROR_DATAFIELD_INVALID"
            )
        if visibility not in DATA_FIELD_VISIBILITIES:
            return _v2_error(400, "Visibility must be Private or Public. ERROR_DATAFIELD_INVALID")
        if default is not None:
            problem = self._value_problem(field_type, default)
            if problem is not None:
                return _v2_error(400, f"Invalid default value: {problem}. ERROR_DATAFIELD_INVALID")
        with self._lock:
            fields_ = context.state.data_fields
            if name.upper() in fields_:
                return _v2_error(400, "Field already exists. ERROR_NON_UNIQUE_DATAFIELD")
            custom = sum(1 for key in fields_ if key not in BUILT_IN_FIELDS)
            if custom >= self._config.max_custom_data_fields:
                message = "The account has reached its data field limit."
                return _v2_error(400, f"{message} ERROR_DATAFIELD_LIMITEXCEEDED")
            created = {
                "name": name,
                "type": field_type,
                "visibility": visibility,
                "defaultValue": default,
            }
            fields_[name.upper()] = created
        return _json_response(201, created)

    def _value_problem(self, field_type: str, value: Json) -> str | None:
        """Why a non-null value does not fit a data field type, or None when it fits."""
        if field_type == "String":
            if not isinstance(value, str):
                return "a String field takes text"
            if len(value) > self._config.max_text_length:
                return f"text is longer than {self._config.max_text_length} characters"
            return None
        if field_type == "Numeric":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return "a Numeric field takes a number"
            return None
        if field_type == "Boolean":
            return None if isinstance(value, bool) else "a Boolean field takes true or false"
        return None if date_value(value) is not None else DATE_PROBLEM

    # ----------------------------------------------------------------- v3 contacts

    def _data_field_problems(
        self, state: _AccountState, data_fields: Json
    ) -> tuple[dict[str, Json], list[dict[str, str]]]:
        """Canonical-name values and the per-field problems of a ``dataFields`` object."""
        if data_fields is None:
            return {}, []
        if not isinstance(data_fields, dict):
            return {}, [{"item": "dataFields", "description": "dataFields must be an object"}]
        values: dict[str, Json] = {}
        problems: list[dict[str, str]] = []
        for key, value in data_fields.items():
            known = state.data_fields.get(str(key).upper())
            if known is None:
                problems.append({"item": key, "description": f"Data field '{key}' does not exist"})
                continue
            problem = None if value is None else self._value_problem(known["type"], value)
            if problem is not None:
                problems.append({"item": key, "description": problem})
            elif known["type"] == "Date" and value is not None:
                # Stored as the instant in UTC, not as the text that was sent.
                values[known["name"]] = date_value(value)
            else:
                values[known["name"]] = value
        return values, problems

    @staticmethod
    def _channel_properties(given: Json) -> dict[str, Json]:
        email = given.get("email") if isinstance(given, dict) else None
        email = email if isinstance(email, dict) else {}

        def title(value: Json, default: str) -> str:
            text = value if isinstance(value, str) and value else default
            return text[0].upper() + text[1:]

        return {
            "email": {
                "emailType": title(email.get("emailType"), "Html"),
                "optInType": title(email.get("optInType"), "Unknown"),
                "status": title(email.get("status"), "Subscribed"),
            }
        }

    @classmethod
    def _updated_channel_properties(cls, stored: Json, given: Json) -> dict[str, Json]:
        """An existing contact's channel properties after an update: only what is sent changes.

        Dotdigital leaves a contact's channel status as it is unless the update names one.
        """
        email = given.get("email") if isinstance(given, dict) else None
        sent = {k: v for k, v in email.items() if v} if isinstance(email, dict) else {}
        merged = {**stored["email"], **sent}
        return cls._channel_properties({"email": merged})

    def _apply(
        self,
        state: _AccountState,
        email: str,
        values: dict[str, Json],
        merge_option: str,
        channel_properties: Json,
    ) -> tuple[bool, dict[str, Json]]:
        """Create or update a contact (lock held); True when it was created."""
        now = _now_text()
        contact = state.contacts.get(email.lower())
        created = contact is None
        if contact is None:
            contact = {
                "contactId": state.next_contact_id,
                "email": email,
                "status": "subscribed",
                "created": now,
                "updated": now,
                "dataFields": {},
                "channelProperties": self._channel_properties(channel_properties),
                "lists": [],
            }
            state.next_contact_id += 1
            state.contacts[email.lower()] = contact
        elif channel_properties is not None:
            contact["channelProperties"] = self._updated_channel_properties(
                contact["channelProperties"], channel_properties
            )
        stored: dict[str, Json] = contact["dataFields"]
        for name, value in values.items():
            if merge_option == "overwrite-if-not-empty" and _is_empty(value):
                continue
            if merge_option == "overwrite-if-empty" and not _is_empty(stored.get(name)):
                continue
            if value is None:
                stored.pop(name, None)
            else:
                stored[name] = value
        contact["status"] = str(contact["channelProperties"]["email"]["status"]).lower()
        contact["updated"] = now
        return created, contact

    def _contact_body(self, state: _AccountState, contact: dict[str, Json]) -> dict[str, Json]:
        values = contact["dataFields"]
        return {
            "contactId": contact["contactId"],
            "status": contact["status"],
            "created": contact["created"],
            "updated": contact["updated"],
            "identifiers": {"email": contact["email"]},
            "dataFields": {f["name"]: values.get(f["name"]) for f in state.data_fields.values()},
            "channelProperties": copy.deepcopy(contact["channelProperties"]),
            "lists": list(contact["lists"]),
        }

    @staticmethod
    def _invalid_email(email: str) -> Response:
        # "Error handling" shows invalid contact data as contacts:invalidContacts with a detail
        # whose item is the property ("email").
        return _v3_error(
            400,
            INVALID_CONTACTS,
            "The contact identifier is not valid.",
            [{"item": "email", "description": f"'{email}' is not a valid email address"}],
        )

    async def _list_contacts(self, request: Request, context: _CallContext) -> Response:
        params = dict(request.query_params)
        with self._lock:
            self._settle_imports(context.state)
            known = {key: f["name"] for key, f in context.state.data_fields.items()}
            try:
                query = listing.parse_query(params, known)
            except listing.ListingRefused as refused:
                item = {"item": refused.item, "description": refused.description}
                return _v3_error(400, refused.code, refused.description, [item])
            body = listing.listing_page(
                context.state.contacts.values(), query, path=request.url.path, params=params
            )
        return _json_response(200, body)

    async def _get_contact(self, request: Request, context: _CallContext) -> Response:
        email = request.path_params["email"]
        if not is_valid_email(email):
            return self._invalid_email(email)
        with self._lock:
            self._settle_imports(context.state)
            contact = context.state.contacts.get(email.lower())
            if contact is not None:
                return _json_response(200, self._contact_body(context.state, contact))
        return _v3_error(
            404,
            "contacts:contactNotFound",  # dotdigital-api.md, "v3 read"
            "The contact was not found.",
            [{"item": email, "description": "Not found using the identifier 'email'"}],
        )

    async def _patch_contact(self, request: Request, context: _CallContext) -> Response:
        email = request.path_params["email"]
        if not is_valid_email(email):
            return self._invalid_email(email)
        merge_option = request.query_params.get("merge-option", "overwrite")
        if merge_option not in CONTACT_MERGE_OPTIONS:
            # No code is documented for a bad query parameter; the request is a bad request.
            return _v3_error(
                400,
                BAD_REQUEST,
                "The merge option is not valid.",
                [{"item": "merge-option", "description": ", ".join(CONTACT_MERGE_OPTIONS)}],
            )
        body = _contact_patch_body(request.state.raw_body)
        if isinstance(body, Response):
            return body
        identifiers = body.get("identifiers")
        if identifiers is not None:
            body_email = identifiers.get("email") if isinstance(identifiers, dict) else None
            if body_email is not None and not is_valid_email(body_email):
                return self._invalid_email(str(body_email))
        with self._lock:
            values, problems = self._data_field_problems(context.state, body.get("dataFields"))
            if problems:
                # An unknown data field is an error in v3, not silently dropped data.
                return _v3_error(400, INVALID_CONTACTS, "Invalid contact data.", problems)
            self._settle_imports(context.state)
            created, contact = self._apply(
                context.state, email, values, merge_option, body.get("channelProperties")
            )
            response_body = self._contact_body(context.state, contact)
        return _json_response(201 if created else 200, response_body)

    # ----------------------------------------------------------------- v3 bulk import

    async def _start_import(self, request: Request, context: _CallContext) -> Response:
        raw: bytes = request.state.raw_body
        with self._lock:
            max_bytes = self._config.max_import_bytes
            max_active = self._config.max_active_imports
            delay = self._config.import_delay_seconds
        if len(raw) > max_bytes:
            # "Import contact collection" sets the 50 MB limit but documents no code for it.
            return _v3_error(
                413, BAD_REQUEST, f"The request body is larger than {max_bytes} bytes."
            )
        try:
            body = _loads_strict(raw)
        except ValueError:
            return _v3_error(400, BAD_JSON, "The request body is not valid JSON.")
        problems = import_shape_problems(body, IMPORT_MERGE_OPTIONS)
        if problems:
            # A contact without identifiers, an unknown key or no contacts at all fails the
            # whole request, synchronously ("Import contact collection").
            return _v3_error(400, BAD_REQUEST, "The request is not valid.", problems)
        with self._lock:
            state = context.state
            self._settle_imports(state)
            active = sum(
                1 for r in state.imports.values() if r["status"] == IMPORT_STATUS_NOT_FINISHED
            )
            if active >= max_active:
                return _v3_error(
                    429,
                    "contacts:tooManyActiveImports",  # "Import contact collection"
                    f"The account already has {active} imports in progress.",
                )
            import_id = str(uuid.uuid4())
            state.imports[import_id] = {
                "status": IMPORT_STATUS_NOT_FINISHED,
                "ready_at": time.monotonic() + delay,
                "mergeOption": body.get("mergeOption", "overwrite"),
                "contacts": body["contacts"],
                "result": None,
                "end_status": self._next_end_status(),
            }
            answer_delay = self._config.import_answer_delay_seconds
        if answer_delay:
            # Accepted already: a client that gives up now has started the import anyway.
            await self._hang(answer_delay)
        return _json_response(202, {"importId": import_id})

    def _next_end_status(self) -> str:
        """How the import being started will end (lock held)."""
        statuses = self._config.import_statuses
        if not statuses:
            return IMPORT_STATUS_FINISHED
        self._config = replace(self._config, import_statuses=statuses[1:])
        return statuses[0]

    async def _import_status(self, request: Request, context: _CallContext) -> Response:
        import_id = request.path_params["import_id"]
        with self._lock:
            self._settle_imports(context.state)
            record = context.state.imports.get(import_id)
            if record is None:
                return _v3_error(
                    404,
                    "contacts:importNotFound",  # dotdigital-api.md, "Bulk import"
                    "The import was not found.",
                    [{"item": import_id, "description": "No import has this id"}],
                )
            body: dict[str, Json] = {"importId": import_id, "status": record["status"]}
            if record["result"] is not None:
                body.update(copy.deepcopy(record["result"]))
        return _json_response(200, body)

    def _settle_imports(self, state: _AccountState) -> None:
        """Finish every import whose delay has passed, oldest first (lock held).

        Processing on observation is indistinguishable from a background job for a client, and
        keeps the emulator free of timers.
        """
        now = time.monotonic()
        for record in state.imports.values():
            if record["status"] == IMPORT_STATUS_NOT_FINISHED and record["ready_at"] <= now:
                if record["end_status"] != IMPORT_STATUS_FINISHED:
                    # Refused as a whole: no contact is touched.
                    record["status"] = record["end_status"]
                    continue
                record["result"] = self._process_import(state, record)
                record["status"] = IMPORT_STATUS_FINISHED

    def _process_import(self, state: _AccountState, record: dict[str, Json]) -> dict[str, Json]:
        merge_option = IMPORT_MERGE_OPTIONS[record["mergeOption"]]
        created: list[Json] = []
        updated: list[Json] = []
        failures: list[Json] = []
        duplicates = 0
        seen: set[str] = set()
        for entry in record["contacts"]:
            entry = entry if isinstance(entry, dict) else {}
            identifiers = entry.get("identifiers")
            identifiers = identifiers if isinstance(identifiers, dict) else {}
            email = identifiers.get("email")
            if not is_valid_email(email):
                failures.append(
                    _failure(identifiers, FAILURE_INVALID_EMAIL, "The email is not valid")
                )
                continue
            if str(email).lower() in seen:
                duplicates += 1
                continue
            seen.add(str(email).lower())
            values, problems = self._data_field_problems(state, entry.get("dataFields"))
            if problems:
                reason = "; ".join(p["description"] for p in problems)
                failures.append(_failure(identifiers, FAILURE_INVALID_CONTACT, reason))
                continue
            was_created, contact = self._apply(
                state, str(email), values, merge_option, entry.get("channelProperties")
            )
            outcome = {"contactId": contact["contactId"], "identifiers": {"email": email}}
            (created if was_created else updated).append(outcome)
        return {
            "summary": {
                "newContacts": len(created),
                "updatedContacts": len(updated),
                "globallySuppressed": 0,
                "invalidEntries": len(failures),
                "duplicateIdentifiers": duplicates,
            },
            "created": created,
            "updated": updated,
            "failures": failures,
        }

    # ----------------------------------------------------------------- tooling endpoints

    async def _state_endpoint(self, request: Request) -> Response:
        return _json_response(200, self.snapshot())

    async def _calls_endpoint(self, request: Request) -> Response:
        return _json_response(200, {"calls": self.calls, "callCounts": self.call_counts})

    async def _faults_endpoint(self, request: Request) -> Response:
        try:
            changes = _loads_strict(await request.body())
            if not isinstance(changes, dict):
                raise ValueError("the body must be an object of settings")
            config = self.set_faults(**changes)
        except (ValueError, TypeError) as error:
            return _json_response(400, {"detail": str(error)})
        return _json_response(200, {name: getattr(config, name) for name in RUNTIME_SETTINGS})

    async def _reset_endpoint(self, request: Request) -> Response:
        self.reset()
        return _json_response(200, {"reset": True})


def bind_region_sockets(host: str, port: int) -> dict[int, socket.socket]:
    """A listening socket per region: ``port``, ``port + 1``, ``port + 2`` (free ones for 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: dict[int, socket.socket] = {}
    try:
        for region in (1, 2, 3):
            # IPPROTO_TCP explicitly: asyncio only turns Nagle off (TCP_NODELAY) on sockets whose
            # protocol says TCP, and with Nagle on every response stalls ~40 ms on delayed ACKs.
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sockets[region] = sock
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port + region - 1 if port else 0))
    except OSError:
        for sock in sockets.values():
            sock.close()
        raise
    return sockets


def _uvicorn_config(emulator: DotdigitalEmulator, log_level: str, grace: int) -> uvicorn.Config:
    return uvicorn.Config(
        emulator.app,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=grace,
    )


class EmulatorServer:
    """Runs a DotdigitalEmulator under uvicorn in a background thread (a context manager)."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        self.emulator = DotdigitalEmulator(config)
        self.host = host
        self._requested_port = port
        self._startup_timeout = startup_timeout
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.ports: dict[int, int] = {}

    @property
    def state(self) -> DotdigitalEmulator:
        """The live emulator: contacts, data fields, calls and fault controls."""
        return self.emulator

    @property
    def base_url(self) -> str:
        """Base URL of region 1 (where account-info is asked), without a trailing slash."""
        return self.url_for_region(1)

    def url_for_region(self, region: int) -> str:
        """Base URL of the port that serves a region."""
        return self.url_for_host(self.host, self.ports[region])

    def url_for_host(self, host: str, port: int | None = None) -> str:
        """Base URL for any host name pointing at this server (region 1's port by default)."""
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port if port is None else port}"

    def start(self) -> EmulatorServer:
        """Bind one port per region, start serving and wait until connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("the emulator server is already running")
        self.emulator.allow_hanging_calls()
        sockets = bind_region_sockets(self.host, self._requested_port)
        self.ports = {region: sock.getsockname()[1] for region, sock in sockets.items()}
        self.port = self.ports[1]
        self.emulator.set_region_ports(self.ports)
        server = uvicorn.Server(_uvicorn_config(self.emulator, "warning", 1))
        self._server = server
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": list(sockets.values())},
            name="dotdigital-emulator",
            daemon=True,
        )
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Dotdigital emulator did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving; hung calls are released so the stop is quick."""
        self.emulator.stop_hanging_calls()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None
        self._server = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(host: str = "127.0.0.1", port: int = 8078, config: EmulatorConfig | None = None) -> None:
    """Serve in the foreground until interrupted (for ``tally dev dotdigital-emulator``).

    Region 1 listens on ``port``, regions 2 and 3 on the next two ports.
    """
    emulator = DotdigitalEmulator(config)
    current = emulator.config
    sockets = bind_region_sockets(host, port)
    ports = {region: sock.getsockname()[1] for region, sock in sockets.items()}
    emulator.set_region_ports(ports)
    shown = f"[{host}]" if ":" in host else host
    print(f"Dotdigital emulator on http://{shown}:{ports[1]}", file=sys.stderr)
    for region, region_port in sorted(ports.items()):
        print(f"  region {region} answers on http://{shown}:{region_port}", file=sys.stderr)
    for account in current.accounts:
        print(
            f"  API user {account.username} / {account.password} (region {account.region})",
            file=sys.stderr,
        )
    settings = {name: getattr(current, name) for name in RUNTIME_SETTINGS}
    print(f"  settings: {json.dumps(settings)}", file=sys.stderr)
    server = uvicorn.Server(_uvicorn_config(emulator, "info", 2))
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=list(sockets.values()))


def build_argument_parser() -> argparse.ArgumentParser:
    """Options of the stand-alone emulator (mirrors the CLI command)."""
    parser = argparse.ArgumentParser(description="Run a local Dotdigital API emulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=8078, help="region 1; regions 2 and 3 use the next two"
    )
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--timeout-rate", type=float, default=0.0)
    parser.add_argument("--hang-seconds", type=float, default=5.0)
    parser.add_argument("--burst-429", type=int, default=0)
    parser.add_argument("--rate-limit", type=int, default=0, help="calls per minute, 0 = none")
    parser.add_argument("--import-delay", type=float, default=1.0, help="seconds")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        help="username:password[:region], repeatable (default: the demo account)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse options and serve; exit code 2 for bad options."""
    parser = build_argument_parser()
    options = parser.parse_args(argv)
    try:
        config = config_from_options(
            latency_ms=options.latency_ms,
            error_rate=options.error_rate,
            timeout_rate=options.timeout_rate,
            hang_seconds=options.hang_seconds,
            burst_429=options.burst_429,
            rate_limit=options.rate_limit,
            import_delay=options.import_delay,
            seed=options.seed,
            accounts=options.account,
        )
    except ValueError as error:
        parser.error(str(error))
    serve(options.host, options.port, config)
    return 0


__all__ = [
    "DEMO_PASSWORD",
    "DEMO_USERNAME",
    "DotdigitalEmulator",
    "EmulatorAccount",
    "EmulatorConfig",
    "EmulatorServer",
    "config_from_options",
    "is_valid_email",
    "main",
    "parse_account",
    "serve",
]

if __name__ == "__main__":
    raise SystemExit(main())
