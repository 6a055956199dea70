"""The change-feed source on the real feed table: every entry once, in feed
order, nothing skipped across polls, late landings, snapshots and batch
limits; it stops at `stop_at` and records its progress."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import bytewax.operators as op
import msgspec
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink
from cassandra.util import uuid_from_time

from cql.change_feed import CHANGE_FEED, FeedEntry, bucket_of, time_of
from cql.clock import floor_to, utc_now
from cql.learning import DATAFLOW_PROGRESS, ProgressRow
from cql.session import Db
from dataflows.connectors.feed_source import FeedItem, FeedSource, ShardState
from dataflows.connectors.ledger import pay
from dataflows.connectors.progress import AS_OF_LAG, READ_LAG, ShardsDropped, forget_progress
from live import doorbell
from runtime.settings import Settings
from tests.dataflow_helpers import flow_settings, progress_becomes, progress_of, run


def write_entries(
    db: Db, settings: Settings, tenant: str, times: list[tuple[int, datetime]]
) -> list[FeedEntry]:
    """Feed entries of `tenant` in the given (shard, feed time)s."""
    insert = db.prepare(CHANGE_FEED.insert())
    entries = []
    for i, (shard, moment) in enumerate(times):
        entry = FeedEntry(
            shard, bucket_of(moment, settings.feed.bucket_s), uuid_from_time(moment), tenant,
            f"utt-{i}", "u-1", "c-1", "text", moment, [("grammar", "articles")], 1,
        )  # fmt: skip
        db.session.execute(insert, CHANGE_FEED.values(entry))
        entries.append(entry)
    return entries


def ours(items: list[FeedItem], tenant: str) -> list[FeedItem]:
    # Other tests (and other engineers' tests) share the feed: keep our tenant's.
    return [item for item in items if item.entry.tenant == tenant]


class Clock:
    """A source's clock that a test moves on by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@contextmanager
def partition(source: FeedSource, shard: int, state: ShardState | None = None) -> Iterator[Any]:
    """The source's partition of `shard` (resumed from `state`), closed after."""
    part = source.build_part("read_feed", str(shard), state)
    try:
        yield part
    finally:
        part.close()


def poll_until_stopped(part, client, limit: int = 1000) -> list[FeedItem]:
    """Poll to the end, paying back every item read at once, as a sink
    that wrote it would: the partition stops only once all are paid."""
    items: list[FeedItem] = []
    for _ in range(limit):
        try:
            batch = part.next_batch()
        except StopIteration:
            return items
        pay(client, (item.ticket for item in batch))
        items.extend(batch)
    raise AssertionError("the partition never reached stop_at")


@pytest.fixture
def tenant_name() -> str:
    return f"feed-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def now() -> datetime:
    """A "now" days back, with a clock the source is given: the feed there
    holds nothing but what a test writes (other tests write at the present)."""
    return utc_now() - timedelta(days=2, milliseconds=random.randrange(86_400_000))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_flow_reads_every_entry_once_in_feed_order(
    db, migrated, tenant_name, workers, now, redis_client
):
    settings = flow_settings(migrated)
    later = now + timedelta(seconds=1)  # past stop_at by more than the reader lag
    # Spread over several feed buckets and every shard, written out of order.
    times = [(i % settings.feed.shards, now - timedelta(seconds=3 * i + 1)) for i in range(60)]
    written = write_entries(db, settings, tenant_name, times)
    out: list[FeedItem] = []
    flow = Dataflow("feed_test")
    source = FeedSource(
        "feed_test", settings, start=now - timedelta(minutes=4), stop_at=now, clock=lambda: later
    )
    items = op.input("read_feed", flow, source)
    paid = op.inspect("pay", items, lambda _step, item: pay(redis_client, [item.ticket]))
    op.output("collect", paid, TestingSink(out))
    run(flow, workers)

    got = ours(out, tenant_name)
    assert sorted(i.entry.feed_id.bytes for i in got) == sorted(e.feed_id.bytes for e in written)
    for shard in range(settings.feed.shards):
        times_read = [i.entry.feed_time for i in got if i.entry.shard == shard]
        assert times_read == sorted(times_read)
    assert all(item.watermark >= item.entry.feed_time for item in got)


