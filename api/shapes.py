"""Request and response shapes of the v1 API: what a client sends (`...In`)
and what it gets back, with the limits that make bad input a 400 naming the
field. Unknown fields are rejected, so a typo never passes silently.

Schema evolution: new fields get defaults and go last; types never change.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from runtime.settings import ApiSettings

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
Id = Annotated[
    str,
    Meta(
        pattern=ID_PATTERN,
        description="1-128 characters: letters, digits and . _ : @ -, starting with a letter or digit",
    ),
]
# Whitespace as the server's checks (Python's `\s`) see it, spelled out in the
# patterns: `\s`, `\S` and `.` mean other characters to JSON Schema (ECMA 262)
# and to the clients and fuzzers that read the document.
SPACE = r"\x09-\x0d\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
LABEL_PATTERN = rf"^[^{SPACE}]([^\n]*[^{SPACE}])?$"
Label = Annotated[str, Meta(min_length=1, max_length=64, pattern=LABEL_PATTERN)]
AwareTime = Annotated[
    datetime, Meta(tz=True, description="RFC 3339 with an offset, e.g. 2026-01-31T09:30:00+05:30")
]


class Struct(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    pass


class UserIn(Struct):
    email: Annotated[
        str, Meta(min_length=3, max_length=254, pattern=rf"^[^@{SPACE}]+@[^@{SPACE}]+$")
    ]
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    user_id: Id | None = None


class User(Struct):
    user_id: str
    email: str
    name: str
    created_at: datetime


class ConversationIn(Struct):
    user_id: Id
    conversation_id: Id | None = None
    title: Annotated[str, Meta(max_length=200)] | None = None
    started_at: AwareTime | None = None


class Conversation(Struct):
    conversation_id: str
    user_id: str
    title: str | None
    started_at: datetime


class ErrorPoint(Struct):
    category: Label
    subcategory: Label


class UtteranceIn(Struct):
    conversation_id: Id
    user_id: Id
    text: Annotated[str, Meta(min_length=1, max_length=10_000)]
    timestamp: AwareTime
    errors: Annotated[list[ErrorPoint], Meta(max_length=100)] = []
    words_learned: Annotated[int, Meta(ge=0, le=100_000)] = 0
    utterance_id: Id | None = None


class Accepted(Struct):
    utterance_id: str
    status: Literal["pending"] = "pending"
    duplicate: bool = False


# The batch limit is the setting api.max_batch_items, which the batch handler
# checks (400 naming `utterances`); a msgspec constraint would fix it at import.
# The OpenAPI document states the default (Litestar reads `extra` into the schema).
MAX_BATCH_ITEMS = ApiSettings().max_batch_items


class BatchIn(Struct):
    utterances: Annotated[
        list[UtteranceIn],
        Meta(min_length=1, extra_json_schema={"extra": {"maxItems": MAX_BATCH_ITEMS}}),
    ]


class ItemResult(Struct):
    index: int
    status: int
    utterance_id: str | None = None
    duplicate: bool = False
    error: str | None = None
    detail: str | None = None


class BatchResult(Struct):
    accepted: int
    duplicates: int
    rejected: int
    results: list[ItemResult]


class Utterance(Struct):
    utterance_id: str
    user_id: str
    conversation_id: str
    text: str
    timestamp: datetime
    errors: list[ErrorPoint]
    words_learned: int
    received_at: datetime
    status: Literal["pending", "processing", "completed", "failed"]
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
    category: str
    subcategory: str
    count: int


class ErrorWindow(Struct):
    window_start: datetime
    window_end: datetime
    counts: list[ErrorCount]
    late_events: LateEvents
    as_of: Annotated[datetime, Meta(description="When this window was last counted")]


class ErrorWindows(Struct):
    user_id: str
    window: Literal["minute", "hour", "day"]
    range_from: datetime = msgspec.field(name="from")
    to: datetime
    as_of: AsOf
    windows: list[ErrorWindow]


class TopErrors(Struct):
    user_id: str
    since: Annotated[date | None, Meta(description="First UTC day counted; null for all time")]
    as_of: AsOf
    errors: list[ErrorCount]


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
    range_from: datetime = msgspec.field(name="from")
    to: datetime
    as_of: AsOf
    periods: list[LearningPeriod]


# ---- errors


class Problem(msgspec.Struct):
    """An RFC 9457 problem document: every error answer (documentation only;
    api/errors.py builds them)."""

    type: Annotated[str, Meta(description="A URL naming the kind of problem")]
    title: str
    status: int
    detail: Annotated[str, Meta(description="What went wrong and what to do about it")]
    instance: Annotated[str | None, Meta(description="The request's path")] = None
    field: Annotated[str | None, Meta(description="The field or header at fault")] = None
