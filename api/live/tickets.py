"""Single-use live tickets, for browsers: EventSource and WebSocket cannot
send an Authorization header, so a client with a key first asks
`POST /v1/live/tickets` and opens `GET /v1/live?ticket=...` or
`GET /v1/ws?ticket=...`.

A ticket is 32 random bytes. Redis holds only its SHA-256, for
`live.ticket_ttl_s`, with the principal of the key that asked for it (so it
is bound to that key's tenant and limits); GETDEL redeems it, so it works
once, on whichever API process. A ticket travels in the query string, which
the access log never writes (it logs the path only) and nothing else logs.
"""

from __future__ import annotations

import hashlib
import secrets
from urllib.parse import parse_qs

import msgspec
import redis.asyncio as aioredis

from api.edge.auth import Principal
from api.edge.problems import Unauthorized
from cql.clock import utc_now

QUERY = "ticket"
_decoder = msgspec.json.Decoder(Principal)


def _key(ticket: str) -> str:
    return "live:ticket:" + hashlib.sha256(ticket.encode()).hexdigest()


async def issue(client: aioredis.Redis, principal: Principal, ttl_s: int) -> str:
    ticket = secrets.token_urlsafe(32)
    await client.set(_key(ticket), msgspec.json.encode(principal), ex=ttl_s)
    return ticket


async def redeem(client: aioredis.Redis, query_string: bytes) -> Principal:
    """The principal of the request's `ticket`; Unauthorized when it is
    missing, unknown, used already or expired."""
    sent = parse_qs(query_string.decode("latin-1")).get(QUERY, [])
    if len(sent) != 1 or not 0 < len(sent[0]) <= 100:
        raise Unauthorized(
            "Send your API key as `Authorization: Bearer <key>`, or a `ticket` from "
            "POST /v1/live/tickets.",
            field=QUERY,
        )
    stored = await client.getdel(_key(sent[0]))
    principal = None if stored is None else _decoder.decode(stored)
    if principal is None or principal.expired(utc_now()):
        raise Unauthorized(
            "This ticket is unknown, used already or expired: a ticket works once, within "
            "a minute; ask POST /v1/live/tickets for another.",
            field=QUERY,
        )
    return principal
