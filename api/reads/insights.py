"""The pages of GET /v1/insights, read from the tables the insights dataflow
serves (cql/schema/007_insights.cql).

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
from collections.abc import Sequence
from datetime import datetime
from typing import Literal, NamedTuple

import msgspec

from api.edge.problems import BadRequest
from api.reads.shapes import Insight, InsightPage
from api.writes.store import Store
from cql.clock import HOUR, from_ms, from_stored_time, next_month, to_ms
from cql.insights import hour_of, month_of

# At most this many hours of insights_by_hour (times the shards) per page.
MAX_HOURS_PER_PAGE = 48
# Hours read at once grow 1, 2, 4, 8: a dense range reads little beyond
# what the page needs, a sparse one is not read one hour per round trip.
MAX_HOURS_AT_ONCE = 8
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
        position = Position(from_ms(decoded.part_ms), from_ms(decoded.ts_ms), decoded.utterance_id)
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
        _Token(to_ms(position.part), to_ms(position.ts), position.utterance_id, digest)
    )
    return base64.urlsafe_b64encode(encoded).rstrip(b"=").decode()


# ---- the walk


def _part_of(asked: InsightsQuery, moment: datetime) -> datetime:
    """The start of the partition holding `moment`: its hour, or its month
    when walking a learner's insights."""
    return hour_of(moment) if asked.user_id is None else month_of(moment)


def _next_part(asked: InsightsQuery, part: datetime) -> datetime:
    return part + HOUR if asked.user_id is None else next_month(part)


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