def test_a_write_landing_late_is_read_once_and_earlier_ones_not_again(
    db, migrated, tenant_name, now
):
    settings = flow_settings(migrated)
    clock = Clock(now)
    source = FeedSource("feed_test", settings, start=now - timedelta(seconds=30), clock=clock)
    with partition(source, 0) as part:
        (first,) = write_entries(db, settings, tenant_name, [(0, now - timedelta(seconds=10))])
        assert [i.entry.feed_id for i in ours(part.next_batch(), tenant_name)] == [first.feed_id]
        position = part.snapshot().position
        assert position == now - timedelta(seconds=settings.feed.reader_lag_s)
        # A write whose id is behind the position, but within the overlap, lands now.
        (late,) = write_entries(db, settings, tenant_name, [(0, position - timedelta(seconds=1))])
        clock.now = now + timedelta(seconds=1)
        assert [i.entry.feed_id for i in ours(part.next_batch(), tenant_name)] == [late.feed_id]
        clock.now = now + timedelta(seconds=2)
        assert ours(part.next_batch(), tenant_name) == []


def test_resuming_from_a_snapshot_neither_repeats_nor_skips(
    db, migrated, tenant_name, now, redis_client
):
    settings = flow_settings(migrated)
    # Three entries share one instant: a batch limit must not split them badly.
    times = [(1, now - timedelta(seconds=20 - i)) for i in range(9)] + [
        (1, now - timedelta(seconds=5))
    ] * 3
    written = write_entries(db, settings, tenant_name, times)
    clock = Clock(now + timedelta(seconds=1))
    source = FeedSource(
        "feed_test", settings, start=now - timedelta(seconds=30), stop_at=now, batch_size=2,
        clock=clock,
    )  # fmt: skip
    with partition(source, 1) as first:
        seen = ours(first.next_batch() + first.next_batch(), tenant_name)
        # Two batches of two; other tests' entries in the shared keyspace
        # may take some of those places.
        assert len(seen) <= 4
        state = msgspec.msgpack.decode(msgspec.msgpack.encode(first.snapshot()), type=ShardState)
    with partition(source, 1, state) as resumed:
        clock.now += timedelta(seconds=10)  # past a resumed partition's grace
        seen += ours(poll_until_stopped(resumed, redis_client), tenant_name)
    assert sorted(i.entry.feed_id.bytes for i in seen) == sorted(e.feed_id.bytes for e in written)


def test_the_partition_stops_at_stop_at_and_records_its_progress(
    db, migrated, tenant_name, now, redis_client
):
    settings = flow_settings(migrated)
    stop_at = now - timedelta(seconds=3)
    write_entries(
        db,
        settings,
        tenant_name,
        [(2, now - timedelta(seconds=5)), (2, now - timedelta(seconds=1))],
    )
    flow = f"feed-test-{uuid.uuid4().hex[:6]}"
    source = FeedSource(
        flow, settings, start=now - timedelta(seconds=30), stop_at=stop_at, clock=lambda: now
    )
    with partition(source, 2) as part:
        items = ours(poll_until_stopped(part, redis_client), tenant_name)
    assert [i.entry.feed_time for i in items] == [now - timedelta(seconds=5)]
    rows = [DATAFLOW_PROGRESS.from_row(r) for r in db.session.execute(
        db.prepare(DATAFLOW_PROGRESS.select()), (flow,)
    )]  # fmt: skip
    assert [(r.shard, r.position) for r in rows] == [(2, stop_at)]


