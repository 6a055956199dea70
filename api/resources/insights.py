"""GET /v1/insights: the completed insights of a time range, filtered by
confidence, sentiment, topic and learner, a page at a time, read from the
tables the insights dataflow serves (cql/schema/007_insights.cql).

How a page is read. Without `user_id` the range is walked hour by hour
through insights_by_hour: an hour is N partitions (shards), read
concurrently, each for its first `limit` matches after the position (the
filters are storage-attached indexes, applied inside each partition read);
merged in (ts, utterance_id) order, the first `limit` of them are the
hour's next `limit` matches. With `user_id` it walks the learner's UTC
months in insights_by_user_month the same way, one partition per month.

The page token is that position: the partition being walked and the last
(ts, utterance_id) returned from it, plus a digest of the filters it was
issued for. Every read starts strictly after it, so walking all pages
returns each insight that matched when the walk began exactly once, in
(ts, utterance_id) order, whatever arrives meanwhile (an insight that
arrives behind the position is not returned; one ahead of it is).

Bounded: one page reads at most MAX_HOURS_PER_PAGE hours (N partitions
each). A sparse range may therefore give a short or even empty page; it
still has a token until the range is exhausted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import heapq
import itertools
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, NamedTuple

import msgspec
from litestar import Controller, Request, get
from litestar.openapi.spec import OpenAPIType

from api.edge.problems import KEYED, BadRequest, problem_responses
from api.reads import periods, query
from api.services import PrincipalDep, ServicesDep
from api.shapes import Id, Insight, InsightPage
from api.writes.store import Store
from cql.clock import from_stored_time, to_stored_time
from llm.analysis import MAX_TOPIC_CHARS, normalise_topics

MAX_RANGE = timedelta(days=31)
LIMIT_DEFAULT, LIMIT_MAX = 100, 1000
# At most this many hours of insights_by_hour (times the shards) per page.
MAX_HOURS_PER_PAGE = 48
# Hours read at once grow 1, 2, 4, 8: a dense range reads little beyond
# what the page needs, a sparse one is not read one hour per round trip.
MAX_HOURS_AT_ONCE = 8
HOUR = timedelta(hours=1)
PARAMS = (
    "from", "to", "min_confidence", "sentiment_min", "sentiment_max",
    "user_id", "topic", "limit", "page_token",
)  # fmt: skip

INSIGHTS_DOC = f"""\
Completed insights (sentiment, topics, confidence, reasoning and their
provenance) of utterances whose timestamp is in [`from`, `to`), in
(timestamp, utterance_id) order, with confidence at least `min_confidence`
(0 to 1, default 0) and sentiment from `sentiment_min` to `sentiment_max`
(-1 to 1, defaults -1 and 1); optionally only one learner's (`user_id`) or
one topic's (`topic`, matched as stored: lowercase).

