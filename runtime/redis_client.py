"""The one way a process connects to Redis. Redis is never the record here
(rate buckets, answer caches, fan-out), so calls fail fast: short socket
timeouts, and on an event loop one quick retry rather than redis-py's
default retries with backoff, which would hold every request for seconds
while Redis is down."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry

from runtime.settings import RedisSettings


def connect(settings: RedisSettings, *, once: bool = False) -> redis.Redis:
    """For synchronous code (dataflow sinks): a failure stops the flow,
    which resumes from its snapshot. `once`: no retry, for commands that
    must not run twice (an XADD whose answer timed out may have applied)."""
    return redis.Redis.from_url(
        settings.url,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        **({"retry": SyncRetry(NoBackoff(), retries=0)} if once else {}),
    )


def connect_async(settings: RedisSettings, *, once: bool = False) -> aioredis.Redis:
    """For code on an event loop (API workers, the LLM client); `once` as
    for `connect`."""
    return aioredis.Redis.from_url(
        settings.url,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        retry=Retry(NoBackoff(), retries=0 if once else 1),
    )
