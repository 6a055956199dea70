"""Every setting utterstream reads, from the environment, in one place.

One Struct per concern, each field with a default that runs on a developer
machine. Nothing here is cached at import: callers build `Settings.from_env()`
once at start-up (or `Settings(...)` directly in tests) and pass it down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime

import msgspec


class CassandraSettings(msgspec.Struct, frozen=True):
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    keyspace: str = "utterstream"
    local_dc: str = "datacenter1"
    # Replication is chosen per environment: SimpleStrategy locally,
    # NetworkTopologyStrategy (e.g. "NetworkTopologyStrategy:dc1=3") in production.
    replication: str = "SimpleStrategy:1"
    request_timeout_s: float = 5.0
    connect_timeout_s: float = 5.0
    # Writes in flight per process; bounds memory and Cassandra's queues.
    max_in_flight: int = 256


class RedisSettings(msgspec.Struct, frozen=True):
    url: str = "redis://127.0.0.1:6379/0"
    socket_timeout_s: float = 0.5


class FeedSettings(msgspec.Struct, frozen=True):
    # The change feed is split into this many shards per time bucket; a
    # dataflow partition reads one shard. Changing it needs a fresh replay.
    shards: int = 8
    bucket_s: int = 60
    ttl_days: int = 7
    # How far readers stay behind now: longer than any write can be in flight.
    reader_lag_s: float = 5.0


class ApiSettings(msgspec.Struct, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    max_body_bytes: int = 2 * 1024 * 1024
    max_batch_items: int = 1000
    # A claimed idempotency key older than this, still unfinished, belongs
    # to a request that died: its retry takes it over and finishes the work.
    in_flight_timeout_s: float = 30.0
    idempotency_ttl_s: int = 48 * 3600
    retry_after_s: int = 1
    # When Redis is down: "open" lets requests through (logged, counted);
    # "closed" answers 503.
    redis_failure_policy: str = "open"
    default_rate: float = 100.0
    default_burst: int = 200


class LlmSettings(msgspec.Struct, frozen=True):
    # Empty base_url/model: the built-in offline analyzer answers instead.
    base_url: str = ""
    api_key: str = "not-needed"
    model: str = ""
    timeout_s: float = 20.0
    max_attempts: int = 5
    # Calls per second across every worker and process together.
    rate_per_s: float = 10.0
    max_concurrency: int = 8
    # Prefix of the shared rate bucket's Redis key: processes with the same
    # prefix share one call rate (tests use their own).
    limiter_prefix: str = "rl:"


class DataflowSettings(msgspec.Struct, frozen=True):
    recovery_dir: str = ".local/recovery"
    poll_interval_s: float = 0.5
    # Event-time windows close this long (system time) after their end.
    window_wait_s: float = 10.0
    # An event whose feed write is this long after its window's end is late.
    late_after_s: float = 60.0
    # Each poll of a feed shard re-reads this much before its position and
    # drops ids it already emitted, so a write that lands up to this late is
    # still read once. Must be at least feed.reader_lag_s.
    feed_overlap_s: float = 5.0
    # Where a dataflow without recovery state starts reading the feed
    # (default: the feed's TTL ago, so nothing is skipped), and where it stops
    # and exits (default: never). Both are RFC 3339 instants.
    start_at: datetime | None = None
    stop_at: datetime | None = None
    # insights_by_hour splits each tenant's hour into this many partitions,
    # all read by GET /v1/insights. The writer and the API must agree: a
    # change needs insights_by_hour emptied and rebuilt by a replay.
    insight_shards: int = 8
    # The insights flow hands each worker's LLM client batches of up to this
    # many utterances, or what came within the wait.
    insight_batch_size: int = 32
    insight_batch_wait_s: float = 0.5
    # Most feed entries one poll of a shard emits. Bigger batches make a
    # replay or a catch-up faster (each learner's windows are recounted once
    # per batch rather than many times), at the cost of memory.
    feed_batch_size: int = 5000


class Settings(msgspec.Struct, frozen=True):
    cassandra: CassandraSettings = CassandraSettings()
    redis: RedisSettings = RedisSettings()
    feed: FeedSettings = FeedSettings()
    api: ApiSettings = ApiSettings()
    llm: LlmSettings = LlmSettings()
    dataflow: DataflowSettings = DataflowSettings()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(**{name: _section(typ, name, env) for name, typ in _SECTIONS.items()})


_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "cassandra": CassandraSettings,
    "redis": RedisSettings,
    "feed": FeedSettings,
    "api": ApiSettings,
    "llm": LlmSettings,
    "dataflow": DataflowSettings,
}

# Names kept from the wider ecosystem instead of our UTTERSTREAM_ prefix.
_ALIASES = {
    ("cassandra", "hosts"): "CASSANDRA_HOSTS",
    ("cassandra", "port"): "CASSANDRA_PORT",
    ("redis", "url"): "REDIS_URL",
    ("llm", "base_url"): "OPENAI_BASE_URL",
    ("llm", "api_key"): "OPENAI_API_KEY",
    ("llm", "model"): "OPENAI_MODEL",
    ("api", "port"): "API_PORT",
}


def env_name(section: str, field: str) -> str:
    return _ALIASES.get((section, field), f"UTTERSTREAM_{section}_{field}".upper())


def _section(typ: type[msgspec.Struct], section: str, env: Mapping[str, str]) -> msgspec.Struct:
    raw: dict[str, object] = {}
    for field in msgspec.structs.fields(typ):
        value = env.get(env_name(section, field.name))
        if value is None:
            continue
        raw[field.name] = (
            tuple(v.strip() for v in value.split(",")) if field.type == tuple[str, ...] else value
        )
    # strict=False converts "8" to 8 and "0.5" to 0.5, and names the bad field.
    return msgspec.convert(raw, typ, strict=False)
