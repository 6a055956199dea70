"""A live connection's life: its slot (api/live/slots.py), taken before the
stream or upgrade starts; renewed every `live.renew_s` by one loop per
process for all of its connections; released at the end (or, if the
process dies, lapsing within `live.lease_s`).

A connection with the client_id of a connection already open replaces it:
the acquire answers the older connection's token, which is published on
`live:kick`; the process holding it (every process listens) closes it with
the reason `replaced`. A kick that is missed (the listener was
reconnecting) is still caught by the next renewal, which finds the slot no
longer held.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field

import redis
import redis.asyncio as aioredis
import structlog

from api.edge.auth import Principal
from api.edge.problems import RateLimited, ServiceUnavailable
from api.live.hub import Hub, Subscriber
from api.live.slots import Slots
from runtime.sections import LiveSettings

log = structlog.get_logger("api.live")
KICKS = "live:kick"
LISTEN_TIMEOUT_S = 5.0
RETRY_S = 1.0


@dataclass(eq=False)
class Session:
    tenant: str
    client_id: str
    token: str
    subscriber: Subscriber


@dataclass
class Sessions:
    """The process's live connections. `listener` is a client whose reads
    may block (pub/sub)."""

    client: aioredis.Redis
    listener: aioredis.Redis
    hub: Hub
    settings: LiveSettings
    local: dict[str, Session] = field(default_factory=dict)
    _background: list[asyncio.Task[None]] = field(default_factory=list)
    _listening: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.slots = Slots(self.client, self.settings.lease_s)

    async def open(self, principal: Principal, client_id: str | None) -> Session:
        """RateLimited (429) past the key's cap; ServiceUnavailable without Redis."""
        await self._start_background()
        limit = principal.live_connections or self.settings.max_connections
        token = uuid.uuid4().hex
        client_id = client_id or f"~{token}"
        try:
            admission = await self.slots.acquire(principal.tenant, client_id, token, limit)
            if admission.previous is not None:
                await self.client.publish(KICKS, admission.previous)
        except redis.RedisError:
            raise ServiceUnavailable(
                "Live connections cannot be counted right now (Redis is unreachable); "
                "retry after the Retry-After delay.",
                retry_after_s=RETRY_S,
            ) from None
        if not admission.admitted:
            raise RateLimited(
                f"This API key may hold {limit} live connections at once, and all are open; "
                "close one, or retry after the Retry-After delay.",
                retry_after_s=admission.retry_after_s,
            )
        session = Session(principal.tenant, client_id, token, Subscriber(self.settings.queue_size))
        self.local[token] = session
        return session

    async def close(self, session: Session) -> None:
        self.local.pop(session.token, None)
        await self.hub.leave(session.tenant, session.subscriber)
        try:
            await self.slots.release(session.tenant, session.client_id, session.token)
        except redis.RedisError as exc:  # the lease lapses by itself
            log.warning("live_release_failed", tenant=session.tenant, error=repr(exc))

    async def aclose(self) -> None:
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _start_background(self) -> None:
        if not self._background:
            self._background = [
                asyncio.create_task(self._renew_all()),
                asyncio.create_task(self._listen_kicks()),
            ]
        # Listening before the first slot is taken, so no kick is missed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), LISTEN_TIMEOUT_S)

    async def _renew_all(self) -> None:
        while True:
            await asyncio.sleep(self.settings.renew_s)
            sessions = list(self.local.values())
            if not sessions:
                continue
            try:
                held = await self.slots.renew([(s.tenant, s.client_id, s.token) for s in sessions])
            except redis.RedisError as exc:  # the leases outlast two more tries
                log.warning("live_renew_failed", sessions=len(sessions), error=repr(exc))
                continue
            for session, still in zip(sessions, held, strict=True):
                if not still:
                    session.subscriber.close("replaced")

    async def _listen_kicks(self) -> None:
        while True:
            try:
                async with self.listener.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(KICKS)
                    self._listening.set()
                    while True:
                        message = await pubsub.get_message(timeout=LISTEN_TIMEOUT_S)
                        if message is not None:
                            self._kick(message["data"])
            except redis.RedisError as exc:
                log.warning("live_kick_listener_failed", error=repr(exc))
                await asyncio.sleep(RETRY_S)

    def _kick(self, token: bytes | str) -> None:
        session = self.local.get(token.decode() if isinstance(token, bytes) else token)
        if session is not None:
            session.subscriber.close("replaced")
