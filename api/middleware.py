"""The edge of every request: a request id, the API key, the rate limit,
and one structured access-log line. Health, readiness, metrics and the
OpenAPI document need no key."""

from __future__ import annotations

import time
import uuid

import msgspec
import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import Principal, bearer_key, key_hash, verified
from api.errors import ApiError, Unauthorized, problem_body
from api.services import Services

log = structlog.get_logger("api.access")
PUBLIC = ("/health", "/ready", "/metrics", "/schema")
REQUEST_ID = "X-Request-ID"


class EdgeMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()
        headers = MutableScopeHeaders(scope)
        request_id = (headers.get(REQUEST_ID) or "")[:128] or uuid.uuid4().hex
        extra_headers: dict[str, str] = {REQUEST_ID: request_id}
        status = 500
        tenant = None

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = MutableScopeHeaders(message)
                for name, value in extra_headers.items():
                    response_headers[name] = value
            await send(message)

        try:
            if not scope["path"].startswith(PUBLIC):
                services: Services = scope["app"].state.services
                principal = await authenticate(services, headers.get("authorization"))
                tenant = principal.tenant
                scope.setdefault("state", {})["principal"] = principal
            await next_app(scope, receive, send_with_headers)
        except ApiError as exc:
            await _send_problem(exc, scope, send_with_headers)
        finally:
            log.info(
                "request",
                request_id=request_id,
                method=scope["method"],
                path=scope["path"],
                status=status,
                tenant=tenant,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )


async def authenticate(services: Services, authorization: str | None) -> Principal:
    key = bearer_key(authorization)
    digest = key_hash(key)
    cached, principal = services.keys.get(digest)
    if not cached:
        row = await services.store.api_key(digest)
        valid = row is not None and not row.revoked and verified(row.key_hash, digest)
        principal = Principal(row.tenant, row.key_id, row.rate, row.burst) if valid else None
        services.keys.put(digest, principal)
    if principal is None:
        raise Unauthorized("This API key is unknown or revoked.")
    return principal


async def _send_problem(exc: ApiError, scope: Scope, send: Send) -> None:
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
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})
