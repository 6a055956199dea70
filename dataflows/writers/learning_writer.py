"""Writes utterances as learning facts and rewrites every quarter-hour
bucket they touch, as soon as a batch arrives (see
cql/schema/006_learning.cql).

For one batch, per (learner, UTC day) touched: the batch's utterances are
merged into the day's facts, keyed by utterance_id (a duplicate keeps the
later acceptance time, as for error points: see
dataflows/connectors/sinks.py merge_into); new facts are written, and each
touched bucket with its absolute entry count, words and late events, from
the day's tallies (counted from all its facts when the day is first held,
then kept current fact by fact: dataflows/connectors/sinks.py DayTallies).
The facts of a day are read the first time a batch needs them and then
kept, current, in memory (one writer per learner; a restarted writer reads
them again).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import NamedTuple

from cql.clock import QUARTER_HOUR, floor_to, is_late, month_start
from cql.learning import (
    LEARNING_BUCKETS,
    LEARNING_EVENTS,
    LEARNING_FLOW,
    LearningBucketRow,
    LearningFact,
)
from cql.session import Db
from dataflows.connectors.sinks import (
    Day,
    DayTallies,
    HeldFacts,
    Stamped,
    Written,
    count_late,
    latest_as_of,
    upserts,
    write_all,
    written,
)
from live.events import learning_events
from runtime.settings import Settings


class Bucket(NamedTuple):
    entries: int
    words: int
    late: int


def tally_bucket(
    buckets: dict[datetime, Bucket], fact: LearningFact, sign: int, late_after: timedelta
) -> None:
    """Add a fact to (sign 1) or take it from (-1) its quarter-hour bucket. A
    fact is late when it was written more than `late_after` after its
    bucket's end."""
    start = floor_to(fact.ts, QUARTER_HOUR)
    entries, words, late = buckets.get(start, (0, 0, 0))
    late_now = is_late(fact.written_at, start + QUARTER_HOUR, late_after)
    buckets[start] = Bucket(
        entries + sign, words + sign * fact.words_learned, late + sign * late_now
    )


def recount_buckets(
    facts: Iterable[LearningFact], touched: set[datetime], late_after: timedelta
) -> dict[datetime, Bucket]:
    """Totals of the touched quarter-hour buckets from one day's facts."""
    buckets: dict[datetime, Bucket] = {}
    for fact in facts:
        tally_bucket(buckets, fact, 1, late_after)
    return {start: buckets[start] for start in touched if start in buckets}


def day_total(buckets: dict[datetime, Bucket]) -> tuple[int, int]:
    """A day's entries and words: the sum of its buckets."""
    return sum(b.entries for b in buckets.values()), sum(b.words for b in buckets.values())


class LearningWriter:
    def __init__(self, db: Db, settings: Settings) -> None:
        self._session = db.session
        self._concurrency = settings.cassandra.max_in_flight
        self._late_after = timedelta(seconds=settings.dataflow.late_after_s)
        self._facts = HeldFacts(db, settings, LEARNING_EVENTS)
        self._tallies = DayTallies(
            settings.dataflow.held_partitions, partial(tally_bucket, late_after=self._late_after)
        )
        self._insert_bucket = db.prepare(LEARNING_BUCKETS.insert(), idempotent=True)

    def write(self, events: Sequence[Stamped[LearningFact]]) -> Written:
        as_of = latest_as_of(events)
        by_day, held, changes = self._facts.merge(events)
        writes = written(changes)
        count_late(LEARNING_FLOW, writes, QUARTER_HOUR, self._late_after)
        rows: list[LearningBucketRow] = []
        totals: dict[Day, tuple[int, int]] = {}
        for key, batch in by_day.items():
            tenant, user_id, _day = key
            buckets = self._tallies.update(key, held[key], changes[key])
            totals[key] = day_total(buckets)
            for start in {floor_to(fact.ts, QUARTER_HOUR) for fact in batch}:
                bucket = buckets[start]
                rows.append(
                    LearningBucketRow(
                        tenant, user_id, month_start(start), start,
                        bucket.entries, bucket.words, bucket.late, as_of[(tenant, user_id)],
                    )
                )  # fmt: skip
        write_all(
            self._session,
            upserts(self._facts.insert, LEARNING_EVENTS, writes)
            + upserts(self._insert_bucket, LEARNING_BUCKETS, rows),
            self._concurrency,
        )
        return Written(set(as_of), learning_events(rows, totals))
