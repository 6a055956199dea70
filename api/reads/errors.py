"""A learner's error counts per window and top errors, read from the tables
the error-counter dataflow serves (cql/schema/005): which partitions a
range touches, the reads, and the answer cache."""

from __future__ import annotations

import asyncio
import heapq
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

import msgspec

from api.edge.problems import NotFound
from api.reads import answer_cache
from api.reads.served import ErrorCountTuple
from api.reads.shapes import ErrorCount, ErrorWindow, ErrorWindows, TopErrors
from api.services import Services
from cql import clock
from cql.clock import DAY, HOUR, MINUTE, from_stored_time
from cql.error_counts import MONTH_ROWS_BUCKET, PARTITION_SPAN
from cql.learners import UserRow

_encoder = msgspec.json.Encoder()


class WindowKind(NamedTuple):
    step: timedelta  # a window's length
    span: clock.Span  # the UTC span one partition of error_counts_by_user holds
    longest: timedelta  # the longest range one request may ask for


# A range of at most `longest` touches at most 8 partitions (minute), 5 (hour)
# or 4 (day), read concurrently.
WINDOWS = {
    "minute": WindowKind(MINUTE, PARTITION_SPAN["minute"], timedelta(days=7)),
    "hour": WindowKind(HOUR, PARTITION_SPAN["hour"], timedelta(days=92)),
    "day": WindowKind(DAY, PARTITION_SPAN["day"], timedelta(days=3 * 365 + 1)),
}
# Month rows are one partition per learner whose span starts at the epoch.
MONTH_ROWS = MONTH_ROWS_BUCKET.replace(tzinfo=UTC)


class WindowsQuery(NamedTuple):
    window: str
    start: datetime
    end: datetime
    category: str | None
    subcategory: str | None


# (window, bucket, start, end): window_start in [start, end) of one partition
Slice = tuple[str, datetime, datetime, datetime]


class TopQuery(NamedTuple):
    limit: int
    since: date | None


async def error_windows(
    services: Services, tenant: str, user_id: str, asked: WindowsQuery, now: datetime
) -> bytes:
    kind = WINDOWS[asked.window]
    served = services.served

    async def compute() -> answer_cache.Computed:
        # The watermark first: counts read after it hold at least what it
        # vouches for, so an answer never pairs a newer as_of with older counts.
        as_of = await served.watermark(served.error_flow)
        user, *parts = await asyncio.gather(
            services.store.user(tenant, user_id),
            *(
                served.error_counts(tenant, user_id, asked.window, bucket, asked.start, asked.end)
                for bucket in clock.spans(asked.start, asked.end, kind.span)
            ),
        )
        _exists(user, user_id)
        # Partitions in time order, each in clustering order: rows arrive
        # sorted by window_start, so windows are runs of equal starts.
        rows = (row for part in parts for row in part)
        if asked.category is not None or asked.subcategory is not None:
            rows = (row for row in rows if _wanted(row, asked))
        answer = ErrorWindows(
            user_id, asked.window, asked.start, asked.end, as_of, _windows(rows, kind.step)
        )
        return _encoder.encode(answer), as_of

    return await answer_cache.answer(
        services.redis,
        tenant,
        user_id,
        f"errors|{asked.window}|{asked.start}|{asked.end}|{asked.category}|{asked.subcategory}",
        compute,
        ends=clock.ceil_to(asked.end, kind.step),
        now=now,
    )


async def top_errors(
    services: Services, tenant: str, user_id: str, asked: TopQuery, today: date
) -> TopErrors:
    served = services.served
    as_of = await served.watermark(served.error_flow)  # first: see error_windows
    if asked.since is None:
        counts = served.error_totals(tenant, user_id)
    else:
        counts = _counts_since(services, tenant, user_id, since_slices(asked.since, today))
    user, pairs = await asyncio.gather(services.store.user(tenant, user_id), counts)
    _exists(user, user_id)
    top = heapq.nsmallest(
        asked.limit, (p for p in pairs if p[2] > 0), key=lambda p: (-p[2], p[0], p[1])
    )
    errors = [ErrorCount(category, subcategory, n) for category, subcategory, n in top]
    return TopErrors(user_id, asked.since, as_of, errors)


async def _counts_since(
    services: Services, tenant: str, user_id: str, slices: list[Slice]
) -> list[tuple[str, str, int]]:
    parts = await asyncio.gather(
        *(
            services.served.error_counts(tenant, user_id, window, bucket, start, end)
            for window, bucket, start, end in slices
        )
    )
    totals: Counter[tuple[str, str]] = Counter()
    for part in parts:
        for _start, category, subcategory, count, _late, _as_of in part:
            totals[category, subcategory] += count
    return [(category, subcategory, n) for (category, subcategory), n in totals.items()]


def since_slices(since: date, today: date) -> list[Slice]:
    """The (window, bucket, start, end) slices of error_counts_by_user that
    together count from `since` on: month rows for the whole months between,
    day rows for the rest (the partial first month and the current month,
    whose month rows the dataflow is still rewriting). At most three reads."""
    first = datetime(since.year, since.month, since.day, tzinfo=UTC)
    this_month = datetime(today.year, today.month, 1, tzinfo=UTC)
    this_year = clock.span_start(this_month, "year")
    rest_of_year = ("day", this_year, max(first, this_month), clock.next_span(this_year, "year"))
    if first >= this_month:
        return [rest_of_year]
    whole = first if first.day == 1 else clock.next_month(first)
    slices = []
    if first < whole:
        slices.append(("day", clock.span_start(first, "year"), first, whole))
    if whole < this_month:
        slices.append(("month", MONTH_ROWS, whole, this_month))
    return [*slices, rest_of_year]


def _windows(rows: Iterable[ErrorCountTuple], step: timedelta) -> list[ErrorWindow]:
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
            window_start=(begin := from_stored_time(start)),
            window_end=begin + step,
            counts=counts,
            late_events=late,
            as_of=aware.get(as_of) or aware.setdefault(as_of, from_stored_time(as_of)),
        )
        for start, counts, late, as_of in runs
    ]


def _wanted(row: ErrorCountTuple, asked: WindowsQuery) -> bool:
    # A filter after the read: category follows window_start in the
    # clustering key, so Cassandra cannot restrict it within a range of
    # windows (the slice is bounded either way).
    return (asked.category is None or row[1] == asked.category) and (
        asked.subcategory is None or row[2] == asked.subcategory
    )


def _exists(user: UserRow | None, user_id: str) -> None:
    if user is None:
        raise NotFound(f"Learner {user_id!r} does not exist.", field="user_id")
