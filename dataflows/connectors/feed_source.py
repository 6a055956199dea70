"""The change feed as a Bytewax source: one partition per feed shard.

Each partition keeps a position (naive UTC) and polls its shard for entries
written in (position - overlap, now - reader_lag], dropping the ids it
already emitted within the overlap: a write that becomes visible up to
`reader_lag + overlap` after its id's time is still read, exactly once (see
cql/feed.py for why writes land late). Its snapshot is the position plus
those recent ids, so a resumed partition continues where the snapshot was
taken, neither skipping nor repeating anything before it.

Delivery guarantee: within one run, every feed entry is emitted exactly
once, in feed order per shard. Across a crash with recovery, entries emitted
after the last snapshot are emitted again (at-least-once); consumers key
their writes by utterance, so a repeat changes nothing. Nothing is ever
skipped: the position only moves past what has been read, and an entry
whose write lands late is caught by the overlap (cql/feed.py: no write is in
flight longer than the reader lag, the overlap adds as much again).

Each item carries its partition's watermark: the position after the poll
that read it, less the flow's `hold` (how long the flow may keep an entry,
e.g. in an open window, before writing it). Every entry accepted before the
watermark has been written (while a partition catches up on a backlog,
writes may trail by the batch in flight), so it is the `as_of` the served
rows report. The same watermark is written to `dataflow_progress` every
few seconds, for the API (its slowest shard is the answers' `as_of`) and
ops/status.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec
import structlog
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from prometheus_client import Counter

from cql.change_feed import FeedEntry, FeedReader, time_of
from cql.clock import to_stored_time, utc_now
from cql.learning import DATAFLOW_PROGRESS, ProgressRow
from dataflows.resources import acquire_db, release_db
from runtime.settings import Settings

log = structlog.get_logger("dataflows.feed")

ENTRIES_READ = Counter(
    "utterstream_feed_entries_read", "Change-feed entries emitted by a dataflow", ["flow", "shard"]
)

# How much feed one poll may cover: bounds the bucket reads per poll when a
# partition is far behind (each bucket is one query, most of them empty).
_MAX_SPAN = timedelta(minutes=10)


class FeedItem(msgspec.Struct, frozen=True):
    entry: FeedEntry
    # The shard's position after the poll that read the entry, less the
    # flow's hold (naive UTC).
    watermark: datetime


class ShardState(msgspec.Struct, frozen=True):
    position: datetime
    # Ids emitted with feed times in (position - overlap, position].
    emitted: tuple[uuid.UUID, ...] = ()


class FeedSource(FixedPartitionedSource[FeedItem, ShardState]):
    """Reads the change feed for the dataflow `flow` (the name its progress
    is recorded under). Holds configuration only; partitions connect on
    their worker.

    `start`: where a partition without recovery state starts (default: the
    feed's TTL ago, so nothing still in the feed is skipped); entries up to
    one overlap before it may be read too. `stop_at`: each partition ends
    once its position reaches it, so a run over a finite range completes
    (replays, tests); default: poll forever. `batch_size`: most entries one
    poll emits (default: settings.dataflow.feed_batch_size). `hold`: how
    long the flow may keep an entry before writing it; the watermark the
    items carry and the progress rows record is the position less this.
    """

    def __init__(
        self,
        flow: str,
        settings: Settings,
        *,
        start: datetime | None = None,
        stop_at: datetime | None = None,
        batch_size: int | None = None,
        hold: timedelta = timedelta(0),
        progress_interval: timedelta = timedelta(seconds=5),
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if settings.dataflow.feed_overlap_s < settings.feed.reader_lag_s:
            raise ValueError(
                "dataflow.feed_overlap_s must be at least feed.reader_lag_s "
                f"({settings.dataflow.feed_overlap_s} < {settings.feed.reader_lag_s})"
            )
        self.flow = flow
        self.settings = settings
        self.start = _naive(start or settings.dataflow.start_at)
        self.stop_at = _naive(stop_at or settings.dataflow.stop_at)
        self.batch_size = batch_size or settings.dataflow.feed_batch_size
        self.hold = hold
        self.progress_interval = progress_interval
        self.clock = clock

    def list_parts(self) -> list[str]:
        # Every worker can read every shard; Bytewax gives each to one worker.
        return [str(shard) for shard in range(self.settings.feed.shards)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: ShardState | None
    ) -> _ShardPartition:
        if resume_state is None:
            start = self.start or self.clock() - timedelta(days=self.settings.feed.ttl_days)
            resume_state = ShardState(start)
        return _ShardPartition(self, int(for_part), resume_state)


class _ShardPartition(StatefulSourcePartition[FeedItem, ShardState]):
    def __init__(self, source: FeedSource, shard: int, state: ShardState) -> None:
        settings = source.settings
        self._flow = source.flow
        self._shard = shard
        self._cassandra = settings.cassandra
        self._stop_at = source.stop_at
        self._batch_size = source.batch_size
        self._clock = source.clock
        self._lag = timedelta(seconds=settings.feed.reader_lag_s)
        self._overlap = timedelta(seconds=settings.dataflow.feed_overlap_s)
        self._poll = timedelta(seconds=settings.dataflow.poll_interval_s)
        self._progress_interval = source.progress_interval
        self._hold = source.hold
        self._position = state.position
        self._emitted = set(state.emitted)
        self._awake: datetime | None = None
        self._progress_at: datetime | None = None
        self._entries = ENTRIES_READ.labels(self._flow, str(shard))

        db = acquire_db(self._cassandra)
        self._session = db.session
        self._reader = FeedReader(db.session, db.keyspace, settings.feed)
        self._write_progress = db.prepare(DATAFLOW_PROGRESS.insert(), idempotent=True)

    def next_batch(self) -> list[FeedItem]:
        now = self._clock()
        if self._stop_at is not None and self._position >= self._stop_at:
            self._record_progress(now)
            log.info("feed_caught_up", flow=self._flow, shard=self._shard, position=self._position)
            raise StopIteration
        readable = now - self._lag
        if self._stop_at is not None:
            readable = min(readable, self._stop_at)
        until = min(readable, self._position + _MAX_SPAN)
        if until <= self._position:
            self._awake = now + self._poll
            return []

        entries = self._read(until)
        full = len(entries) >= self._batch_size
        if full:
            # Stopped early: the rest of the range is read next time; the
            # position only covers what was emitted (ties are re-read and
            # dropped as already emitted).
            until = max(self._position, entries[-1].feed_time)
        self._advance(until)
        self._awake = None if full or until < readable else now + self._poll
        self._entries.inc(len(entries))
        if self._progress_at is None or now - self._progress_at >= self._progress_interval:
            self._record_progress(now)
        watermark = until - self._hold
        return [FeedItem(entry, watermark) for entry in entries]

    def _read(self, until: datetime) -> list[FeedEntry]:
        entries: list[FeedEntry] = []
        for entry in self._reader.read(self._shard, self._position - self._overlap, until):
            if entry.feed_id in self._emitted:
                continue
            self._emitted.add(entry.feed_id)
            entries.append(entry)
            if len(entries) >= self._batch_size:
                break
        return entries

    def _advance(self, position: datetime) -> None:
        self._position = position
        horizon = position - self._overlap
        self._emitted = {i for i in self._emitted if time_of(i) > horizon}

    def _record_progress(self, now: datetime) -> None:
        watermark = to_stored_time(self._position - self._hold)
        row = ProgressRow(self._flow, self._shard, watermark, now)
        self._session.execute(self._write_progress, DATAFLOW_PROGRESS.values(row))
        self._progress_at = now

    def next_awake(self) -> datetime | None:
        return None if self._awake is None else self._awake.replace(tzinfo=UTC)

    def snapshot(self) -> ShardState:
        return ShardState(self._position, tuple(self._emitted))

    def close(self) -> None:
        release_db(self._cassandra)


def _naive(moment: datetime | None) -> datetime | None:
    return None if moment is None else to_stored_time(moment)
