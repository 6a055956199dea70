"""GET /v1/users/{user_id}/learning: entries and words practised per local
day, ISO week or month in any IANA time zone, rolled up at query time from
the quarter-hour UTC buckets the learning dataflow serves (cql/schema/006)."""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated, NamedTuple, get_args
from zoneinfo import ZoneInfo

import msgspec
from litestar import Controller, Request, Response, get
from litestar.params import FromPath

from api.edge.problems import KEYED, NotFound, problem_responses
from api.reads import answer_cache, periods, query
from api.reads.served import LearningTuple
from api.reads.shapes import Learning, LearningPeriod
from api.services import PrincipalDep, Services, ServicesDep
from cql import clock
from cql.clock import to_stored_time

GRANULARITIES: tuple[str, ...] = get_args(periods.Granularity)
# 400 local days touch at most 17 UTC month partitions, whole periods included.
LONGEST = timedelta(days=400)

LEARNING_DOC = f"""\
Entries (utterances) and words practised per local day, ISO week (Monday to
Sunday) or calendar month in the time zone `tz` (an IANA name, default UTC).

Every period that overlaps [`from`, `to`) is listed, whole and in order,
empty ones with zeros: the first is the period holding `from`, the last the
one holding the instant before `to`; the answer's `from` and `to` are the
start of the first and the end of the last, the range really counted. `from` and `to` are each a date
YYYY-MM-DD, meaning the start of that day in `tz`, or an RFC 3339 timestamp
with an offset; they may be at most {LONGEST.days} days apart.

`period_start` and `period_end` are local times with the offset in force at
that moment, so a day with a daylight-saving change lasts 23 or 25 hours and
half- and quarter-hour offsets (+05:30, +05:45) are exact. `average_words`
is `total_words / entries` rounded to 2 decimals, 0 for a period without
entries. `as_of` is the dataflow's watermark: utterances accepted before it
are counted.

A learner that does not exist is 404; one without entries gets zeros.
Answers about periods that are over are served from a cache that a late
event invalidates at once.
"""

_encoder = msgspec.json.Encoder()


class LearningQuery(NamedTuple):
    granularity: str
    zone: ZoneInfo
    start: datetime
    end: datetime


GranularityParam = Annotated[
    str | None,
    query.param("The period length", required=True, type=query.STRING, enum=list(GRANULARITIES)),
]


class LearningController(Controller):
    path = "/v1/users/{user_id:str}/learning"
    tags = ["learning"]

    @get(
        "/",
        operation_id="getLearning",
        summary="Words practised per local day, week or month",
        description=LEARNING_DOC,
        responses=problem_responses(*KEYED, 400, 404),
    )
    async def learning(
        self,
        request: Request,
        user_id: FromPath[str],
        principal: PrincipalDep,
        services: ServicesDep,
        granularity: GranularityParam = None,
        from_: query.RangeFrom = None,
        to: query.RangeTo = None,
        tz: query.Zone = None,
    ) -> Response[Learning]:
        query.reject_unknown(request, ("granularity", "from", "to", "tz"))
        asked = learning_query(granularity, from_, to, tz)
        body = await learning(services, principal.tenant, user_id, asked, datetime.now(UTC))
        return query.json_response(body)


def learning_query(
    granularity: str | None, from_: str | None, to: str | None, tz: str | None
) -> LearningQuery:
    kind = query.choice(granularity, "granularity", GRANULARITIES)
    zone = periods.zone(tz)
    start, end = periods.bounds(from_, to, zone)
    periods.checked_range(start, end, LONGEST, zone)
    return LearningQuery(kind, zone, start, end)


async def learning(
    services: Services, tenant: str, user_id: str, asked: LearningQuery, now: datetime
) -> bytes:
    listed = periods.periods(asked.granularity, asked.start, asked.end, asked.zone)
    first, last = listed[0].start.astimezone(UTC), listed[-1].end.astimezone(UTC)
    served = services.served

    async def compute() -> answer_cache.Computed:
        # The watermark first, as for error counts (api/reads/errors.py).
        as_of = await served.watermark(served.learning_flow)
        months = clock.spans(first, last, "month")
        user, rows = await asyncio.gather(
            services.store.user(tenant, user_id),
            served.learning(tenant, user_id, months, first, last),
        )
        if user is None:
            raise NotFound(f"Learner {user_id!r} does not exist.", field="user_id")
        answer = Learning(
            user_id,
            asked.granularity,
            asked.zone.key,
            listed[0].start,
            listed[-1].end,
            as_of,
            roll_up(listed, rows),
        )
        return _encoder.encode(answer), as_of

    return await answer_cache.answer(
        services.redis,
        tenant,
        user_id,
        f"learning|{asked.granularity}|{asked.zone.key}|{asked.start}|{asked.end}",
        compute,
        ends=last,
        now=now,
    )


def roll_up(listed: list[periods.Period], rows: Iterable[LearningTuple]) -> list[LearningPeriod]:
    """Each quarter-hour bucket added to the period it starts in; the rows
    all lie within the periods, whose starts (naive UTC, as stored) are
    sorted."""
    starts = [to_stored_time(period.start) for period in listed]
    entries, words, late = [0] * len(listed), [0] * len(listed), [0] * len(listed)
    for bucket_start, entry_count, bucket_words, late_events in rows:
        i = bisect_right(starts, bucket_start) - 1
        entries[i] += entry_count
        words[i] += bucket_words
        late[i] += late_events
    return [
        LearningPeriod(
            period_start=period.start,
            period_end=period.end,
            entries=entries[i],
            total_words=words[i],
            average_words=round(words[i] / entries[i], 2) if entries[i] else 0.0,
            late_events=late[i],
        )
        for i, period in enumerate(listed)
    ]
