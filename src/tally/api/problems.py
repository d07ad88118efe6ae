"""Every error leaves the API as problem JSON: {"type","title","status","detail","errors"}.

`install` maps errors to problem responses; `document` describes them in the OpenAPI document,
once for all operations, from what each route declares (its key, path ids, headers, uploads)
plus the few statuses only its service knows about (`EXTRA_STATUSES`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from tally.api.deps import authenticated
from tally.errors import DomainError

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "errors": errors or [],
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[0] if loc else "request")


def install(app: FastAPI) -> None:
    """Register the exception handlers on the app."""

    @app.exception_handler(DomainError)
    async def _domain(_request: Request, exc: DomainError) -> JSONResponse:
        return problem(exc.status_code, exc.title, exc.detail, [e.as_dict() for e in exc.errors])

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            item: dict[str, Any] = {"field": _location(err.get("loc", ())), "message": err["msg"]}
            if "input" in err and isinstance(err["input"], str | int | float | bool):
                item["value"] = err["input"]
            errors.append(item)
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Validation failed", f"the request is not valid: {summary}", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {
            401: "Unauthorized",
            404: "Not found",
            405: "Method not allowed",
            429: "Too many requests",
        }
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = (headers or {}) | {"Allow": allowed_methods(request)}
        return problem(
            exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail), headers=headers
        )


def allowed_methods(request: Request) -> str:
    """Every method some route answers at the request's path (for a 405's `Allow`).

    Starlette's 405 names only the methods of the first route whose path matched, so a path
    served by several routes (GET and PATCH /customers/{id}) got an `Allow` missing some.
    """
    methods: set[str] = set()
    for context in iter_route_contexts(request.app.routes):
        match, child_scope = context.matches(request.scope)
        if match is Match.NONE:
            continue
        # /imports/customers matches the template /imports/{job_id} too, but no GET there
        # accepts it: count a route only when its path parameters would validate.
        values = child_scope.get("path_params", {})
        fields = getattr(context, "dependant", None)
        if fields is not None and any(
            field.validate(values.get(field.alias))[1] for field in fields.path_params
        ):
            continue
        methods |= context.methods or set()
    return ", ".join(sorted(methods))


# -- the OpenAPI description ---------------------------------------------------------------

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "An error, as RFC 9457 problem details; `errors` names the fields at fault.",
    "required": ["type", "title", "status", "detail", "errors"],
    "properties": {
        "type": {"type": "string", "description": "always `about:blank`"},
        "title": {"type": "string", "description": "the kind of error, e.g. `Not found`"},
        "status": {"type": "integer", "description": "the HTTP status"},
        "detail": {"type": "string", "description": "what went wrong, for a person"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ProblemField"}},
    },
}
PROBLEM_FIELD_SCHEMA: dict[str, Any] = {
    "title": "ProblemField",
    "type": "object",
    "required": ["field", "message"],
    "properties": {
        "field": {"type": "string", "description": "the field, e.g. `email` or `items.0.name`"},
        "message": {"type": "string", "description": "what is wrong with it"},
        "value": {"description": "the value refused, when it helps"},
    },
}

SECURITY_SCHEME = "apiKey"

STATUS_DESCRIPTIONS = {
    400: "The body could not be parsed (not UTF-8 JSON, or a broken multipart upload)",
    401: "The API key is missing, unknown or revoked",
    404: "Something the request names does not exist (or belongs to another merchant)",
    409: "The request conflicts with the current state, or its Idempotency-Key was used "
    "with another request",
    412: "If-Match names a version that is no longer the current one",
    413: "The upload is larger than the server accepts",
    422: "The request is not valid; `errors` names each field and what is wrong with it",
    502: "Dotdigital could not be reached, or answered with an error",
}

# Statuses that only the service behind an operation knows it returns; the API fuzzing test
# (tests/e2e/test_api_fuzz.py) fails on any status that is not documented. A 2xx here is an
# alternative success with the same body as the operation's documented one.
EXTRA_STATUSES: dict[tuple[str, str], dict[int, str]] = {
    ("POST", "/api/v1/customers"): {
        200: "A guest with this email became a member",
        409: "A member with this email exists",
    },
    ("GET", "/api/v1/customers/by-email"): {404: "No customer has this email"},
    ("POST", "/api/v1/orders"): {
        200: "The order was known: its status is updated",
        404: "The customer named by `customer_external_id` does not exist",
        409: "The order is known with other data",
    },
    ("POST", "/api/v1/actions"): {404: "No such customer, or no such enabled custom action"},
    ("PATCH", "/api/v1/program"): {404: STATUS_DESCRIPTIONS[404]},
    ("POST", "/api/v1/imports/{kind}"): {
        201: "With wait=true: the finished job",
        409: "An import of the same file is running",
        413: STATUS_DESCRIPTIONS[413],
    },
    ("POST", "/api/v1/imports/{kind}/preview"): {413: STATUS_DESCRIPTIONS[413]},
    ("POST", "/api/v1/imports/{job_id}/revert"): {409: "Points the import credited were spent"},
    ("PUT", "/api/v1/integrations/dotdigital/credentials"): {502: STATUS_DESCRIPTIONS[502]},
    ("POST", "/api/v1/integrations/dotdigital/enable"): {
        409: "Dotdigital is not connected, or has data fields of other types",
        502: STATUS_DESCRIPTIONS[502],
    },
    ("POST", "/api/v1/integrations/dotdigital/disable"): {409: "Dotdigital is not connected"},
    ("DELETE", "/api/v1/integrations/dotdigital"): {404: "Dotdigital is not connected"},
    ("PUT", "/api/v1/integrations/dotdigital/mapping"): {
        409: "Dotdigital is not connected",
        502: STATUS_DESCRIPTIONS[502],
    },
    ("POST", "/api/v1/integrations/dotdigital/sync"): {
        409: "Dotdigital is not connected or not enabled, or a sync is running",
    },
    ("POST", "/api/v1/integrations/dotdigital/reconcile"): {
        409: "Dotdigital is not connected or not enabled",
    },
    ("GET", "/api/v1/integrations/dotdigital/reconcile"): {404: "No drift check has run yet"},
    ("POST", "/api/v1/integrations/dotdigital/reconcile/fix"): {
        409: "No finished drift check to fix, or syncing is off",
    },
}


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for child in dependant.dependencies:
        yield from _dependants(child)


def _needs_api_key(route: APIRoute) -> bool:
    return any(d.call is authenticated for d in _dependants(route.dependant))


def _header_names(route: APIRoute) -> set[str]:
    return {
        (param.alias or param.name).lower()
        for dependant in _dependants(route.dependant)
        for param in dependant.header_params
    }


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def operation_statuses(route: APIRoute, method: str, operation: dict[str, Any]) -> dict[int, str]:
    """The error (and alternative success) statuses an operation answers, with descriptions."""
    # Every request can be refused as a whole (a NUL in its query string, say), so every
    # operation documents 422.
    statuses = {422: STATUS_DESCRIPTIONS[422]}
    if _needs_api_key(route):
        statuses[401] = STATUS_DESCRIPTIONS[401]
    if route.dependant.path_params:
        statuses[404] = STATUS_DESCRIPTIONS[404]
    headers = _header_names(route)
    if "idempotency-key" in headers:
        statuses[409] = STATUS_DESCRIPTIONS[409]
    if "if-match" in headers:
        statuses[412] = STATUS_DESCRIPTIONS[412]
    if "requestBody" in operation:
        statuses[400] = STATUS_DESCRIPTIONS[400]
    statuses.update(EXTRA_STATUSES.get((method, route.path_format), {}))
    return statuses


def _success_content(operation: dict[str, Any]) -> dict[str, Any] | None:
    for status, response in sorted(operation["responses"].items()):
        if status.startswith("2") and "content" in response:
            content: dict[str, Any] = response["content"]
            return content
    return None


def _describe_operation(route: APIRoute, method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    if _needs_api_key(route):
        operation["security"] = [{SECURITY_SCHEME: []}]
    for status, description in sorted(operation_statuses(route, method, operation).items()):
        if 200 <= status < 300:
            if str(status) not in responses:
                content = _success_content(operation)
                responses[str(status)] = {"description": description} | (
                    {"content": copy.deepcopy(content)} if content else {}
                )
            continue
        # Replaces FastAPI's own 422, which describes a JSON body the API never sends.
        responses[str(status)] = _problem_response(description)
    operation["responses"] = dict(sorted(responses.items()))


def _drop_unreferenced(schema: dict[str, Any], names: tuple[str, ...]) -> None:
    schemas = schema.get("components", {}).get("schemas", {})
    for name in names:
        if name in schemas:
            rest = {k: v for k, v in schemas.items() if k != name}
            text = json.dumps({"paths": schema.get("paths", {}), "schemas": rest})
            if f'"#/components/schemas/{name}"' not in text:
                del schemas[name]


def describe_problems(schema: dict[str, Any], routes: list[Any]) -> dict[str, Any]:
    """Add the problem responses, the Problem schema and the API key scheme to a document."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})
    components["schemas"]["Problem"] = PROBLEM_SCHEMA
    components["schemas"]["ProblemField"] = PROBLEM_FIELD_SCHEMA
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from the admin (Settings > API keys)",
    }
    for context in iter_route_contexts(routes):
        # Routes of included routers come wrapped; the context answers like the APIRoute.
        if not isinstance(context.original_route, APIRoute) or not context.include_in_schema:
            continue
        route = cast(APIRoute, context)
        path_item = schema.get("paths", {}).get(route.path_format, {})
        for method in route.methods or ():
            operation = path_item.get(method.lower())
            if operation is not None:
                _describe_operation(route, method, operation)
    _drop_unreferenced(schema, ("HTTPValidationError", "ValidationError"))
    return schema


def document(app: FastAPI) -> None:
    """Make the app's OpenAPI document describe its problem responses (built once, cached)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        # FastAPI builds the document again when routes were added; describe each build once.
        schema = build()
        if "Problem" not in schema.get("components", {}).get("schemas", {}):
            describe_problems(schema, app.routes)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
