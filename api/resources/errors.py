"""GET /v1/users/{user_id}/errors and /errors/top: a learner's error counts
per minute, hour or day window, and their most frequent errors, read from
the tables the error-counter dataflow serves (cql/schema/005)."""

from __future__ import annotations

import asyncio
import heapq
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, NamedTuple

import msgspec
from litestar import Controller, Request, Response, get
from litestar.params import FromPath

from api.edge.problems import KEYED, BadRequest, NotFound, problem_responses
from api.reads import answer_cache, periods, query
from api.reads.served import ErrorCountTuple
from api.services import PrincipalDep, Services, ServicesDep
from api.shapes import ErrorCount, ErrorWindow, ErrorWindows, TopErrors
from cql.clock import from_stored_time
from cql.learners import UserRow


class WindowKind(NamedTuple):
    step: timedelta  # a window's length
    span: periods.Span  # the UTC span one partition of error_counts_by_user holds
    longest: timedelta  # the longest range one request may ask for


# A range of at most `longest` touches at most 8 partitions (minute), 5 (hour)
# or 4 (day), read concurrently.
WINDOWS = {
    "minute": WindowKind(timedelta(minutes=1), "day", timedelta(days=7)),
    "hour": WindowKind(timedelta(hours=1), "month", timedelta(days=92)),
    "day": WindowKind(timedelta(days=1), "year", timedelta(days=3 * 365 + 1)),
}
SINCE_DAYS = 366
TOP_DEFAULT, TOP_MAX = 10, 100
# Month rows are one partition per learner whose span starts at the epoch.
MONTH_ROWS = periods.EPOCH

WINDOWS_DOC = f"""\
The learner's error counts per (category, subcategory) in UTC windows of a
minute, an hour or a day: every window whose start lies in [`from`, `to`).

Only windows with at least one error are listed (a day of minute windows
would otherwise be 1,440 mostly empty entries). Each listed window says when
it was last counted (`as_of`) and how many late events it holds; the
answer's `as_of` is the dataflow's watermark, so a window that ends before
it and is not listed had no errors.

`from` and `to` are RFC 3339 timestamps with an offset. The longest range is
{WINDOWS["minute"].longest.days} days for minute windows, {WINDOWS["hour"].longest.days} days for
hour windows and {WINDOWS["day"].longest.days} days for day windows. `category` and
`subcategory` keep only the counts with that label.

A learner that does not exist is 404; one without errors gets an empty list.
Answers about windows that are over are served from a cache that a late
event invalidates at once.
"""

TOP_DOC = f"""\
The learner's most frequent (category, subcategory) pairs, most frequent
first (ties by category, then subcategory), at most `limit` of them
(1 to {TOP_MAX}, default {TOP_DEFAULT}).

Without `since`, all time. With `since`, from the start of that UTC day
(inclusive) to now: `since` is a date YYYY-MM-DD, or an RFC 3339 timestamp
whose UTC day is meant, at most {SINCE_DAYS} days ago. A learner that does not
exist is 404; one without errors gets an empty list.
"""

_encoder = msgspec.json.Encoder()


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


