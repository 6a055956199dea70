"""What an operator sees: a request id on every answer, one JSON access-log
line per request, Prometheus metrics by route and status, and a readiness
check that answers within its deadline whatever hangs behind it."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import msgspec
import pytest
from cassandra import OperationTimedOut
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.resources import health
from runtime.settings import RedisSettings, Settings
from tests.conftest import ApiProcess, new_tenant
from tests.helpers import learner, utterance
from tests.runtime.test_ratelimit import ThrowawayRedis

REQUEST_ID = "X-Request-ID"


class Server(ApiProcess):
    """A real API process given long enough to start on a busy machine.
    The API test modules of this suite share it."""

    ready_deadline_s = 90.0


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


# ---- request ids


async def test_request_id_is_echoed_and_generated_when_absent(client, tenant) -> None:
    given = await client.get("/v1/utterances/x", headers=tenant.headers | {REQUEST_ID: "req-42"})
    assert given.status_code == 404
    assert given.headers[REQUEST_ID] == "req-42"

    made = [
        await client.get("/v1/utterances/x", headers=tenant.headers),
        await client.get("/v1/utterances/x"),  # 401 from the edge itself
        await client.get("/health"),
    ]
    ids = [r.headers[REQUEST_ID] for r in made]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    assert len(set(ids)) == len(ids)

    long = await client.get("/health", headers={REQUEST_ID: "x" * 500})
    assert long.headers[REQUEST_ID] == "x" * 128


# ---- the access log, as a real server writes it


@pytest.fixture(scope="module")
def server(migrated: Settings) -> Iterator[ApiProcess]:
    process = Server(migrated)
    yield process
    process.stop()


def _access_lines(
    server: ApiProcess, request_id: str, deadline_s: float = 5.0
) -> list[dict[str, Any]]:
    started = time.monotonic()
    while True:
        found = []
        for line in open(server.log_path, encoding="utf-8", errors="replace"):  # noqa: SIM115
            if request_id in line and line.startswith("{"):
                found.append(json.loads(line))
        if found or time.monotonic() - started > deadline_s:
            return found
        time.sleep(0.1)


def test_access_log_is_one_json_line_with_id_tenant_route_status_latency(server, db) -> None:
    tenant = new_tenant(db)
    request_id = f"obs-{uuid.uuid4().hex}"
    with httpx.Client(base_url=server.url) as c:
        r = c.get("/v1/utterances/nope", headers=tenant.headers | {REQUEST_ID: request_id})
    assert r.status_code == 404
    (line,) = _access_lines(server, request_id)
    assert line["event"] == "request"
    assert line["request_id"] == request_id
    assert line["tenant"] == tenant.name
    assert line["route"] == "/v1/utterances/{utterance_id}"
    assert line["status"] == 404
    assert line["method"] == "GET"
    assert isinstance(line["ms"], float | int) and line["ms"] >= 0
    assert line["level"] == "info" and line["timestamp"]


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", "/v2/nope", 404), ("PUT", "/health", 405)]
)
def test_a_request_no_route_matches_is_logged_and_counted(server, method, path, status) -> None:
    request_id = f"obs-{uuid.uuid4().hex}"
    with httpx.Client(base_url=server.url) as c:
        before = _unrouted(c, method, status)
        r = c.request(method, path, headers={REQUEST_ID: request_id})
        assert r.status_code == status
        assert r.headers[REQUEST_ID] == request_id
        assert r.headers["content-type"] == "application/problem+json"
        assert _unrouted(c, method, status) == before + 1
    (line,) = _access_lines(server, request_id)
    assert (line["route"], line["status"], line["path"]) == ("unmatched", status, path)


def _unrouted(c: httpx.Client, method: str, status: int) -> float:
    wanted = f'utterstream_unrouted_requests_total{{method="{method}",status="{status}"}}'
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(wanted):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize(
    "wanted",
    [
        'utterstream_gc_pause_seconds_count{generation="2"}',
        "utterstream_event_loop_lag_seconds_count",
    ],
)
def test_a_worker_reports_its_pauses(server, wanted) -> None:
    """Start-up ends with a full collection (runtime/pauses.settle), so a
    worker that measures its pauses has one to show within a report, and
    its loop's lateness is sampled from the start."""
    deadline = time.monotonic() + 5
    with httpx.Client(base_url=server.url) as c:
        while True:
            found = [ln for ln in c.get("/metrics").text.splitlines() if ln.startswith(wanted)]
            if (found and float(found[0].split()[-1]) >= 1) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert found and float(found[0].split()[-1]) >= 1, found


