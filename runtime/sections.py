"""The sections of the settings (runtime.settings.Settings): one Struct per
concern, each field with a default that runs on a developer machine, its
bounds, and a description (the README's table shows it). Reading them from
the environment is runtime/settings.py's alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta


def doc(description: str) -> Meta:
    return Meta(description=description)


Port = Annotated[int, Meta(ge=1, le=65535)]
Count = Annotated[int, Meta(ge=1)]
Seconds = Annotated[float, Meta(gt=0)]
Delay = Annotated[float, Meta(ge=0)]
# Cassandra's own bounds on a TTL; the SPEC keeps idempotency keys at least 24 hours.
IdempotencyTtl = Annotated[int, Meta(ge=24 * 3600, le=630_720_000)]
Instant = Annotated[datetime, Meta(tz=True)]


class Section(msgspec.Struct, frozen=True):
    """A section of the settings; each field is one setting, described."""


class CassandraSettings(Section):
    hosts: Annotated[
        tuple[str, ...], Meta(min_length=1), doc("Contact points, comma-separated.")
    ] = ("127.0.0.1",)
    port: Annotated[Port, doc("CQL native port.")] = 9042
    nodes: Annotated[
        Annotated[int, Meta(ge=1, le=254)],
        doc(
            "Local Cassandra nodes `ops/up` runs: above 1, a cluster (`ops/cluster`) on "
            "127.0.0.1 … 127.0.0.N, and unless set, `hosts` become those addresses and "
            "`replication` `NetworkTopologyStrategy:<local_dc>=min(N, 3)`."
        ),
    ] = 1
    keyspace: Annotated[str, doc("Keyspace of every table.")] = "utterstream"
    local_dc: Annotated[str, doc("Data centre the driver routes to first.")] = "datacenter1"
    replication: Annotated[
        str,
        doc(
            "Keyspace replication, chosen per environment: `SimpleStrategy:N` locally, "
            "`NetworkTopologyStrategy:dc1=3,...` in production."
        ),
    ] = "SimpleStrategy:1"
    request_timeout_s: Annotated[Seconds, doc("Driver timeout of one request.")] = 5.0
    connect_timeout_s: Annotated[Seconds, doc("Driver timeout of connecting.")] = 5.0
    max_in_flight: Annotated[
        Count, doc("Statements in flight per process; bounds memory and Cassandra's queues.")
    ] = 256


class RedisSettings(Section):
    url: Annotated[
        str, doc("Redis of the rate limits, the shared LLM call rate and the answer caches.")
    ] = "redis://127.0.0.1:6379/0"
    socket_timeout_s: Annotated[Seconds, doc("Redis connect and read timeout.")] = 0.5
    flow_timeout_s: Annotated[
        Seconds,
        doc(
            "Redis read timeout of the dataflows, whose Redis writes are idempotent and "
            "retried: a flow waits out a slow Redis rather than stop and replay."
        ),
    ] = 5.0


class FeedSettings(Section):
    shards: Annotated[
        Count,
        doc(
            "Change-feed shards per time bucket; a dataflow partition reads one. A flow "
            "refuses fewer shards than it has read: see the README's 'Changing the feed's shards'."
        ),
    ] = 4
    bucket_s: Annotated[Count, doc("Length of a change-feed time bucket.")] = 60
    ttl_days: Annotated[Count, doc("How long change-feed entries are kept.")] = 7
    reader_lag_s: Annotated[
        Delay,
        doc(
            "How far feed readers stay behind now. Short, for freshness: a write that lands "
            "later than this is still read by the next sweep of the overlap "
            "(`dataflow.feed_overlap_s`)."
        ),
    ] = 0.1


class ApiSettings(Section):
    host: Annotated[str, doc("Address the API server listens on.")] = "127.0.0.1"
    port: Annotated[Port, doc("Port the API server listens on.")] = 8000
    workers: Annotated[Count, doc("API worker processes (granian).")] = 2
    max_body_bytes: Annotated[Count, doc("Largest request body; larger ones get 413.")] = (
        2 * 1024 * 1024
    )
    max_batch_items: Annotated[
        Count, doc("Most utterances in one POST /v1/utterances/batch; more get 400.")
    ] = 1000
    in_flight_timeout_s: Annotated[
        Seconds,
        doc(
            "Lease of a claimed Idempotency-Key: the request holding it renews it every "
            "third of this while it runs, so a claim not renewed for this long belongs to "
            "a request that died, and its retry takes it over and finishes the work."
        ),
    ] = 3.0
    idempotency_ttl_s: Annotated[
        IdempotencyTtl,
        doc("How long an Idempotency-Key and its answer are kept (at least 86400)."),
    ] = 48 * 3600
    retry_after_s: Annotated[Count, doc("Retry-After of 503 answers.")] = 1
    redis_failure_policy: Annotated[
        Literal["open", "closed"],
        doc(
            "When Redis is down: `open` lets requests through (logged, counted), "
            "`closed` answers 503."
        ),
    ] = "open"
    rate_lease_s: Annotated[
        Delay,
        doc(
            "How long an API process may hold rate-limit tokens it took from a key's bucket "
            "ahead of its requests (as many as it spent in the last such period, and only "
            "from a bucket more than half full), instead of asking Redis per request; "
            "0 asks Redis every time."
        ),
    ] = 0.1
    write_batches_in_flight: Annotated[
        Annotated[int, Meta(ge=0)],
        doc(
            "Logged batches of utterances one API process has in flight at once; the writes "
            "of requests that come while all are in flight go out together in the next one "
            "(one batchlog entry for all). 0 sends each request's batch at once, alone."
        ),
    ] = 4
    default_rate: Annotated[
        Seconds, doc("Requests per second of a new API key (`ops/keys create`).")
    ] = 100.0
    default_burst: Annotated[Count, doc("Burst of a new API key (`ops/keys create`).")] = 200


class LiveSettings(Section):
    max_connections: Annotated[
        Count,
        doc(
            "Live connections (SSE and WebSocket together) a tenant may hold at once, for "
            "API keys without their own `live_connections`; the next gets 429."
        ),
    ] = 50
    retention_s: Annotated[
        Annotated[int, Meta(ge=60)],
        doc(
            "How long a tenant's live events are kept for `Last-Event-ID` resume; an older "
            "cursor gets `event: reset`. The SPEC asks for at least 900."
        ),
    ] = 900
    heartbeat_s: Annotated[Seconds, doc("Pause between SSE comment heartbeats.")] = 15.0
    lease_s: Annotated[
        Seconds,
        doc(
            "Lease of a live connection's slot: a slot whose process died frees itself "
            "within this, with no clean-up job."
        ),
    ] = 45.0
    renew_s: Annotated[
        Seconds, doc("How often a live connection renews its slot's lease (well under lease_s).")
    ] = 15.0
    queue_size: Annotated[
        Count,
        doc(
            "Events queued per live connection; a client that lets this many pile up is "
            "disconnected with a reason and resumes from its cursor."
        ),
    ] = 1000
    send_timeout_s: Annotated[
        Seconds,
        doc("Longest wait for a client to take one message before it counts as stalled."),
    ] = 10.0
    ws_max_in_flight: Annotated[
        Count,
        doc(
            "WebSocket messages being processed at once across every API process; past "
            "it a message gets `busy` with retry_after."
        ),
    ] = 500
    ticket_ttl_s: Annotated[
        Count, doc("Life of a single-use live ticket (`POST /v1/live/tickets`).")
    ] = 60
    publish_within_s: Annotated[
        Seconds,
        doc(
            "How long a live event's publish keeps retrying a slow Redis before the event "
            "counts as lost and its tenant's connections get `event: reset`. Retries append "
            "nothing twice; an API write waits for its publish, up to this long."
        ),
    ] = 5.0


class LlmSettings(Section):
    base_url: Annotated[
        str,
        doc(
            "OpenAI-compatible endpoint; empty (or an empty model): the built-in offline "
            "analyzer answers instead."
        ),
    ] = ""
    api_key: Annotated[str, doc("Key sent to the model endpoint.")] = "not-needed"
    model: Annotated[str, doc("Model name.")] = ""
    timeout_s: Annotated[Seconds, doc("Timeout of one model call.")] = 20.0
    max_attempts: Annotated[Count, doc("Calls per analysis, retries included.")] = 5
    rate_per_s: Annotated[
        Seconds, doc("Model calls per second across every worker and process together.")
    ] = 10.0
    max_concurrency: Annotated[Count, doc("Model calls in flight per process.")] = 8
    limiter_prefix: Annotated[
        str,
        doc(
            "Prefix of the shared call-rate bucket's Redis key: processes with one prefix share one rate."
        ),
    ] = "rl:"


class DataflowSettings(Section):
    workers: Annotated[
        Count, doc("Bytewax workers of `python -m dataflows run` (its `--workers` default).")
    ] = 2
    recovery_dir: Annotated[str, doc("Folder of the dataflows' recovery state.")] = (
        ".local/recovery"
    )
    poll_interval_s: Annotated[
        Seconds,
        doc(
            "Longest pause between polls of a caught-up feed shard; its doorbell (rung by "
            "the API after each write) makes it poll one `feed.reader_lag_s` after a write."
        ),
    ] = 0.5
    sweep_interval_s: Annotated[
        Seconds,
        doc(
            "How often a feed shard re-reads its overlap for writes that landed late; the "
            "watermark (`as_of`) advances with each sweep."
        ),
    ] = 0.5
    current_flush_s: Annotated[
        Seconds,
        doc(
            "While a counting flow keeps up, the longest it holds a learner's items before "
            "writing them, from the first (a deadline; `batch_max_items` ends it sooner)."
        ),
    ] = 0.1
    flush_interval_s: Annotated[
        Seconds,
        doc(
            "While a counting flow catches up (a replay, a restart), how long it waits for "
            "more of a learner's items after the newest before writing them (each item "
            "restarts the wait; `batch_max_items` ends it)."
        ),
    ] = 0.25
    batch_max_items: Annotated[
        Count, doc("Most items of one learner a counting flow writes in one batch.")
    ] = 2000
    held_partitions: Annotated[
        Count,
        doc(
            "Partitions (a learner's day of facts, month of day rows, ...) each counting-flow "
            "writer keeps in memory, least recently used out first."
        ),
    ] = 20000
    late_after_s: Annotated[
        Delay, doc("An event whose feed write is this long after its window's end is late.")
    ] = 60.0
    feed_overlap_s: Annotated[
        Delay,
        doc(
            "Each sweep of a feed shard re-reads this much before its position (at least "
            "`feed.reader_lag_s`, and longer than a write can be in flight: the Cassandra "
            "request timeout), so a write that lands late is still read, once."
        ),
    ] = 12.0
    start_at: Annotated[
        Instant | None,
        doc(
            "RFC 3339 instant where a dataflow without recovery state starts reading "
            "(unset: the feed's TTL ago, so nothing is skipped)."
        ),
    ] = None
    stop_at: Annotated[
        Instant | None,
        doc("RFC 3339 instant where a dataflow stops and exits (unset: never)."),
    ] = None
    insight_shards: Annotated[
        Count,
        doc(
            "Partitions of each tenant's hour in insights_by_hour; the writer and the API "
            "must agree, so a change needs the table rebuilt by a replay."
        ),
    ] = 8
    insight_batch_size: Annotated[
        Count, doc("Utterances the insights flow hands a worker's model client at once.")
    ] = 32
    insight_batch_wait_s: Annotated[
        Delay,
        doc(
            "How long the insights flow waits for more utterances of a lane after the newest "
            "before analysing them (each restarts the wait; `insight_batch_size` ends it)."
        ),
    ] = 0.5
    feed_batch_size: Annotated[
        Count,
        doc(
            "Most feed entries one poll of a shard emits: bigger is faster for a replay "
            "or a catch-up, at the cost of memory."
        ),
    ] = 5000


class LogSettings(Section):
    level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], doc("Least level logged.")
    ] = "INFO"
    format: Annotated[
        Literal["json", "console"],
        doc("`json`: one JSON object a line on stderr; `console`: coloured lines for people."),
    ] = "json"


class MetricsSettings(Section):
    multiproc_dir: Annotated[
        str,
        doc(
            "Folder where every API worker and dataflow process writes its Prometheus "
            "samples; set, /metrics serves their sum. prometheus_client reads it too, "
            "at import. Unset: each API worker serves its own."
        ),
    ] = ""


class UiSettings(Section):
    session_ttl_s: Annotated[
        Count,
        doc(
            "How long a dashboard sign-in (/ui) lasts; the session lives in Redis and "
            "ends sooner on sign-out or when its API key is revoked."
        ),
    ] = 8 * 3600
