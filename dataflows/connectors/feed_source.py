"""The change feed as a Bytewax source: one partition per feed shard.

Each partition keeps a position (naive UTC) and polls its shard for
entries written in (position, now - reader_lag]: one reader lag after the
API rang the shard's doorbell (live/doorbell.py), and every
`poll_interval_s` when it did not. The reader lag is short, for freshness.
A write becomes visible up to a request timeout after its id's time (see
cql/change_feed.py), possibly behind the position already read; so every
`sweep_interval_s` (on a grid every busy shard shares: `_next_sweep`) a
poll also sweeps the overlap, (position - overlap, position], reading only
the ids and then the entries not emitted yet.
Ids emitted within the overlap are remembered, so an entry that lands late
is still read exactly once. Its snapshot is the position plus those recent
ids, so a resumed partition continues where the snapshot was taken,
neither skipping nor repeating anything before it.

Delivery guarantee: within one run, every feed entry is emitted exactly
once, in feed order per shard except for late landers, which come with the
next sweep. Across a crash with recovery, entries emitted after the last
snapshot are emitted again (at-least-once); consumers key their writes by
utterance, so a repeat changes nothing. Nothing is ever skipped: the
position only moves past what has been read, and the overlap is longer than
any write can be in flight.

The watermark: after a complete sweep up to `until`, every entry
acknowledged before `until` has been read (a write is visible before it is
acknowledged). It becomes the flow's watermark once the flow has also
written everything read up to that sweep: each read is owed to the flow's
sinks in a ledger (dataflows/connectors/ledger.py), and a sweep's `until`
is published only when every read up to it is paid back. Then it is written
to `dataflow_progress`, for the API (its slowest shard is the answers'
`as_of`) and ops/status, and carried by the items read after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import structlog
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from prometheus_client import Counter

from cql.change_feed import FeedEntry, FeedReader, time_of
from cql.clock import floor_to, to_stored_time, utc_now
from cql.learning import DATAFLOW_PROGRESS
from dataflows.connectors.ledger import Ledger, Ticket
from dataflows.connectors.progress import LOOK_EVERY, Progress, check_shards
from dataflows.resources import acquire_db, release_db
from live import doorbell
from runtime.redis_client import connect
from runtime.settings import Settings

log = structlog.get_logger("dataflows.feed")

ENTRIES_READ = Counter(
    "utterstream_feed_entries_read", "Change-feed entries emitted by a dataflow", ["flow", "shard"]
)
# A shard that has read nothing for a while looks at its doorbell less
# often and polls only when rung or every _IDLE_POLL, each poll a sweep (a
# caught-up sweep is one query, like a poll; polls between sweeps would
# only serve a lost ring). The first utterance after a pause waits at most
# _IDLE_LOOK longer (_IDLE_POLL when its ring is lost), and an idle flow's
# as_of trails the present by up to _IDLE_POLL plus the reader lag and the
# sweep's own reads and write (about 1.8 s): under the 2 s an answer's as_of
# may trail, also in the first seconds of a load (every 2 s, it trailed by
# up to 2.26 s then). Idle under ops/up, Cassandra answered all clients 19
# requests a second.
IDLE_AFTER = timedelta(seconds=10)
_IDLE_POLL = timedelta(seconds=1.5)
_IDLE_LOOK = timedelta(seconds=0.25)

# How much feed one poll may cover: bounds the bucket reads per poll when a
# partition is far behind (each bucket is one query, most of them empty).
_MAX_SPAN = timedelta(minutes=10)

# See Progress: how long a resumed partition leaves the previous run's items
# that its snapshot restored in the collect step to be written.
_RESUME_GRACE = timedelta(seconds=5)


class FeedItem(msgspec.Struct, frozen=True):
    entry: FeedEntry
    # The `until` of the shard's newest sweep when the entry was read: every
    # entry of the shard acknowledged before it is read (naive UTC). Not yet
    # written: that is the published watermark (Progress).
    watermark: datetime
    # Where the sink pays back what the flow makes of the entry; None for
    # items a test made.
    ticket: Ticket | None = None


def one_item(entry: FeedEntry) -> int:
    """What most flows make of an entry: one item."""
    return 1


def flow_source(
    flow: str, weigh: Callable[[FeedEntry], int] = one_item
) -> Callable[..., FeedSource]:
    """A flow's `feed_source(settings, name=flow, **options)`: the change
    feed as that flow reads it; `name` is what its progress is recorded
    under, `options` go to FeedSource (start, stop_at, ...)."""

    def feed_source(settings: Settings, name: str = flow, **options: Any) -> FeedSource:
        return FeedSource(name, settings, weigh=weigh, **options)

    return feed_source


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
    poll emits (default: settings.dataflow.feed_batch_size). `weigh`: how
    many items the flow makes of an entry, each of which its sink pays back
    once written (the ledger); the watermark waits for them.
    """

    def __init__(
        self,
        flow: str,
        settings: Settings,
        *,
        start: datetime | None = None,
        stop_at: datetime | None = None,
        batch_size: int | None = None,
        weigh: Callable[[FeedEntry], int] = one_item,
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
        self.weigh = weigh
        self.clock = clock

    def list_parts(self) -> list[str]:
        check_shards(self.settings, self.flow)
        # Every worker can read every shard; Bytewax gives each to one worker.
        return [str(shard) for shard in range(self.settings.feed.shards)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: ShardState | None
    ) -> _ShardPartition:
        resumed = resume_state is not None
        if resume_state is None:
            start = self.start or self.clock() - timedelta(days=self.settings.feed.ttl_days)
            resume_state = ShardState(start)
        return _ShardPartition(self, int(for_part), resume_state, resumed)


class _ShardPartition(StatefulSourcePartition[FeedItem, ShardState]):
    def __init__(self, source: FeedSource, shard: int, state: ShardState, resumed: bool) -> None:
        settings = source.settings
        self._flow = source.flow
        self._shard = shard
        self._cassandra = settings.cassandra
        self._stop_at = source.stop_at
        self._batch_size = source.batch_size
        self._clock = source.clock
        self._weigh = source.weigh
        self._lag = timedelta(seconds=settings.feed.reader_lag_s)
        self._overlap = timedelta(seconds=settings.dataflow.feed_overlap_s)
        self._poll = timedelta(seconds=settings.dataflow.poll_interval_s)
        self._sweep_every = timedelta(seconds=settings.dataflow.sweep_interval_s)
        self._position = state.position
        self._emitted = set(state.emitted)
        self._reads = 0  # reads that emitted entries, numbered for the ledger
        self._swept_at: datetime | None = None
        self._next_poll = source.clock()
        self._awake: datetime | None = None
        self._stopping = False  # stop_at is queued to be published
        self._read_at = source.clock()  # when this shard last read an entry
        self._entries = ENTRIES_READ.labels(self._flow, str(shard))
        self._doorbell = doorbell.listen(settings)
        self._rang = self._doorbell.rings(shard)
        # When the oldest and the newest ring not answered yet were heard.
        self._rung: tuple[datetime, datetime] | None = None

        db = acquire_db(self._cassandra)
        self._redis = connect(settings.redis)
        self._ledger = Ledger(self._redis, self._flow, shard)
        self._reader = FeedReader(db.session, db.keyspace, settings.feed)
        grace = _RESUME_GRACE if resumed else timedelta(0)
        self._progress = Progress(
            self._flow, shard, db.session,
            db.prepare(DATAFLOW_PROGRESS.insert(), idempotent=True), self._ledger,
            # Until the first sweep, only what precedes the overlap is certain.
            state.position - self._overlap, source.clock() + grace, source.clock,
        )  # fmt: skip

    def next_batch(self) -> list[FeedItem]:
        now = self._clock()
        if self._stop_at is not None and self._position >= self._stop_at:
            return self._finish(now)
        self._answer_doorbell(now)
        if now < self._next_poll:  # woken to look at the doorbell and the ledger
            self._progress.publish(wait=False)
            self._wake(now)
            return []
        readable = now - self._lag
        if self._stop_at is not None:
            readable = min(readable, self._stop_at)
        until = max(self._position, min(readable, self._position + _MAX_SPAN))
        idle = self._idle(now)
        poll = _IDLE_POLL if idle else self._poll
        sweep = idle or self._swept_at is None or now >= self._next_sweep()
        if until == self._position and not sweep:
            self._progress.publish(wait=False)
            self._next_poll = self._after_poll(now, until, poll, idle)
            self._wake(now)
            return []
        entries, full = self._read(until, sweep)
        if full:
            # Stopped early: the rest is read next time; the position only
            # covers what was emitted (ties are re-read and dropped).
            until = max(self._position, entries[-1].feed_time)
        self._advance(until)
        read = self._reads + 1 if entries else self._reads
        # Owed before the sweep waits to be published (by another thread too).
        ticket = self._owe(read, entries)
        if sweep and not full:
            self._swept_at = now
            self._progress.swept(read, until, now)
        swept = self._progress.swept_until
        items = [FeedItem(entry, swept, ticket) for entry in entries]
        self._progress.publish(wait=False)
        caught_up = not full and until >= readable
        self._next_poll = self._after_poll(now, until, poll, idle) if caught_up else now
        self._wake(now)
        if entries:
            self._read_at = now
        self._entries.inc(len(entries))
        return items

    def _answer_doorbell(self, now: datetime) -> None:
        """Rung since the last look: an entry was written, and is readable
        one reader lag from now; poll then, unless a poll comes sooner."""
        rang = self._doorbell.rings(self._shard)
        if rang != self._rang:
            self._rang = rang
            self._rung = (self._rung[0], now) if self._rung else (now, now)
        if self._rung:
            self._next_poll = min(self._next_poll, self._rung[0] + self._lag)

    def _after_poll(
        self, now: datetime, read_until: datetime, poll: timedelta, idle: bool
    ) -> datetime:
        """The next poll after one that read up to `read_until`: a poll
        later, or sooner for a ring it did not answer yet (heard after
        `read_until`: its entry was not readable) or, unless idle, for the
        next sweep."""
        first, last = self._rung or (None, None)
        if last is not None and last <= read_until:
            self._rung = None
        elif first is not None and first <= read_until:
            self._rung = (last, last)
        due = min(now + poll, self._rung[0] + self._lag) if self._rung else now + poll
        return due if idle else min(due, self._next_sweep())

    def _next_sweep(self) -> datetime:
        """The first point of the sweep grid (multiples of the sweep interval
        since the epoch) after the last sweep. Every busy shard of every flow
        sweeps on the one grid (a first sweep, or an idle shard's, may fall
        off it): a flow's watermark is its slowest shard's, which then trails
        by one interval, not by the spread of its shards' phases; and a sweep
        is not put off by polls in between."""
        assert self._swept_at is not None
        return floor_to(self._swept_at, self._sweep_every) + self._sweep_every

    def _idle(self, now: datetime) -> bool:
        return now - self._read_at > IDLE_AFTER

    def _wake(self, now: datetime) -> None:
        """Wake for the next poll, and meanwhile to look at the doorbell and
        the ledger: a look costs no feed read."""
        if self._next_poll <= now:
            self._awake = None
            return
        look = _IDLE_LOOK if self._idle(now) and not self._progress.waiting else LOOK_EVERY
        self._awake = min(self._next_poll, now + look)

    def _owe(self, read: int, entries: list[FeedEntry]) -> Ticket | None:
        """Records in the ledger what the sinks owe for the entries of read
        number `read`, before they are emitted."""
        if not entries:
            return None
        self._reads = read
        return self._ledger.owe(read, sum(map(self._weigh, entries)))

    def _finish(self, now: datetime) -> list[FeedItem]:
        """At stop_at: publish it once everything read is written, then stop.
        Queued once, behind any sweep still waiting: stopping when those are
        published would leave stop_at unpublished."""
        if not self._stopping:
            self._stopping = True
            self._progress.swept(self._reads, self._position, now)
        self._progress.publish(wait=False)
        if self._progress.waiting:
            self._awake = now + self._poll
            return []
        log.info("feed_caught_up", flow=self._flow, shard=self._shard, position=self._position)
        raise StopIteration

    def _read(self, until: datetime, sweep: bool) -> tuple[list[FeedEntry], bool]:
        """New entries up to `until`, those that landed behind the position
        first when sweeping; and whether the batch size cut the read short."""
        entries: list[FeedEntry] = []
        after = self._unread_after(until) if sweep else self._position
        if after is None:
            return entries, False
        for entry in self._reader.read(self._shard, after, until):
            if entry.feed_id in self._emitted:
                continue
            self._emitted.add(entry.feed_id)
            entries.append(entry)
            if len(entries) >= self._batch_size:
                return entries, True
        return entries, False

    def _unread_after(self, until: datetime) -> datetime | None:
        """Where a sweep's read starts: before the overlap when an entry
        landed there late, else at the position; None when nothing up to
        `until` is unread. It reads ids only, those of the overlap, plus
        those up to `until` when the shard is caught up: a sweep that finds
        nothing new then costs one query, not two."""
        low = self._position - self._overlap
        caught_up = until - self._position <= self._overlap
        ids = self._reader.ids(self._shard, low, until if caught_up else self._position)
        unread = [feed_id for feed_id in ids if feed_id not in self._emitted]
        if any(time_of(feed_id) <= self._position for feed_id in unread):
            return low
        return self._position if unread or not caught_up else None

    def _advance(self, position: datetime) -> None:
        self._position = position
        horizon = position - self._overlap
        self._emitted = {i for i in self._emitted if time_of(i) > horizon}

    def next_awake(self) -> datetime | None:
        return None if self._awake is None else self._awake.replace(tzinfo=UTC)

    def snapshot(self) -> ShardState:
        return ShardState(self._position, tuple(self._emitted))

    def close(self) -> None:
        self._progress.close()
        self._redis.close()
        release_db(self._cassandra)


def _naive(moment: datetime | None) -> datetime | None:
    return None if moment is None else to_stored_time(moment)
