"""Answers about ranges that are over, cached in Redis for every API process:
looked up once a range has ended, stored once the dataflow's watermark has
passed its end too, for an hour at most.

Each answer is stored with the learner's generation number
(runtime.generations): the dataflows bump it after every write that changes
the learner's served rows, so a late event makes every cached answer for
that learner unusable at once. An answer is therefore never stale, only
recomputed. The number and the answer are read together, one MGET (one
round trip), before the tables: an answer computed from rows newer than its
number is harmless, the reverse cannot happen. A recomputed answer replaces
the old one under the same key.

Redis is not the record: when it fails, the request is answered from
Cassandra and the failure logged, never turned into an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from runtime.generations import generation_key

# An answer's JSON, and the dataflow watermark it was computed at.
Computed = tuple[bytes, datetime | None]
# Part of every key: bump it when an answer's shape changes, so a deploy
# never serves answers cached in the old shape.
SHAPE = 2
# Long enough to absorb a dashboard's repeated reads, short enough that
# answers nobody asks for again leave Redis soon.
TTL_S = 3600
log = structlog.get_logger("api.reads.answer_cache")
_encoder = msgspec.json.Encoder()


async def answer(
    client: aioredis.Redis,
    tenant: str,
    user_id: str,
    query: str,
    compute: Callable[[], Awaitable[Computed]],
    *,
    ends: datetime,
    now: datetime,
) -> bytes:
    """The encoded answer to `query` about one learner's range ending at
    `ends`. Looked up in the cache once the range is over; stored only once
    the dataflow's watermark has passed its end too, so a cached answer is
    always one that already said "complete up to the end"."""
    if ends > now:
        return (await compute())[0]
    key = _key(tenant, user_id, query)
    try:
        number, cached = await client.mget(generation_key(tenant, user_id), key)
    except RedisError as exc:
        log.warning("answer_cache_unavailable", op="get", error=repr(exc))
        return (await compute())[0]
    stamp = b"%d:" % int(number or 0)
    if cached is not None and cached.startswith(stamp):
        return cached[len(stamp) :]
    body, as_of = await compute()
    if as_of is not None and as_of >= ends:
        try:
            await client.set(key, stamp + body, ex=TTL_S)
        except RedisError as exc:
            log.warning("answer_cache_unavailable", op="set", error=repr(exc))
    return body


def _key(tenant: str, user_id: str, query: str) -> str:
    # Hashed: ids may hold any separator, and keys stay short.
    digest = hashlib.sha256(_encoder.encode((SHAPE, tenant, user_id, query))).hexdigest()
    return f"answer:{digest}"