def test_a_sweep_is_published_only_once_its_items_are_paid_back(
    db, migrated, tenant_name, now, redis_client
):
    """The watermark waits for the sinks: a sweep that read entries is not
    published while any item of a read up to it is owed, whatever comes
    later; paying them back publishes it."""
    settings = flow_settings(migrated)
    lag = timedelta(seconds=settings.feed.reader_lag_s)
    sweep = timedelta(seconds=settings.dataflow.sweep_interval_s)
    write_entries(db, settings, tenant_name, [(2, now - timedelta(seconds=2))] * 2)
    flow = f"feed-test-{uuid.uuid4().hex[:6]}"
    clock = Clock(now)
    source = FeedSource(
        flow, settings, start=now - timedelta(seconds=10), weigh=lambda e: 3, clock=clock
    )
    with partition(source, 2) as part:
        batch = part.next_batch()
        first = ours(batch, tenant_name)
        assert len(first) == 2 and progress_of(db, flow) is None
        ticket, owed = first[0].ticket, 3 * len(batch)  # one read: one ticket
        clock.now = now + 2 * sweep  # later sweeps, nothing of ours read
        pay_theirs(redis_client, part.next_batch(), tenant_name, 3)
        assert progress_of(db, flow) is None
        pay(redis_client, [ticket] * (owed - 1))  # one item still owed
        clock.now = now + 3 * sweep
        pay_theirs(redis_client, part.next_batch(), tenant_name, 3)
        assert progress_of(db, flow) is None
        assert all(item.watermark == now - lag for item in first)  # read, not written
        pay(redis_client, [ticket])
        clock.now = now + 4 * sweep
        pay_theirs(redis_client, part.next_batch(), tenant_name, 3)
        expected = now + 4 * sweep - lag
        assert progress_becomes(db, flow, expected) == expected


def test_a_paid_sweep_is_published_while_its_worker_is_busy(
    db, migrated, tenant_name, now, redis_client
):
    """The worker that reads a shard also runs sinks, for up to 0.4 s a
    call under load: the process's publisher thread publishes a sweep once
    its items are paid, with no further call to the partition."""
    settings = flow_settings(migrated)
    lag = timedelta(seconds=settings.feed.reader_lag_s)
    write_entries(db, settings, tenant_name, [(2, now - timedelta(seconds=2))])
    flow = f"feed-test-{uuid.uuid4().hex[:6]}"
    source = FeedSource(flow, settings, start=now - timedelta(seconds=10), clock=lambda: now)
    with partition(source, 2) as part:
        items = part.next_batch()
        assert ours(items, tenant_name) and progress_of(db, flow) is None
        pay(redis_client, [item.ticket for item in items])
        assert progress_becomes(db, flow, now - lag) == now - lag


def pay_theirs(client, items: list[FeedItem], tenant: str, weight: int) -> None:
    """Pay back what a sweep read of other tests' entries (the feed is
    shared, and they may lie in any window): owed, they would hold the
    sweep back."""
    pay(
        client,
        (item.ticket for item in items if item.entry.tenant != tenant for _ in range(weight)),
    )


def test_a_resumed_partition_publishes_nothing_at_first(db, migrated, now, redis_client):
    """Items its previous run left in the collect step are no ledger's:
    they get a few seconds to be written before anything is published."""
    settings = flow_settings(migrated)
    flow = f"feed-test-{uuid.uuid4().hex[:6]}"
    clock = Clock(now)
    source = FeedSource(flow, settings, clock=clock)
    with partition(source, 4, ShardState(now - timedelta(seconds=5))) as part:
        # Paid back at once: other tests' entries may lie in the window.
        pay(redis_client, [item.ticket for item in part.next_batch()])
        assert progress_of(db, flow) is None
        clock.now = now + timedelta(seconds=6)
        pay(redis_client, [item.ticket for item in part.next_batch()])
        assert progress_of(db, flow) is not None


