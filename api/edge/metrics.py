"""Prometheus metrics of the API, and the /metrics endpoint.

Every API worker (and every dataflow process) is its own OS process, so the
metrics use prometheus_client's multiprocess mode when
PROMETHEUS_MULTIPROC_DIR is set (ops/up sets it to .local/metrics, emptied at
start): each process writes its samples there, and /metrics of any API
worker serves the sum over all of them, dataflows included.
"""

from __future__ import annotations

import os

from litestar import Controller, Response, get
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUEST_SECONDS = Histogram(
    "utterstream_http_request_duration_seconds",
    "API request latency by route template, method and status",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IDEMPOTENCY = Counter(
    "utterstream_idempotency_keys",
    "Idempotency-Key outcomes: applied (first use), replayed, reused (422), in_flight (409), taken_over",
    ["outcome"],
)
UNROUTED = Counter(
    "utterstream_unrouted_requests",
    "Requests that matched no route (404) or no method of one (405)",
    ["method", "status"],
)
RATE_LIMITED = Counter("utterstream_rate_limited", "Requests refused with 429 by the rate limiter")
CASSANDRA_ERRORS = Counter(
    "utterstream_cassandra_errors",
    "Requests answered 503 because Cassandra could not serve them",
    ["error"],
)


class MetricsController(Controller):
    tags = ["operations"]

    @get("/metrics", operation_id="metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics(self) -> Response[bytes]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = REGISTRY
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
