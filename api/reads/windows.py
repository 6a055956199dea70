"""Which stored error-count windows answer a request for minute, hour, day
or month windows in a time zone, and how they add up (cql/schema/005).

The error-counter flow serves UTC windows only: minutes (counted from its
facts when read, cql.error_counts.minute_counts), hours, days and months.
Minute and hour windows are served as they are, in any zone (an hour of a
+05:30 zone then starts at half past on its clock). A local day or month is
a sum of served windows, exact because it is a union of them: it is read
from the coarsest kind whose windows start at every local midnight of the
range (UTC months or days when those midnights are UTC ones, hours when
they fall on whole UTC hours, minutes otherwise), and the longest range is
the one of the kind read, since that is what bounds the partitions one
request touches.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from api.edge.problems import BadRequest
from api.reads import periods
from api.reads.served import ErrorCountTuple
from api.reads.shapes import ErrorCount, ErrorWindow
from cql import clock
from cql.clock import DAY, HOUR, MINUTE, from_stored_time, to_stored_time
from cql.error_counts import MONTH_ROWS_BUCKET, PARTITION_SPAN


class Stored(NamedTuple):
    step: timedelta | None  # a window's length; None for months
    longest: timedelta  # the longest range one request may ask for


# A range of at most `longest` touches at most 8 partitions (days of facts),
# 5 (hour), 4 (day) or the one of month rows, read concurrently.
STORED = {
    "minute": Stored(MINUTE, timedelta(days=7)),
    "hour": Stored(HOUR, timedelta(days=92)),
    "day": Stored(DAY, timedelta(days=3 * 365 + 1)),
    "month": Stored(None, timedelta(days=3 * 365 + 1)),
}
# Coarsest first: the kinds a local day or month may be summed from.
_SUMMED_FROM = {"day": ("day", "hour", "minute"), "month": ("month", "day", "hour", "minute")}
MONTH_ROWS = MONTH_ROWS_BUCKET.replace(tzinfo=UTC)

# (window, bucket, start, end): window_start in [start, end) of one partition
Slice = tuple[str, datetime, datetime, datetime]


class Plan(NamedTuple):
    """What answers a request: the stored kind read and, for local days and
    months, the periods its windows are summed into (None: the stored
    windows themselves); [start, end) is the range the windows cover,
    aware in the request's zone."""

    source: str
    listed: list[periods.Period] | None
    start: datetime
    end: datetime


def plan(window: str, start: datetime, end: datetime, zone: ZoneInfo) -> Plan:
    """Every window that overlaps [start, end), whole, as periods.periods
    lists local periods."""
    step = STORED[window].step
    if window in ("minute", "hour") and step is not None:
        periods.checked_range(start, end, STORED[window].longest, zone)
        first = clock.floor_to(start.astimezone(UTC), step)
        last = clock.ceil_to(end.astimezone(UTC), step)
        return Plan(window, None, first.astimezone(zone), last.astimezone(zone))
    # The coarsest kind's limit bounds the listing; the kind read may be
    # stricter. Listing first let a range of millennia hold a worker for a
    # minute before its 400.
    periods.checked_range(start, end, STORED[window].longest, zone)
    listed = periods.periods(window, start, end, zone)  # type: ignore[arg-type]
    source = _source(window, listed)
    periods.checked_range(start, end, STORED[source].longest, zone)
    return Plan(source, listed, listed[0].start, listed[-1].end)


def _source(window: str, listed: list[periods.Period]) -> str:
    edges = [p.start.astimezone(UTC) for p in listed] + [listed[-1].end.astimezone(UTC)]
    for kind in _SUMMED_FROM[window]:
        if all(_starts_window(kind, edge) for edge in edges):
            return kind
    raise BadRequest(
        "`tz` has an offset of seconds in this range, which no stored window matches; "
        "ask in UTC or another zone.",
        field="tz",
    )


def _starts_window(kind: str, moment: datetime) -> bool:
    on_minute = not (moment.second or moment.microsecond)
    on_hour = on_minute and not moment.minute
    on_day = on_hour and not moment.hour
    return {
        "minute": on_minute,
        "hour": on_hour,
        "day": on_day,
        "month": on_day and moment.day == 1,
    }[kind]


def slices(source: str, start: datetime, end: datetime) -> list[Slice]:
    """The partition slices of `source` rows whose windows start in [start, end)."""
    first, last = start.astimezone(UTC), end.astimezone(UTC)
    if source == "month":
        return [("month", MONTH_ROWS, first, last)]
    return [
        (source, bucket, first, last) for bucket in clock.spans(first, last, PARTITION_SPAN[source])
    ]


def windows(rows: Iterable[ErrorCountTuple], plan: Plan, zone: ZoneInfo) -> list[ErrorWindow]:
    """The windows of the plan that hold rows, in order."""
    if plan.listed is None:
        step = STORED[plan.source].step
        assert step is not None
        return _as_stored(rows, step, zone)
    return _summed(rows, plan.listed)


def _as_stored(
    rows: Iterable[ErrorCountTuple], step: timedelta, zone: ZoneInfo
) -> list[ErrorWindow]:
    """Rows sorted by window_start, grouped into windows. A hot loop (a week
    of minute windows is thousands of rows), so it converts each stored
    time once and each distinct as_of once."""
    runs: list[list] = []  # [window_start, counts, late_events, as_of], stored times
    for start, category, subcategory, count, late, as_of in rows:
        if not runs or runs[-1][0] != start:
            runs.append([start, [], 0, as_of])
        run = runs[-1]
        run[1].append(ErrorCount(category, subcategory, count))
        run[2] += late
        run[3] = max(run[3], as_of)
    aware: dict[datetime, datetime] = {}
    return [
        ErrorWindow(
            window_start=(begin := from_stored_time(start).astimezone(zone)),
            window_end=begin + step,
            counts=counts,
            late_events=late,
            as_of=aware.get(as_of) or aware.setdefault(as_of, from_stored_time(as_of)),
        )
        for start, counts, late, as_of in runs
    ]


class _Sum:
    def __init__(self, as_of: datetime) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.late = 0
        self.as_of = as_of


def _summed(rows: Iterable[ErrorCountTuple], listed: list[periods.Period]) -> list[ErrorWindow]:
    """Each row added to the period it starts in: the rows all lie within
    the periods, whose starts (naive UTC, as stored) are sorted."""
    starts = [to_stored_time(period.start) for period in listed]
    sums: dict[int, _Sum] = {}
    for start, category, subcategory, count, late, as_of in rows:
        i = bisect_right(starts, start) - 1
        total = sums.setdefault(i, _Sum(as_of))
        total.counts[category, subcategory] += count
        total.late += late
        total.as_of = max(total.as_of, as_of)
    return [
        ErrorWindow(
            window_start=listed[i].start,
            window_end=listed[i].end,
            counts=[ErrorCount(c, s, n) for (c, s), n in sorted(total.counts.items())],
            late_events=total.late,
            as_of=from_stored_time(total.as_of),
        )
        for i, total in sorted(sums.items())
    ]
