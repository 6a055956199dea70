"""Utterances, the claims of explicit utterance ids, and idempotency keys
(cql/schema/003_utterances.cql; the claims' holders and leases,
008_claim_leases.cql; the keys' id seeds, 013_key_ids.cql; the utterance's
insight, 014_utterance_insight.cql). Field order is column order."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from cql.table import Table

ErrorPoints = list[tuple[str, str]]


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
    # The latest insight as JSON (cql.insights.insight_json), set with the
    # final status by the insights flow; None before that.
    insight: str | None = None


class UtteranceClaimRow(msgspec.Struct):
    tenant: str
    utterance_id: str
    request_hash: bytes
    claimed_at: datetime
    # derived_id(tenant, Idempotency-Key, item index) of the claiming request;
    # None without a key.
    claimed_by: str | None = None


class IdempotencyRow(msgspec.Struct):
    tenant: str
    idem_key: str
    request_hash: bytes
    owner: uuid.UUID
    state: str
    started_at: datetime
    status_code: int | None
    response: bytes | None
    # When the claim lapses unless its holder renews it; None for claims
    # written before leases (they lapse at started_at plus the lease).
    lease_until: datetime | None = None
    # The process carrying the request out, host:pid.
    holder: str | None = None
    # Drawn at the first claim, kept by take-overs: the seed of the ids the
    # request creates. None for claims written before seeds.
    id_seed: uuid.UUID | None = None


UTTERANCES = Table(
    "utterances_by_id", UtteranceRow, ["tenant", "utterance_id"], written_later=["insight"]
)
UTTERANCE_CLAIMS = Table("utterance_claims", UtteranceClaimRow, ["tenant", "utterance_id"])
IDEMPOTENCY_KEYS = Table("idempotency_keys", IdempotencyRow, ["tenant", "idem_key"])
