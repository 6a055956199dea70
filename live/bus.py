"""A Redis Stream per tenant: where live events go once what they report is
durably written, and where every API process reads them.

- One entry per event: fields `type`, `user` (the learner, so a reader can
  filter without decoding) and `data` (the event's JSON). The entry id,
  given by Redis, only grows: it is the SSE `id:` and the resume cursor.
- Each append trims entries older than `live.retention_s` (`MINID ~`: Redis
  trims whole nodes only, so it keeps at least the retention), and the key
  expires twice the retention after the last append, so an idle tenant's
  stream goes away.
- Publishing never fails the write it follows. An append whose answer was
  lost (a timeout) may have been applied, so each event carries a nonce
  that its stream remembers for `DEDUPE_MS` (a sorted set beside it), and
  the append script adds the event only if the nonce is new: a publish is
  then retried, with backoff for up to `live.publish_within_s`, without
  appending anything twice. A reset costs every connection of the tenant a
  re-read over REST, so a publish outlasts the stalls a loaded machine
  causes (a worker restarting starves the others' event loops for a second
  or two). When every attempt failed, the error is logged and counted, and the tenants
  whose events were lost are remembered; the next append that succeeds
  first puts a `reset` entry in each of their streams, which tells a client
  to read the current state over REST. (A process that dies with such a gap
  unreported leaves it unreported: the events' absolute values are still
  right at the next event of the same learner.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple

import msgspec
import redis
import redis.asyncio as aioredis
import structlog
from prometheus_client import Counter

from live import doorbell
from live.events import RESET, Event, ResetEvent
from runtime.redis_client import connect, connect_async
from runtime.settings import RedisSettings, Settings

log = structlog.get_logger("live.bus")
_encoder = msgspec.json.Encoder()

PUBLISHED: Final = Counter(
    "utterstream_live_events_published", "Live events appended to tenants' streams", ["type"]
)
PUBLISH_FAILED: Final = Counter(
    "utterstream_live_publish_failures",
    "Live events lost because Redis could not take them (their tenants get a reset)",
)
# A timeout under load (a full pool, a starved event loop) is usually over
# by the next attempt; a Redis that is down costs a write publish_within_s.
BACKOFF_S = (0.05, 0.5)
# Far longer than the attempts of one publish take.
DEDUPE_MS = 60_000
# KEYS: stream, nonces (zset). ARGV: nonce, keep_ms, min_id, expire_ms, type, user, data.
# 1: appended; 0: this nonce's event is there already.
_APPEND = """
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[3], '*',
  'type', ARGV[5], 'user', ARGV[6], 'data', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""
_GAP = ResetEvent(
    "gap",
    "Some live events could not be published while Redis was unreachable; "
    "read the current state over REST.",
)


def stream_key(tenant: str) -> str:
    # The braces make the tenant the hash tag, should Redis be a cluster.
    return f"live:{{{tenant}}}:events"


class Entry(NamedTuple):
    """An event as read back from a stream."""

    id: str
    type: str
    user_id: str
    data: bytes


