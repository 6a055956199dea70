"""The api_keys table (cql/schema/001_api_keys.cql): one row per API key,
by the SHA-256 of the key. Field order is column order."""

from __future__ import annotations

from datetime import datetime

import msgspec

from cql.table import Table


class ApiKeyRow(msgspec.Struct):
    key_hash: bytes
    key_id: str
    tenant: str
    rate: float
    burst: int
    created_at: datetime
    revoked: bool


API_KEYS = Table("api_keys", ApiKeyRow, ["key_hash"])
