"""An utterance is received, and its feed entry placed, when its write is
sent, not when its request came in: feed readers read up to one reader lag
before now, so an entry placed at the start of a request that then waited
(for its claim, a slot, a busy event loop) would land behind them and wait
for the next sweep."""

from __future__ import annotations

import uuid
from datetime import timedelta

from api.writes.store import Store
from cql.change_feed import FeedReader, shard_of
from cql.clock import to_stored_time, utc_now
from cql.session import Db
from cql.utterances import UtteranceRow
from runtime.settings import Settings


async def test_an_utterance_is_received_and_placed_in_the_feed_when_its_write_is_sent(
    db: Db, migrated: Settings
) -> None:
    tenant, utterance_id = f"t-{uuid.uuid4().hex[:12]}", "u-1"
    came_in = utc_now() - timedelta(seconds=30)  # a request that waited 30 s
    row = UtteranceRow(
        tenant, utterance_id, "learner", "c", "text", came_in, [], 1, came_in, "pending", None,
        came_in,
    )  # fmt: skip
    store = Store(db, 16, feed=migrated.feed)
    sent_from = utc_now()
    await store.write_utterance(row)
    sent_by = utc_now()

    stored = await store.utterance(tenant, utterance_id)
    assert stored is not None
    assert sent_from <= stored.received_at <= sent_by
    assert stored.status_at == stored.received_at
    reader = FeedReader(db.session, db.keyspace, migrated.feed)
    shard = shard_of(tenant, utterance_id, migrated.feed.shards)
    entries = [
        entry
        for entry in reader.read(shard, came_in - timedelta(seconds=1), sent_by)
        if entry.tenant == tenant
    ]
    assert [e.utterance_id for e in entries] == [utterance_id]
    assert to_stored_time(entries[0].feed_time) == stored.received_at
