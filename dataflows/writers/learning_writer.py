"""Writes utterances as learning facts and recounts every quarter-hour
bucket they touch (see cql/schema/006_learning.cql).

For one batch, per (learner, UTC day) touched: the facts in the span of
touched buckets are read (one partition range of learning_events_by_user_day)
and the batch's utterances merged in, keyed by utterance_id (a duplicate
keeps the later acceptance time, as for error points: see
dataflows/sinks.py merge_facts); new facts are written, then each touched
bucket is rewritten with its absolute entry count, words and late events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from cql.clock import QUARTER_HOUR, floor_to, month_start
from cql.learning import LEARNING_BUCKETS, LEARNING_EVENTS, LearningBucketRow, LearningFact
from cql.session import Db
from dataflows.connectors.sinks import (
    Learner,
    Stamped,
    execute_all,
    latest_as_of,
    merge_facts,
    upsert_rows,
)
from runtime.settings import Settings


class Bucket(NamedTuple):
    entries: int
    words: int
    late: int


def recount_buckets(
    facts: Iterable[LearningFact], touched: set[datetime], late_after: timedelta
) -> dict[datetime, Bucket]:
    """Totals of the touched quarter-hour buckets. A fact is late when it was
    written more than `late_after` after its bucket's end."""
    buckets: dict[datetime, Bucket] = {}
    for fact in facts:
        start = floor_to(fact.ts, QUARTER_HOUR)
        if start in touched:
            entries, words, late = buckets.get(start, (0, 0, 0))
            late_now = fact.written_at > start + QUARTER_HOUR + late_after
            buckets[start] = Bucket(entries + 1, words + fact.words_learned, late + late_now)
    return buckets


class LearningWriter:
    def __init__(self, db: Db, settings: Settings) -> None:
        self._session = db.session
        self._concurrency = settings.cassandra.max_in_flight
        self._late_after = timedelta(seconds=settings.dataflow.late_after_s)
        p = db.prepare
        self._insert_fact = p(LEARNING_EVENTS.insert(), idempotent=True)
        self._facts = p(
            LEARNING_EVENTS.select(f"{LEARNING_EVENTS.key_where()} AND ts >= ? AND ts < ?"),
            idempotent=True,
        )
        self._insert_bucket = p(LEARNING_BUCKETS.insert(), idempotent=True)

    def write(self, events: Sequence[Stamped[LearningFact]]) -> set[Learner]:
        as_of = latest_as_of(events)
        by_day: dict[tuple[str, str, datetime], list[LearningFact]] = defaultdict(list)
        for event in events:
            fact = event.row
            by_day[(fact.tenant, fact.user_id, fact.day)].append(fact)
        touched = {
            day: {floor_to(fact.ts, QUARTER_HOUR) for fact in facts}
            for day, facts in by_day.items()
        }
        days = list(by_day)
        reads = (
            (self._facts, (*day, min(touched[day]), max(touched[day]) + QUARTER_HOUR))
            for day in days
        )
        writes: list[LearningFact] = []
        rows: list[LearningBucketRow] = []
        for day, result in zip(days, self._run(reads), strict=True):
            tenant, user_id, _ = day
            facts, changed = merge_facts(
                LEARNING_EVENTS, map(LEARNING_EVENTS.from_row, result), by_day[day]
            )
            writes.extend(changed)
            for start, bucket in recount_buckets(facts, touched[day], self._late_after).items():
                rows.append(
                    LearningBucketRow(
                        tenant, user_id, month_start(start), start,
                        bucket.entries, bucket.words, bucket.late, as_of[(tenant, user_id)],
                    )
                )  # fmt: skip
        upsert_rows(self._session, self._insert_fact, LEARNING_EVENTS, writes, self._concurrency)
        upsert_rows(self._session, self._insert_bucket, LEARNING_BUCKETS, rows, self._concurrency)
        return set(as_of)

    def _run(self, statements: Iterable[tuple[Any, Sequence[Any]]]) -> list[Any]:
        return execute_all(self._session, statements, self._concurrency)
