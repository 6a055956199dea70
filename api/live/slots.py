"""A tenant's live-connection slots: leases in Redis, so every API process
counts the same connections and a slot whose process died frees itself.

Per tenant, a sorted set of client ids scored by lease expiry (ms) and a
hash of client id -> the token of the connection holding it. A connection
renews its lease every `live.renew_s`; one that stops renewing (its process
was killed) is past its lease within `live.lease_s` and is dropped by the
next acquire. No clean-up job: each script drops what has lapsed.

A connection with a client id already held takes its slot over (the newer
connection wins, so a client whose network dropped comes back at once):
the script answers the previous token, which the caller tells to close.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import redis.asyncio as aioredis

# KEYS: slots (zset), owners (hash). ARGV: now_ms, lease_ms, limit, client, token.
# Returns {1, previous token or ""} when admitted, {0, ms until the first lease ends}.
_ACQUIRE = """
local now = tonumber(ARGV[1])
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #lapsed > 0 then
  redis.call('ZREM', KEYS[1], unpack(lapsed))
  redis.call('HDEL', KEYS[2], unpack(lapsed))
end
local held = redis.call('ZSCORE', KEYS[1], ARGV[4])
if not held and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(first[2]) - now}
end
local previous = redis.call('HGET', KEYS[2], ARGV[4]) or ''
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[4])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[2], 2 * tonumber(ARGV[2]))
return {1, previous}
"""

# ARGV: now_ms, lease_ms, client, token. 1 if still held (and renewed), else 0.
_RENEW = """
if redis.call('HGET', KEYS[2], ARGV[3]) ~= ARGV[4] then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[2], 2 * tonumber(ARGV[2]))
return 1
"""

# ARGV: client, token. Frees the slot only if this connection still holds it.
_RELEASE = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


class Admission(NamedTuple):
    admitted: bool
    previous: str | None  # token of the connection this one replaces
    retry_after_s: float  # when refused: until the first lease ends


def _keys(tenant: str) -> list[str]:
    return [f"live:{{{tenant}}}:slots", f"live:{{{tenant}}}:owners"]


def _now_ms() -> int:
    return int(time.time() * 1000)


class Slots:
    def __init__(self, client: aioredis.Redis, lease_s: float) -> None:
        self._client = client
        self._lease_ms = int(lease_s * 1000)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    async def acquire(self, tenant: str, client_id: str, token: str, limit: int) -> Admission:
        args = [_now_ms(), self._lease_ms, limit, client_id, token]
        admitted, detail = await self._acquire(keys=_keys(tenant), args=args)
        if admitted:
            previous = detail.decode() if isinstance(detail, bytes) else str(detail)
            return Admission(True, previous or None, 0.0)
        return Admission(False, None, max(1.0, math.ceil(int(detail) / 1000)))

    async def renew(self, held: list[tuple[str, str, str]]) -> list[bool]:
        """Renew each (tenant, client_id, token) in one round trip; False
        where the slot is no longer this connection's."""
        pipe = self._client.pipeline(transaction=False)
        now = _now_ms()
        for tenant, client_id, token in held:
            args = [now, self._lease_ms, client_id, token]
            await self._renew(keys=_keys(tenant), args=args, client=pipe)
        return [bool(result) for result in await pipe.execute()]

    async def release(self, tenant: str, client_id: str, token: str) -> None:
        await self._release(keys=_keys(tenant), args=[client_id, token])
