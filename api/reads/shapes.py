"""What the reads of the v1 API answer: an utterance with its status and
insight, insight pages, windowed error counts, top errors and learning
periods. Each answer says how complete it is (`as_of`, late events)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from api.shapes import LABEL_CASE, ErrorPoint, Struct, UtteranceStatus


class Utterance(Struct):
    utterance_id: str
    user_id: str
    conversation_id: str
    text: str
    timestamp: datetime
    errors: list[ErrorPoint]
    words_learned: int
    received_at: datetime
    status: UtteranceStatus
    status_reason: str | None = None
    insight: UtteranceInsight | None = None


# ---- insights (GET /v1/utterances/{id} and GET /v1/insights)

ParseStatus = Annotated[
    Literal["strict", "repaired", "failed"],
    Meta(
        description="How the model's reply was read: as asked (strict), after safe repairs "
        "(repaired), or not at all (failed)"
    ),
]


class UtteranceInsight(Struct):
    """The utterance's latest analysis with its provenance; the analysis
    fields are null when it failed, and failure_reason says why."""

    sentiment: float | None
    topics: list[str] | None
    confidence: float | None
    reasoning: str | None
    model: str
    prompt_version: str
    parse_status: ParseStatus
    attempts: Annotated[int, Meta(description="HTTP calls made to the model")]
    latency_ms: Annotated[int, Meta(description="Time to analyse, waits and retries included")]
    failure_reason: str | None
    analyzed_at: datetime


class Insight(Struct):
    utterance_id: str
    user_id: str
    timestamp: datetime
    sentiment: float
    topics: list[str]
    confidence: float
    reasoning: str
    model: str
    prompt_version: str
    parse_status: ParseStatus


class InsightPage(Struct):
    insights: list[Insight]
    next_page_token: Annotated[
        str | None,
        Meta(
            description="Pass it as `page_token` (with the same filters) for the next page; "
            "null once the range is exhausted. A page may be short, even empty, and still have one"
        ),
    ]
    as_of: Annotated[
        datetime | None,
        Meta(
            description="How far the insights dataflow has read: every utterance accepted "
            "before it has reached the flow, and is listed here once its analysis is written "
            "(null until the flow has recorded its progress)"
        ),
    ] = None


# ---- served GET endpoints: errors, errors/top, learning

AsOf = Annotated[
    datetime | None,
    Meta(
        description="The dataflow's watermark: every utterance accepted before it is counted "
        "(null until the dataflow has recorded its progress)"
    ),
]
LateEvents = Annotated[
    int,
    Meta(description="Events counted here that arrived after their window or bucket had closed"),
]


class ErrorCount(Struct):
    category: Annotated[str, Meta(description=LABEL_CASE)]
    subcategory: Annotated[str, Meta(description=LABEL_CASE)]
    count: int


class ErrorWindow(Struct):
    window_start: datetime
    window_end: datetime
    counts: list[ErrorCount]
    late_events: LateEvents
    as_of: Annotated[
        datetime,
        Meta(
            description="When this window was last counted: never earlier than the newest "
            "utterance counted in it (its received_at)"
        ),
    ]


class ErrorWindows(Struct):
    user_id: str
    window: Literal["minute", "hour", "day", "month"]
    range_from: Annotated[
        datetime, Meta(description="Start of the first window listed or not: `from` snapped")
    ] = msgspec.field(name="from")
    to: Annotated[datetime, Meta(description="End of the last window: `to` snapped (exclusive)")]
    as_of: AsOf
    windows: list[ErrorWindow]
    tz: Annotated[str, Meta(description="The time zone of the local days and months")] = "UTC"


class TopErrors(Struct):
    user_id: str
    since: Annotated[
        date | None, Meta(description="First local day (in `tz`) counted; null for all time")
    ]
    as_of: AsOf
    errors: list[ErrorCount]
    tz: str = "UTC"
    range_from: Annotated[
        datetime | None,
        Meta(
            description="When the day `since` begins in `tz`: counted from then; null for all time"
        ),
    ] = msgspec.field(default=None, name="from")


class LearningPeriod(Struct):
    period_start: datetime
    period_end: datetime
    entries: int
    total_words: int
    average_words: Annotated[
        float, Meta(description="total_words / entries, rounded to 2 decimals; 0 without entries")
    ]
    late_events: LateEvents


class Learning(Struct):
    user_id: str
    granularity: Literal["day", "week", "month"]
    tz: str
    range_from: Annotated[
        datetime, Meta(description="Start of the first period: `from` snapped")
    ] = msgspec.field(name="from")
    to: Annotated[datetime, Meta(description="End of the last period: `to` snapped (exclusive)")]
    as_of: AsOf
    periods: list[LearningPeriod]
