"""The API rings the doorbell of each feed shard it wrote to: for a single
POST and for a batch, the shards of what it stored (live/doorbell.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from cql.change_feed import shard_of
from live import doorbell
from runtime.settings import Settings
from tests.conftest import Tenant
from tests.helpers import learner, utterance


@pytest.fixture
def rings(redis_client: redis.Redis, monkeypatch) -> Iterator[redis.client.PubSub]:
    """A channel of this test's own (set before the app starts): no other
    test's or session's writes ring on it."""
    name = f"doorbell-test-{uuid.uuid4().hex}"
    monkeypatch.setattr(doorbell, "channel", lambda _settings: name)
    with redis_client.pubsub(ignore_subscribe_messages=True) as pubsub:
        pubsub.subscribe(name)
        pubsub.get_message(timeout=1)  # the subscription's confirmation
        yield pubsub


def rung(pubsub: redis.client.PubSub, within_s: float = 5.0) -> list[set[int]]:
    """The rings heard until none came for a moment, each a set of shards."""
    heard, deadline = [], time.monotonic() + within_s
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message is None and heard:
            break
        if message is not None:
            heard.append({int(word) for word in message["data"].split()})
    return heard


async def test_a_post_rings_its_entry_s_shard(
    rings, client: httpx.AsyncClient, tenant: Tenant, migrated: Settings
) -> None:
    user, conv = await learner(client, tenant.headers)
    r = await client.post("/v1/utterances", json=utterance(user, conv), headers=tenant.headers)
    assert r.status_code == 202, r.text
    shard = shard_of(tenant.name, r.json()["utterance_id"], migrated.feed.shards)
    assert rung(rings) == [{shard}]


async def test_a_batch_rings_the_shards_of_the_items_it_stored_at_once(
    rings, client: httpx.AsyncClient, tenant: Tenant, migrated: Settings
) -> None:
    user, conv = await learner(client, tenant.headers)
    items = [utterance(user, conv, utterance_id=f"b-{i}") for i in range(12)]
    items.append(utterance(user, "no-such-conversation", utterance_id="refused"))
    r = await client.post(
        "/v1/utterances/batch", json={"utterances": items}, headers=tenant.headers
    )
    assert r.status_code == 202, r.text
    stored = {shard_of(tenant.name, f"b-{i}", migrated.feed.shards) for i in range(12)}
    assert rung(rings) == [stored], "one ring for the batch, of the stored items' shards"
