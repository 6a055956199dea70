"""The change feed as a Bytewax source: one partition per feed shard.

Each partition keeps a position (naive UTC) and polls its shard every
`poll_interval_s` for entries written in (position, now - reader_lag]: the
reader lag is short, for freshness. A write becomes visible up to a request
timeout after its id's time (see cql/change_feed.py), possibly behind the
position already read; so every `sweep_interval_s` a poll also sweeps the
overlap, (position - overlap, position], reading only the ids and then the
entries not emitted yet. Ids emitted within the overlap are remembered, so
an entry that lands late is still read exactly once. Its snapshot is the
position plus those recent ids, so a resumed partition continues where the
snapshot was taken, neither skipping nor repeating anything before it.

Delivery guarantee: within one run, every feed entry is emitted exactly
once, in feed order per shard except for late landers, which come with the
next sweep. Across a crash with recovery, entries emitted after the last
snapshot are emitted again (at-least-once); consumers key their writes by
utterance, so a repeat changes nothing. Nothing is ever skipped: the
position only moves past what has been read, and the overlap is longer than
any write can be in flight.

The watermark: after a complete sweep up to `until`, every entry
acknowledged before `until` has been emitted (a write is visible before it
is acknowledged). Each item carries the latest such watermark less the
flow's `hold` (how long the flow may keep an entry before writing it), and
the same is written to `dataflow_progress` at every sweep, for the API (its
slowest shard is the answers' `as_of`) and ops/status.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec
import structlog
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from cassandra import OperationTimedOut, Unavailable, WriteFailure, WriteTimeout
from cassandra.cluster import NoHostAvailable
from prometheus_client import Counter, Gauge

from cql.change_feed import FeedEntry, FeedReader, time_of
from cql.clock import to_stored_time, utc_now
from cql.learning import DATAFLOW_PROGRESS, ProgressRow
from dataflows.resources import acquire_db, release_db
from runtime.settings import Settings

log = structlog.get_logger("dataflows.feed")

# What a busy or briefly unreachable Cassandra answers a write.
CASSANDRA_BUSY = (WriteTimeout, WriteFailure, Unavailable, OperationTimedOut, NoHostAvailable)

ENTRIES_READ = Counter(
    "utterstream_feed_entries_read", "Change-feed entries emitted by a dataflow", ["flow", "shard"]
)
# Set at every sweep. In multiprocess mode the newest process's value counts
# ("livemostrecent"): a restarted flow replaces the dead one's sample.
READ_LAG = Gauge(
    "utterstream_dataflow_read_lag_seconds",
    "Now minus the position of a feed shard's last complete sweep",
    ["flow", "shard"],
    multiprocess_mode="livemostrecent",
)
AS_OF_LAG = Gauge(
    "utterstream_dataflow_as_of_lag_seconds",
    "Now minus the watermark (as_of) a feed shard last recorded",
    ["flow", "shard"],
    multiprocess_mode="livemostrecent",
)

# A shard that has read nothing for a while polls and sweeps less often: an
# idle flow costs a few Cassandra requests a second instead of dozens, and
# the first utterance after a pause waits at most a second longer.
_IDLE_AFTER = timedelta(seconds=10)
_IDLE_POLL = timedelta(seconds=1)
_IDLE_SWEEP = timedelta(seconds=2)

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
        self._sweep_every = timedelta(seconds=settings.dataflow.sweep_interval_s)
        self._hold = source.hold
        self._position = state.position
        self._emitted = set(state.emitted)
        # Until the first sweep, only what precedes the overlap is certain.
        self._watermark = state.position - self._overlap
        self._swept_at: datetime | None = None
        self._awake: datetime | None = None
        self._read_at = source.clock()  # when this shard last read an entry
        self._entries = ENTRIES_READ.labels(self._flow, str(shard))

        db = acquire_db(self._cassandra)
        self._session = db.session
        self._reader = FeedReader(db.session, db.keyspace, settings.feed)
        self._write_progress = db.prepare(DATAFLOW_PROGRESS.insert(), idempotent=True)

    def next_batch(self) -> list[FeedItem]:
        now = self._clock()
        if self._stop_at is not None and self._position >= self._stop_at:
            self._watermark = self._position
            self._record_progress(now)
            log.info("feed_caught_up", flow=self._flow, shard=self._shard, position=self._position)
            raise StopIteration
        readable = now - self._lag
        if self._stop_at is not None:
            readable = min(readable, self._stop_at)
        until = max(self._position, min(readable, self._position + _MAX_SPAN))
        idle = now - self._read_at > _IDLE_AFTER
        poll = _IDLE_POLL if idle else self._poll
        every = max(self._sweep_every, _IDLE_SWEEP) if idle else self._sweep_every
        sweep = self._swept_at is None or now - self._swept_at >= every
        if until == self._position and not sweep:
            self._awake = now + poll
            return []
        entries, full = self._read(until, sweep)
        if full:
            # Stopped early: the rest is read next time; the position only
            # covers what was emitted (ties are re-read and dropped).
            until = max(self._position, entries[-1].feed_time)
        self._advance(until)
        if sweep and not full:
            self._swept(until, now)
        self._awake = None if full or until < readable else now + poll
        if entries:
            self._read_at = now
        self._entries.inc(len(entries))
        watermark = self._watermark - self._hold
        return [FeedItem(entry, watermark) for entry in entries]

    def _read(self, until: datetime, sweep: bool) -> tuple[list[FeedEntry], bool]:
        """New entries up to `until`, those that landed behind the position
        first when sweeping; and whether the batch size cut the read short."""
        entries: list[FeedEntry] = []
        ranges = [(self._position, until)]
        if sweep and self._landed_late():
            ranges.insert(0, (self._position - self._overlap, self._position))
        for after, end in ranges:
            for entry in self._reader.read(self._shard, after, end):
                if entry.feed_id in self._emitted:
                    continue
                self._emitted.add(entry.feed_id)
                entries.append(entry)
                if len(entries) >= self._batch_size:
                    return entries, True
        return entries, False

    def _landed_late(self) -> bool:
        """Whether the overlap holds an entry not emitted: ids only, cheap."""
        ids = self._reader.ids(self._shard, self._position - self._overlap, self._position)
        return any(feed_id not in self._emitted for feed_id in ids)

    def _advance(self, position: datetime) -> None:
        self._position = position
        horizon = position - self._overlap
        self._emitted = {i for i in self._emitted if time_of(i) > horizon}

    def _swept(self, until: datetime, now: datetime) -> None:
        self._watermark = until
        self._swept_at = now
        self._record_progress(now)

    def _record_progress(self, now: datetime) -> None:
        watermark = to_stored_time(self._watermark - self._hold)
        row = ProgressRow(self._flow, self._shard, watermark, now)
        try:
            self._session.execute(self._write_progress, DATAFLOW_PROGRESS.values(row))
        except CASSANDRA_BUSY as exc:
            # Progress is advisory and rewritten at the next sweep; stopping the
            # flow for it would cost a restart and a replay from the snapshot.
            log.warning(
                "progress_not_recorded", flow=self._flow, shard=self._shard, error=repr(exc)
            )
            return
        shard = str(self._shard)
        READ_LAG.labels(self._flow, shard).set((now - self._watermark).total_seconds())
        AS_OF_LAG.labels(self._flow, shard).set((now - watermark).total_seconds())

    def next_awake(self) -> datetime | None:
        return None if self._awake is None else self._awake.replace(tzinfo=UTC)

    def snapshot(self) -> ShardState:
        return ShardState(self._position, tuple(self._emitted))

    def close(self) -> None:
        release_db(self._cassandra)


def _naive(moment: datetime | None) -> datetime | None:
    return None if moment is None else to_stored_time(moment)
