"""The one wiring of an idempotent POST: check the Idempotency-Key, hash the
request, and run the handler's work at most once per key (api.edge.idempotency).
Also the one rule for an id the client did not give."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import msgspec
from litestar import Request, Response

from api.edge import idempotency
from api.services import Principal, Services


def new_id(index: int = 0) -> str:
    """For item `index` of the running request: fixed by its Idempotency-Key's
    claim when it holds one (every attempt writes the same rows), random
    otherwise."""
    return idempotency.claimant(index) or str(uuid.uuid4())


async def keyed_post(
    request: Request,
    body: msgspec.Struct,
    principal: Principal,
    services: Services,
    raw_key: str | None,
    work: Callable[[str | None], Awaitable[idempotency.Answer]],
) -> Response:
    """`work(key)` runs once per key: a repeat replays its answer."""
    return await keyed_run(request.url.path, body, principal, services, raw_key, work)


async def keyed_run(
    path: str,
    body: msgspec.Struct,
    principal: Principal,
    services: Services,
    raw_key: str | None,
    work: Callable[[str | None], Awaitable[idempotency.Answer]],
) -> Response:
    """keyed_post's protocol for a body that did not come as a POST to
    `path` (an utterance sent over the WebSocket is keyed as if POSTed to
    /v1/utterances, so one key means one utterance whichever way it came)."""
    key = idempotency.checked_key(raw_key)
    return await idempotency.run(
        services.store,
        tenant=principal.tenant,
        key=key,
        digest=idempotency.request_hash("POST", path, body),
        in_flight_timeout_s=services.settings.api.in_flight_timeout_s,
        work=lambda: work(key),
    )
