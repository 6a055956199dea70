"""The change feed: every accepted utterance once, per shard in id order."""

from __future__ import annotations

from datetime import UTC, datetime

from cql.change_feed import FeedReader, bucket_of, shard_of, time_of
from tests.helpers import learner, utterance


async def test_reader_returns_each_accepted_utterance_once_in_order(
    client, tenant, db, settings
) -> None:
    started = datetime.now(UTC).replace(tzinfo=None)
    user_id, conversation_id = await learner(client, tenant.headers)
    accepted = set()
    for i in range(60):
        r = await client.post(
            "/v1/utterances",
            json=utterance(user_id, conversation_id, text=f"s{i}"),
            headers=tenant.headers,
        )
        accepted.add(r.json()["utterance_id"])
    items = [utterance(user_id, conversation_id, text=f"b{i}") for i in range(40)]
    r = await client.post(
        "/v1/utterances/batch", json={"utterances": items}, headers=tenant.headers
    )
    accepted |= {i["utterance_id"] for i in r.json()["results"]}

    reader = FeedReader(db.session, db.keyspace, settings.feed, page_size=7)
    until = datetime.now(UTC).replace(tzinfo=None)
    seen: list[str] = []
    for shard in range(settings.feed.shards):
        entries = [e for e in reader.read(shard, started, until) if e.tenant == tenant.name]
        times = [time_of(e.feed_id) for e in entries]
        assert times == sorted(times), f"shard {shard} out of order"
        assert all(
            e.shard == shard == shard_of(tenant.name, e.utterance_id, settings.feed.shards)
            for e in entries
        )
        assert all(
            e.bucket == bucket_of(time_of(e.feed_id), settings.feed.bucket_s) for e in entries
        )
        seen += [e.utterance_id for e in entries]
    assert sorted(seen) == sorted(accepted)


async def test_reader_resumes_after_a_position(client, tenant, db, settings) -> None:
    started = datetime.now(UTC).replace(tzinfo=None)
    user_id, conversation_id = await learner(client, tenant.headers)
    for i in range(20):
        await client.post(
            "/v1/utterances",
            json=utterance(user_id, conversation_id, text=f"s{i}"),
            headers=tenant.headers,
        )
    reader = FeedReader(db.session, db.keyspace, settings.feed)
    until = datetime.now(UTC).replace(tzinfo=None)
    for shard in range(settings.feed.shards):
        everything = [e for e in reader.read(shard, started, until) if e.tenant == tenant.name]
        if len(everything) < 2:
            continue
        middle = time_of(everything[len(everything) // 2 - 1].feed_id)
        rest = [e for e in reader.read(shard, middle, until) if e.tenant == tenant.name]
        assert [e.feed_id for e in rest] == [
            e.feed_id for e in everything if time_of(e.feed_id) > middle
        ]
