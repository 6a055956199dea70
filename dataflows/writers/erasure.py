"""Erasure in the dataflows: what each flow does with a learner's erase
entry (cql/erasure.py) and with that learner's utterances accepted before
it.

- An erase entry becomes an `Erasure` item, keyed by learner like the
  facts, so it reaches the one writer of that learner. `ErasingWriter`
  wraps a counting writer (error counts, learning buckets): it deletes every
  partition the flow wrote for the learner's days (erased_learner_days,
  recorded by the API), then builds its writer anew, which drops all it
  held in memory (the next batches read what they need again).
- Every fact of a learner is checked against the learner's latest
  `erased_at`, read from erased_learners the first time the writer meets the
  learner (one read per learner not held) and kept current by erase
  entries: a fact accepted before it is skipped. Feed shards are read
  independently, so an utterance of an erased learner can arrive after the
  erase entry; a restart or a replay reads the record again. Nothing of an
  erased learner comes back.
- The insights flow, whose batches are routed by learner too, skips erased
  learners' utterances the same way and deletes the insights it served for
  the erased days' months.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from cql.clock import month_start, year_start
from cql.erasure import ERASED_DAYS, LATEST_ERASURES, erased_before
from cql.error_counts import ERROR_COUNTS, ERROR_POINTS, ERROR_TOTALS, MONTH_ROWS_BUCKET
from cql.learning import LEARNING_BUCKETS, LEARNING_EVENTS
from cql.session import Db
from cql.table import Table
from dataflows.connectors.feed_source import FeedItem
from dataflows.connectors.sinks import (
    Learner,
    Stamped,
    Writer,
    WriterFactory,
    Written,
    execute_all,
    tenant_chunks,
)
from runtime.settings import Settings

# (table, partition key) pairs a flow wrote for a learner with these days.
Partitions = Callable[[Learner, list[datetime]], list[tuple[Table[Any], tuple[Any, ...]]]]


class Erasure(msgspec.Struct, frozen=True):
    tenant: str
    user_id: str
    erased_at: datetime


def erasure_of(item: FeedItem) -> Stamped[Erasure] | None:
    """The erasure an erase entry announces; None for an utterance."""
    e = item.entry
    if e.erased_at is None:
        return None
    return Stamped(Erasure(e.tenant, e.user_id, e.erased_at), item.watermark, item.ticket)


def error_partitions(learner: Learner, days: list[datetime]) -> list[tuple[Table[Any], tuple]]:
    """Facts by day; minute rows by day (stored until minute windows were
    counted from the facts, and still erased), hour rows by month, day rows
    by year, month rows and totals by learner (cql/error_counts.py)."""
    months, years = {month_start(d) for d in days}, {year_start(d) for d in days}
    return [
        *((ERROR_POINTS, (*learner, day)) for day in days),
        *((ERROR_COUNTS, (*learner, "minute", day)) for day in days),
        *((ERROR_COUNTS, (*learner, "hour", month)) for month in months),
        *((ERROR_COUNTS, (*learner, "day", year)) for year in years),
        (ERROR_COUNTS, (*learner, "month", MONTH_ROWS_BUCKET)),
        (ERROR_TOTALS, learner),
    ]


def learning_partitions(learner: Learner, days: list[datetime]) -> list[tuple[Table[Any], tuple]]:
    """Facts by day, quarter-hour buckets by month (cql/learning.py)."""
    months = {month_start(d) for d in days}
    return [
        *((LEARNING_EVENTS, (*learner, day)) for day in days),
        *((LEARNING_BUCKETS, (*learner, month)) for month in months),
    ]


class ErasedLearners:
    """The latest erased_at of each learner met (None: never erased), least
    recently used out first."""

    def __init__(self, db: Db, settings: Settings) -> None:
        self._session = db.session
        self._concurrency = settings.cassandra.max_in_flight
        self._capacity = settings.dataflow.held_partitions
        self._latest = db.prepare(LATEST_ERASURES, idempotent=True)
        self._held: OrderedDict[Learner, datetime | None] = OrderedDict()

    def load(self, learners: Iterable[Learner]) -> dict[Learner, datetime | None]:
        wanted = list(dict.fromkeys(learners))
        missing = [learner for learner in wanted if learner not in self._held]
        self._held.update(self._read(missing))
        for learner in wanted:
            self._held.move_to_end(learner)
        found = {learner: self._held[learner] for learner in wanted}
        while len(self._held) > max(self._capacity, len(wanted)):
            self._held.popitem(last=False)
        return found

    def _read(self, learners: Sequence[Learner]) -> dict[Learner, datetime | None]:
        """Afresh from erased_learners, several learners of a tenant per read."""
        tenants = tenant_chunks(learners)
        results = execute_all(
            self._session, ((self._latest, t) for t in tenants), self._concurrency
        )
        latest: dict[Learner, datetime | None] = dict.fromkeys(learners)
        for (tenant, _some), rows in zip(tenants, results, strict=True):
            latest.update(((tenant, user_id), erased_at) for user_id, erased_at in rows)
        return latest

    def note(self, erasure: Erasure) -> None:
        learner = (erasure.tenant, erasure.user_id)
        known = self._held.get(learner)
        self._held[learner] = max(erasure.erased_at, known or erasure.erased_at)


class Deleter:
    """Deletes the partitions of an erased learner's days, synchronously."""

    def __init__(self, db: Db, settings: Settings, tables: Iterable[Table[Any]]) -> None:
        self._session = db.session
        self._concurrency = settings.cassandra.max_in_flight
        self._days = db.prepare(ERASED_DAYS.select(columns=("day",)), idempotent=True)
        self._deletes = {t.name: db.prepare(t.delete(), idempotent=True) for t in tables}

    def days(self, erasures: Sequence[Erasure]) -> list[list[datetime]]:
        params = [(e.tenant, e.user_id, e.erased_at) for e in erasures]
        results = execute_all(self._session, ((self._days, p) for p in params), self._concurrency)
        return [[day for (day,) in rows] for rows in results]

    def delete(self, partitions: Iterable[tuple[Table[Any], tuple[Any, ...]]]) -> None:
        statements = ((self._deletes[table.name], key) for table, key in partitions)
        execute_all(self._session, statements, self._concurrency)


