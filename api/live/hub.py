"""One reader per tenant stream and API process, fanning each entry out to
the process's live connections of that tenant.

A reader starts with the first connection of its tenant (after the
stream's newest entry; when there is none, after the current moment on
Redis's clock, so that position is a cursor that misses nothing) and stops
with the last one. It blocks on XREAD, so an entry
reaches every connection as soon as Redis has it, for one read per process
rather than one per connection. Each connection (`Subscriber`) has a
bounded queue, which takes only the entries the connection wants (its
learners and types): a connection following one learner wakes for that
learner's events, not for every event of the tenant. A connection whose
queue is full reads the stream itself until it catches up
(api/live/feed.py), so no entry is dropped and no queue grows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import redis
import redis.asyncio as aioredis
import structlog

from live.bus import Entry, entry_of, stream_key

log = structlog.get_logger("api.live")
# How long one XREAD blocks; the reader's client times out a little later.
BLOCK_MS = 5_000
RETRY_S = 1.0
# KEYS: stream. The id after which every entry is new: the newest, the last
# one a stream emptied by trimming had, or (no stream) a millisecond before
# now, as ids come from Redis's clock.
_START = """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #newest > 0 then return newest[1][1] end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then return info[i + 1] end
  end
end
local t = redis.call('TIME')
return string.format('%.0f-0', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - 1)
"""


class Subscriber:
    """One live connection's inbox, bounded. When it is full the connection
    is `behind`: the reader stops filling it and the connection reads the
    stream itself until it has caught up (api/live/feed.py), so a burst
    larger than the queue costs no event and no memory. `close(reason)`
    ends the connection at its next read."""

    def __init__(self, queue_size: int) -> None:
        self.queue: asyncio.Queue[Entry | None] = asyncio.Queue(queue_size)
        self.reason: str | None = None
        self.behind = False
        self.reader: _Reader | None = None  # the one it joined, until it leaves
        # The connection's filter (api/live/feed.py sets it before joining).
        self.wants: Callable[[Entry], bool] = _everything

    def offer(self, entry: Entry) -> None:
        if self.reason is not None or self.behind or not self.wants(entry):
            return
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.behind = True

    def caught_up(self) -> None:
        """Take entries from the reader again; what is queued is older than
        what the connection has read from the stream, so it goes."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.behind = False

    def close(self, reason: str) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        # Wake a reader waiting on an empty queue; a full one wakes anyway.
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


def _everything(entry: Entry) -> bool:
    return True


class _Reader:
    def __init__(self, client: aioredis.Redis, tenant: str) -> None:
        self.subscribers: set[Subscriber] = set()
        self.position = "0-0"
        self._client = client
        self._key = stream_key(tenant)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.ready = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        try:
            start = await self._client.eval(_START, 1, self._key)
        except BaseException as exc:
            self.ready.set_exception(exc)
            self.ready.exception()  # retrieved: the caller raises it
            raise
        self.position = start.decode() if isinstance(start, bytes) else start
        self._task = asyncio.create_task(self._run())
        self.ready.set_result(None)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        # Not `while True`: redis-py may turn the cancel of a read that is
        # still connecting into a ConnectionError, and the loop would read on.
        while not self._stopping:
            try:
                found = await self._client.xread(
                    {self._key: self.position}, count=1000, block=BLOCK_MS
                )
            except redis.RedisError as exc:
                if self._stopping:
                    return
                log.warning("live_read_failed", stream=self._key, error=repr(exc))
                await asyncio.sleep(RETRY_S)
                continue
            for _key, entries in found:
                for entry_id, fields in entries:
                    entry = entry_of(entry_id, fields)
                    self.position = entry.id
                    for subscriber in list(self.subscribers):
                        subscriber.offer(entry)


class Hub:
    """The process's readers, by tenant. `client` must allow a read to
    block for BLOCK_MS (services.live_redis)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._readers: dict[str, _Reader] = {}

    async def join(self, tenant: str, subscriber: Subscriber) -> str:
        """Deliver the tenant's entries after the returned position to `subscriber`."""
        while True:
            reader = self._readers.get(tenant) or await self._started(tenant)
            await reader.ready
            # A reader whose last subscriber left while this one waited is stopped.
            if self._readers.get(tenant) is reader:
                reader.subscribers.add(subscriber)
                subscriber.reader = reader
                return reader.position

    async def _started(self, tenant: str) -> _Reader:
        reader = self._readers[tenant] = _Reader(self._client, tenant)
        try:
            await reader.start()
        except BaseException:
            if self._readers.get(tenant) is reader:
                del self._readers[tenant]
            raise
        return reader

    async def leave(self, tenant: str, subscriber: Subscriber) -> None:
        """Only the reader `subscriber` joined, if any: a connection that
        ended before joining must not stop the tenant's reader, which may be
        starting for another connection (it would run on, orphaned)."""
        reader, subscriber.reader = subscriber.reader, None
        if reader is None:
            return
        reader.subscribers.discard(subscriber)
        if reader.subscribers:
            return
        if self._readers.get(tenant) is reader:
            del self._readers[tenant]
        await reader.stop()

    async def aclose(self) -> None:
        readers, self._readers = list(self._readers.values()), {}
        for reader in readers:
            await reader.stop()
