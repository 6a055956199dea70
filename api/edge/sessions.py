"""Dashboard sessions: signing in at /ui trades an API key for a random
session id in an HttpOnly, SameSite=Strict cookie, so the key never sits in
the browser's script reach, a URL or a log.

Redis holds, under the SHA-256 of the session id, the SHA-256 of the key,
with the session's TTL: every request of the session looks the key up again
(api.edge.auth.key_principal), so revoking or expiring the key ends its
sessions too, and a copy of Redis holds no usable session id or key.

A cookie rides along with any request the browser makes to this origin,
including ones another site triggers: besides SameSite=Strict, the API
takes a session only from a request carrying `X-Requested-With:
utterstream-ui`, a header a cross-site form cannot send and a cross-site
script cannot add without a CORS grant the API never gives.
"""

from __future__ import annotations

import hashlib
import secrets
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING

import redis

from api.edge.auth import Principal, key_principal
from api.edge.problems import ServiceUnavailable, Unauthorized

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from api.services import Services

COOKIE = "utterstream_session"
UI_HEADER = "x-requested-with"
UI_HEADER_VALUE = "utterstream-ui"
_PREFIX = "ui:session:"


def _redis_key(session_id: str) -> str:
    return _PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


def session_id(cookie_header: str | None) -> str | None:
    """The session id of a Cookie header, if it has one."""
    if not cookie_header:
        return None
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(cookie_header)
    except CookieError:
        return None
    morsel = cookies.get(COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


async def open_session(client: aioredis.Redis, key_digest: bytes, ttl_s: int) -> str:
    session = secrets.token_urlsafe(32)
    await _redis(client.set(_redis_key(session), key_digest.hex(), ex=ttl_s))
    return session


async def close_session(client: aioredis.Redis, session: str) -> None:
    await _redis(client.delete(_redis_key(session)))


async def session_principal(
    services: Services, session: str, requested_with: str | None
) -> Principal:
    """The principal of a dashboard page's request, or 401."""
    if requested_with != UI_HEADER_VALUE:
        raise Unauthorized(
            "A dashboard session is only accepted from the dashboard's own pages; "
            "other clients send `Authorization: Bearer <key>`."
        )
    principal = await signed_in(services, session)
    if principal is None:
        raise Unauthorized("The dashboard session has ended; sign in again at /ui/sign-in.")
    return principal


async def signed_in(services: Services, session: str) -> Principal | None:
    """The principal of a live session, None once it has ended."""
    stored = await _redis(services.redis.get(_redis_key(session)))
    if stored is None:
        return None
    try:
        return await key_principal(services, bytes.fromhex(stored.decode()))
    except Unauthorized:
        return None


async def _redis(pending):  # type: ignore[no-untyped-def]
    try:
        return await pending
    except redis.RedisError:
        raise ServiceUnavailable(
            "Dashboard sessions cannot be checked right now (Redis is unreachable); retry soon.",
            retry_after_s=1,
        ) from None
