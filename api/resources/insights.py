"""GET /v1/insights: the completed insights of a time range, filtered by
confidence, sentiment, topic and learner, a page at a time (the reads:
api/reads/insights.py)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec
from litestar import Controller, Request, get
from litestar.openapi.spec import OpenAPIType

from api.edge.problems import KEYED, BadRequest, NotFound, problem_responses
from api.reads import periods, query
from api.reads.insights import (
    InsightsQuery,
    filters_digest,
    insight_page,
    start_position,
)
from api.reads.shapes import InsightPage
from api.services import PrincipalDep, Services, ServicesDep
from api.shapes import ID_PATTERN, Id
from cql.clock import to_stored_time
from llm.analysis import MAX_TOPIC_CHARS, normalise_topics

MAX_RANGE = timedelta(days=31)
LIMIT_DEFAULT, LIMIT_MAX = 100, 1000
PARAMS = (
    "from", "to", "tz", "min_confidence", "sentiment_min", "sentiment_max",
    "user_id", "topic", "limit", "page_token",
)  # fmt: skip

INSIGHTS_DOC = f"""\
Completed insights (sentiment, topics, confidence, reasoning and their
provenance) of utterances whose timestamp is in [`from`, `to`), in
(timestamp, utterance_id) order, with confidence at least `min_confidence`
(0 to 1, default 0) and sentiment from `sentiment_min` to `sentiment_max`
(-1 to 1, defaults -1 and 1); optionally only one learner's (`user_id`) or
one topic's (`topic`, matched as stored: lowercase).

`from` and `to` are each a date YYYY-MM-DD, meaning the start of that day
in `tz` (an IANA name, default UTC), or an RFC 3339 timestamp with an
offset, at most {MAX_RANGE.days} days apart (on the clock of `tz`).

At most `limit` insights per page (1 to {LIMIT_MAX}, default
{LIMIT_DEFAULT}); pass `next_page_token` back as `page_token`, with the same
filters, for the next page (`limit` may change). Walking every page returns each insight once, even while new ones
arrive. A page may be short, or empty, and still have a token: each page
reads a bounded stretch of the range. `next_page_token` is null once the
range is exhausted.