class ErrorCountsController(Controller):
    path = "/v1/users/{user_id:str}/errors"
    tags = ["errors"]

    @get(
        "/",
        operation_id="getErrorCounts",
        summary="Error counts per minute, hour or day window",
        description=WINDOWS_DOC,
        responses=problem_responses(*KEYED, 400, 404, 422),
    )
    async def windows(
        self,
        request: Request,
        user_id: FromPath[str],
        principal: PrincipalDep,
        services: ServicesDep,
        window: Annotated[
            str | None,
            query.param("The window length", required=True, type=query.STRING, enum=list(WINDOWS)),
        ] = None,
        from_: query.TimeFrom = None,
        to: query.TimeTo = None,
        category: Annotated[
            str | None, query.param("Only this category", type=query.STRING)
        ] = None,
        subcategory: Annotated[
            str | None, query.param("Only this subcategory", type=query.STRING)
        ] = None,
    ) -> Response[ErrorWindows]:
        query.reject_unknown(request, ("window", "from", "to", "category", "subcategory"))
        asked = windows_query(window, from_, to, category, subcategory)
        body = await error_windows(services, principal.tenant, user_id, asked, _now())
        return query.json_response(body)

    @get(
        "/top",
        operation_id="getTopErrors",
        summary="The learner's most frequent errors",
        description=TOP_DOC,
        responses=problem_responses(*KEYED, 400, 404, 422),
    )
    async def top(
        self,
        request: Request,
        user_id: FromPath[str],
        principal: PrincipalDep,
        services: ServicesDep,
        limit: Annotated[
            str | None,
            query.param(
                "How many pairs",
                type=query.INTEGER,
                minimum=1,
                maximum=TOP_MAX,
                default=TOP_DEFAULT,
            ),
        ] = None,
        since: Annotated[
            str | None,
            query.param(
                "First UTC day counted (inclusive): a date, or RFC 3339 with an offset",
                one_of=[query.DATE, query.DATE_TIME],
            ),
        ] = None,
    ) -> Response[TopErrors]:
        query.reject_unknown(request, ("limit", "since"))
        today = _now().date()
        asked = top_query(limit, since, today)
        top = await top_errors(services, principal.tenant, user_id, asked, today)
        return query.json_response(_encoder.encode(top))


# ---- the parameters


def windows_query(
    window: str | None,
    from_: str | None,
    to: str | None,
    category: str | None,
    subcategory: str | None,
) -> WindowsQuery:
    kind = query.choice(window, "window", WINDOWS)
    start = periods.instant(from_, "from").astimezone(UTC)
    end = periods.instant(to, "to").astimezone(UTC)
    periods.checked_range(start, end, WINDOWS[kind].longest)
    return WindowsQuery(
        kind, start, end, query.label(category, "category"), query.label(subcategory, "subcategory")
    )


def top_query(limit: str | None, since: str | None, today: date) -> TopQuery:
    count = query.integer(limit, "limit", 1, TOP_MAX, TOP_DEFAULT)
    if since is None:
        return TopQuery(count, None)
    first = periods.utc_day(since, "since")
    earliest = today - timedelta(days=SINCE_DAYS)
    if not earliest <= first <= today:
        raise BadRequest(
            f"`since` must be a UTC day from {earliest} (at most {SINCE_DAYS} days ago) to "
            f"today ({today}); for all time, leave it out.",
            field="since",
        )
    return TopQuery(count, first)


# ---- the answers


async def error_windows(
    services: Services, tenant: str, user_id: str, asked: WindowsQuery, now: datetime
) -> bytes:
    kind = WINDOWS[asked.window]
    served = services.served

    async def compute() -> answer_cache.Computed:
        user, as_of, *parts = await asyncio.gather(
            services.store.user(tenant, user_id),
            served.watermark(served.error_flow),
            *(
                served.error_counts(tenant, user_id, asked.window, bucket, asked.start, asked.end)
                for bucket in periods.spans(asked.start, asked.end, kind.span)
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
        ends=periods.ceil_to(asked.end, kind.step),
        now=now,
    )


async def top_errors(
    services: Services, tenant: str, user_id: str, asked: TopQuery, today: date
) -> TopErrors:
    served = services.served
    if asked.since is None:
        counts = served.error_totals(tenant, user_id)
    else:
        counts = _counts_since(services, tenant, user_id, since_slices(asked.since, today))
    user, as_of, pairs = await asyncio.gather(
        services.store.user(tenant, user_id), served.watermark(served.error_flow), counts
    )
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
    this_year = periods.span_start(this_month, "year")
    rest_of_year = ("day", this_year, max(first, this_month), periods.next_span(this_year, "year"))
    if first >= this_month:
        return [rest_of_year]
    whole = first if first.day == 1 else periods.next_month(first)
    slices = []
    if first < whole:
        slices.append(("day", periods.span_start(first, "year"), first, whole))
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


def _now() -> datetime:
    return datetime.now(UTC)
