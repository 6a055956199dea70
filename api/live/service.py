"""What the live endpoints need, built once per API process with the other
services (api/services.py)."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis

from api.live.budget import Budget
from api.live.feed import Feed
from api.live.hub import BLOCK_MS, Hub
from api.live.session import Sessions
from live.bus import AsyncPublisher
from runtime.redis_client import connect_async
from runtime.sections import LiveSettings
from runtime.settings import Settings


@dataclass
class Live:
    settings: LiveSettings
    redis: aioredis.Redis
    publisher: AsyncPublisher
    hub: Hub
    feed: Feed
    sessions: Sessions
    budget: Budget
    # Reads that block (XREAD, pub/sub): a client with a longer timeout.
    blocking: aioredis.Redis

    async def aclose(self) -> None:
        await self.publisher.aclose()
        await self.sessions.aclose()
        await self.hub.aclose()
        await self.blocking.aclose()


def open_live(settings: Settings, client: aioredis.Redis) -> Live:
    timeout_s = BLOCK_MS / 1000 + 2 * settings.redis.socket_timeout_s
    blocking = connect_async(msgspec.structs.replace(settings.redis, socket_timeout_s=timeout_s))
    live = settings.live
    hub = Hub(blocking)
    return Live(
        settings=live,
        redis=client,
        publisher=AsyncPublisher(settings),
        hub=hub,
        feed=Feed(hub, client, live.retention_s, live.heartbeat_s),
        sessions=Sessions(client, blocking, hub, live),
        budget=Budget(client, live.ws_max_in_flight),
        blocking=blocking,
    )