def test_it_polls_at_once_when_behind_and_waits_when_caught_up(db, migrated, now):
    settings = flow_settings(migrated)
    # On the sweep grid, so the next sweep is not due before the next poll.
    now = floor_to(now, timedelta(seconds=settings.dataflow.sweep_interval_s))
    clock = Clock(now)
    source = FeedSource("feed_test", settings, start=now - timedelta(hours=1), clock=clock)
    with partition(source, 3) as part:
        part.next_batch()
        assert part.next_awake() is None  # an hour behind: one poll covers ten minutes
        poll_until_stopped_or(part, lambda: part.next_awake() is not None)
        assert part.snapshot().position == now - timedelta(seconds=settings.feed.reader_lag_s)
        expected = now + timedelta(seconds=settings.dataflow.poll_interval_s)
        assert part.next_awake().replace(tzinfo=None) == expected


def poll_until_stopped_or(part, done, limit: int = 100) -> None:
    for _ in range(limit):
        part.next_batch()
        if done():
            return
    raise AssertionError("never caught up")


def test_the_overlap_must_cover_the_reader_lag(migrated):
    settings = msgspec.structs.replace(
        migrated, dataflow=msgspec.structs.replace(migrated.dataflow, feed_overlap_s=1.0)
    )
    with pytest.raises(ValueError, match="feed_overlap_s"):
        FeedSource("feed_test", settings)


def test_a_flow_refuses_fewer_shards_than_it_has_read(db, migrated):
    """Entries the API wrote into a shard the flow no longer reads would
    never be counted: the flow does not start."""
    flow = f"shards-{uuid.uuid4().hex[:8]}"
    shards = migrated.feed.shards
    row = ProgressRow(flow, shards, utc_now(), utc_now())
    db.session.execute(db.prepare(DATAFLOW_PROGRESS.insert()), DATAFLOW_PROGRESS.values(row))
    with pytest.raises(ShardsDropped, match=rf"feed.shards is {shards}.*\[{shards}\]"):
        FeedSource(flow, migrated).list_parts()
    more = msgspec.structs.replace(
        migrated, feed=msgspec.structs.replace(migrated.feed, shards=shards + 1)
    )
    assert FeedSource(flow, more).list_parts() == [str(s) for s in range(shards + 1)]


def test_a_fresh_run_forgets_its_earlier_progress_and_nothing_else(db, migrated):
    gone, kept = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("gone", "kept"))
    insert = db.prepare(DATAFLOW_PROGRESS.insert())
    for flow in (gone, kept):
        for shard in (0, 7):
            row = ProgressRow(flow, shard, utc_now(), utc_now())
            db.session.execute(insert, DATAFLOW_PROGRESS.values(row))
    shards = db.prepare(DATAFLOW_PROGRESS.select(columns=("shard",)))

    forget_progress(db, gone)

    assert list(db.session.execute(shards, (gone,))) == []
    assert [shard for (shard,) in db.session.execute(shards, (kept,))] == [0, 7]


def test_emitted_ids_are_forgotten_once_behind_the_overlap(db, migrated, tenant_name, now):
    settings = flow_settings(migrated)
    clock = Clock(now)
    write_entries(db, settings, tenant_name, [(3, now - timedelta(seconds=1))])
    source = FeedSource("feed_test", settings, start=now - timedelta(seconds=5), clock=clock)
    with partition(source, 3) as part:
        clock.now = now + timedelta(seconds=1)
        assert len(ours(part.next_batch(), tenant_name)) == 1
        assert len(part.snapshot().emitted) >= 1
        clock.now = now + timedelta(seconds=settings.dataflow.feed_overlap_s + 2)
        part.next_batch()
        horizon = part.snapshot().position - timedelta(seconds=settings.dataflow.feed_overlap_s)
        assert all(time_of(i) > horizon for i in part.snapshot().emitted)


