"""The one way a process connects to Redis. Redis is never the record here
(rate buckets, answer caches, fan-out), so calls on an event loop fail
fast: short socket timeouts and one quick retry rather than redis-py's
default retries with backoff, which would hold every request for seconds
while Redis is down. The dataflows' steps instead wait a slow Redis out:
a flow that stops replays from its snapshot, which costs far more."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry as SyncRetry

from runtime.settings import RedisSettings

POOL_SIZE = 100  # redis-py's default
POOL_WAIT_S = 2.0


def connect(settings: RedisSettings, *, once: bool = False) -> redis.Redis:
    """For the dataflows' steps. Their commands are harmless twice (the
    ledger's are idempotent, a generation bumped twice only costs a cache
    miss), so one whose answer timed out is sent again, with
    backoff, and only a Redis gone for about half a minute stops the flow,
    which resumes from its snapshot. `once`: no retry, for commands that
    must not run twice (an XADD whose answer timed out may have applied)."""
    if once:
        retry, timeout_s = SyncRetry(NoBackoff(), 0), settings.socket_timeout_s
    else:
        retry, timeout_s = (
            SyncRetry(ExponentialBackoff(cap=2.0, base=0.1), 5),
            settings.flow_timeout_s,
        )
    return redis.Redis.from_url(
        settings.url,
        socket_timeout=timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        retry=retry,
    )


def connect_async(
    settings: RedisSettings, *, once: bool = False, pool_wait_s: float = POOL_WAIT_S
) -> aioredis.Redis:
    """For code on an event loop (API workers, the LLM client); `once` as
    for `connect`. When all of its POOL_SIZE connections are busy, a
    command waits up to `pool_wait_s` for one instead of failing at once:
    on a loaded worker every reply is read late, so connections stay busy
    longer, and redis-py's default pool then failed publishes, rate-limit
    checks and slot releases by the thousand ("Too many connections")
    while Redis itself was idle."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url,
        max_connections=POOL_SIZE,
        timeout=pool_wait_s,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        retry=Retry(NoBackoff(), retries=0 if once else 1),
    )
    return aioredis.Redis.from_pool(pool)
