"""What the handlers need, opened once per worker process in the app's
lifespan and put on `app.state.services`; handlers receive it by injection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import redis.asyncio as aioredis
import structlog
from litestar import Litestar
from litestar.di import NamedDependency

from api.edge.auth import KeyCache, Principal
from api.edge.problems import ServiceUnavailable
from api.live.service import Live, open_live
from api.reads.listings import ListingReads
from api.reads.served import ServedReads
from api.writes.erase import Eraser
from api.writes.store import Store
from cql.session import Db
from llm.client import LlmClient
from runtime import pauses
from runtime.ratelimit import RedisRateLimiter
from runtime.redis_client import connect_async
from runtime.settings import Settings

log = structlog.get_logger("api")
LLM_DEADLINE_S = 30.0
CONNECT_BACKOFF_S = (0.5, 5.0)


@dataclass
class Services:
    settings: Settings
    db: Db
    store: Store
    redis: aioredis.Redis
    keys: KeyCache
    limiter: RedisRateLimiter
    llm: LlmClient
    served: ServedReads
    live: Live
    listings: ListingReads
    eraser: Eraser


# Handler parameters injected by name (wired in api.app.create_app).
ServicesDep = NamedDependency[Services]
PrincipalDep = NamedDependency[Principal]


def open_services(settings: Settings) -> Services:
    """Connect and prepare every statement; blocking, so run off the loop."""
    db = Db.open(settings.cassandra)
    client = connect_async(settings.redis)
    return Services(
        settings=settings,
        db=db,
        store=Store(
            db,
            settings.cassandra.max_in_flight,
            idempotency_ttl_s=settings.api.idempotency_ttl_s,
            feed=settings.feed,
            write_batches_in_flight=settings.api.write_batches_in_flight,
        ),
        redis=client,
        keys=KeyCache(),
        limiter=RedisRateLimiter(client, lease_s=settings.api.rate_lease_s),
        # A person waits on the exercises endpoint: bound a model call to
        # LLM_DEADLINE_S, retries included, instead of attempts x timeout.
        llm=LlmClient(settings.llm, client, deadline_s=LLM_DEADLINE_S),
        served=ServedReads(db, timedelta(seconds=settings.dataflow.late_after_s)),
        live=open_live(settings, client),
        listings=ListingReads(db),
        eraser=Eraser(db, settings),
    )


def services_of(app: Litestar) -> Services:
    """The process's services, or 503 while it is still connecting."""
    services: Services | None = app.state.get("services")
    if services is None:
        raise ServiceUnavailable(
            "The API is connecting to the database; retry after the Retry-After delay.",
            retry_after_s=app.state.settings.api.retry_after_s,
        )
    return services


async def _connect(app: Litestar, first_try: asyncio.Event) -> None:
    """Open the services, retrying with a bounded backoff: a worker that
    starts while Cassandra is down answers 503 until it can connect, instead
    of exiting."""
    settings: Settings = app.state.settings
    delay = CONNECT_BACKOFF_S[0]
    while True:
        try:
            app.state.services = await asyncio.to_thread(open_services, settings)
        except Exception as exc:  # NoHostAvailable, DNS, auth: all retried, all logged
            log.warning("api_connect_failed", error=repr(exc), retry_in_s=delay)
            first_try.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, CONNECT_BACKOFF_S[1])
            continue
        log.info("api_started", cassandra=settings.cassandra.hosts, redis=settings.redis.url)
        pauses.settle()
        first_try.set()
        return


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    app.state.services = None
    pauses.measure()
    watching = asyncio.create_task(pauses.watch())
    first_try = asyncio.Event()
    connecting = asyncio.create_task(_connect(app, first_try))
    # Start serving once the first attempt is over: connected, as usual, or
    # failed, and then answering 503 while retrying in the background.
    await first_try.wait()
    try:
        yield
    finally:
        connecting.cancel()
        watching.cancel()
        services: Services | None = app.state.services
        if services is not None:
            await services.live.aclose()
            await services.llm.aclose()
            await services.redis.aclose()
            await asyncio.to_thread(services.db.close)
