"""Writes error points as facts and rewrites every error window they touch,
as absolute counts, as soon as a batch arrives (see
cql/schema/005_error_counts.cql).

For one batch of error points, per (learner, UTC day) touched:

1. the points are merged into the day's facts, keyed by (utterance_id, point
   index): a duplicate or replayed point is the same fact. When an utterance
   is in the feed twice (a retried request), the fact keeps the later
   acceptance time whichever entry comes first, so a replay reproduces
   `written_at`, and with it `late_events`, exactly;
2. every touched hour and day window of a touched (category, subcategory)
   pair is written with its count from the day's tallies: counted once from
   all the day's facts when the day is first held, then kept current fact
   by fact (`DayTallies`), so a batch costs its own points, not the day's.
   Minute windows are tallied too, for the live events, but not stored:
   the API counts them from the facts (cql.error_counts.minute_counts);
3. each touched month is the sum of its day rows, and each touched pair's
   all-time total the sum of its month rows.

The facts of a day (and their tallies), the day rows of a month and the month rows of a learner
are read from Cassandra the first time a batch needs them and then kept,
current, in memory (`Loaded`): this writer is the only one of its learners
(see dataflows/connectors/sinks.py), so what it holds is what the tables
hold. After a restart it reads them again; a batch replayed after a crash
recounts from facts already written, so every count is still exact. All of
a batch's writes (facts, windows, totals) then go out together; each is an
absolute value, so their order does not matter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

from cql.clock import MINUTE, is_late, month_start, year_start
from cql.error_counts import (
    ERROR_COUNTS,
    ERROR_POINTS,
    ERROR_TOTALS,
    MONTH_ROWS_BUCKET,
    WINDOWS_FROM_TO,
    ErrorCountRow,
    ErrorPointFact,
    ErrorTotalRow,
    Window,
    error_windows,
    month_window,
)
from cql.learning import ERROR_FLOW
from cql.session import Db
from dataflows.connectors.sinks import (
    Change,
    Day,
    DayTallies,
    HeldFacts,
    Learner,
    Loaded,
    Stamped,
    Written,
    count_late,
    execute_all,
    latest_as_of,
    tenant_chunks,
    upserts,
    write_all,
    written,
)
from live.events import errors_events
from runtime.settings import Settings

Pair = tuple[str, str]
Touched = tuple[Window, Pair]
Spanned = tuple[datetime, Pair]  # a window start and a pair
# The columns a window row is held by (its as_of as the newest it vouches for).
_TALLY = ("window_start", "category", "subcategory", "count", "late_events", "as_of")
# One window and bucket of several learners of a tenant.
_USERS_IN = "tenant = ? AND user_id IN ? AND window = ? AND bucket = ?"


class Tally(NamedTuple):
    count: int
    late: int
    # No earlier than the newest fact counted was written (accepted): a
    # row's as_of is at least this, as the feed watermark of the batch may
    # lag the entries it carries (by up to a poll's span when catching up).
    newest: datetime


def tally_point(
    tallies: dict[Touched, Tally], fact: ErrorPointFact, sign: int, late_after: timedelta
) -> None:
    """Add a fact to (sign 1) or take it from (-1) the tallies of its minute,
    hour and day windows. A fact is late for a window when it was written
    more than `late_after` after the window's end. Taking a fact away keeps
    `newest`: only a later acceptance of the same fact replaces one."""
    pair = (fact.category, fact.subcategory)
    for window in error_windows(fact.ts):
        count, late, newest = tallies.get((window, pair), (0, 0, fact.written_at))
        late_now = is_late(fact.written_at, window.end, late_after)
        newest = max(newest, fact.written_at) if sign > 0 else newest
        tallies[(window, pair)] = Tally(count + sign, late + sign * late_now, newest)


def recount(
    facts: Iterable[ErrorPointFact], touched: set[Touched], late_after: timedelta
) -> dict[Touched, Tally]:
    """Counts of the touched windows and pairs from one day's facts."""
    tallies: dict[Touched, Tally] = {}
    for fact in facts:
        tally_point(tallies, fact, 1, late_after)
    return {key: tallies[key] for key in touched if key in tallies}


def sum_by_pair(held: dict[Spanned, Tally], pairs: set[Pair]) -> dict[Pair, Tally]:
    """Sums of held (start, pair) tallies per touched pair."""
    sums: dict[Pair, Tally] = {}
    for (_start, pair), (count, late, newest) in held.items():
        if pair in pairs:
            total, total_late, newest_yet = sums.get(pair, (0, 0, newest))
            sums[pair] = Tally(total + count, total_late + late, max(newest, newest_yet))
    return sums


