"""What the application refuses at its edge, before any route runs, and the bounds of ids.

PostgreSQL text cannot hold a NUL character: a NUL that reached a query or an insert made
psycopg fail and the request answer 500. No name, email, reason or id ever needs one, so
`RefuseNul` answers 422 for a NUL anywhere in the path, the query string, a header, or a JSON or
urlencoded body, naming the field. Multipart bodies pass untouched: their files are CSV imports
and code pools, whose readers check every row and say which one is wrong.

Ids are 64-bit database integers. A path or query id beyond that range used to overflow the
database driver (500 on both backends); the `Annotated` types below bound every id, limit and
offset a route takes, so FastAPI refuses such values with a 422 before a query is built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, Path, Query
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tally.api.problems import problem

MAX_ID = 2**63 - 1
"""The largest id a row can have (a signed 64-bit column on both backends)."""
MAX_OFFSET = 2**31 - 1
"""Far past any real list, and small enough for every database's OFFSET."""
MAX_PAGE_SIZE = 200

Id = Annotated[int, Path(ge=1, le=MAX_ID)]
"""An id in a path."""
OptionalQueryId = Annotated[int | None, Query(ge=1, le=MAX_ID)]
"""An optional id in a query string (a filter)."""
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="items per page")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]


@dataclass(frozen=True)
class Paging:
    """Which page of a list: at most `limit` items, skipping the first `offset`."""

    limit: int
    offset: int


def _paging(limit: Limit = 50, offset: Offset = 0) -> Paging:
    return Paging(limit, offset)


PagingDep = Annotated[Paging, Depends(_paging)]
"""The `limit` and `offset` query parameters of every list endpoint."""
OrderId = Annotated[str, Path(min_length=1, max_length=100, description="the store's order id")]
RewardId = Annotated[str, Path(min_length=1, max_length=64)]
EmailTypeName = Annotated[str, Path(min_length=1, max_length=64)]

_NUL_MESSAGE = "must not contain NUL characters (\\u0000)"


def _media_type(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower()
    return None


def _is_json(media_type: bytes) -> bool:
    return media_type == b"application/json" or (
        media_type.startswith(b"application/") and media_type.endswith(b"+json")
    )


def _nul_field_in_json(value: Any, path: str) -> str | None:
    """The dotted path of the first key or string that holds a NUL, if any."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return where
            found = _nul_field_in_json(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_field_in_json(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def _nul_field_in_pairs(encoded: bytes) -> str:
    """The name of the first urlencoded field whose name or value holds a NUL."""
    for name, value in parse_qsl(encoded.decode("utf-8", "replace"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return name
    return "request"


def _nul_field_in_target(scope: Scope) -> str | None:
    """Where the path, query string or headers carry a NUL (None: nowhere)."""
    if "\x00" in scope["path"]:
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        return _nul_field_in_pairs(query)
    for name, value in scope["headers"]:
        if b"\x00" in value:
            return str(name.decode("latin-1"))
    return None


def _nul_field_in_body(media_type: bytes | None, body: bytes) -> str | None:
    """Where a JSON or urlencoded body carries a NUL (None: nowhere, or not such a body)."""
    if media_type == b"application/x-www-form-urlencoded":
        if b"%00" in body or b"\x00" in body:
            return _nul_field_in_pairs(body)
        return None
    # The byte scan only finds candidates: an escaped backslash ("\\u0000") is no NUL, and
    # UTF-16 JSON is full of zero bytes. Decoding settles it, and happens only on a hit.
    if b"\\u0000" not in body and b"\x00" not in body:
        return None
    try:
        decoded = json.loads(body)
    except ValueError:
        return None  # the route answers its own 422 for a body that is no JSON
    return _nul_field_in_json(decoded, "")


def _refusal(field: str) -> JSONResponse:
    return problem(
        422,
        "Validation failed",
        f"the request is not valid: {field}: {_NUL_MESSAGE}",
        [{"field": field, "message": _NUL_MESSAGE}],
    )


class RefuseNul:
    """ASGI middleware: 422 for a request that carries a NUL character (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request line and headers, then a JSON or form body, before the app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        field = _nul_field_in_target(scope)
        if field is not None:
            await _refusal(field)(scope, receive, send)
            return
        media_type = _media_type(scope["headers"])
        if media_type is None or not (
            _is_json(media_type) or media_type == b"application/x-www-form-urlencoded"
        ):
            await self.app(scope, receive, send)
            return
        # Routes read these bodies whole anyway; reading them here first costs one join.
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        field = _nul_field_in_body(media_type, body)
        if field is not None:
            await _refusal(field)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
