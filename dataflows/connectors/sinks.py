"""The sink the counting flows share, and bounded concurrent execution.

`LearnerSink` hands each batch of facts to a writer (error counts, learning
buckets), which records the facts and rewrites every served row they touch
with absolute values recounted from the facts. Then, in one Redis round
trip, it bumps the touched learners' cache generations
(runtime/generations.py, api/reads/answer_cache.py) and
pays the items back to the feed's ledger (their watermark may advance);
then it publishes the writer's live events, so a client that reads over
REST on an event is not answered from a stale cache.

Delivery guarantee: at-least-once. Bytewax replays whatever came after the
last snapshot after a crash; a repeated batch upserts the same facts and
rewrites the same counts, so it changes nothing.

Why recounts cannot race: a recount reads the facts and then writes the
count, so two writers interleaving on one learner could leave a count that
misses the other's facts. Every item reaching this sink comes out of a
window step keyed by learner, so all of a learner's items are on the one
worker that owns that key, and this sink (a DynamicSink: no exchange)
writes them there, one batch at a time. Do not put a step that
redistributes items between the window and the sink, and do not run a
replay of a flow while the same flow runs live.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial
from operator import attrgetter
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import msgspec
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent
from cassandra.query import BatchStatement, BatchType, BoundStatement, PreparedStatement, Statement
from prometheus_client import Counter

from cql.binding import bind
from cql.clock import floor_to, is_late
from cql.error_counts import ErrorPointFact
from cql.learning import LearningFact
from cql.session import Db
from cql.table import Table
from dataflows.connectors.ledger import Ticket, pay
from dataflows.resources import acquire_db, release_db
from live.bus import Publisher
from live.events import Event
from runtime.generations import queue_bumps
from runtime.redis_client import connect
from runtime.settings import Settings

R = TypeVar("R")
F = TypeVar("F", ErrorPointFact, LearningFact)
T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

Learner = tuple[str, str]

# What one unlogged batch holds at most: Cassandra warns about one across
# more than 10 partitions (unlogged_batch_across_partitions_warn_threshold),
# and 100 rows (about 12 KiB of error-count rows) stay under its size warning
# (ops/cassandra: 64 KiB). 100 rather than 25: an error-counter replay ran
# 15 % faster (fewer requests for the driver's one I/O thread and the GIL).
_ROWS_PER_BATCH = 100
_PARTITIONS_PER_BATCH = 10
# Batches a writer has in flight at once: 64 of 100 rows are about as many
# bytes as 256 single rows. With 256 such batches (two workers' worth, some
# 6 MiB) Cassandra stopped reading the connection for a while, its send
# buffer filled, and the driver refused the next request outright
# (ConnectionBusy), which stops the flow.
_BATCHES_IN_FLIGHT = 64
# Partitions one read takes (`IN ?`: a learner's days of facts, a tenant's
# learners): a cold writer (a replay, a restart) reads a partition per
# learner-day it meets, and each request costs the driver's I/O thread the
# GIL; a bound keeps each read small.
PARTITIONS_PER_READ = 8


class Stamped(msgspec.Struct, Generic[R], frozen=True):
    """A fact row, with the watermark of the feed read that produced it and
    where to pay it back once written (dataflows/connectors/ledger.py)."""

    row: R
    as_of: datetime
    ticket: Ticket | None = None


LATE_EVENTS = Counter(
    "utterstream_dataflow_late_events_total",
    "Facts a counting flow wrote that arrived after their smallest window's end plus late_after_s",
    ["flow"],
)


def count_late(flow: str, facts: Iterable[Any], step: timedelta, late_after: timedelta) -> None:
    """Counts the late ones among newly written facts (their `ts` window of
    `step`, accepted at `written_at`)."""
    late = sum(is_late(f.written_at, floor_to(f.ts, step) + step, late_after) for f in facts)
    if late:
        LATE_EVENTS.labels(flow).inc(late)


def learner_key_of(tenant: str, user_id: str) -> str:
    """The key a flow batches a learner's items by. It only routes and
    batches (writers read each item's own tenant and user_id), so even two
    learners sharing a key would still be counted apart."""
    return f"{tenant}\x1f{user_id}"


class Written(NamedTuple):
    """What a writer's batch changed: the learners whose served rows did,
    and the live events reporting the new values."""

    learners: set[Learner]
    events: list[Event]


class Writer(Protocol[T]):
    def write(self, items: Sequence[T]) -> Written:
        """Write one batch, durably."""
        ...


WriterFactory = Callable[[Db, Settings], Writer[T]]


class LearnerSink(DynamicSink[tuple[str, list[T]]], Generic[T]):
    """Consumes `(learner_key, items)` and writes them with a writer built
    by `make_writer(db, settings)` on each worker."""

    def __init__(self, settings: Settings, make_writer: WriterFactory[T]) -> None:
        self.settings = settings
        self.make_writer = make_writer

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LearnerSinkPartition[T]:
        return _LearnerSinkPartition(self.settings, self.make_writer)


class _LearnerSinkPartition(StatelessSinkPartition[tuple[str, list[T]]], Generic[T]):
    def __init__(self, settings: Settings, make_writer: WriterFactory[T]) -> None:
        self._cassandra = settings.cassandra
        db = acquire_db(settings.cassandra)
        self._writer = make_writer(db, settings)
        self._redis = connect(settings.redis)
        self._live = Publisher(settings)

    def write_batch(self, items: list[tuple[str, list[T]]]) -> None:
        values = [value for _key, batch in items for value in batch]
        written = self._writer.write(values)
        # A Redis failure stops the flow rather than leave cached answers
        # stale: on restart the batch is replayed and the bump retried.
        tickets = (value.ticket for value in values)
        pay(self._redis, tickets, also=partial(queue_bumps, learners=written.learners))
        self._live.publish(written.events)

    def close(self) -> None:
        self._redis.close()
        self._live.close()
        release_db(self._cassandra)


def execute_all(
    session: Session, statements: Iterable[tuple[Any, Sequence[Any] | None]], concurrency: int
) -> list[Any]:
    """Run (statement, params) pairs with at most `concurrency` in flight;
    the results in order. Raises the first failure: the flow then stops and
    resumes from its last snapshot, and every write here is idempotent."""
    results = execute_concurrent(
        session, list(statements), concurrency=concurrency, raise_on_first_error=True
    )
    return [result.result_or_exc for result in results]


def upserts(
    insert: PreparedStatement, table: Table[Any], rows: Iterable[Any]
) -> list[BoundStatement]:
    """The statements that upsert rows with `insert`, for `write_all`."""
    return [bind(insert, table.values(row)) for row in rows]


def write_all(session: Session, statements: Iterable[BoundStatement], concurrency: int) -> None:
    """Run idempotent upserts, as few requests as Cassandra takes without
    complaint (`batched`), at most `_BATCHES_IN_FLIGHT` at once; raises like
    execute_all."""
    execute_all(session, batched(session, statements), min(concurrency, _BATCHES_IN_FLIGHT))


def batched(session: Session, statements: Iterable[BoundStatement]) -> list[tuple[Statement, None]]:
    """The upserts as unlogged batches, each of partitions that have the
    same replicas: one request then costs Cassandra and the driver about
    half what a request per partition does, and its coordinator is a
    replica of every row. Each batch stays within Cassandra's warnings
    (`_ROWS_PER_BATCH`, `_PARTITIONS_PER_BATCH`). A batch is not atomic
    across partitions, nor needs to be: a write that fails stops the flow,
    which replays it whole, and every row is an absolute value."""
    metadata = session.cluster.metadata
    groups: dict[tuple[str, ...], dict[Any, list[BoundStatement]]] = defaultdict(
        lambda: defaultdict(list)
    )
    # A partition by its key's values, not its routing key: packing a
    # routing key costs more than binding the row did, so it is packed once
    # per partition, for its replicas.
    replica_sets: dict[tuple[Any, ...], tuple[str, ...]] = {}
    for upsert in statements:
        prepared = upsert.prepared_statement
        values = upsert.raw_values
        partition = (prepared.query_id, *[values[i] for i in prepared.routing_key_indexes])
        if partition not in replica_sets:
            replicas = metadata.get_replicas(upsert.keyspace, upsert.routing_key)
            replica_sets[partition] = tuple(sorted(str(host.endpoint) for host in replicas))
        groups[replica_sets[partition]][partition].append(upsert)
    return [
        (_request(rows), None) for partitions in groups.values() for rows in _packed(partitions)
    ]


def _packed(partitions: dict[Any, list[BoundStatement]]) -> list[list[BoundStatement]]:
    """The partitions' rows in batches of at most _ROWS_PER_BATCH rows from
    at most _PARTITIONS_PER_BATCH partitions; a partition with more rows
    than one batch takes is split."""
    batches: list[list[BoundStatement]] = [[]]
    in_last = 0  # partitions in the last batch
    for rows in partitions.values():
        for i in range(0, len(rows), _ROWS_PER_BATCH):
            chunk = rows[i : i + _ROWS_PER_BATCH]
            if len(batches[-1]) + len(chunk) > _ROWS_PER_BATCH or in_last == _PARTITIONS_PER_BATCH:
                batches.append([])
                in_last = 0
            batches[-1] += chunk
            in_last += 1
    return [rows for rows in batches if rows]


def _request(rows: list[BoundStatement]) -> Statement:
    if len(rows) == 1:
        return rows[0]
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    for row in rows:
        batch.add(row)
    batch.is_idempotent = all(row.is_idempotent for row in rows)
    return batch


def latest_as_of(items: Iterable[Stamped[Any]]) -> dict[Learner, datetime]:
    """Each learner's latest watermark among the items: their rows' as_of."""
    as_of: dict[Learner, datetime] = {}
    for item in items:
        learner = (item.row.tenant, item.row.user_id)
        as_of[learner] = max(as_of.get(learner, item.as_of), item.as_of)
    return as_of


Change = tuple[F | None, F]  # (the fact held before, if any; the fact held now)


def merge_into(table: Table[F], facts: dict[Any, F], batch: Iterable[F]) -> list[Change[F]]:
    """Merge `batch` into one partition's facts (keyed by the table's primary
    key: the utterance, and the point index for error points); return what
    changed, each fact that needs writing with the one it replaced. A fact
    keeps the latest `written_at`: an utterance in the feed twice was last
    accepted at the later time, whichever of its entries comes first."""
    key = attrgetter(*table.primary_key)
    changed: dict[Any, Change[F]] = {}
    for fact in batch:
        k = key(fact)
        current = facts.get(k)
        if current is None or current.written_at < fact.written_at:
            before = changed[k][0] if k in changed else current
            facts[k] = fact
            changed[k] = (before, fact)
    return list(changed.values())


class Loaded(Generic[K, V]):
    """What a writer has read of the tables it alone writes, kept current by
    its own writes: a bounded map (least recently used out first) filled by
    `load(keys)`, one concurrent read per key not held. Safe because each
    learner has one writer (see above); a restarted writer starts empty and
    reads again."""

    def __init__(self, capacity: int, read: Callable[[list[K]], list[V]]) -> None:
        self._held: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity
        self._read = read

    def load(self, keys: Iterable[K]) -> dict[K, V]:
        wanted = list(dict.fromkeys(keys))
        missing = [key for key in wanted if key not in self._held]
        for key, value in zip(missing, self._read(missing) if missing else [], strict=True):
            self._held[key] = value
        for key in wanted:
            self._held.move_to_end(key)
        loaded = {key: self._held[key] for key in wanted}
        while len(self._held) > max(self._capacity, len(wanted)):
            self._held.popitem(last=False)
        return loaded


Day = tuple[str, str, datetime]  # (tenant, user_id, UTC day)


class HeldFacts(Generic[F]):
    """A counting writer's facts: one partition per learner and UTC day,
    read the first time a batch touches it and then kept current here."""

    def __init__(self, db: Db, settings: Settings, table: Table[F]) -> None:
        self.table = table
        self.insert = db.prepare(table.insert(), idempotent=True)
        self._select = db.prepare(
            table.select("tenant = ? AND user_id = ? AND day IN ?"), idempotent=True
        )
        self._session = db.session
        self._concurrency = settings.cassandra.max_in_flight
        self._key = attrgetter(*table.primary_key)
        self._held = Loaded(settings.dataflow.held_partitions, self._read)

    def merge(
        self, items: Sequence[Stamped[F]]
    ) -> tuple[dict[Day, list[F]], dict[Day, dict[Any, F]], dict[Day, list[Change[F]]]]:
        """The batch's facts by day, every touched day's facts with the batch
        merged in, and what changed in each day (the facts that need writing)."""
        by_day: dict[Day, list[F]] = defaultdict(list)
        for item in items:
            by_day[(item.row.tenant, item.row.user_id, item.row.day)].append(item.row)
        held = self._held.load(by_day)
        changes = {key: merge_into(self.table, held[key], batch) for key, batch in by_day.items()}
        return by_day, held, changes

    def _read(self, days: list[Day]) -> list[dict[Any, F]]:
        """The facts of each day, read `PARTITIONS_PER_READ` days of a learner at a time."""
        learner_days: dict[Learner, list[datetime]] = defaultdict(list)
        for tenant, user_id, day in days:
            learner_days[(tenant, user_id)].append(day)
        reads = (
            (self._select, (tenant, user_id, some))
            for (tenant, user_id), these in learner_days.items()
            for some in in_chunks(these)
        )
        held: dict[Day, dict[Any, F]] = {day: {} for day in days}
        for rows in execute_all(self._session, reads, self._concurrency):
            for fact in map(self.table.from_row, rows):
                held[(fact.tenant, fact.user_id, fact.day)][self._key(fact)] = fact
        return [held[day] for day in days]


def in_chunks(values: list[V]) -> list[list[V]]:
    """`values` in lists of at most PARTITIONS_PER_READ, for `IN ?` reads."""
    return [values[i : i + PARTITIONS_PER_READ] for i in range(0, len(values), PARTITIONS_PER_READ)]


def tenant_chunks(learners: Iterable[Learner]) -> list[tuple[str, list[str]]]:
    """Learners (or any (tenant, id) keys) as (tenant, ids) of at most
    PARTITIONS_PER_READ, for `user_id IN ?` (`utterance_id IN ?`) reads."""
    users: dict[str, list[str]] = defaultdict(list)
    for tenant, user_id in learners:
        users[tenant].append(user_id)
    return [(tenant, some) for tenant, these in users.items() for some in in_chunks(these)]


def written(changes: dict[Day, list[Change[F]]]) -> list[F]:
    """The facts that need writing."""
    return [fact for day in changes.values() for _before, fact in day]


class DayTallies(Generic[F, K, V]):
    """What a writer serves of each held day (window counts, bucket totals),
    kept current change by change: a batch costs the facts it brings, not
    every fact of the days it touches. `tally(tallies, fact, sign)` adds a
    fact's part (sign 1) or takes it away (-1). A day not held is tallied
    from all its facts, read by HeldFacts, which hold what the tables hold
    (one writer per learner), so the two never disagree."""

    def __init__(self, capacity: int, tally: Callable[[dict[K, V], F, int], None]) -> None:
        self._held: OrderedDict[Day, dict[K, V]] = OrderedDict()
        self._capacity = capacity
        self._tally = tally

    def update(self, day: Day, facts: dict[Any, F], changes: list[Change[F]]) -> dict[K, V]:
        """The day's tallies with `changes` (already merged into `facts`) in."""
        tallies = self._held.pop(day, None)
        if tallies is None:
            tallies = {}
            for fact in facts.values():
                self._tally(tallies, fact, 1)
        else:
            for before, after in changes:
                if before is not None:
                    self._tally(tallies, before, -1)
                self._tally(tallies, after, 1)
        self._held[day] = tallies
        if len(self._held) > self._capacity:
            self._held.popitem(last=False)
        return tallies
