"""Row Structs and Table definitions for the tables the API writes
(cql/schema/001-003). Field order is column order; timestamps come back from
the driver as naive UTC datetimes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec

from cql.table import Table

ErrorPoints = list[tuple[str, str]]


def to_stored_time(moment: datetime) -> datetime:
    """As Cassandra stores a timestamp: naive UTC, millisecond precision, so
    a value read back equals the value written."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def from_stored_time(moment: datetime) -> datetime:
    """A stored (naive UTC) timestamp as an aware UTC datetime for answers."""
    return moment.replace(tzinfo=UTC)


def utc_now() -> datetime:
    return to_stored_time(datetime.now(UTC))


class ApiKeyRow(msgspec.Struct):
    key_hash: bytes
    key_id: str
    tenant: str
    rate: float
    burst: int
    created_at: datetime
    revoked: bool


class UserRow(msgspec.Struct):
    tenant: str
    user_id: str
    email: str
    name: str
    created_at: datetime


class ConversationRow(msgspec.Struct):
    tenant: str
    conversation_id: str
    user_id: str
    title: str | None
    started_at: datetime


class UtteranceRow(msgspec.Struct):
    tenant: str
    utterance_id: str
    user_id: str
    conversation_id: str
    text: str
    ts: datetime
    errors: ErrorPoints
    words_learned: int
    received_at: datetime
    status: str
    status_reason: str | None
    status_at: datetime | None


class UtteranceClaimRow(msgspec.Struct):
    tenant: str
    utterance_id: str
    request_hash: bytes
    claimed_at: datetime


class IdempotencyRow(msgspec.Struct):
    tenant: str
    idem_key: str
    request_hash: bytes
    owner: uuid.UUID
    state: str
    started_at: datetime
    status_code: int | None
    response: bytes | None


API_KEYS = Table("api_keys", ApiKeyRow, ["key_hash"])
USERS = Table("users_by_id", UserRow, ["tenant", "user_id"])
CONVERSATIONS = Table("conversations_by_id", ConversationRow, ["tenant", "conversation_id"])
UTTERANCES = Table("utterances_by_id", UtteranceRow, ["tenant", "utterance_id"])
UTTERANCE_CLAIMS = Table("utterance_claims", UtteranceClaimRow, ["tenant", "utterance_id"])
IDEMPOTENCY_KEYS = Table("idempotency_keys", IdempotencyRow, ["tenant", "idem_key"])

TABLES: tuple[Table, ...] = (
    API_KEYS,
    USERS,
    CONVERSATIONS,
    UTTERANCES,
    UTTERANCE_CLAIMS,
    IDEMPOTENCY_KEYS,
)