def test_access_log_records_a_refusal_at_the_edge(server) -> None:
    request_id = f"obs-{uuid.uuid4().hex}"
    with httpx.Client(base_url=server.url) as c:
        r = c.get("/v1/utterances/nope", headers={REQUEST_ID: request_id})
    assert r.status_code == 401
    (line,) = _access_lines(server, request_id)
    assert (line["status"], line["tenant"]) == (401, None)


# ---- metrics


async def test_metrics_by_route_and_status_idempotency_rate_limits_and_cassandra_errors(
    client, tenant, db, monkeypatch
) -> None:
    route = "/v1/utterances/{utterance_id}"
    before = (await client.get("/metrics")).text

    assert (await client.get("/v1/utterances/x", headers=tenant.headers)).status_code == 404
    user_id, conversation_id = await learner(client, tenant.headers)
    body = utterance(user_id, conversation_id)
    keyed = tenant.headers | {"Idempotency-Key": f"obs-{uuid.uuid4()}"}
    for _ in range(2):  # applied, then replayed
        assert (await client.post("/v1/utterances", json=body, headers=keyed)).status_code == 202
    other = utterance(user_id, conversation_id, text="Another one.")
    assert (await client.post("/v1/utterances", json=other, headers=keyed)).status_code == 422
    slow = new_tenant(db, rate=0.01, burst=1)
    statuses = [
        (await client.get("/v1/utterances/x", headers=slow.headers)).status_code for _ in range(2)
    ]
    assert statuses == [404, 429]

    async def times_out(*_args: Any) -> None:
        raise OperationTimedOut("timed out")

    monkeypatch.setattr(client.app.state.services.store, "utterance", times_out)
    assert (await client.get("/v1/utterances/x", headers=tenant.headers)).status_code == 503

    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    after = r.text

    def grew(name: str, by: float = 1, **labels: str) -> bool:
        return metric(after, name, **labels) - metric(before, name, **labels) >= by

    latency = "utterstream_http_request_duration_seconds"
    assert grew(f"{latency}_count", route=route, method="GET", status="404")
    assert grew(f"{latency}_count", route=route, method="GET", status="429")
    assert grew(f"{latency}_count", route=route, method="GET", status="503")
    assert grew(f"{latency}_count", route="/v1/utterances", method="POST", status="202", by=2)
    assert grew(f"{latency}_bucket", route=route, method="GET", status="404", le="+Inf")
    idempotency = "utterstream_idempotency_keys_total"
    for outcome in ("applied", "replayed", "reused"):
        assert grew(idempotency, outcome=outcome), outcome
    assert grew("utterstream_rate_limited_total")
    assert grew("utterstream_cassandra_errors_total", error="OperationTimedOut")


# ---- readiness


async def test_ready_when_both_answer(client) -> None:
    r = await client.get("/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "cassandra": "ok", "redis": "ok"}


async def test_ready_answers_within_its_deadline_when_cassandra_hangs(client, monkeypatch) -> None:
    async def hangs(*_args: Any, **_kwargs: Any) -> None:
        await asyncio.sleep(60)

    monkeypatch.setattr(health, "execute", hangs)
    started = time.monotonic()
    r = await client.get("/ready")
    assert time.monotonic() - started < health.READY_DEADLINE_S + 1.0
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    assert r.json()["checks"] == {"cassandra": "down", "redis": "ok"}


@pytest.fixture
async def frozen_redis_client(
    migrated: Settings,
) -> AsyncIterator[tuple[httpx.AsyncClient, ThrowawayRedis]]:
    redis_server = ThrowawayRedis()
    redis_server.start()
    settings = msgspec.structs.replace(
        migrated, redis=RedisSettings(url=f"redis://127.0.0.1:{redis_server.port}/0")
    )
    try:
        async with AsyncTestClient(app=create_app(settings)) as test_client:
            yield test_client, redis_server
    finally:
        redis_server.kill()


async def test_ready_answers_within_its_deadline_when_redis_hangs(frozen_redis_client) -> None:
    client, redis_server = frozen_redis_client
    assert (await client.get("/ready")).status_code == 200
    redis_server.freeze(True)
    started = time.monotonic()
    r = await client.get("/ready")
    assert time.monotonic() - started < health.READY_DEADLINE_S + 1.0
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["checks"] == {"cassandra": "ok", "redis": "down"}
    redis_server.freeze(False)
    assert (await client.get("/ready")).status_code == 200
