"""One live connection's events, in stream order, each once.

Without a cursor the connection starts at the stream's newest entry, and
its first item is a heartbeat carrying that position: a client that gets
no event before it reconnects still has a cursor, so what was published
while it was away is not lost (SSE: an `id:` without data). With
one (`Last-Event-ID`), it first gets every entry after the cursor from the
stream (XRANGE, paged), then joins the process's reader and reads the
stream once more up to where the reader took over; entries at or before
the cursor are skipped, so the seam has no gap and no duplicate. A
connection whose queue filled up (a burst, a slow client) reads the stream
itself, page by page, and crosses the same seam back to its queue.

A cursor the stream can no longer serve gets a `reset` first, whose id is
the stream's newest (the client then reads the current state over REST):
when it lies before the first entry kept and the stream has been trimmed
(or the cursor is older than the retention: the stream expired since), or
when it is newer than anything the stream ever held (the stream was lost).
A cursor just before the first entry kept may get a reset it did not need;
never the other way round.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import NamedTuple

import msgspec
import redis.asyncio as aioredis

from api.live.hub import Hub, Subscriber
from live.bus import Entry, entry_of, id_parts, stream_key
from live.events import RESET, TYPES, ResetEvent

PAGE = 500
_RESET = msgspec.json.encode(
    ResetEvent(
        "cursor_too_old",
        "Events after your cursor are no longer kept; read the current state over REST, "
        "then carry on from this event's id.",
    )
)


class Heartbeat(NamedTuple):
    cursor: str  # every entry the connection wants up to here was delivered


class Closed(NamedTuple):
    reason: str


Item = Entry | Heartbeat | Closed


class Filter:
    """Which entries a connection wants: `users` None is every learner of
    the tenant; a WebSocket adds learners as it sends their utterances."""

    def __init__(self, users: set[str] | None, types: frozenset[str] = frozenset(TYPES)) -> None:
        self.users = users
        self.types = types

    def wants(self, entry: Entry) -> bool:
        if entry.type == RESET:
            return True
        return entry.type in self.types and (self.users is None or entry.user_id in self.users)


class Feed:
    def __init__(
        self, hub: Hub, client: aioredis.Redis, retention_s: int, heartbeat_s: float
    ) -> None:
        self._hub = hub
        self._client = client
        self._retention_ms = retention_s * 1000
        self._heartbeat_s = heartbeat_s

    async def open(
        self, tenant: str, subscriber: Subscriber, wanted: Filter, cursor: str | None
    ) -> AsyncIterator[Item]:
        """The connection's items; the caller must `hub.leave(tenant,
        subscriber)` when done. Without a cursor the connection joins the
        reader here, before its answer starts, so it has every event
        published after it was admitted."""
        subscriber.wants = wanted.wants
        if cursor is None:
            position = await self._hub.join(tenant, subscriber)
            live = self._live(stream_key(tenant), subscriber, wanted, position, [])
            return _after_heartbeat(position, live)
        return self._resume(tenant, subscriber, wanted, cursor)

    async def _resume(
        self, tenant: str, subscriber: Subscriber, wanted: Filter, cursor: str
    ) -> AsyncIterator[Item]:
        key = stream_key(tenant)
        reset_at = await self._reset_at(key, cursor)
        if reset_at is not None:
            cursor = reset_at
            yield Entry(reset_at, RESET, "", _RESET)
        async for entry in self._after(key, cursor):
            cursor = entry.id
            if wanted.wants(entry):
                yield entry
        position = await self._hub.join(tenant, subscriber)
        pending = [e async for e in self._after(key, cursor)] if cursor != position else []
        async for item in self._live(key, subscriber, wanted, cursor, pending):
            yield item

    async def _live(
        self, key: str, subscriber: Subscriber, wanted: Filter, cursor: str, pending: list[Entry]
    ) -> AsyncIterator[Item]:
        while True:
            for entry in pending:
                if id_parts(entry.id) > id_parts(cursor):
                    cursor = entry.id
                    if wanted.wants(entry):
                        yield entry
            if subscriber.reason is not None:
                yield Closed(subscriber.reason)
                return
            if subscriber.behind:
                pending = await self._catch_up(key, subscriber, cursor)
                continue
            try:
                # A timeout scope, not wait_for: on Python 3.11 wait_for
                # wraps each get in a task of its own, for every event.
                async with asyncio.timeout(self._heartbeat_s):
                    got = await subscriber.queue.get()
            except TimeoutError:
                got = None
                cursor = _newest(subscriber, cursor)
                yield Heartbeat(cursor)
            pending = [got] if got is not None else []

    async def _catch_up(self, key: str, subscriber: Subscriber, cursor: str) -> list[Entry]:
        """The next page of a connection that fell a queue behind, read from
        the stream. Near the newest entry it takes the reader's entries
        again (the seam as in a resume). Had the stream trimmed entries it
        had not read yet, it is closed as `slow` instead: it then resumes
        from its cursor and gets a reset."""
        if await self._reset_at(key, cursor) is not None:
            subscriber.close("slow")
            return []
        page = await self._page(key, cursor)
        if len(page) < PAGE:
            subscriber.caught_up()
            page += [e async for e in self._after(key, page[-1].id if page else cursor)]
        return page

    async def _after(self, key: str, cursor: str) -> AsyncIterator[Entry]:
        while True:
            page = await self._page(key, cursor)
            for entry in page:
                yield entry
            if len(page) < PAGE:
                return
            cursor = page[-1].id

    async def _page(self, key: str, cursor: str) -> list[Entry]:
        found = await self._client.xrange(key, min=f"({cursor}", max="+", count=PAGE)
        return [entry_of(entry_id, fields) for entry_id, fields in found]

    async def _reset_at(self, key: str, cursor: str) -> str | None:
        """None if the stream still holds everything after `cursor`, else
        the id the reset carries."""
        sent = id_parts(cursor)
        seconds, micros = await self._client.time()
        oldest_kept_ms = seconds * 1000 + micros // 1000 - self._retention_ms
        if not await self._client.exists(key):
            # Any later entry's id is past this moment on Redis's clock.
            now_id = f"{oldest_kept_ms + self._retention_ms - 1}-0"
            return now_id if sent[0] < oldest_kept_ms else None
        info = await self._client.xinfo_stream(key)
        newest = _text(info["last-generated-id"])
        if sent > id_parts(newest):
            return newest
        if info["length"] == 0:
            return newest if sent < id_parts(newest) else None
        trimmed = info["entries-added"] > info["length"]
        before_first = sent < id_parts(_text(info["recorded-first-entry-id"]))
        return newest if before_first and (trimmed or sent[0] < oldest_kept_ms) else None


def _newest(subscriber: Subscriber, cursor: str) -> str:
    """A heartbeat's cursor: the reader's position when the connection has
    every entry it wants up to there (nothing queued, not behind), else its
    own. The reader queues only wanted entries, so without this the cursor
    of a connection whose learners are quiet would age, and its resume
    would re-read (or, past the retention, reset) for nothing."""
    reader = subscriber.reader
    if reader is None or subscriber.behind or not subscriber.queue.empty():
        return cursor
    return max(cursor, reader.position, key=id_parts)


async def _after_heartbeat(cursor: str, items: AsyncIterator[Item]) -> AsyncIterator[Item]:
    yield Heartbeat(cursor)
    async for item in items:
        yield item


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
