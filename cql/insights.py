"""Row Structs and Table definitions for the insight tables
(cql/schema/007_insights.cql), and the copy of an utterance's insight kept
beside it in utterances_by_id (014_utterance_insight.cql). Field order is
column order."""

from __future__ import annotations

from datetime import datetime

import msgspec

from cql.clock import month_start
from cql.table import Table


class InsightRow(msgspec.Struct):
    tenant: str
    utterance_id: str
    user_id: str
    ts: datetime
    sentiment: float | None
    topics: list[str] | None
    confidence: float | None
    reasoning: str | None
    model: str
    prompt_version: str
    parse_status: str
    attempts: int
    latency_ms: int
    failure_reason: str | None
    analyzed_at: datetime


class InsightByHourRow(msgspec.Struct):
    tenant: str
    hour: datetime
    shard: int
    ts: datetime
    utterance_id: str
    user_id: str
    sentiment: float
    topics: set[str]
    confidence: float
    reasoning: str
    model: str
    prompt_version: str
    parse_status: str


class InsightByUserRow(msgspec.Struct):
    tenant: str
    user_id: str
    month: datetime
    ts: datetime
    utterance_id: str
    sentiment: float
    topics: set[str]
    confidence: float
    reasoning: str
    model: str
    prompt_version: str
    parse_status: str


class FailedInsightRow(msgspec.Struct):
    day: datetime
    failed_at: datetime
    tenant: str
    utterance_id: str
    failure_reason: str


INSIGHTS = Table("insights_by_utterance", InsightRow, ["tenant", "utterance_id"])
INSIGHTS_BY_HOUR = Table(
    "insights_by_hour", InsightByHourRow, ["tenant", "hour", "shard"], ["ts", "utterance_id"]
)
INSIGHTS_BY_USER = Table(
    "insights_by_user_month",
    InsightByUserRow,
    ["tenant", "user_id", "month"],
    ["ts", "utterance_id"],
)
FAILED_INSIGHTS = Table(
    "failed_insights_by_day", FailedInsightRow, ["day"], ["failed_at", "tenant", "utterance_id"]
)


# ---- partitions: one definition for the writer and the reader


def hour_of(ts: datetime) -> datetime:
    """The insights_by_hour partition (with a shard) holding an insight at `ts`."""
    return ts.replace(minute=0, second=0, microsecond=0)


def month_of(ts: datetime) -> datetime:
    """The insights_by_user_month partition holding an insight at `ts`."""
    return month_start(ts)


def insight_json(row: InsightRow) -> str:
    """The insights_by_utterance row as utterances_by_id.insight holds it."""
    return _json_encoder.encode(row).decode()


def insight_from_json(text: str) -> InsightRow:
    return _json_decoder.decode(text)


_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(InsightRow)
