"""Which cached answers are still good: a generation number per learner in
Redis. The dataflows bump it after every write that changes a learner's
served rows; the API puts it in every cache key. A late event therefore
makes every cached answer for that learner unreachable at once, and a stale
number can never be served."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis


def generation_key(tenant: str, user_id: str) -> str:
    return f"gen:{tenant}:{user_id}"


def bump_generations(client: redis.Redis, learners: set[tuple[str, str]]) -> None:
    """Called by dataflow sinks (synchronous) after their Cassandra writes."""
    if not learners:
        return
    pipe = client.pipeline(transaction=False)
    for tenant, user_id in learners:
        pipe.incr(generation_key(tenant, user_id))
    pipe.execute()


async def generation(client: aioredis.Redis, tenant: str, user_id: str) -> int:
    value = await client.get(generation_key(tenant, user_id))
    return int(value or 0)
