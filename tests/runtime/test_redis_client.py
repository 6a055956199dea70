"""runtime/redis_client.py against the real Redis."""

from __future__ import annotations

import asyncio
import uuid

from runtime import redis_client
from runtime.settings import Settings


async def test_more_commands_than_connections_wait_for_one_instead_of_failing() -> None:
    """Each command below holds its connection for 0.2 s (BLPOP on a list
    nobody fills), so half again as many as the pool has must queue."""
    client = redis_client.connect_async(Settings.from_env().redis)
    key = f"test:pool:{uuid.uuid4().hex}"
    try:
        many = redis_client.POOL_SIZE * 3 // 2
        answers = await asyncio.gather(*(client.blpop([key], 0.2) for _ in range(many)))
    finally:
        await client.aclose()
    assert answers == [None] * many
