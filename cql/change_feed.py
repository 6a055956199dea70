"""The change feed: every accepted utterance, in (shard, time bucket)
partitions ordered by a time-based id, written in the same logged batch as
its utterances_by_id row, so that once a request is acknowledged neither
exists without the other.

Why readers lag behind the present. A feed entry's id is taken from the API
process's clock when the write starts, but the write becomes visible only
when it completes, up to a request timeout later, and API hosts' clocks may
differ a little. A reader that read right up to now could pass an id range
before a slower write into that range landed, and never see it. So readers
read up to `now - reader_lag_s` (short, for freshness) and regularly sweep
a trailing overlap longer than any write can be in flight, dropping ids
they have already emitted: an entry that lands up to that margin late is
still read exactly once (dataflows/connectors/feed_source.py).

What is later still: a request that died after claiming its idempotency key
is finished by its retry, possibly minutes later. The retry writes the feed
entry with a fresh id (the present), never the dead request's old one, so it
lands ahead of every reader. If the dead request's own batch also landed, the
utterance appears twice in the feed; every consumer keys its work by
(tenant, utterance_id), so it still counts once.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from cassandra.cluster import Session
from cassandra.query import PreparedStatement
from cassandra.util import max_uuid_from_time, uuid_from_time

from cql.clock import EPOCH
from cql.session import prepare_in
from cql.table import Table
from cql.utterances import ErrorPoints, UtteranceRow
from runtime.settings import FeedSettings


class FeedEntry(msgspec.Struct):
    shard: int
    bucket: datetime
    feed_id: uuid.UUID
    tenant: str
    utterance_id: str
    user_id: str
    conversation_id: str
    text: str
    ts: datetime
    errors: ErrorPoints
    words_learned: int
    # Set only on the entries that announce a learner's erasure
    # (cql/erasure.py): when it was erased; such an entry is no utterance.
    erased_at: datetime | None = None

    @property
    def feed_time(self) -> datetime:
        return time_of(self.feed_id)


CHANGE_FEED = Table("change_feed", FeedEntry, ["shard", "bucket"], ["feed_id"])

# Offset of the Unix epoch in a version-1 UUID's 100-ns ticks since 1582.
_UUID_EPOCH_TICKS = 0x01B21DD213814000


def time_of(feed_id: uuid.UUID) -> datetime:
    """When the API wrote an entry: naive UTC, like the driver's timestamps."""
    return EPOCH + timedelta(microseconds=(feed_id.time - _UUID_EPOCH_TICKS) // 10)


def shard_of(tenant: str, utterance_id: str, shards: int) -> int:
    # crc32, not hash(): the shard must be the same in every process.
    return zlib.crc32(f"{tenant}\x1f{utterance_id}".encode()) % shards


def bucket_of(moment: datetime, bucket_s: int) -> datetime:
    """The start of moment's bucket, as a naive UTC datetime."""
    naive = moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    seconds = int((naive - EPOCH).total_seconds())
    return EPOCH + timedelta(seconds=seconds - seconds % bucket_s)


def new_position(
    tenant: str, utterance_id: str, settings: FeedSettings, now: datetime
) -> tuple[int, datetime, uuid.UUID]:
    """Where an utterance accepted at `now` goes: (shard, bucket, feed_id)."""
    return (
        shard_of(tenant, utterance_id, settings.shards),
        bucket_of(now, settings.bucket_s),
        uuid_from_time(now),
    )


def entry_for(row: UtteranceRow, settings: FeedSettings) -> FeedEntry:
    """The feed entry of an utterance, placed at its received_at: where it
    goes, with the utterance's own fields."""
    shard, bucket, feed_id = new_position(row.tenant, row.utterance_id, settings, row.received_at)
    return FeedEntry(
        shard, bucket, feed_id, row.tenant, row.utterance_id, row.user_id,
        row.conversation_id, row.text, row.ts, row.errors, row.words_learned,
    )  # fmt: skip


_RANGE = "shard = ? AND bucket = ? AND feed_id > ? AND feed_id <= ?"


class FeedReader:
    """Reads one shard's entries in feed-id order, synchronously (it runs on a
    dataflow worker thread). Every partition read is bounded by a bucket."""

    def __init__(
        self, session: Session, keyspace: str, settings: FeedSettings, page_size: int = 1000
    ) -> None:
        self._session = session
        self._settings = settings
        self._page_size = page_size
        self._range = prepare_in(session, CHANGE_FEED.select(_RANGE), keyspace)
        self._range.is_idempotent = True
        self._ids = prepare_in(session, CHANGE_FEED.select(_RANGE, columns=("feed_id",)), keyspace)
        self._ids.is_idempotent = True

    def read(self, shard: int, after: datetime, until: datetime) -> Iterator[FeedEntry]:
        """Entries of `shard` written in (after, until], in feed-id order.
        Both ends are naive UTC datetimes."""
        for values in self._rows(self._range, shard, after, until):
            yield CHANGE_FEED.from_row(values)

    def ids(self, shard: int, after: datetime, until: datetime) -> Iterator[uuid.UUID]:
        """Only the ids of those entries: what a reader checks for late writes."""
        for (feed_id,) in self._rows(self._ids, shard, after, until):
            yield feed_id

    def _rows(
        self, statement: PreparedStatement, shard: int, after: datetime, until: datetime
    ) -> Iterator[Any]:
        bucket = bucket_of(after, self._settings.bucket_s)
        step = timedelta(seconds=self._settings.bucket_s)
        low, high = max_uuid_from_time(after), max_uuid_from_time(until)
        while bucket <= until:
            statement.fetch_size = self._page_size
            yield from self._session.execute(statement, (shard, bucket, low, high))
            bucket += step
