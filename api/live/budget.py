"""WebSocket messages being processed at once, counted across every API
process: a sorted set in Redis of the messages in flight, each scored by a
lease expiry, so a message whose process died stops counting after the
lease instead of holding its place for ever."""

from __future__ import annotations

import time
import uuid

import redis.asyncio as aioredis

KEY = "live:ws:in_flight"
# A message is an utterance write: well within this, retries included.
LEASE_MS = 30_000

# ARGV: now_ms, lease_ms, most, token. 1: taken; 0: all taken.
_TAKE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[4])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


class Budget:
    def __init__(self, client: aioredis.Redis, most: int, key: str = KEY) -> None:
        self._client = client
        self._most = most
        self._key = key
        self._take = client.register_script(_TAKE)

    async def take(self) -> str | None:
        """A token for one message, or None when `most` are in flight."""
        token = uuid.uuid4().hex
        args = [int(time.time() * 1000), LEASE_MS, self._most, token]
        return token if await self._take(keys=[self._key], args=args) else None

    async def give_back(self, token: str) -> None:
        await self._client.zrem(self._key, token)