def entry_of(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Entry:
    ident = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Entry(
        ident, fields[b"type"].decode(), fields.get(b"user", b"").decode(), fields[b"data"]
    )


def id_parts(entry_id: str) -> tuple[int, int]:
    """A stream id (`<ms>-<seq>`) as numbers, for ordering; ValueError if it is not one."""
    ms, _, seq = entry_id.partition("-")
    parts = (int(ms), int(seq or 0))
    if parts[0] < 0 or parts[1] < 0:
        raise ValueError(entry_id)
    return parts


def _nonces_key(tenant: str) -> str:
    return f"live:{{{tenant}}}:nonces"


def _nonced(events: Iterable[Event]) -> list[tuple[str, Event]]:
    """Each event with the nonce all attempts to append it share."""
    return [(uuid.uuid4().hex, event) for event in events]


def _commands(pipe: Any, events: Iterable[tuple[str, Event]], retention_ms: int) -> None:
    """Queue each event's append, which trims its stream and renews its expiry."""
    min_id = str(int(time.time() * 1000) - retention_ms)
    for nonce, event in events:
        keys = (stream_key(event.tenant), _nonces_key(event.tenant))
        data = _encoder.encode(event.payload)
        args = (nonce, DEDUPE_MS, min_id, 2 * retention_ms, event.type, event.user_id, data)
        pipe.eval(_APPEND, 2, *keys, *args)


def _gap_events(tenants: Iterable[str]) -> list[Event]:
    return [Event(tenant, RESET, "", _GAP) for tenant in tenants]


def _patient(settings: Settings) -> RedisSettings:
    """Redis settings whose read waits up to half the publish budget: on a
    loaded machine a reply is often read late, and an attempt that times
    out costs a reconnect and a retry, and after the budget every
    connection of the tenant a reset (0.5 s timed out 579 attempts in a
    120 s bench.live run at 200/s)."""
    wait_s = max(settings.redis.socket_timeout_s, settings.live.publish_within_s / 2)
    return msgspec.structs.replace(settings.redis, socket_timeout_s=wait_s)


def _retrying(attempt: int, exc: Exception) -> None:
    log.info("live_publish_retried", attempt=attempt + 1, error=repr(exc))


def _pause(attempt: int, deadline: float) -> float | None:
    """The wait before attempt `attempt + 1`; None when the publish's time is up."""
    pause = min(BACKOFF_S[1], BACKOFF_S[0] * 2**attempt)
    return pause if time.monotonic() + pause < deadline else None


class _Gaps:
    """Tenants whose events were lost, to be told so once Redis is back."""

    def __init__(self) -> None:
        self.tenants: set[str] = set()

    def lost(self, events: Sequence[Event], exc: Exception) -> None:
        self.tenants.update(event.tenant for event in events)
        PUBLISH_FAILED.inc(len(events))
        log.warning("live_publish_failed", events=len(events), error=repr(exc))

    def sent(self, events: Sequence[Event], gaps: set[str]) -> None:
        self.tenants -= gaps
        for event in events:
            PUBLISHED.labels(event.type).inc()


class Publisher:
    """For synchronous writers (the counting flows' sinks)."""

    def __init__(self, settings: Settings) -> None:
        self._redis: redis.Redis = connect(_patient(settings), once=True)
        self._retention_ms = settings.live.retention_s * 1000
        self._within_s = settings.live.publish_within_s
        self._gaps = _Gaps()

    def close(self) -> None:
        self._redis.close()

    def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        gaps = set(self._gaps.tenants)
        batch = _nonced([*_gap_events(gaps), *events])
        deadline, attempt = time.monotonic() + self._within_s, 0
        while True:
            try:
                pipe = self._redis.pipeline(transaction=False)
                _commands(pipe, batch, self._retention_ms)
                pipe.execute()
            except redis.RedisError as exc:
                if (pause := _pause(attempt, deadline)) is None:
                    self._gaps.lost(events, exc)
                    return
                _retrying(attempt, exc)
                time.sleep(pause)
                attempt += 1
            else:
                self._gaps.sent(events, gaps)
                return


class AsyncPublisher:
    """For writers on an event loop (API workers, the insights flow); the
    client connects on first use, on the loop that uses it."""

    def __init__(self, settings: Settings) -> None:
        # A batch of the insights flow publishes hundreds of events at once:
        # they queue for the pool within the publish's budget.
        self._redis: aioredis.Redis = connect_async(
            _patient(settings), once=True, pool_wait_s=settings.live.publish_within_s
        )
        self._doorbell = doorbell.channel(settings)
        self._retention_ms = settings.live.retention_s * 1000
        self._within_s = settings.live.publish_within_s
        self._gaps = _Gaps()

    async def publish(self, events: Sequence[Event], feed_shards: Iterable[int] = ()) -> None:
        """`feed_shards`: the change-feed shards the write these events
        follow went to, whose doorbells ring in the same round trip."""
        if not events:
            return
        gaps = set(self._gaps.tenants)
        batch = _nonced([*_gap_events(gaps), *events])
        ring = doorbell.ring_message(feed_shards)
        deadline, attempt = time.monotonic() + self._within_s, 0
        while True:
            try:
                pipe = self._redis.pipeline(transaction=False)
                _commands(pipe, batch, self._retention_ms)
                if ring:
                    pipe.publish(self._doorbell, ring)
                await pipe.execute()
            except redis.RedisError as exc:
                if (pause := _pause(attempt, deadline)) is None:
                    self._gaps.lost(events, exc)
                    return
                _retrying(attempt, exc)
                await asyncio.sleep(pause)
                attempt += 1
            else:
                self._gaps.sent(events, gaps)
                return

    async def aclose(self) -> None:
        await self._redis.aclose()
