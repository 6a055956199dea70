"""Prometheus metrics of the API, and the /metrics endpoint.

Every API worker (and every dataflow process) is its own OS process, so the
metrics use prometheus_client's multiprocess mode when
PROMETHEUS_MULTIPROC_DIR is set (ops/up sets it to .local/metrics, emptied at
start): each process writes its samples there, and /metrics of any API
worker serves the sum over all of them, dataflows included. prometheus_client
reads the variable itself, at import, to choose where samples go; /metrics
reads it as the setting `metrics.multiproc_dir`, like every other setting.
"""

from __future__ import annotations

from litestar import Controller, Request, Response, get
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
    "Idempotency-Key outcomes: applied (first use), replayed, reused (422), in_flight (409), "
    "taken_over (a lapsed claim finished by its retry), lease_lost (a holder found its claim taken)",
    ["outcome"],
)
UNROUTED = Counter(
    "utterstream_unrouted_requests",
    "Requests that matched no route (404) or no method of one (405)",
    ["method", "status"],
)
RATE_LIMITED = Counter("utterstream_rate_limited", "Requests refused with 429 by the rate limiter")
RESTARTS = Counter(
    "utterstream_api_restarts",
    "API processes that died and were replaced (python -m api serve): server (granian's "
    "main process, restarted by the supervisor), worker (respawned by granian) or "
    "supervisor (restarted by ops/api's loop)",
    ["process"],
)
CASSANDRA_ERRORS = Counter(
    "utterstream_cassandra_errors",
    "Requests answered 503 because Cassandra could not serve them",
    ["error"],
)


class MetricsController(Controller):
    tags = ["operations"]

    @get("/metrics", operation_id="metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics(self, request: Request) -> Response[bytes]:
        if folder := request.app.state.settings.metrics.multiproc_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=folder)
        else:
            registry = REGISTRY
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
