"""`python -m dataflows replay FLOW` for every flow it names."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cql.clock import utc_now
from cql.learning import DATAFLOW_PROGRESS, ProgressRow
from dataflows.commands import replay


@pytest.mark.parametrize("name", sorted(replay.FLOWS))
def test_every_flow_replays(migrated, name: str) -> None:
    """A replay over a stretch of feed with nothing in it (older than the
    feed's TTL, overlap included, so no other test's writes) reads nothing
    and ends; `insights` once had no feed source to replay with."""
    until = utc_now() - timedelta(days=30)
    assert replay.replay(name, migrated, start=until - timedelta(seconds=1), until=until) == 0


def test_a_replay_starts_afresh(db, migrated) -> None:
    """An earlier replay's progress (here of a shard beyond feed.shards, as
    one with more shards leaves) is forgotten, not refused."""
    shards = migrated.feed.shards
    row = ProgressRow("passthrough-replay", shards, utc_now(), utc_now())
    db.session.execute(db.prepare(DATAFLOW_PROGRESS.insert()), DATAFLOW_PROGRESS.values(row))
    until = utc_now() - timedelta(days=30)
    assert (
        replay.replay("passthrough", migrated, start=until - timedelta(seconds=1), until=until) == 0
    )
    recorded = db.prepare(DATAFLOW_PROGRESS.select(columns=("shard",)))
    assert sorted(s for (s,) in db.session.execute(recorded, ("passthrough-replay",))) == list(
        range(shards)
    )