`from` and `to` are RFC 3339 timestamps with an offset, at most
{MAX_RANGE.days} days apart. At most `limit` insights per page (1 to
{LIMIT_MAX}, default {LIMIT_DEFAULT}); pass `next_page_token` back as
`page_token`, with the same filters, for the next page (`limit` may
change). Walking every page returns each insight once, even while new ones
arrive. A page may be short, or empty, and still have a token: each page
reads a bounded stretch of the range. `next_page_token` is null once the
range is exhausted.
"""

_NUMBER = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_token_encoder = msgspec.msgpack.Encoder()
_token_decoder = msgspec.msgpack.Decoder()


class InsightsQuery(NamedTuple):
    start: datetime  # naive UTC, as stored
    end: datetime
    min_confidence: float
    sentiment_min: float
    sentiment_max: float
    user_id: str | None
    topic: str | None
    limit: int

    @property
    def by(self) -> Literal["hour", "user"]:
        return "hour" if self.user_id is None else "user"

    @property
    def bounds(self) -> tuple[float, float, float]:
        return (self.min_confidence, self.sentiment_min, self.sentiment_max)


class Position(NamedTuple):
    """The partition being walked (its start: an hour, or a month with
    user_id) and the (ts, utterance_id) the walk continues after."""

    part: datetime
    ts: datetime
    utterance_id: str


class _Token(msgspec.Struct, array_like=True, frozen=True):
    part_ms: int
    ts_ms: int
    utterance_id: str
    filters: bytes


class InsightsController(Controller):
    path = "/v1/insights"
    tags = ["insights"]

    @get(
        "/",
        operation_id="listInsights",
        summary="Insights in a time range, filtered, a page at a time",
        description=INSIGHTS_DOC,
        responses=problem_responses(*KEYED, 400),
    )
    async def list_insights(
        self,
        request: Request,
        principal: PrincipalDep,
        services: ServicesDep,
        from_: query.TimeFrom = None,
        to: query.TimeTo = None,
        min_confidence: Annotated[
            str | None,
            query.param(
                "Lowest confidence", type=OpenAPIType.NUMBER, minimum=0, maximum=1, default=0
            ),
        ] = None,
        sentiment_min: Annotated[
            str | None,
            query.param(
                "Lowest sentiment", type=OpenAPIType.NUMBER, minimum=-1, maximum=1, default=-1
            ),
        ] = None,
        sentiment_max: Annotated[
            str | None,
            query.param(
                "Highest sentiment", type=OpenAPIType.NUMBER, minimum=-1, maximum=1, default=1
            ),
        ] = None,
        user_id: Annotated[
            str | None, query.param("Only this learner's", type=query.STRING)
        ] = None,
        topic: Annotated[
            str | None, query.param("Only insights with this topic", type=query.STRING)
        ] = None,
        limit: Annotated[
            str | None,
            query.param(
                "Most insights on the page",
                type=query.INTEGER,
                minimum=1,
                maximum=LIMIT_MAX,
                default=LIMIT_DEFAULT,
            ),
        ] = None,
        page_token: Annotated[
            str | None,
            query.param("next_page_token of the previous page", type=query.STRING),
        ] = None,
    ) -> InsightPage:
        query.reject_unknown(request, PARAMS)
        asked = insights_query(
            from_, to, min_confidence, sentiment_min, sentiment_max, user_id, topic, limit
        )
        digest = filters_digest(principal.tenant, asked)
        position = start_position(asked, page_token, digest)
        shards = services.settings.dataflow.insight_shards
        return await insight_page(services.store, principal.tenant, asked, position, digest, shards)


# ---- the parameters


def insights_query(
    from_: str | None,
    to: str | None,
    min_confidence: str | None,
    sentiment_min: str | None,
    sentiment_max: str | None,
    user_id: str | None,
    topic: str | None,
    limit: str | None,
) -> InsightsQuery:
    start = periods.instant(from_, "from").astimezone(UTC)
    end = periods.instant(to, "to").astimezone(UTC)
    periods.checked_range(start, end, MAX_RANGE)
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
    stored = to_stored_time(moment)
    return stored if stored == moment.replace(tzinfo=None) else stored + timedelta(milliseconds=1)


# ---- the page token


def filters_digest(tenant: str, asked: InsightsQuery) -> bytes:
    """What a token belongs to: everything that selects insights, not the
    limit (a client may change it from page to page)."""
    selection = (tenant, *asked._replace(limit=0))
    return hashlib.blake2b(_token_encoder.encode(selection), digest_size=12).digest()


def start_position(asked: InsightsQuery, token: str | None, digest: bytes) -> Position:
    first = _part_of(asked, asked.start)
    if token is None:
        return Position(first, asked.start, "")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = msgspec.convert(_token_decoder.decode(raw), _Token)
        position = Position(
            _from_ms(decoded.part_ms), _from_ms(decoded.ts_ms), decoded.utterance_id
        )
    except (binascii.Error, ValueError, OverflowError, msgspec.MsgspecError):
        raise BadRequest(
            "`page_token` is not a token this API issued; use next_page_token as it came.",
            field="page_token",
        ) from None
    if decoded.filters != digest:
        raise BadRequest(
            "`page_token` was issued for other filters; send the same `from`, `to`, "
            "`min_confidence`, `sentiment_min`, `sentiment_max`, `user_id` and `topic` "
            "as for the first page.",
            field="page_token",
        )
    if not (
        first <= position.part < asked.end
        and _part_of(asked, position.part) == position.part
        and position.part <= position.ts
    ):
        raise BadRequest("`page_token` is outside the range asked for.", field="page_token")
    return position


def _token(position: Position, digest: bytes) -> str:
    encoded = _token_encoder.encode(
        _Token(_ms(position.part), _ms(position.ts), position.utterance_id, digest)
    )
    return base64.urlsafe_b64encode(encoded).rstrip(b"=").decode()


_EPOCH = datetime(1970, 1, 1)


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


# ---- the walk


def _part_of(asked: InsightsQuery, moment: datetime) -> datetime:
    """The start of the partition holding `moment`: its hour, or its month
    when walking a learner's insights."""
    if asked.user_id is None:
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_part(asked: InsightsQuery, part: datetime) -> datetime:
    if asked.user_id is None:
        return part + HOUR
    return (part + timedelta(days=32)).replace(day=1)


