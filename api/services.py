"""What the handlers need, opened once per worker process in the app's
lifespan and put on `app.state.services`; handlers receive it by injection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog
from litestar import Litestar

from api.auth import KeyCache
from api.store import Store
from cql.session import Db
from cql.settings import Settings

log = structlog.get_logger("api")


@dataclass
class Services:
    settings: Settings
    db: Db
    store: Store
    redis: aioredis.Redis
    keys: KeyCache


def open_services(settings: Settings) -> Services:
    """Connect and prepare every statement; blocking, so run off the loop."""
    db = Db.open(settings.cassandra)
    return Services(
        settings=settings,
        db=db,
        store=Store(db, settings.cassandra.max_in_flight),
        redis=aioredis.Redis.from_url(
            settings.redis.url,
            socket_timeout=settings.redis.socket_timeout_s,
            socket_connect_timeout=settings.redis.socket_timeout_s,
        ),
        keys=KeyCache(),
    )


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    services = await asyncio.to_thread(open_services, settings)
    app.state.services = services
    log.info("api_started", cassandra=settings.cassandra.hosts, redis=settings.redis.url)
    try:
        yield
    finally:
        await services.redis.aclose()
        await asyncio.to_thread(services.db.close)
