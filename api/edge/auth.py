"""API keys: how they look, how they are stored, how a request's key is found.

A key is `us_<key_id>_<secret>` with 32 random bytes of secret. Only its
SHA-256 is stored: the key is random, so a fast hash is enough (no password
stretching needed), and the lookup by hash is a single-partition read. The
stored hash is compared again in constant time before the key is trusted.
Keys are never logged; `key_id` is what logs and metrics name.

A key is usable while it is not revoked and, when it has an `expires_at`
(`ops/keys create --expires-in/--expires-at`), until that moment: an expired
key gets the same 401 as a revoked one. Each API process caches lookups for
up to 30 s (`KeyCache`), so a revocation takes effect within 30 s; expiry is
checked on every request against the cached entry, so it is exact.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import datetime
from typing import TYPE_CHECKING

import msgspec

from api.edge.problems import Unauthorized
from cql.clock import utc_now

if TYPE_CHECKING:
    from api.services import Services
    from cql.api_keys import ApiKeyRow

PREFIX = "us_"


class Principal(msgspec.Struct, frozen=True):
    tenant: str
    key_id: str
    rate: float
    burst: int
    expires_at: datetime | None = None  # naive UTC, as stored
    live_connections: int | None = None  # None: the deployment's default

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def new_key() -> tuple[str, str]:
    """A fresh (key_id, key)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_prefix(key_id: str) -> str:
    """The public part of a key, `us_<key_id>`, as `ops/keys list` shows it."""
    return f"{PREFIX}{key_id}"


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def bearer_key(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("Send your API key as `Authorization: Bearer <key>`.")
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key.startswith(PREFIX) or len(key) > 200:
        raise Unauthorized(
            "The Authorization header must be `Bearer us_...` with an utterstream API key."
        )
    return key


class KeyCache:
    """Recently seen keys per process, so a busy client costs one Cassandra
    read per `ttl_s` instead of one per request. Revocation therefore takes
    effect within `ttl_s`."""

    def __init__(self, ttl_s: float = 30.0, max_entries: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: dict[bytes, tuple[float, Principal | None]] = {}

    def get(self, digest: bytes) -> tuple[bool, Principal | None]:
        hit = self._entries.get(digest)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, digest: bytes, principal: Principal | None) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + self._ttl_s, principal)


def verified(stored_hash: bytes, digest: bytes) -> bool:
    return hmac.compare_digest(stored_hash, digest)


def principal_of(row: ApiKeyRow | None, digest: bytes, now: datetime) -> Principal | None:
    """The key's principal, or None when it is unknown, revoked or expired
    (`now` naive UTC, as stored)."""
    if row is None or row.revoked or not verified(row.key_hash, digest):
        return None
    principal = Principal(
        row.tenant, row.key_id, row.rate, row.burst, row.expires_at, row.live_connections
    )
    return None if principal.expired(now) else principal


async def key_principal(services: Services, digest: bytes) -> Principal:
    """The principal of the key whose hash is `digest`, or 401."""
    cached, principal = services.keys.get(digest)
    now = utc_now()
    if not cached:
        principal = principal_of(await services.store.api_key(digest), digest, now)
        services.keys.put(digest, principal)
    if principal is None or principal.expired(now):
        raise Unauthorized("This API key is unknown, revoked or expired.")
    return principal