def test_the_watermark_advances_only_with_a_sweep_and_its_lags_are_exported(
    db, migrated, tenant_name, now, redis_client
):
    settings = flow_settings(migrated)
    lag = timedelta(seconds=settings.feed.reader_lag_s)
    sweep = timedelta(seconds=settings.dataflow.sweep_interval_s)
    now = floor_to(now, sweep)  # on the sweep grid: the next sweep is one interval on
    clock = Clock(now)
    flow = f"feed-test-{uuid.uuid4().hex[:6]}"
    source = FeedSource(flow, settings, start=now - timedelta(seconds=30), clock=clock)
    # A shard the other tests leave alone: an entry of theirs in range would
    # be owed to the sinks, and hold the sweep back.
    with partition(source, 5) as part:
        part.next_batch()  # the first poll sweeps
        swept = now - lag
        assert progress_becomes(db, flow, swept) == swept
        assert READ_LAG.labels(flow, "5")._value.get() == pytest.approx(lag.total_seconds())
        assert AS_OF_LAG.labels(flow, "5")._value.get() == pytest.approx(lag.total_seconds())
        # Between sweeps a poll reads new entries, but cannot vouch for late
        # landings behind it: its items keep the last sweep's watermark.
        clock.now = now + sweep / 2
        write_entries(db, settings, tenant_name, [(5, now)])
        (item,) = ours(part.next_batch(), tenant_name)
        assert item.watermark == swept
        pay(redis_client, [item.ticket])
        clock.now = now + sweep
        part.next_batch()
        assert progress_becomes(db, flow, now + sweep - lag) == now + sweep - lag


def test_a_busy_shard_sweeps_on_the_grid_every_shard_shares(
    db, migrated, tenant_name, now, redis_client
):
    """Sweeps fall on multiples of the sweep interval since the epoch,
    whatever the phase of the shard's first poll: every shard of a flow then
    publishes about the same watermark at about the same time."""
    settings = flow_settings(migrated)
    lag = timedelta(seconds=settings.feed.reader_lag_s)
    sweep = timedelta(seconds=settings.dataflow.sweep_interval_s)
    grid = floor_to(now, sweep)
    clock = Clock(grid + sweep * 0.6)
    flow = f"feed-test-{uuid.uuid4().hex[:6]}"
    source = FeedSource(flow, settings, start=grid - timedelta(seconds=30), clock=clock)
    # Shard 5, which the other tests leave alone, like the test above.
    with partition(source, 5) as part:
        pay_theirs(redis_client, part.next_batch(), tenant_name, 1)  # sweeps, off the grid
        clock.now = grid + sweep * 0.9
        pay_theirs(redis_client, part.next_batch(), tenant_name, 1)
        first = grid + sweep * 0.6 - lag
        assert progress_becomes(db, flow, first) == first, "no sweep before the grid"
        clock.now = grid + sweep  # less than an interval after the first sweep
        pay_theirs(redis_client, part.next_batch(), tenant_name, 1)
        assert progress_becomes(db, flow, grid + sweep - lag) == grid + sweep - lag


def ring(settings: Settings, redis_client, shard: int) -> None:
    """Ring `shard`'s doorbell until this process's listener heard it (it
    may still be subscribing)."""
    bell = doorbell.listen(settings)
    before, deadline = bell.rings(shard), time.monotonic() + 10
    while bell.rings(shard) == before:
        assert time.monotonic() < deadline, "the ring was never heard"
        redis_client.publish(doorbell.channel(settings), f"{shard} 11")
        time.sleep(0.05)


TIMER_LESS = timedelta(minutes=1)


def timer_less(settings: Settings) -> Settings:
    """Polls and sweeps a minute apart (the tests start on that sweep grid):
    only rings make a partition poll."""
    return msgspec.structs.replace(
        settings,
        dataflow=msgspec.structs.replace(
            settings.dataflow,
            poll_interval_s=TIMER_LESS.total_seconds(),
            sweep_interval_s=TIMER_LESS.total_seconds(),
        ),
    )


def ids_of(items: list[FeedItem], tenant: str) -> list[uuid.UUID]:
    return [item.entry.feed_id for item in ours(items, tenant)]


