"""A learner's error counts per window and top errors, read from the tables
the error-counter dataflow serves (cql/schema/005; minute windows from its
facts): which partitions a range touches, the reads, and the answer cache."""

from __future__ import annotations

import asyncio
import heapq
from collections import Counter
from datetime import UTC, date, datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

import msgspec

from api.edge.problems import NotFound
from api.reads import answer_cache, periods
from api.reads.served import ErrorCountTuple
from api.reads.shapes import ErrorCount, ErrorWindows, TopErrors
from api.reads.windows import MONTH_ROWS, Plan, Slice, slices, windows
from api.services import Services
from cql import clock
from cql.clock import DAY
from cql.error_counts import PARTITION_SPAN
from cql.learners import UserRow

UTC_ZONE = ZoneInfo("UTC")
_encoder = msgspec.json.Encoder()


class WindowsQuery(NamedTuple):
    window: str
    zone: ZoneInfo
    plan: Plan
    category: str | None
    subcategory: str | None


class TopQuery(NamedTuple):
    limit: int
    since: date | None  # a day in `zone`
    zone: ZoneInfo = UTC_ZONE


async def error_windows(
    services: Services, tenant: str, user_id: str, asked: WindowsQuery, now: datetime
) -> bytes:
    plan, served = asked.plan, services.served

    async def compute() -> answer_cache.Computed:
        # The watermark first: counts read after it hold at least what it
        # vouches for, so an answer never pairs a newer as_of with older counts.
        as_of = await served.watermark(served.error_flow)
        user, *parts = await asyncio.gather(
            services.store.user(tenant, user_id),
            *(
                served.error_counts(tenant, user_id, *part, as_of=as_of)
                for part in slices(plan.source, plan.start, plan.end)
            ),
        )
        _exists(user, user_id)
        # Partitions in time order, each in clustering order: rows arrive
        # sorted by window_start.
        rows = (row for part in parts for row in part)
        if asked.category is not None or asked.subcategory is not None:
            rows = (row for row in rows if _wanted(row, asked))
        listed = windows(rows, plan, asked.zone)
        answer = ErrorWindows(
            user_id, asked.window, plan.start, plan.end, as_of, listed, asked.zone.key
        )
        return _encoder.encode(answer), as_of

    ends = plan.end.astimezone(UTC)
    key = _cache_key(asked)
    return await answer_cache.answer(
        services.redis, tenant, user_id, key, compute, ends=ends, now=now
    )


async def top_errors(
    services: Services, tenant: str, user_id: str, asked: TopQuery, today: date
) -> TopErrors:
    """`today`: the UTC day now."""
    served = services.served
    as_of = await served.watermark(served.error_flow)  # first: see error_windows
    first = None if asked.since is None else periods.local_start(asked.since, asked.zone)
    if first is None:
        counts = served.error_totals(tenant, user_id)
    else:
        counts = _counts_since(services, tenant, user_id, top_slices(first, today))
    user, pairs = await asyncio.gather(services.store.user(tenant, user_id), counts)
    _exists(user, user_id)
    top = heapq.nsmallest(
        asked.limit, (p for p in pairs if p[2] > 0), key=lambda p: (-p[2], p[0], p[1])
    )
    errors = [ErrorCount(category, subcategory, n) for category, subcategory, n in top]
    return TopErrors(user_id, asked.since, as_of, errors, asked.zone.key, first)


async def _counts_since(
    services: Services, tenant: str, user_id: str, read: list[Slice]
) -> list[tuple[str, str, int]]:
    parts = await asyncio.gather(
        *(services.served.error_counts(tenant, user_id, *part) for part in read)
    )
    totals: Counter[tuple[str, str]] = Counter()
    for part in parts:
        for _start, category, subcategory, count, _late, _as_of in part:
            totals[category, subcategory] += count
    return [(category, subcategory, n) for (category, subcategory), n in totals.items()]


def top_slices(first: datetime, today: date) -> list[Slice]:
    """The slices that count from `first` (a local midnight) on: the rest of
    its UTC day from hour rows when it is a whole UTC hour, from minute
    windows otherwise, then since_slices from the next UTC day."""
    first = first.astimezone(UTC)
    midnight = clock.ceil_to(first, DAY)
    head: list[Slice] = []
    if first < midnight:
        kind = "minute" if first.minute or first.second else "hour"
        head.append((kind, clock.span_start(first, PARTITION_SPAN[kind]), first, midnight))
    return head + since_slices(midnight.date(), today)


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
    found: list[Slice] = []
    if first < whole:
        found.append(("day", clock.span_start(first, "year"), first, whole))
    if whole < this_month:
        found.append(("month", MONTH_ROWS, whole, this_month))
    return [*found, rest_of_year]


def _cache_key(asked: WindowsQuery) -> str:
    start, end = asked.plan.start, asked.plan.end
    labels = f"{asked.category}|{asked.subcategory}"
    return f"errors|{asked.window}|{asked.zone.key}|{start}|{end}|{labels}"


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
