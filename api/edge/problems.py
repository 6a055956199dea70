"""Every error the API answers with, as an RFC 9457 problem document.

Domain exceptions carry what a person needs to act (`detail`, and the
`field` at fault where there is one); one table maps each to its status and
type, and one handler turns any of them, Litestar's own HTTP errors, and the
driver's "Cassandra cannot take this now" errors into problem documents.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import msgspec
import structlog
from cassandra import (
    OperationTimedOut,
    ReadFailure,
    ReadTimeout,
    Unavailable,
    WriteFailure,
    WriteTimeout,
)
from cassandra.cluster import NoHostAvailable
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from msgspec import Meta

from api.edge.metrics import CASSANDRA_ERRORS

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://utterstream.dev/problems/"
log = structlog.get_logger("api.edge.problems")


class Problem(msgspec.Struct):
    """An RFC 9457 problem document: every error answer (documentation only;
    `document` below builds them)."""

    type: Annotated[str, Meta(description="A URL naming the kind of problem")]
    title: str
    status: int
    detail: Annotated[str, Meta(description="What went wrong and what to do about it")]
    instance: Annotated[str | None, Meta(description="The request's path")] = None
    field: Annotated[str | None, Meta(description="The field or header at fault")] = None


class ApiError(Exception):
    """Base of the domain errors; subclasses are rows of ERROR_TABLE."""

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        retry_after_s: float | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.retry_after_s = retry_after_s
        self.extra = extra or {}
        self.headers = headers or {}


class BadRequest(ApiError): ...


class Unauthorized(ApiError): ...


class NotFound(ApiError): ...


class Conflict(ApiError): ...


class RequestInFlight(ApiError): ...


class IdempotencyKeyReused(ApiError): ...


class Unprocessable(ApiError): ...


class RateLimited(ApiError): ...


class ServiceUnavailable(ApiError): ...


# exception -> (status, type slug, title)
ERROR_TABLE: dict[type[ApiError], tuple[int, str, str]] = {
    BadRequest: (400, "bad-request", "The request is not valid"),
    Unauthorized: (401, "unauthorized", "A valid API key is required"),
    NotFound: (404, "not-found", "Not found"),
    Conflict: (409, "conflict", "Conflicts with what is stored"),
    RequestInFlight: (409, "request-in-flight", "The same request is still being carried out"),
    IdempotencyKeyReused: (
        422,
        "idempotency-key-reused",
        "Idempotency-Key reused with another body",
    ),
    Unprocessable: (422, "unprocessable", "The request cannot be carried out"),
    RateLimited: (429, "rate-limited", "Too many requests"),
    ServiceUnavailable: (503, "unavailable", "Temporarily unavailable"),
}

# Driver errors that mean "Cassandra cannot serve this right now": the client
# should retry later, so they become 503 with Retry-After, never 500.
CASSANDRA_UNAVAILABLE = (
    NoHostAvailable,
    Unavailable,
    OperationTimedOut,
    ReadTimeout,
    WriteTimeout,
    ReadFailure,
    WriteFailure,
)


# What each error status means to a client, for the OpenAPI document.
_DOCUMENTED = {
    400: "The request is not valid; `field` names what to fix",
    401: "No API key, or an unknown, revoked or expired one (with WWW-Authenticate)",
    404: "Not found, or not this API key's tenant's",
    409: "Conflicts with what is stored, or the same Idempotency-Key is still in flight (Retry-After)",
    413: "The body is larger than the limit",
    422: "The Idempotency-Key was used with another body, or the request cannot be carried out",
    429: "Over this API key's rate limit (Retry-After and RateLimit-* headers)",
    503: "Cassandra or Redis cannot serve this now; retry after Retry-After",
}
# Every keyed route may answer these.
KEYED = (401, 429, 503)
# And every POST with a body and an Idempotency-Key these.
POSTED = (*KEYED, 400, 409, 413, 422)


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """The `responses=` of a route: each status documented as a problem document."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            description=_DOCUMENTED[status],
            generate_examples=False,
        )
        for status in sorted(set(statuses))
    }


def document(status: int, slug: str, title: str, detail: str, **members: Any) -> dict[str, Any]:
    """The one builder of a problem document; members that are None are left out."""
    body: dict[str, Any] = {
        "type": TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in members.items() if v is not None})
    return body


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **members: Any,
) -> Response[dict[str, Any]]:
    body = document(status, slug, title, detail, **members)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_body(exc: ApiError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The status, problem document and headers for a domain error; the
    idempotency layer stores exactly this for replays."""
    status, slug, title = ERROR_TABLE[type(exc)]
    body = document(status, slug, title, exc.detail, field=exc.field or None, **exc.extra)
    headers = dict(exc.headers)
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    return status, body, headers


def handle_api_error(request: Request, exc: ApiError) -> Response[Any]:
    status, body, headers = problem_body(exc)
    body["instance"] = request.url.path
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def handle_cassandra_unavailable(request: Request, exc: Exception) -> Response[Any]:
    log.warning("cassandra_unavailable", error=type(exc).__name__, path=request.url.path)
    CASSANDRA_ERRORS.labels(type(exc).__name__).inc()
    retry_after = request.app.state.settings.api.retry_after_s
    return problem(
        503,
        "unavailable",
        "Temporarily unavailable",
        "The database cannot take this request right now; retry after the Retry-After delay. "
        "Nothing was acknowledged, so retrying with the same Idempotency-Key is safe.",
        instance=request.url.path,
        headers={"Retry-After": str(retry_after)},
    )


def handle_validation(request: Request, exc: ValidationException) -> Response[Any]:
    """Litestar's own parameter validation (path, query, header); bodies are
    decoded by api.edge.body.StrictBody. Names the parameter so the client can fix it."""
    first = next((e for e in exc.extra or [] if isinstance(e, dict)), {})
    message = str(first.get("message") or exc.detail)
    field = first.get("key")
    detail = f"{field}: {message}" if field else message
    if field == "data" and first.get("source") == "body":
        # An empty body: Litestar never hands it to the DTO.
        field, detail = None, "The body is empty; send one JSON object."
    return problem(
        400,
        "bad-request",
        "The request is not valid",
        detail,
        instance=request.url.path,
        field=field,
    )


def handle_http_exception(request: Request, exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    detail = exc.detail
    if status == 413:
        limit = request.app.state.settings.api.max_body_bytes
        detail = f"The request body is larger than the limit of {limit} bytes; split it into smaller requests."
    elif status == 400:
        detail = f"The body is not valid JSON ({exc.detail}); send one JSON object."
    slug = {
        400: "malformed-body",
        404: "not-found",
        405: "method-not-allowed",
        413: "body-too-large",
    }.get(status, "http-error")
    return problem(
        status, slug, exc.detail or "Error", detail, instance=request.url.path, headers=exc.headers
    )


def handle_unexpected(request: Request, exc: Exception) -> Response[Any]:
    log.exception("unhandled_error", path=request.url.path)
    return problem(
        500,
        "internal",
        "Internal error",
        "An unexpected error occurred; it has been logged.",
        instance=request.url.path,
    )


def exception_handlers() -> dict[type[Exception], Any]:
    handlers: dict[type[Exception], Any] = {
        ApiError: handle_api_error,
        ValidationException: handle_validation,
        HTTPException: handle_http_exception,
        Exception: handle_unexpected,
    }
    handlers.update(dict.fromkeys(CASSANDRA_UNAVAILABLE, handle_cassandra_unavailable))
    return handlers
