"""The api_keys table (cql/schema/001_api_keys.cql, expiry from
009_key_expiry.cql, the live-connection cap from 012_live_connections.cql): one row per API key, by the SHA-256 of the key; and
api_keys_by_tenant (009), the same keys by tenant for `ops/keys list`,
without any hash. Field order is column order."""

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
    expires_at: datetime | None = None  # naive UTC; None: never expires
    live_connections: int | None = None  # None: the deployment's default


class TenantKeyRow(msgspec.Struct):
    tenant: str
    key_id: str
    prefix: str  # the key's public part, `us_<key_id>`
    rate: float
    burst: int
    created_at: datetime
    expires_at: datetime | None
    revoked: bool


API_KEYS = Table("api_keys", ApiKeyRow, ["key_hash"])
API_KEYS_BY_TENANT = Table("api_keys_by_tenant", TenantKeyRow, ["tenant"], ["key_id"])
