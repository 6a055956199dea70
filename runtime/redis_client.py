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


def connect(settings: RedisSettings, *, once: bool = False) -> redis.Redis:
    """For the dataflows' steps. Their commands are idempotent (the ledger,
    generation bumps), so one whose answer timed out is sent again, with
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


def connect_async(settings: RedisSettings, *, once: bool = False) -> aioredis.Redis:
    """For code on an event loop (API workers, the LLM client); `once` as
    for `connect`."""
    return aioredis.Redis.from_url(
        settings.url,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        retry=Retry(NoBackoff(), retries=0 if once else 1),
    )
