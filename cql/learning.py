"""Learning facts, quarter-hour buckets and the dataflows' progress
(cql/schema/006_learning.cql). Field order is column order."""

from __future__ import annotations

from datetime import datetime

import msgspec

from cql.table import Table


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
# The flows, by the name each records its position under in dataflow_progress.
ERROR_FLOW = "error_counters"
LEARNING_FLOW = "learning"
INSIGHTS_FLOW = "insights"
FLOWS = (ERROR_FLOW, LEARNING_FLOW, INSIGHTS_FLOW)

DATAFLOW_PROGRESS = Table("dataflow_progress", ProgressRow, ["flow"], ["shard"])
