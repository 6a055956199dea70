"""Writes error points as facts and recounts every error window they touch.

For one batch of error points (see cql/schema/005_error_counts.cql), per
(learner, UTC day) touched:

1. the day's facts are read (one partition of error_points_by_user_day) and
   the batch's points merged in, keyed by (utterance_id, point index): a
   duplicate or replayed point is the same fact. When an utterance is in the
   feed twice (a retried request), the fact keeps the later acceptance time
   whichever entry comes first, so a replay reproduces `written_at`, and
   with it `late_events`, exactly;
2. the points that are new (or newly later) are written, then every touched
   (minute, hour, day) window is recounted from the merged facts, for the
   touched (category, subcategory) pairs;
3. each touched month is the sum of its day rows, and each touched pair's
   all-time total the sum of its month rows.

Every count is written as an absolute value. Phases run one after another,
each with bounded concurrency across learners, and a phase only reads what
earlier phases wrote once those writes are acknowledged (LOCAL_QUORUM both
ways). Reading before writing is safe because a learner has one writer (see
dataflows/sinks.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from cassandra.query import PreparedStatement

from cql.clock import month_start, year_start
from cql.error_counts import (
    ERROR_COUNTS,
    ERROR_POINTS,
    ERROR_TOTALS,
    MONTH_ROWS_BUCKET,
    ErrorCountRow,
    ErrorPointFact,
    ErrorTotalRow,
    Window,
    error_windows,
    month_window,
)
from cql.session import Db
from cql.table import Table
from dataflows.connectors.sinks import (
    Learner,
    Stamped,
    execute_all,
    latest_as_of,
    merge_facts,
    upsert_rows,
)
from runtime.settings import Settings

Pair = tuple[str, str]
Touched = tuple[Window, Pair]


class Tally(NamedTuple):
    count: int
    late: int


def recount(
    facts: Iterable[ErrorPointFact], touched: set[Touched], late_after: timedelta
) -> dict[Touched, Tally]:
    """Counts of the touched windows and pairs from one day's facts. A fact
    is late for a window when it was written more than `late_after` after
    the window's end."""
    counts: dict[Touched, Tally] = {}
    for fact in facts:
        pair = (fact.category, fact.subcategory)
        for window in error_windows(fact.ts):
            if (window, pair) in touched:
                count, late = counts.get((window, pair), (0, 0))
                late_now = fact.written_at > window.end + late_after
                counts[(window, pair)] = Tally(count + 1, late + late_now)
    return counts


def sum_by_pair(rows: Iterable[Sequence[Any]], pairs: set[Pair]) -> dict[Pair, Tally]:
    """Sums of (category, subcategory, count[, late_events]) rows per pair."""
    sums: dict[Pair, Tally] = {}
    for category, subcategory, count, *late in rows:
        pair = (category, subcategory)
        if pair in pairs:
            total, total_late = sums.get(pair, (0, 0))
            sums[pair] = Tally(total + count, total_late + sum(late))
    return sums


