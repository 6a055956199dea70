"""GET /v1/live (Server-Sent Events), GET /v1/ws (WebSocket) and
POST /v1/live/tickets. The machinery is in api/live/; both transports
authenticate like every keyed route (EdgeMiddleware), or with a ticket, and
take a connection slot before the stream or the upgrade starts (429 with
Retry-After past the key's cap)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
import redis
from litestar import Controller, WebSocket, get, post, websocket
from litestar.params import Parameter

from api.edge import idempotency
from api.edge.auth import Principal
from api.edge.middleware import send_problem
from api.edge.problems import (
    KEYED,
    ApiError,
    BadRequest,
    ServiceUnavailable,
    problem_responses,
)
from api.live import tickets
from api.live.feed import Filter, Item
from api.live.service import Live
from api.live.session import Session
from api.live.sse import LiveStream, messages
from api.live.ws import Connection
from api.services import PrincipalDep, ServicesDep
from live.bus import id_parts
from live.events import TYPES

MAX_USERS = 100
# Routes that also take `?ticket=` instead of an Authorization header.
TICKET = {"ticket": True}
LIVE_DESCRIPTION = (
    "Server-Sent Events of the tenant's learners. Browsers, whose EventSource cannot "
    "send headers, pass `ticket` (from POST /v1/live/tickets) as a query parameter "
    "instead of the Authorization header. Each event's `id` is a cursor: reconnect with "
    "`Last-Event-ID` to get every event missed within the retention, or `event: reset`."
)

UserIds = Annotated[
    list[str] | None,
    Parameter(query="user_id", description="Learners to follow; all of the tenant's when absent."),
]
ClientId = Annotated[
    str | None,
    Parameter(
        query="client_id",
        description="Names the client: a newer connection with the same client_id replaces "
        "this one.",
        max_length=128,
    ),
]


class LiveTicket(msgspec.Struct):
    ticket: str
    expires_in_s: int


def _types(raw: str | None) -> frozenset[str]:
    if raw is None:
        return frozenset(TYPES)
    chosen = frozenset(t.strip() for t in raw.split(",") if t.strip())
    if not chosen or chosen - set(TYPES):
        raise BadRequest(
            f"types must be a comma list of {', '.join(TYPES)}; got {raw!r}.", field="types"
        )
    return chosen


def _users(user_id: list[str] | None) -> set[str] | None:
    if user_id is not None and len(user_id) > MAX_USERS:
        raise BadRequest(f"user_id: at most {MAX_USERS} learners.", field="user_id")
    return set(user_id) if user_id else None


def _cursor(raw: str | None, field: str) -> str | None:
    if raw is None:
        return None
    with contextlib.suppress(ValueError):
        id_parts(raw)
        return raw
    raise BadRequest(
        f"{field} must be an event id this API sent (like 1712345678901-0).", field=field
    )


async def _connect(
    live: Live, principal: Principal, client_id: str | None, wanted: Filter, cursor: str | None
) -> tuple[Session, AsyncIterator[Item]]:
    """A slot, then the connection's events; both before the answer starts,
    so a refusal is still an HTTP answer."""
    session = await live.sessions.open(principal, client_id)
    try:
        return session, await live.feed.open(principal.tenant, session.subscriber, wanted, cursor)
    except redis.RedisError:
        await live.sessions.close(session)
        raise ServiceUnavailable(
            "Live events cannot be read right now (Redis is unreachable); retry after the delay.",
            retry_after_s=1,
        ) from None
    except BaseException:
        await live.sessions.close(session)
        raise


class LiveController(Controller):
    path = "/v1"
    tags = ["live"]

    @post(
        "/live/tickets",
        operation_id="createLiveTicket",
        status_code=201,
        summary="A single-use ticket to open /v1/live or /v1/ws without a header",
        responses=problem_responses(*KEYED, 400),
    )
    async def ticket(
        self,
        principal: PrincipalDep,
        services: ServicesDep,
        idempotency_key: idempotency.KeyHeader = None,
    ) -> LiveTicket:
        """Every call gets a fresh ticket, with or without an Idempotency-Key
        (checked, not stored): a ticket is a credential, kept nowhere but
        Redis and for a minute, and a replayed one would be spent already."""
        idempotency.checked_key(idempotency_key)
        ttl = services.settings.live.ticket_ttl_s
        return LiveTicket(await tickets.issue(services.redis, principal, ttl), ttl)

    @get(
        "/live",
        operation_id="liveEvents",
        opt=TICKET,
        summary="Live events (Server-Sent Events)",
        media_type="text/event-stream",
        description=LIVE_DESCRIPTION,
        responses=problem_responses(*KEYED, 400),
    )
    async def events(
        self,
        principal: PrincipalDep,
        services: ServicesDep,
        user_id: UserIds = None,
        types: Annotated[
            str | None, Parameter(description=f"Comma list of {', '.join(TYPES)}; all when absent.")
        ] = None,
        client_id: ClientId = None,
        last_event_id: Annotated[str | None, Parameter(header="Last-Event-ID")] = None,
    ) -> LiveStream:
        wanted = Filter(_users(user_id), _types(types))
        cursor = _cursor(last_event_id, "Last-Event-ID")
        live = services.live
        session, items = await _connect(live, principal, client_id, wanted, cursor)
        return LiveStream(
            messages(items),
            send_timeout_s=live.settings.send_timeout_s,
            on_end=lambda: live.sessions.close(session),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


@websocket("/v1/ws", opt=TICKET)
async def live_socket(
    socket: WebSocket,
    principal: PrincipalDep,
    services: ServicesDep,
    client_id: Annotated[str, Parameter(query="client_id", min_length=1, max_length=128)],
    user_id: UserIds = None,
    last_event_id: Annotated[str | None, Parameter(query="last_event_id")] = None,
) -> None:
    live = services.live
    try:
        wanted = Filter(_users(user_id) or set())
        cursor = _cursor(last_event_id, "last_event_id")
        session, items = await _connect(live, principal, client_id, wanted, cursor)
    except ApiError as exc:
        # Litestar would answer a bare 403; the client gets the problem and Retry-After.
        await send_problem(exc, socket.scope, socket.send)
        return
    try:
        await socket.accept()
        await Connection(socket, services, principal, session, wanted).serve(items)
    finally:
        await live.sessions.close(session)
