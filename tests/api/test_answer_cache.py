"""Cached answers (api/answer_cache.py) against the real Redis and
Cassandra: an answer about a range that is over is served from Redis until
the learner's generation moves, then recomputed; answers that could still
change are never cached; a Redis that is down costs nothing but the cache."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from api.reads import answer_cache
from runtime.generations import queue_bumps
from tests.conftest import Tenant, free_port
from tests.served_seed import own_flows, utc

DAY = {"granularity": "day", "from": "2026-05-10", "to": "2026-05-12", "tz": "Asia/Kolkata"}
HOURS = {"window": "hour", "from": "2026-05-10T00:00:00Z", "to": "2026-05-11T00:00:00Z"}
BUCKET = utc(2026, 5, 10, 6)  # 11:30 in Kolkata, on the 10th


def dead_redis() -> aioredis.Redis:
    """A client of a Redis that is not there, retrying as the app's does."""
    return aioredis.Redis(port=free_port(), socket_timeout=0.2, retry=Retry(NoBackoff(), retries=1))


def bump_generations(client, learners: set[tuple[str, str]]) -> None:
    """What a dataflow sink does after its writes (with its ledger payment)."""
    with client.pipeline(transaction=False) as pipe:
        queue_bumps(pipe, learners)
        pipe.execute()


async def words(client, tenant: Tenant, user_id: str) -> list[int]:
    r = await client.get(f"/v1/users/{user_id}/learning", params=DAY, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return [p["total_words"] for p in r.json()["periods"]]


async def hour_counts(client, tenant: Tenant, user_id: str) -> list[int]:
    r = await client.get(f"/v1/users/{user_id}/errors", params=HOURS, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return [c["count"] for w in r.json()["windows"] for c in w["counts"]]


async def test_learning_answer_is_cached_until_the_generation_moves(
    client, tenant, db, seed, redis_client
) -> None:
    own_flows(client, db, position=utc(2026, 11, 1))
    user_id = seed.learner()
    seed.learning_bucket(user_id, BUCKET, 1, 5)
    assert await words(client, tenant, user_id) == [5, 0]

    # A rewrite without a generation bump is not seen: the answer is cached.
    seed.learning_bucket(user_id, BUCKET, 2, 12)
    assert await words(client, tenant, user_id) == [5, 0]

    # The dataflow bumps the generation after its writes: recomputed at once.
    bump_generations(redis_client, {(tenant.name, user_id)})
    assert await words(client, tenant, user_id) == [12, 0]


async def test_error_answer_is_cached_until_the_generation_moves(
    client, tenant, db, seed, redis_client
) -> None:
    own_flows(client, db, position=utc(2026, 11, 1))
    user_id = seed.learner()
    seed.error_count(user_id, "hour", utc(2026, 5, 10, 9), "grammar", "articles", 2)
    assert await hour_counts(client, tenant, user_id) == [2]
    seed.error_count(user_id, "hour", utc(2026, 5, 10, 9), "grammar", "articles", 3, late_events=1)
    assert await hour_counts(client, tenant, user_id) == [2]
    bump_generations(redis_client, {(tenant.name, user_id)})
    assert await hour_counts(client, tenant, user_id) == [3]


async def test_generations_are_per_learner(client, tenant, db, seed, redis_client) -> None:
    own_flows(client, db, position=utc(2026, 11, 1))
    user_id = seed.learner()
    seed.learning_bucket(user_id, BUCKET, 1, 5)
    assert await words(client, tenant, user_id) == [5, 0]
    seed.learning_bucket(user_id, BUCKET, 2, 12)
    bump_generations(redis_client, {(tenant.name, "someone-else")})
    assert await words(client, tenant, user_id) == [5, 0]


@pytest.mark.parametrize(
    "position",
    [None, utc(2026, 5, 11, 12)],  # no watermark; a watermark before the range's end
    ids=["no-watermark", "watermark-inside-the-range"],
)
async def test_an_answer_the_dataflow_has_not_finished_is_not_cached(
    client, tenant, db, seed, position
) -> None:
    own_flows(client, db, position=position)
    user_id = seed.learner()
    seed.learning_bucket(user_id, BUCKET, 1, 5)
    assert await words(client, tenant, user_id) == [5, 0]
    seed.learning_bucket(user_id, BUCKET, 2, 12)
    assert await words(client, tenant, user_id) == [12, 0]


async def test_a_range_not_over_is_not_cached(client, tenant, db, seed) -> None:
    now = datetime.now(UTC)
    own_flows(client, db, position=now + timedelta(days=1))
    user_id = seed.learner()
    minute = now.replace(second=0, microsecond=0)
    params = {
        "window": "minute",
        "from": (minute - timedelta(minutes=5)).isoformat(),
        "to": (minute + timedelta(minutes=5)).isoformat(),
    }

    async def counts() -> list[int]:
        r = await client.get(f"/v1/users/{user_id}/errors", params=params, headers=tenant.headers)
        assert r.status_code == 200, r.text
        return [c["count"] for w in r.json()["windows"] for c in w["counts"]]

    seed.error_count(user_id, "minute", minute, "grammar", "articles", 1)
    assert await counts() == [1]
    seed.error_count(user_id, "minute", minute, "grammar", "articles", 2)
    assert await counts() == [2]


async def test_redis_down_answers_from_cassandra(client, tenant, db, seed) -> None:
    own_flows(client, db, position=utc(2026, 11, 1))
    user_id = seed.learner()
    seed.learning_bucket(user_id, BUCKET, 1, 5)
    services = client.app.state.services
    working = services.redis
    services.redis = dead_redis()
    try:
        assert await words(client, tenant, user_id) == [5, 0]
        seed.learning_bucket(user_id, BUCKET, 2, 12)
        assert await words(client, tenant, user_id) == [12, 0]
    finally:
        await services.redis.aclose()
        services.redis = working


async def test_answer_skips_a_dead_redis_on_both_get_and_set() -> None:
    dead = dead_redis()
    calls: list[int] = []

    async def compute() -> answer_cache.Computed:
        calls.append(1)
        return b'{"ok":true}', utc(2026, 11, 1)

    try:
        body = await answer_cache.answer(
            dead, "t", "u", "q", compute, ends=utc(2026, 5, 1), now=utc(2026, 6, 1)
        )
    finally:
        await dead.aclose()
    assert body == b'{"ok":true}'
    assert calls == [1]


async def test_keys_hold_the_generation_and_expire(settings, redis_client) -> None:
    client = aioredis.Redis.from_url(settings.redis.url)
    tenant, user_id = f"t-{uuid.uuid4().hex[:12]}", "u"
    first, second = f"first-{tenant}".encode(), f"second-{tenant}".encode()
    answers = [first, second]

    async def compute() -> answer_cache.Computed:
        return answers.pop(0), utc(2026, 11, 1)

    ask: dict[str, Any] = {"ends": utc(2026, 5, 1), "now": utc(2026, 6, 1)}
    try:
        assert await answer_cache.answer(client, tenant, user_id, "q", compute, **ask) == first
        assert await answer_cache.answer(client, tenant, user_id, "q", compute, **ask) == first
        keys = [
            k
            async for k in client.scan_iter("answer:*", count=1000)
            if (await client.get(k) or b"").endswith(first)
        ]
        assert len(keys) == 1
        assert 0 < await client.ttl(keys[0]) <= answer_cache.TTL_S
        bump_generations(redis_client, {(tenant, user_id)})
        assert await answer_cache.answer(client, tenant, user_id, "q", compute, **ask) == second
    finally:
        await client.aclose()