class ErrorCountWriter:
    def __init__(self, db: Db, settings: Settings) -> None:
        self._session = db.session
        self._concurrency = settings.cassandra.max_in_flight
        self._late_after = timedelta(seconds=settings.dataflow.late_after_s)
        p = db.prepare
        self._insert_fact = p(ERROR_POINTS.insert(), idempotent=True)
        self._day_facts = p(ERROR_POINTS.select(), idempotent=True)
        self._insert_count = p(ERROR_COUNTS.insert(), idempotent=True)
        self._days_of_month = p(
            ERROR_COUNTS.select(
                f"{ERROR_COUNTS.key_where()} AND window_start >= ? AND window_start < ?",
                columns=("category", "subcategory", "count", "late_events"),
            ),
            idempotent=True,
        )
        self._months = p(
            ERROR_COUNTS.select(columns=("category", "subcategory", "count")), idempotent=True
        )
        self._insert_total = p(ERROR_TOTALS.insert(), idempotent=True)

    def write(self, points: Sequence[Stamped[ErrorPointFact]]) -> set[Learner]:
        as_of = latest_as_of(points)
        months = self._recount_days([point.row for point in points], as_of)
        pairs = self._sum_months(months, as_of)
        self._sum_totals(pairs, as_of)
        return set(as_of)

    def _recount_days(
        self, batch: list[ErrorPointFact], as_of: dict[Learner, datetime]
    ) -> dict[tuple[str, str, datetime], set[Pair]]:
        """Facts, then minute, hour and day rows; returns the pairs touched
        per month."""
        by_day: dict[tuple[str, str, datetime], list[ErrorPointFact]] = defaultdict(list)
        for fact in batch:
            by_day[(fact.tenant, fact.user_id, fact.day)].append(fact)
        days = list(by_day)
        stored = self._run((self._day_facts, day) for day in days)
        writes: list[ErrorPointFact] = []
        rows: list[ErrorCountRow] = []
        months: dict[tuple[str, str, datetime], set[Pair]] = defaultdict(set)
        for key, result in zip(days, stored, strict=True):
            tenant, user_id, day = key
            facts, changed = merge_facts(
                ERROR_POINTS, map(ERROR_POINTS.from_row, result), by_day[key]
            )
            writes.extend(changed)
            touched = {
                (window, (f.category, f.subcategory))
                for f in by_day[key]
                for window in error_windows(f.ts)
            }
            for (window, pair), tally in recount(facts, touched, self._late_after).items():
                rows.append(_count_row(tenant, user_id, window, pair, tally, as_of))
            months[(tenant, user_id, month_start(day))].update(pair for _w, pair in touched)
        self._upsert(self._insert_fact, ERROR_POINTS, writes)
        self._upsert(self._insert_count, ERROR_COUNTS, rows)
        return months

    def _sum_months(
        self, months: dict[tuple[str, str, datetime], set[Pair]], as_of: dict[Learner, datetime]
    ) -> dict[Learner, set[Pair]]:
        """Month rows from the day rows; returns the pairs touched per learner."""
        keys = list(months)
        reads = (
            (self._days_of_month, (t, u, "day", year_start(m), m, month_window(m).end))
            for t, u, m in keys
        )
        rows: list[ErrorCountRow] = []
        pairs: dict[Learner, set[Pair]] = defaultdict(set)
        for key, result in zip(keys, self._run(reads), strict=True):
            tenant, user_id, month = key
            for pair, tally in sum_by_pair(result, months[key]).items():
                rows.append(_count_row(tenant, user_id, month_window(month), pair, tally, as_of))
            pairs[(tenant, user_id)].update(months[key])
        self._upsert(self._insert_count, ERROR_COUNTS, rows)
        return pairs

    def _sum_totals(self, pairs: dict[Learner, set[Pair]], as_of: dict[Learner, datetime]) -> None:
        """Each touched pair's all-time total from its month rows."""
        learners = list(pairs)
        reads = ((self._months, (t, u, "month", MONTH_ROWS_BUCKET)) for t, u in learners)
        rows: list[ErrorTotalRow] = []
        for learner, result in zip(learners, self._run(reads), strict=True):
            for (category, subcategory), tally in sum_by_pair(result, pairs[learner]).items():
                rows.append(
                    ErrorTotalRow(*learner, category, subcategory, tally.count, as_of[learner])
                )
        self._upsert(self._insert_total, ERROR_TOTALS, rows)

    def _run(self, statements: Iterable[tuple[Any, Sequence[Any]]]) -> list[Any]:
        return execute_all(self._session, statements, self._concurrency)

    def _upsert(self, insert: PreparedStatement, table: Table[Any], rows: Iterable[Any]) -> None:
        upsert_rows(self._session, insert, table, rows, self._concurrency)


def _count_row(
    tenant: str,
    user_id: str,
    window: Window,
    pair: Pair,
    tally: Tally,
    as_of: dict[Learner, datetime],
) -> ErrorCountRow:
    category, subcategory = pair
    return ErrorCountRow(
        tenant, user_id, window.kind, window.bucket, window.start, category, subcategory,
        tally.count, tally.late, as_of[(tenant, user_id)],
    )  # fmt: skip