async def insight_page(
    store: Store,
    tenant: str,
    asked: InsightsQuery,
    position: Position,
    digest: bytes,
    shards: int,
) -> InsightPage:
    """The page from `position` on: at most `asked.limit` insights, read
    from at most MAX_HOURS_PER_PAGE partition starts."""
    found: list[tuple] = []
    part, after = position.part, (position.ts, position.utterance_id)
    parts_read, at_once = 0, 1
    while part < asked.end and parts_read < MAX_HOURS_PER_PAGE:
        wave = [part]
        while len(wave) < min(at_once, MAX_HOURS_PER_PAGE - parts_read):
            following = _next_part(asked, wave[-1])
            if following >= asked.end:
                break
            wave.append(following)
        need = asked.limit - len(found)
        slices = await asyncio.gather(
            *(
                _read_part(store, tenant, asked, p, after if p == part else (p, ""), need, shards)
                for p in wave
            )
        )
        for p, rows in zip(wave, slices, strict=True):
            parts_read += 1
            need = asked.limit - len(found)
            if len(rows) >= need:
                found += rows[:need]
                last = found[-1]
                return _page(found, Position(p, last[0], last[1]), digest)
            found += rows
        part = _next_part(asked, wave[-1])
        after = (part, "")
        at_once = min(2 * at_once, MAX_HOURS_AT_ONCE)
    return _page(found, Position(part, part, "") if part < asked.end else None, digest)


async def _read_part(
    store: Store,
    tenant: str,
    asked: InsightsQuery,
    part: datetime,
    after: tuple[datetime, str],
    limit: int,
    shards: int,
) -> list[tuple]:
    """The partition start's first `limit` matches after `after`: the merge
    of its shards' own first `limit`, which must hold them all."""
    if asked.user_id is None:
        keys: list[tuple] = [(tenant, part, shard) for shard in range(shards)]
    else:
        keys = [(tenant, asked.user_id, part)]
    slices = await asyncio.gather(
        *(
            store.insights_after(asked.by, key, after, asked.end, asked.bounds, asked.topic, limit)
            for key in keys
        )
    )
    merged = heapq.merge(*slices, key=lambda row: (row[0], row[1]))
    return list(itertools.islice(merged, limit))


def _page(rows: Sequence[tuple], following: Position | None, digest: bytes) -> InsightPage:
    token = None if following is None else _token(following, digest)
    return InsightPage([_insight(row) for row in rows], token)


def _insight(row: tuple) -> Insight:
    # Columns as in api.writes.store.INSIGHT_SLICE_COLUMNS.
    ts, utterance_id, user_id, sentiment, topics, *rest = row
    return Insight(
        utterance_id, user_id, from_stored_time(ts), sentiment, sorted(topics or ()), *rest
    )
