"""The edge of every request: a request id, the API key, the rate limit,
and one structured access-log line. Health, readiness, metrics and the
OpenAPI document need no key. A WebSocket upgrade passes here too: refused,
it gets its problem document as the HTTP answer (the ASGI WebSocket denial
response), and the access log records 101 once it is accepted. Routes
marked `opt={"ticket": True}` (the live ones) also take a single-use
`?ticket=` instead of the Authorization header (api/live/tickets.py); the
log never holds it, as it writes the path without the query."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import msgspec
import structlog
from litestar import Request, Response
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.middleware import ASGIMiddleware
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.edge import sessions
from api.edge.auth import Principal, bearer_key, key_hash, key_principal
from api.edge.limits import ITEMS, charge
from api.edge.metrics import CASSANDRA_ERRORS, RATE_LIMITED, REQUEST_SECONDS, UNROUTED
from api.edge.problems import (
    CASSANDRA_UNAVAILABLE,
    ApiError,
    ServiceUnavailable,
    problem_body,
)
from api.live import tickets
from api.services import Services, services_of

log = structlog.get_logger("api.access")
_RESPONSE_START = ("http.response.start", "websocket.http.response.start")
# The dashboard's pages check their session themselves (api/ui/pages.py).
PUBLIC = ("/health", "/ready", "/metrics", "/schema", "/swagger", "/ui")
REQUEST_ID = "X-Request-ID"


class EdgeMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()
        headers = MutableScopeHeaders(scope)
        request_id = _request_id(headers.get(REQUEST_ID))
        extra_headers: dict[str, str] = {REQUEST_ID: request_id}
        status = 500
        tenant = None

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "websocket.accept":
                status = 101
            if message["type"] in _RESPONSE_START:
                status = message["status"]
                response_headers = MutableScopeHeaders(message)
                for name, value in extra_headers.items():
                    response_headers[name] = value
            await send(message)

        if scope.get("method") == "OPTIONS":
            extra_headers.update(_allow(scope))
        try:
            if not scope["path"].startswith(PUBLIC):
                tenant = await _admit(scope, headers, extra_headers)
            await next_app(scope, receive, send_with_headers)
        except ApiError as exc:
            await send_problem(exc, scope, send_with_headers)
        except CASSANDRA_UNAVAILABLE as exc:
            await send_problem(_key_check_unavailable(scope, exc), scope, send_with_headers)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            method = scope.get("method", "GET")  # a WebSocket scope has none
            REQUEST_SECONDS.labels(route, method, str(status)).observe(elapsed)
            if status == 429:
                RATE_LIMITED.inc()
            _access_log(request_id, method, scope["path"], route, status, tenant, elapsed)


def _allow(scope: Scope) -> dict[str, str]:
    """The Allow header of an OPTIONS answer: every method of the path.
    Litestar 2's own lists only the first handler registered on a path
    (litestar-org/litestar#4169, fixed in 3), so it is set here from the
    routes' full method sets."""
    app = scope["app"]
    allow = app.state.get("allow")
    if allow is None:
        allow = app.state["allow"] = {
            route.path_format: ", ".join(sorted(route.methods))
            for route in app.routes
            if isinstance(route, HTTPRoute)
        }
    methods = allow.get(scope.get("path_template", ""))
    return {"allow": methods} if methods else {}


async def _admit(scope: Scope, headers: MutableScopeHeaders, extra_headers: dict[str, str]) -> str:
    """Authenticate and charge the rate limit; the tenant admitted."""
    services = services_of(scope["app"])
    if headers.get("authorization") is None and scope["route_handler"].opt.get("ticket"):
        principal = await tickets.redeem(services.redis, scope["query_string"])
    else:
        principal = await _principal(services, headers)
    state = scope.setdefault("state", {})
    state["principal"] = principal
    # The batch handler charges per item and adds its headers here.
    state["rate_headers"] = extra_headers
    if scope["route_handler"].opt.get("rate_cost") != ITEMS:
        extra_headers.update(await charge(services, principal, 1))
    return principal.tenant


def _key_check_unavailable(scope: Scope, exc: Exception) -> ServiceUnavailable:
    # The key lookup could not be served. Answered here, not by the app's
    # outer handler, so the 503 keeps its request id and the access log and
    # metrics record 503 rather than the default 500.
    CASSANDRA_ERRORS.labels(type(exc).__name__).inc()
    return ServiceUnavailable(
        "The API key cannot be checked right now because the database is unavailable; "
        "retry after the Retry-After delay.",
        retry_after_s=scope["app"].state.settings.api.retry_after_s,
    )


def _access_log(
    request_id: str,
    method: str,
    path: str,
    route: str,
    status: int,
    tenant: str | None,
    elapsed: float | None = None,
) -> None:
    log.info(
        "request",
        request_id=request_id,
        method=method,
        path=path,
        route=route,
        status=status,
        tenant=tenant,
        ms=None if elapsed is None else round(elapsed * 1000, 2),
    )


def unrouted(handler: Callable[[Request, HTTPException], Response]) -> Callable[..., Response]:
    """Litestar runs middleware per route, so a request that matches no route
    (404) or no method of one (405) never passes EdgeMiddleware: its answer
    gets the request id, the access-log line and a metric here instead."""

    def handle(request: Request, exc: HTTPException) -> Response:
        response = handler(request, exc)
        if "route_handler" in request.scope:
            return response
        request_id = _request_id(request.headers.get(REQUEST_ID))
        response.headers[REQUEST_ID] = request_id
        UNROUTED.labels(request.method, str(response.status_code)).inc()
        _access_log(
            request_id, request.method, request.url.path, "unmatched", response.status_code, None
        )
        return response

    return handle


def _request_id(sent: str | None) -> str:
    return (sent or "")[:128] or uuid.uuid4().hex


async def authenticate(services: Services, authorization: str | None) -> Principal:
    return await key_principal(services, key_hash(bearer_key(authorization)))


async def _principal(services: Services, headers: MutableScopeHeaders) -> Principal:
    """The Authorization header's key, else a dashboard session's (api.edge.sessions)."""
    authorization = headers.get("authorization")
    session = sessions.session_id(headers.get("cookie"))
    if authorization is None and session is not None:
        return await sessions.session_principal(services, session, headers.get(sessions.UI_HEADER))
    return await authenticate(services, authorization)


async def send_problem(exc: ApiError, scope: Scope, send: Send) -> None:
    """The problem as the whole answer; to a WebSocket, before its upgrade,
    as the denial response."""
    status, body, headers = problem_body(exc)
    body["instance"] = scope["path"]
    payload = msgspec.json.encode(body)
    raw = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if status == 401:
        raw.append((b"www-authenticate", b'Bearer realm="utterstream"'))
    prefix = "websocket." if scope["type"] == ScopeType.WEBSOCKET else ""
    await send({"type": f"{prefix}http.response.start", "status": status, "headers": raw})
    await send({"type": f"{prefix}http.response.body", "body": payload})
