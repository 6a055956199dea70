"""The bench starts its flows afresh: what they recorded in an earlier run,
perhaps with another feed.shards, is deleted first, and nothing else."""

import uuid

from bench.common import forget_progress
from cql.clock import utc_now
from cql.learning import DATAFLOW_PROGRESS, ProgressRow


def test_only_the_named_flows_progress_is_deleted(db, migrated):
    gone, kept = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("gone", "kept"))
    insert = db.prepare(DATAFLOW_PROGRESS.insert())
    for flow in (gone, kept):
        for shard in (0, 7):
            row = ProgressRow(flow, shard, utc_now(), utc_now())
            db.session.execute(insert, DATAFLOW_PROGRESS.values(row))
    shards = db.prepare(DATAFLOW_PROGRESS.select(columns=("shard",)))

    forget_progress(migrated, [gone])

    assert list(db.session.execute(shards, (gone,))) == []
    assert [shard for (shard,) in db.session.execute(shards, (kept,))] == [0, 7]
