"""Row Structs and Table definitions for the tables the dataflows write and
the API serves (cql/schema/005-006). Field order is column order."""

from __future__ import annotations

from datetime import datetime

import msgspec

from cql.table import Table


class ErrorPointFact(msgspec.Struct):
    tenant: str
    user_id: str
    day: datetime
    ts: datetime
    utterance_id: str
    point: int
    category: str
    subcategory: str
    written_at: datetime


class ErrorCountRow(msgspec.Struct):
    tenant: str
    user_id: str
    window: str
    bucket: datetime
    window_start: datetime
    category: str
    subcategory: str
    count: int
    late_events: int
    as_of: datetime


class ErrorTotalRow(msgspec.Struct):
    tenant: str
    user_id: str
    category: str
    subcategory: str
    count: int
    as_of: datetime


class LearningFact(msgspec.Struct):
    tenant: str
    user_id: str
    day: datetime
    ts: datetime
    utterance_id: str
    words_learned: int
    written_at: datetime


class LearningBucketRow(msgspec.Struct):
    tenant: str
    user_id: str
    month: datetime
    bucket_start: datetime
    entry_count: int
    words: int
    late_events: int
    as_of: datetime


class ProgressRow(msgspec.Struct):
    flow: str
    shard: int
    position: datetime
    updated_at: datetime


ERROR_POINTS = Table(
    "error_points_by_user_day",
    ErrorPointFact,
    ["tenant", "user_id", "day"],
    ["ts", "utterance_id", "point"],
)
ERROR_COUNTS = Table(
    "error_counts_by_user",
    ErrorCountRow,
    ["tenant", "user_id", "window", "bucket"],
    ["window_start", "category", "subcategory"],
)
ERROR_TOTALS = Table(
    "error_totals_by_user", ErrorTotalRow, ["tenant", "user_id"], ["category", "subcategory"]
)
LEARNING_EVENTS = Table(
    "learning_events_by_user_day",
    LearningFact,
    ["tenant", "user_id", "day"],
    ["ts", "utterance_id"],
)
LEARNING_BUCKETS = Table(
    "learning_by_user_quarter_hour",
    LearningBucketRow,
    ["tenant", "user_id", "month"],
    ["bucket_start"],
)
DATAFLOW_PROGRESS = Table("dataflow_progress", ProgressRow, ["flow"], ["shard"])

TABLES: tuple[Table, ...] = (
    ERROR_POINTS,
    ERROR_COUNTS,
    ERROR_TOTALS,
    LEARNING_EVENTS,
    LEARNING_BUCKETS,
    DATAFLOW_PROGRESS,
)
