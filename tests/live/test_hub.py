"""The process's stream readers (api/live/hub.py) against the shared Redis:
where a reader starts, and which connection may stop it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from api.live.feed import Feed, Filter, Heartbeat
from api.live.hub import BLOCK_MS, Hub, Subscriber
from live.bus import AsyncPublisher, id_parts, stream_key
from live.events import utterance_event
from runtime.settings import Settings


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis.url)
    yield client
    await client.aclose()


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _others() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def test_a_connection_that_never_joined_does_not_orphan_a_starting_reader(
    client: aioredis.Redis,
) -> None:
    hub, tenant = Hub(client), _tenant()
    joined, gone = Subscriber(10), Subscriber(10)
    joining = asyncio.create_task(hub.join(tenant, joined))
    await asyncio.sleep(0)  # its reader is starting: the first read is in flight
    await hub.leave(tenant, gone)  # ended before it joined (say, during its resume)
    await joining
    # The last subscriber gone, its reader stops (its read was just
    # starting: redis-py may swallow that cancel) and none reads on.
    await asyncio.wait_for(hub.leave(tenant, joined), BLOCK_MS / 1000 + 5)
    assert _others() == set()


async def test_a_reader_of_no_stream_yet_starts_at_a_cursor_that_misses_nothing(
    settings: Settings, client: aioredis.Redis
) -> None:
    hub, tenant, subscriber = Hub(client), _tenant(), Subscriber(10)
    feed = Feed(hub, client, settings.live.retention_s, settings.live.heartbeat_s)
    publisher = AsyncPublisher(settings)
    try:
        position = await hub.join(tenant, subscriber)
        await publisher.publish([utterance_event(tenant, "u1", "ana", "pending")])
        entry = await asyncio.wait_for(subscriber.queue.get(), 5)
        assert entry is not None and id_parts(entry.id) > id_parts(position)
        # A client resuming from where it started gets the entry, not a reset.
        assert await feed._reset_at(stream_key(tenant), position) is None
    finally:
        await hub.leave(tenant, subscriber)
        await publisher.aclose()


async def test_a_connection_is_queued_only_the_events_it_wants(
    settings: Settings, client: aioredis.Redis
) -> None:
    """A connection following one learner is not woken for the tenant's
    other learners (at 150 connections of one tenant, every event woke them
    all), and its heartbeat still moves past what it skipped."""
    hub, tenant = Hub(client), _tenant()
    feed = Feed(hub, client, settings.live.retention_s, heartbeat_s=0.2)
    ana, every = Subscriber(10), Subscriber(10)
    publisher = AsyncPublisher(settings)
    try:
        items = await feed.open(tenant, ana, Filter({"ana"}), None)
        await feed.open(tenant, every, Filter(None), None)
        started = (await anext(items)).cursor
        await publisher.publish([utterance_event(tenant, "u0", "ana", "pending")])
        bens = [utterance_event(tenant, f"u{i}", "ben", "pending") for i in range(1, 4)]
        await publisher.publish(bens)
        got = [await asyncio.wait_for(every.queue.get(), 5) for _ in range(4)]
        assert [e.user_id for e in got if e] == ["ana", "ben", "ben", "ben"]
        entry = await asyncio.wait_for(anext(items), 5)
        assert entry.user_id == "ana" and ana.queue.empty()
        beat = await asyncio.wait_for(anext(items), 5)
        # Past the three events it skipped, so a resume does not re-read them.
        assert isinstance(beat, Heartbeat) and beat.cursor == got[-1].id != started
    finally:
        await hub.leave(tenant, ana)
        await hub.leave(tenant, every)
        await publisher.aclose()
