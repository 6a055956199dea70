"""The listing tables (cql/schema/010_listings.cql) and the one rule of which
bucket a learner is listed in. Field order is column order."""

from __future__ import annotations

import zlib
from datetime import datetime

import msgspec

from cql.clock import DAY, floor_to
from cql.table import Table
from cql.utterances import ErrorPoints, UtteranceRow

# Partitions of a tenant's learner list. The writer and the reader must
# agree, so a change needs the table rebuilt.
LEARNER_BUCKETS = 16


class ListedLearnerRow(msgspec.Struct):
    tenant: str
    bucket: int
    user_id: str
    email: str
    name: str
    created_at: datetime
    idem_key: str | None


class ListedConversationRow(msgspec.Struct):
    tenant: str
    user_id: str
    conversation_id: str
    title: str | None
    started_at: datetime
    idem_key: str | None


class ListedUtteranceRow(msgspec.Struct):
    tenant: str
    user_id: str
    day: datetime
    ts: datetime
    utterance_id: str
    conversation_id: str
    text: str
    errors: ErrorPoints
    words_learned: int
    idem_key: str | None


class UtteranceDayRow(msgspec.Struct):
    tenant: str
    user_id: str
    day: datetime


class ConversationUtteranceRow(msgspec.Struct):
    tenant: str
    conversation_id: str
    ts: datetime
    utterance_id: str
    user_id: str
    text: str
    errors: ErrorPoints
    words_learned: int


LEARNERS_BY_BUCKET = Table(
    "learners_by_bucket", ListedLearnerRow, ["tenant", "bucket"], ["user_id"]
)
CONVERSATIONS_BY_USER = Table(
    "conversations_by_user", ListedConversationRow, ["tenant", "user_id"], ["conversation_id"]
)
UTTERANCES_BY_USER_DAY = Table(
    "utterances_by_user_day",
    ListedUtteranceRow,
    ["tenant", "user_id", "day"],
    ["ts", "utterance_id"],
)
UTTERANCE_DAYS = Table("utterance_days_by_user", UtteranceDayRow, ["tenant", "user_id"], ["day"])
UTTERANCES_BY_CONVERSATION = Table(
    "utterances_by_conversation",
    ConversationUtteranceRow,
    ["tenant", "conversation_id"],
    ["ts", "utterance_id"],
)


def learner_bucket(user_id: str) -> int:
    # crc32, not hash(): the same in every process.
    return zlib.crc32(user_id.encode()) % LEARNER_BUCKETS


def day_of(ts: datetime) -> datetime:
    """The utterances_by_user_day partition (UTC day) of an utterance at `ts`."""
    return floor_to(ts, DAY)


def utterance_rows(
    row: UtteranceRow, idem_key: str | None
) -> tuple[ListedUtteranceRow, UtteranceDayRow, ConversationUtteranceRow]:
    """The listing rows of an utterance, written with it."""
    day = day_of(row.ts)
    return (
        ListedUtteranceRow(
            row.tenant, row.user_id, day, row.ts, row.utterance_id, row.conversation_id,
            row.text, row.errors, row.words_learned, idem_key,
        ),
        UtteranceDayRow(row.tenant, row.user_id, day),
        ConversationUtteranceRow(
            row.tenant, row.conversation_id, row.ts, row.utterance_id, row.user_id,
            row.text, row.errors, row.words_learned,
        ),
    )  # fmt: skip
