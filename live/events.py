"""What a live client receives: one Struct per event type, every value
absolute (a count, a total, a status), never a delta, so an event that
arrives twice or after a reset changes nothing a client could get wrong.

Each event names its learner (`user_id`) and is built from the very rows
just written (`*_events` below), so it reports what is durably stored.
Times are RFC 3339 in UTC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal, NamedTuple

import msgspec

from cql.clock import from_stored_time
from cql.error_counts import ErrorCountRow, ErrorTotalRow
from cql.insights import InsightRow
from cql.learning import LearningBucketRow

EventType = Literal["utterance", "errors", "learning", "insight"]
TYPES: tuple[EventType, ...] = ("utterance", "errors", "learning", "insight")
# Not a type a client filters on: always delivered (see live.bus).
RESET = "reset"


class UtteranceEvent(msgspec.Struct, omit_defaults=True):
    user_id: str
    utterance_id: str
    status: str
    reason: str | None = None


class ErrorWindow(msgspec.Struct):
    window: str  # minute, hour, day or month
    start: datetime
    category: str
    subcategory: str
    count: int
    late_events: int


class ErrorTotal(msgspec.Struct):
    category: str
    subcategory: str
    count: int


class ErrorsEvent(msgspec.Struct):
    """The learner's windows and all-time totals a batch changed."""

    user_id: str
    as_of: datetime
    windows: list[ErrorWindow]
    totals: list[ErrorTotal]


class LearningBucket(msgspec.Struct):
    start: datetime  # a quarter hour, what periods in any time zone are summed from
    entries: int
    words: int


class LearningDay(msgspec.Struct):
    day: datetime  # a UTC day
    entries: int
    total_words: int


class LearningEvent(msgspec.Struct):
    """The learner's quarter-hour buckets a batch changed, and the totals of
    the UTC days they lie in."""

    user_id: str
    as_of: datetime
    buckets: list[LearningBucket]
    days: list[LearningDay]


class InsightEvent(msgspec.Struct, omit_defaults=True):
    user_id: str
    utterance_id: str
    parse_status: str
    analyzed_at: datetime
    sentiment: float | None = None
    topics: list[str] | None = None
    confidence: float | None = None
    model: str | None = None
    failure_reason: str | None = None


class ResetEvent(msgspec.Struct):
    reason: str
    detail: str


Payload = UtteranceEvent | ErrorsEvent | LearningEvent | InsightEvent | ResetEvent


class Event(NamedTuple):
    """One event to append to `tenant`'s stream."""

    tenant: str
    type: str
    user_id: str
    payload: Payload


def utterance_event(
    tenant: str, utterance_id: str, user_id: str, status: str, reason: str | None = None
) -> Event:
    return Event(
        tenant, "utterance", user_id, UtteranceEvent(user_id, utterance_id, status, reason)
    )


def errors_events(rows: Sequence[ErrorCountRow], totals: Sequence[ErrorTotalRow]) -> list[Event]:
    """One `errors` event per learner whose rows were just written."""
    windows: dict[tuple[str, str], list[ErrorWindow]] = {}
    sums: dict[tuple[str, str], list[ErrorTotal]] = {}
    as_of: dict[tuple[str, str], datetime] = {}
    for r in rows:
        windows.setdefault((r.tenant, r.user_id), []).append(
            ErrorWindow(
                r.window,
                from_stored_time(r.window_start),
                r.category,
                r.subcategory,
                r.count,
                r.late_events,
            )
        )
        as_of[(r.tenant, r.user_id)] = r.as_of
    for t in totals:
        sums.setdefault((t.tenant, t.user_id), []).append(
            ErrorTotal(t.category, t.subcategory, t.count)
        )
        as_of[(t.tenant, t.user_id)] = t.as_of
    return [
        Event(
            tenant,
            "errors",
            user_id,
            ErrorsEvent(
                user_id,
                from_stored_time(moment),
                windows.get((tenant, user_id), []),
                sums.get((tenant, user_id), []),
            ),
        )
        for (tenant, user_id), moment in as_of.items()
    ]


def learning_events(
    rows: Sequence[LearningBucketRow],
    days: Mapping[tuple[str, str, datetime], tuple[int, int]],
) -> list[Event]:
    """One `learning` event per learner: the buckets written, and the totals
    (entries, words) of the touched UTC days, from `days`."""
    buckets: dict[tuple[str, str], list[LearningBucket]] = {}
    as_of: dict[tuple[str, str], datetime] = {}
    for r in rows:
        learner = (r.tenant, r.user_id)
        buckets.setdefault(learner, []).append(
            LearningBucket(from_stored_time(r.bucket_start), r.entry_count, r.words)
        )
        as_of[learner] = r.as_of
    totals: dict[tuple[str, str], list[LearningDay]] = {}
    for (tenant, user_id, day), (entries, words) in days.items():
        totals.setdefault((tenant, user_id), []).append(
            LearningDay(from_stored_time(day), entries, words)
        )
    return [
        Event(
            tenant,
            "learning",
            user_id,
            LearningEvent(
                user_id,
                from_stored_time(moment),
                buckets[(tenant, user_id)],
                totals.get((tenant, user_id), []),
            ),
        )
        for (tenant, user_id), moment in as_of.items()
    ]


def insight_events(row: InsightRow) -> list[Event]:
    """The insight, and the utterance's final status (`completed`, `failed`)."""
    status = "failed" if row.parse_status == "failed" else "completed"
    insight = InsightEvent(
        row.user_id,
        row.utterance_id,
        row.parse_status,
        from_stored_time(row.analyzed_at),
        row.sentiment,
        row.topics,
        row.confidence,
        row.model,
        row.failure_reason,
    )
    return [
        Event(row.tenant, "insight", row.user_id, insight),
        utterance_event(row.tenant, row.utterance_id, row.user_id, status, row.failure_reason),
    ]