def test_a_rung_shard_polls_one_reader_lag_after_the_ring(
    db, migrated, tenant_name, now, redis_client
):
    settings = timer_less(flow_settings(migrated))
    lag = timedelta(seconds=settings.feed.reader_lag_s)
    now = floor_to(now, TIMER_LESS)
    clock = Clock(now)
    source = FeedSource("feed_test", settings, start=now - timedelta(seconds=5), clock=clock)
    with partition(source, 3) as part:
        part.next_batch()  # sweeps; the next poll is a minute away
        [entry] = write_entries(db, settings, tenant_name, [(3, now)])
        clock.now = now + timedelta(seconds=1)
        assert ours(part.next_batch(), tenant_name) == [], "not rung: no poll yet"
        ring(settings, redis_client, 3)
        assert ours(part.next_batch(), tenant_name) == [], "heard: a poll one reader lag on"
        clock.now += lag / 2
        assert ours(part.next_batch(), tenant_name) == [], "not before one reader lag"
        clock.now += lag / 2
        assert ids_of(part.next_batch(), tenant_name) == [entry.feed_id]


def test_a_ring_heard_as_a_poll_is_due_gets_a_poll_of_its_own(
    db, migrated, tenant_name, now, redis_client
):
    settings = timer_less(flow_settings(migrated))
    lag = timedelta(seconds=settings.feed.reader_lag_s)
    now = floor_to(now, TIMER_LESS)
    clock = Clock(now + timedelta(seconds=1))
    source = FeedSource("feed_test", settings, start=now - timedelta(seconds=5), clock=clock)
    with partition(source, 3) as part:
        part.next_batch()
        [first] = write_entries(db, settings, tenant_name, [(3, clock.now)])
        ring(settings, redis_client, 3)
        part.next_batch()  # heard: a poll one reader lag on
        clock.now += lag
        [second] = write_entries(db, settings, tenant_name, [(3, clock.now)])
        ring(settings, redis_client, 3)
        # This poll reads up to the first ring; the second entry is not readable.
        assert ids_of(part.next_batch(), tenant_name) == [first.feed_id]
        clock.now += lag
        assert ids_of(part.next_batch(), tenant_name) == [second.feed_id]


def test_an_idle_shard_sweeps_every_one_and_a_half_seconds_and_when_rung(
    db, migrated, tenant_name, now, redis_client
):
    settings = flow_settings(migrated)
    lag = timedelta(seconds=settings.feed.reader_lag_s)
    clock = Clock(now)
    # A flow of its own: progress of a shard beyond feed.shards would stop
    # the other tests' flows (check_shards).
    flow = f"feed-test-{uuid.uuid4().hex[:6]}"
    source = FeedSource(flow, settings, start=now - timedelta(seconds=5), clock=clock)
    # A shard the other tests leave alone: an entry of theirs would end idleness.
    with partition(source, 6) as part:
        part.next_batch()
        clock.now = now + timedelta(seconds=11)  # nothing read for 10 s: idle
        part.next_batch()  # sweeps; the next poll is 1.5 s away
        [first] = write_entries(db, settings, tenant_name, [(6, clock.now)])
        clock.now += timedelta(seconds=1.4)
        assert ours(part.next_batch(), tenant_name) == [], "idle, not rung: no poll yet"
        clock.now += timedelta(seconds=0.1)
        assert ids_of(part.next_batch(), tenant_name) == [first.feed_id]

        clock.now += timedelta(seconds=11)  # idle again
        part.next_batch()
        # Lands behind what that sweep read: only a sweep finds it.
        [second] = write_entries(db, settings, tenant_name, [(6, clock.now - lag * 2)])
        ring(settings, redis_client, 6)
        assert ours(part.next_batch(), tenant_name) == [], "heard: a poll one reader lag on"
        clock.now += lag
        assert ids_of(part.next_batch(), tenant_name) == [second.feed_id], "the poll sweeps"