class ErrorCountWriter:
    def __init__(self, db: Db, settings: Settings) -> None:
        self._session = db.session
        self._concurrency = settings.cassandra.max_in_flight
        self._late_after = timedelta(seconds=settings.dataflow.late_after_s)
        self._facts = HeldFacts(db, settings, ERROR_POINTS)
        self._tallies = DayTallies(
            settings.dataflow.held_partitions, partial(tally_point, late_after=self._late_after)
        )
        p = db.prepare
        self._insert_count = p(ERROR_COUNTS.insert(), idempotent=True)
        self._span_rows = p(ERROR_COUNTS.select(WINDOWS_FROM_TO, columns=_TALLY), idempotent=True)
        self._users_rows = p(
            ERROR_COUNTS.select(_USERS_IN, columns=("user_id", *_TALLY)), idempotent=True
        )
        self._insert_total = p(ERROR_TOTALS.insert(), idempotent=True)
        held = settings.dataflow.held_partitions
        self._day_rows = Loaded(held, self._read_day_rows)
        self._month_rows = Loaded(held, self._read_month_rows)

    def write(self, points: Sequence[Stamped[ErrorPointFact]]) -> Written:
        as_of = latest_as_of(points)
        by_day, held_facts, changes = self._facts.merge(points)
        facts = written(changes)
        count_late(ERROR_FLOW, facts, MINUTE, self._late_after)
        rows, minutes, months = self._recount_days(by_day, held_facts, changes, as_of)
        rows += self._sum_months(months, as_of)
        totals = self._sum_totals(months, as_of)
        write_all(
            self._session,
            upserts(self._facts.insert, ERROR_POINTS, facts)
            + upserts(self._insert_count, ERROR_COUNTS, rows)
            + upserts(self._insert_total, ERROR_TOTALS, totals),
            self._concurrency,
        )
        return Written(set(as_of), errors_events(minutes + rows, totals))

    def _recount_days(
        self,
        by_day: dict[Day, list[ErrorPointFact]],
        held_facts: dict[Day, dict[Any, ErrorPointFact]],
        changes: dict[Day, list[Change[ErrorPointFact]]],
        as_of: dict[Learner, datetime],
    ) -> tuple[list[ErrorCountRow], list[ErrorCountRow], dict[Day, set[Pair]]]:
        """The hour and day rows the batch touches, from the day's tallies,
        and its minute windows (not stored) apart; the day rows are also
        kept in their month's held rows. Returns the pairs touched per
        month too."""
        held_days = self._day_rows.load({_month_of(day) for day in by_day})
        rows: list[ErrorCountRow] = []
        minutes: list[ErrorCountRow] = []
        months: dict[Day, set[Pair]] = defaultdict(set)
        for key, batch in by_day.items():
            tenant, user_id, _day = key
            touched = {(w, (f.category, f.subcategory)) for f in batch for w in error_windows(f.ts)}
            tallies = self._tallies.update(key, held_facts[key], changes[key])
            for window, pair in touched:
                row = _count_row(tenant, user_id, window, pair, tallies[(window, pair)], as_of)
                (minutes if window.kind == "minute" else rows).append(row)
                if window.kind == "day":
                    held_days[_month_of(key)][(window.start, pair)] = tallies[(window, pair)]
            months[_month_of(key)].update(pair for _w, pair in touched)
        return rows, minutes, months

    def _sum_months(
        self, months: dict[Day, set[Pair]], as_of: dict[Learner, datetime]
    ) -> list[ErrorCountRow]:
        """Month rows from the held day rows; kept in the learner's held month rows."""
        held_days = self._day_rows.load(months)
        held_months = self._month_rows.load({(t, u) for t, u, _m in months})
        rows: list[ErrorCountRow] = []
        for key, pairs in months.items():
            tenant, user_id, month = key
            for pair, tally in sum_by_pair(held_days[key], pairs).items():
                rows.append(_count_row(tenant, user_id, month_window(month), pair, tally, as_of))
                held_months[(tenant, user_id)][(month, pair)] = tally
        return rows

    def _sum_totals(
        self, months: dict[Day, set[Pair]], as_of: dict[Learner, datetime]
    ) -> list[ErrorTotalRow]:
        """Each touched pair's all-time total from the held month rows."""
        pairs: dict[Learner, set[Pair]] = defaultdict(set)
        for (tenant, user_id, _month), touched in months.items():
            pairs[(tenant, user_id)] |= touched
        held_months = self._month_rows.load(pairs)
        return [
            ErrorTotalRow(
                *learner, category, subcategory, tally.count, max(as_of[learner], tally.newest)
            )
            for learner, touched in pairs.items()
            for (category, subcategory), tally in sum_by_pair(held_months[learner], touched).items()
        ]

    def _read_day_rows(self, months: list[Day]) -> list[dict[Spanned, Tally]]:
        """Each month's day rows: one read per learner and year (their
        partition), from the first month wanted to the end of the last."""
        years: dict[Day, list[datetime]] = defaultdict(list)
        for t, u, m in months:
            years[(t, u, year_start(m))].append(m)
        reads = (
            (self._span_rows, (t, u, "day", year, min(ms), month_window(max(ms)).end))
            for (t, u, year), ms in years.items()
        )
        held: dict[Day, dict[Spanned, Tally]] = {month: {} for month in months}
        for (t, u, _year), rows in zip(years, self._run(reads), strict=True):
            for start, c, s, count, late, as_of in rows:
                if (month := (t, u, month_start(start))) in held:
                    held[month][(start, (c, s))] = Tally(count, late, as_of)
        return [held[month] for month in months]

    def _read_month_rows(self, learners: list[Learner]) -> list[dict[Spanned, Tally]]:
        """Each learner's month rows, several learners of a tenant per read."""
        tenants = tenant_chunks(learners)
        reads = ((self._users_rows, (t, some, "month", MONTH_ROWS_BUCKET)) for t, some in tenants)
        held: dict[Learner, dict[Spanned, Tally]] = {learner: {} for learner in learners}
        for (t, _some), rows in zip(tenants, self._run(reads), strict=True):
            for u, start, c, s, count, late, as_of in rows:
                held[(t, u)][(start, (c, s))] = Tally(count, late, as_of)
        return [held[learner] for learner in learners]

    def _run(self, statements: Iterable[tuple[Any, Sequence[Any] | None]]) -> list[Any]:
        return execute_all(self._session, statements, self._concurrency)


def _month_of(day: Day) -> Day:
    tenant, user_id, start = day
    return (tenant, user_id, month_start(start))


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
        tally.count, tally.late, max(as_of[(tenant, user_id)], tally.newest),
    )  # fmt: skip
