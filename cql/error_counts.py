"""Error facts, windowed counts and all-time totals
(cql/schema/005_error_counts.cql), and the one definition of which window
and partition an error point counts in. Field order is column order."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import NamedTuple

import msgspec

from cql.clock import DAY, EPOCH, HOUR, MINUTE, Span, is_late, next_month
from cql.table import Table


class ErrorPointFact(msgspec.Struct):
    tenant: str
    user_id: str
    day: datetime
    ts: datetime
    utterance_id: str
    point: int
    category: str
    subcategory: str
    written_at: datetime


class ErrorCountRow(msgspec.Struct):
    tenant: str
    user_id: str
    window: str
    bucket: datetime
    window_start: datetime
    category: str
    subcategory: str
    count: int
    late_events: int
    as_of: datetime


class ErrorTotalRow(msgspec.Struct):
    tenant: str
    user_id: str
    category: str
    subcategory: str
    count: int
    as_of: datetime


ERROR_POINTS = Table(
    "error_points_by_user_day",
    ErrorPointFact,
    ["tenant", "user_id", "day"],
    ["ts", "utterance_id", "point"],
)
ERROR_COUNTS = Table(
    "error_counts_by_user",
    ErrorCountRow,
    ["tenant", "user_id", "window", "bucket"],
    ["window_start", "category", "subcategory"],
)
ERROR_TOTALS = Table(
    "error_totals_by_user", ErrorTotalRow, ["tenant", "user_id"], ["category", "subcategory"]
)

# Windows of one partition by start: window_start in [?, ?).
WINDOWS_FROM_TO = f"{ERROR_COUNTS.key_where()} AND window_start >= ? AND window_start < ?"
# Facts of one learner-day by time: ts in [?, ?).
FACTS_FROM_TO = f"{ERROR_POINTS.key_where()} AND ts >= ? AND ts < ?"
# The window kinds stored in error_counts_by_user. Minute windows are not:
# they are counted from the facts when read (minute_counts), since nearly
# every error point is alone in its learner's minute, and a stored minute row
# per point doubled what the flow wrote.
STORED_KINDS = ("hour", "day", "month")


class Window(NamedTuple):
    """One error-count window: its kind, the start of the partition span it
    is stored in (`bucket`), and its [start, end)."""

    kind: str
    bucket: datetime
    start: datetime
    end: datetime


# Month rows all live in one partition per learner, whose bucket is this.
MONTH_ROWS_BUCKET = EPOCH
# The UTC span one partition holds, per window kind (error_windows below
# computes the same with replace(), for speed; a test holds them equal).
PARTITION_SPAN: dict[str, Span] = {"minute": "day", "hour": "month", "day": "year"}


def error_windows(ts: datetime) -> tuple[Window, Window, Window]:
    """The minute, hour and day windows an event at `ts` counts in, each with
    its partition's bucket: minutes by UTC day (the facts' partition; minute
    windows are not stored), hour rows by UTC month, day rows by UTC year."""
    minute = ts.replace(second=0, microsecond=0)
    if minute.tzinfo is None:
        return _cached_windows(minute)
    # Equal instants in two zones hash alike: a cache would answer one
    # zone's windows for the other.
    return _windows(minute)


def _windows(minute: datetime) -> tuple[Window, Window, Window]:
    hour = minute.replace(minute=0)
    day = hour.replace(hour=0)
    month = day.replace(day=1)
    return (
        Window("minute", day, minute, minute + MINUTE),
        Window("hour", month, hour, hour + HOUR),
        Window("day", month.replace(month=1), day, day + DAY),
    )


# The flows call it for every fact of every batch, twice (its tally and the
# windows it touches), with stored (naive UTC) times; a conversation's facts
# share their minutes.
_cached_windows = lru_cache(maxsize=4096)(_windows)


def month_window(month: datetime) -> Window:
    return Window("month", MONTH_ROWS_BUCKET, month, next_month(month))


# (ts, category, subcategory, written_at): a fact as minute_counts reads it.
FACT_COLUMNS = ("ts", "category", "subcategory", "written_at")
# (window_start, category, subcategory, count, late_events, newest written_at)
MinuteCount = tuple[datetime, str, str, int, int, datetime]


def minute_counts(
    facts: Iterable[tuple[datetime, str, str, datetime]], late_after: timedelta
) -> list[MinuteCount]:
    """The minute windows of facts (FACT_COLUMNS, in any order), sorted by
    window start and pair: what a stored minute row would hold, with the
    newest acceptance in place of the flow's as_of."""
    counts: dict[tuple[datetime, str, str], list] = {}
    for ts, category, subcategory, written_at in facts:
        start = ts.replace(second=0, microsecond=0)
        count = counts.setdefault((start, category, subcategory), [0, 0, written_at])
        count[0] += 1
        count[1] += is_late(written_at, start + MINUTE, late_after)
        count[2] = max(count[2], written_at)
    return [(*key, n, late, newest) for key, (n, late, newest) in sorted(counts.items())]