class ErasingWriter:
    """A counting writer that carries out erasures and skips the facts of
    erased learners (see the module docstring)."""

    def __init__(
        self, db: Db, settings: Settings, make_writer: WriterFactory[Any], partitions: Partitions
    ) -> None:
        self._make = lambda: make_writer(db, settings)
        self._writer: Writer[Any] = self._make()
        self._partitions = partitions
        self._erased = ErasedLearners(db, settings)
        tables = {t.name: t for t, _k in partitions(("", ""), [datetime(1970, 1, 1)])}
        self._deleter = Deleter(db, settings, tables.values())
        self._done: set[Erasure] = set()

    def write(self, items: Sequence[Stamped[Any]]) -> Written:
        erasures = [item.row for item in items if isinstance(item.row, Erasure)]
        for erasure in erasures:
            self._erased.note(erasure)
        facts = [item for item in items if not isinstance(item.row, Erasure)]
        erased = self._erased.load((f.row.tenant, f.row.user_id) for f in facts)
        live = [
            f
            for f in facts
            if not erased_before(erased[(f.row.tenant, f.row.user_id)], f.row.written_at)
        ]
        new = [e for e in dict.fromkeys(erasures) if e not in self._done]
        if new:
            self._erase(new)
        learners, events = self._writer.write(live) if live else (set(), [])
        return Written(learners | {(e.tenant, e.user_id) for e in erasures}, events)

    def _erase(self, erasures: list[Erasure]) -> None:
        days = self._deleter.days(erasures)
        self._deleter.delete(
            part
            for erasure, learner_days in zip(erasures, days, strict=True)
            for part in self._partitions((erasure.tenant, erasure.user_id), learner_days)
        )
        # A new writer holds nothing: what the old one held of the learner
        # (facts, day and month rows) is gone with the rows.
        self._writer = self._make()
        self._done.update(erasures)


def erasing(make_writer: WriterFactory[Any], partitions: Partitions) -> WriterFactory[Any]:
    """`make_writer` wrapped in an ErasingWriter, for a LearnerSink."""
    return lambda db, settings: ErasingWriter(db, settings, make_writer, partitions)
