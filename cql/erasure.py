"""The record of erased learners and the change-feed entries that announce
an erasure (cql/schema/011_erasure.cql). Field order is column order."""

from __future__ import annotations

from datetime import datetime

import msgspec
from cassandra.util import uuid_from_time

from cql.change_feed import FeedEntry, bucket_of
from cql.table import Table
from runtime.settings import FeedSettings


class ErasedLearnerRow(msgspec.Struct):
    tenant: str
    user_id: str
    erased_at: datetime


class ErasedDayRow(msgspec.Struct):
    tenant: str
    user_id: str
    erased_at: datetime
    day: datetime


ERASED_LEARNERS = Table("erased_learners", ErasedLearnerRow, ["tenant", "user_id"], ["erased_at"])
ERASED_DAYS = Table(
    "erased_learner_days", ErasedDayRow, ["tenant", "user_id", "erased_at"], ["day"]
)
# The latest erasure of a learner (the clustering order is newest first).
LATEST_ERASURE = ERASED_LEARNERS.select(columns=("erased_at",)) + " LIMIT 1"
# The same for several learners of one tenant: (user_id, erased_at) rows.
LATEST_ERASURES = (
    ERASED_LEARNERS.select("tenant = ? AND user_id IN ?", columns=("user_id", "erased_at"))
    + " PER PARTITION LIMIT 1"
)


def erase_entries(
    tenant: str, user_id: str, erased_at: datetime, settings: FeedSettings, now: datetime
) -> list[FeedEntry]:
    """One entry per feed shard, written `now`, announcing that the learner
    was erased at `erased_at`: every flow partition reads one, in order with
    the utterances of its shard."""
    bucket, feed_id = bucket_of(now, settings.bucket_s), uuid_from_time(now)
    return [
        FeedEntry(shard, bucket, feed_id, tenant, "", user_id, "", "", erased_at, [], 0, erased_at)
        for shard in range(settings.shards)
    ]


def erased_before(erased_at: datetime | None, written_at: datetime) -> bool:
    """Whether an utterance accepted at `written_at` (its feed time, naive
    UTC) belongs to a learner erased after it: it is skipped."""
    return erased_at is not None and written_at < erased_at