`as_of` is how far the insights dataflow has read the change feed: an
utterance accepted before it has reached the flow, and its insight is
listed once the analysis is written (an analysis can take seconds; a failed
one is never listed). With `user_id`, a learner that does not exist is 404.
"""

_NUMBER = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
MinConfidence = Annotated[
    str | None,
    query.param("Lowest confidence", type=OpenAPIType.NUMBER, minimum=0, maximum=1, default=0),
]
SentimentMin = Annotated[
    str | None,
    query.param("Lowest sentiment", type=OpenAPIType.NUMBER, minimum=-1, maximum=1, default=-1),
]
SentimentMax = Annotated[
    str | None,
    query.param("Highest sentiment", type=OpenAPIType.NUMBER, minimum=-1, maximum=1, default=1),
]
Learner = Annotated[
    str | None, query.param("Only this learner's", type=query.STRING, pattern=ID_PATTERN)
]
Topic = Annotated[str | None, query.param("Only insights with this topic", type=query.STRING)]
Limit = Annotated[str | None, query.page_limit("insights", LIMIT_MAX, LIMIT_DEFAULT)]
PageToken = Annotated[str | None, query.PAGE_TOKEN]


class InsightsController(Controller):
    path = "/v1/insights"
    tags = ["insights"]

    @get(
        "/",
        operation_id="listInsights",
        summary="Insights in a time range, filtered, a page at a time",
        description=INSIGHTS_DOC,
        responses=problem_responses(*KEYED, 400, 404),
    )
    async def list_insights(
        self,
        request: Request,
        principal: PrincipalDep,
        services: ServicesDep,
        from_: query.RangeFrom = None,
        to: query.RangeTo = None,
        tz: query.Zone = None,
        min_confidence: MinConfidence = None,
        sentiment_min: SentimentMin = None,
        sentiment_max: SentimentMax = None,
        user_id: Learner = None,
        topic: Topic = None,
        limit: Limit = None,
        page_token: PageToken = None,
    ) -> InsightPage:
        query.reject_unknown(request, PARAMS)
        asked = insights_query(
            (from_, to, tz), min_confidence, sentiment_min, sentiment_max, user_id, topic, limit
        )
        return await insights(services, principal.tenant, asked, page_token)


async def insights(
    services: Services, tenant: str, asked: InsightsQuery, page_token: str | None
) -> InsightPage:
    """The page of GET /v1/insights after `page_token` (the first without)."""
    digest = filters_digest(tenant, asked)
    position = start_position(asked, page_token, digest)
    served = services.served
    # The flow's progress first, as for the error counts (api/reads/errors.py).
    as_of = await served.watermark(served.insights_flow)
    if asked.user_id is not None and await services.store.user(tenant, asked.user_id) is None:
        raise NotFound(f"Learner {asked.user_id!r} does not exist.", field="user_id")
    shards = services.settings.dataflow.insight_shards
    page = await insight_page(services.store, tenant, asked, position, digest, shards)
    return msgspec.structs.replace(page, as_of=as_of)


# ---- the parameters


def insights_query(
    range_: tuple[str | None, str | None, str | None],
    min_confidence: str | None,
    sentiment_min: str | None,
    sentiment_max: str | None,
    user_id: str | None,
    topic: str | None,
    limit: str | None,
) -> InsightsQuery:
    """`range_`: the raw `from`, `to` and `tz`."""
    from_, to, tz = range_
    zone = periods.zone(tz)
    start, end = periods.bounds(from_, to, zone)
    periods.checked_range(start, end, MAX_RANGE, zone)
    low = _number(sentiment_min, "sentiment_min", -1.0, 1.0, -1.0)
    high = _number(sentiment_max, "sentiment_max", -1.0, 1.0, 1.0)
    if low > high:
        raise BadRequest(
            f"`sentiment_min` ({low:g}) must not be above `sentiment_max` ({high:g}).",
            field="sentiment_min",
        )
    return InsightsQuery(
        _stored_ceil(start),
        _stored_ceil(end),
        _number(min_confidence, "min_confidence", 0.0, 1.0, 0.0),
        low,
        high,
        _learner(user_id),
        _topic(topic),
        query.integer(limit, "limit", 1, LIMIT_MAX, LIMIT_DEFAULT),
    )


def _number(raw: str | None, name: str, low: float, high: float, default: float) -> float:
    if raw is None:
        return default
    # A decimal number only: float() would also take "nan", "inf" and "1_0".
    value = float(raw) if _NUMBER.fullmatch(raw) else math.nan
    if not low <= value <= high:
        raise BadRequest(
            f"`{name}` must be a number from {low:g} to {high:g}; got {raw!r}.", field=name
        )
    return value


def _learner(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        return msgspec.convert(raw, Id)
    except msgspec.ValidationError:
        raise BadRequest(
            "`user_id` must be 1-128 characters: letters, digits and . _ : @ -, "
            "starting with a letter or digit.",
            field="user_id",
        ) from None


def _topic(raw: str | None) -> str | None:
    """Written down as stored topics are (lowercase, single-spaced)."""
    if raw is None:
        return None
    topic = normalise_topics([raw])
    if not topic or len(" ".join(raw.split())) > MAX_TOPIC_CHARS:
        raise BadRequest(
            f"`topic` must be 1 to {MAX_TOPIC_CHARS} characters besides spaces; got {raw!r}.",
            field="topic",
        )
    return topic[0]


def _stored_ceil(moment: datetime) -> datetime:
    """As stored (naive UTC milliseconds), rounded up: `ts >= from` and
    `ts < to` then mean the same for stored times as for the instants."""
    moment = moment.astimezone(UTC)
    stored = to_stored_time(moment)
    return stored if stored == moment.replace(tzinfo=None) else stored + timedelta(milliseconds=1)
