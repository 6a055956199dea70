"""Rate limits as clients meet them: one bucket per API key shared by every
API process, RateLimit-* headers on every answer, a batch charged per item,
per-key limits from `api.commands.keys create`, and what happens when Redis goes
away and comes back (policy "open" and "closed"), with no API restart.

The limiter itself (GCRA in Redis) is tested in test_ratelimit.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import structlog

from api.commands import keys
from runtime.settings import Settings
from tests.api.test_observability import Server, metric
from tests.conftest import ApiProcess, Tenant, new_tenant
from tests.helpers import learner, utterance
from tests.runtime.test_ratelimit import ThrowawayRedis

log = structlog.get_logger(__name__)
PROBLEM = "application/problem+json"
RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")
FALLBACKS = "utterstream_ratelimit_redis_fallbacks_total"


def assert_rate_headers(r: httpx.Response, limit: int) -> None:
    assert r.headers["ratelimit-limit"] == str(limit), r.headers
    assert 0 <= int(r.headers["ratelimit-remaining"]) <= limit
    assert int(r.headers["ratelimit-reset"]) >= 0


def assert_429(r: httpx.Response, limit: int) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"].endswith("/rate-limited") and r.json()["detail"]
    assert int(r.headers["retry-after"]) >= 1
    assert_rate_headers(r, limit)


# ---- two API processes, one Redis of our own (so the outage tests below
# can kill it), one started with each failure policy


@pytest.fixture(scope="module")
def own_redis() -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis()
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def servers(
    migrated: Settings, own_redis: ThrowawayRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ApiProcess]]:
    """{"open": server, "closed": server}, started side by side."""

    policies = ("open", "closed")
    # Made here, not in the threads: tmp_path_factory is not thread-safe.
    metrics_dirs = {policy: tmp_path_factory.mktemp(f"metrics-{policy}") for policy in policies}

    def start(policy: str) -> ApiProcess:
        env = {
            "REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0",
            "UTTERSTREAM_API_REDIS_FAILURE_POLICY": policy,
            # Metrics of this server only.
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dirs[policy]),
        }
        return Server(migrated, extra_env=env)

    with ThreadPoolExecutor(2) as pool:
        futures = {policy: pool.submit(start, policy) for policy in policies}
    started = {p: f.result() for p, f in futures.items() if f.exception() is None}
    try:
        assert len(started) == 2, [f.exception() for f in futures.values()]
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture
def redis_up(own_redis: ThrowawayRedis) -> ThrowawayRedis:
    """The module's Redis, running (an earlier test may have failed while it was down)."""
    if own_redis._process is None:
        own_redis.start()
    return own_redis


async def _hammer(
    urls: list[str], tenant: Tenant, seconds: float, per_url: int
) -> list[tuple[float, float, httpx.Response]]:
    """(sent, received, answer) of every request from `per_url` concurrent
    loops on each URL, for `seconds`."""
    answers: list[tuple[float, float, httpx.Response]] = []
    limits = httpx.Limits(max_connections=per_url * len(urls))
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        started = time.monotonic()

        async def loop(url: str) -> None:
            while (sent := time.monotonic()) - started < seconds:
                r = await client.get(url + "/v1/utterances/rl-probe", headers=tenant.headers)
                answers.append((sent, time.monotonic(), r))

        await asyncio.gather(*(loop(url) for url in urls for _ in range(per_url)))
    return answers


def test_two_processes_share_one_bucket_per_key(servers, redis_up, db) -> None:
    rate, burst = 20.0, 40
    tenant = new_tenant(db, rate=rate, burst=burst)
    urls = [server.url for server in servers.values()]
    # One request each first, so no key lookup or new connection slows the
    # start; then wait for the two tokens to come back: a full bucket.
    for url in urls:
        assert httpx.get(url + "/v1/utterances/x", headers=tenant.headers).status_code == 404
    time.sleep(len(urls) / rate + 0.05)
    answers = asyncio.run(_hammer(urls, tenant, 3.0, per_url=6))

    admitted = sum(r.status_code != 429 for _, _, r in answers)
    first_sent = min(sent for sent, _, _ in answers)
    # The bucket decides each request somewhere between its send and its
    # answer: at most what refills until the last answer, at least what
    # refills until the last send.
    most = burst + rate * (max(received for _, received, _ in answers) - first_sent)
    least = burst + rate * (max(sent for sent, _, _ in answers) - first_sent)
    log.info(
        "rate_limits_api.two_processes",
        answers=len(answers),
        admitted=admitted,
        allowance=f"{least:.1f}..{most:.1f}",
    )
    assert {r.status_code for _, _, r in answers} == {404, 429}
    assert admitted <= most + 1
    assert admitted >= 0.95 * least
    for _, _, r in answers:
        assert_rate_headers(r, burst)
        if r.status_code == 429:
            assert_429(r, burst)


# ---- batches cost one token per item


async def test_a_batch_costs_one_token_per_item(client, db) -> None:
    tenant = new_tenant(db, rate=0.01, burst=12)
    user_id, conversation_id = await learner(client, tenant.headers)  # 2 tokens

    async def batch(n: int) -> httpx.Response:
        items = [utterance(user_id, conversation_id, text=f"Item {i}.") for i in range(n)]
        return await client.post(
            "/v1/utterances/batch", json={"utterances": items}, headers=tenant.headers
        )

    first, second, third = await batch(4), await batch(4), await batch(4)
    assert (first.status_code, first.headers["ratelimit-remaining"]) == (202, "6")
    assert (second.status_code, second.headers["ratelimit-remaining"]) == (202, "2")
    assert_429(third, 12)
    assert third.headers["ratelimit-remaining"] == "2"  # a refused batch takes nothing
    single = await client.post(
        "/v1/utterances", json=utterance(user_id, conversation_id), headers=tenant.headers
    )
    assert (single.status_code, single.headers["ratelimit-remaining"]) == (202, "1")


async def test_a_batch_above_the_burst_needs_a_full_bucket_then_holds_the_key_back(
    client, db
) -> None:
    rate, burst = 1.0, 5
    tenant = new_tenant(db, rate=rate, burst=burst)
    user_id, conversation_id = await learner(client, tenant.headers)  # 2 tokens
    items = [utterance(user_id, conversation_id, text=f"Item {i}.") for i in range(8)]

    async def big() -> httpx.Response:
        return await client.post(
            "/v1/utterances/batch", json={"utterances": items}, headers=tenant.headers
        )

    not_full = await big()
    assert_429(not_full, burst)
    await asyncio.sleep(int(not_full.headers["retry-after"]) + 0.1)
    taken = await big()
    assert taken.status_code == 202, taken.text
    assert taken.json()["accepted"] == 8
    assert taken.headers["ratelimit-remaining"] == "0"
    # 8 tokens taken from 5: the key owes 3 and the next request needs a 4th.
    after = await client.get("/v1/utterances/x", headers=tenant.headers)
    assert_429(after, burst)
    assert int(after.headers["retry-after"]) >= (8 - burst + 1) / rate - 1


# ---- per-key limits from `api.commands.keys create`


def _created_key(args: list[str], capsys, monkeypatch, settings: Settings) -> Tenant:
    monkeypatch.setenv("UTTERSTREAM_CASSANDRA_KEYSPACE", settings.cassandra.keyspace)
    tenant = f"t-keys-{time.monotonic_ns()}"
    capsys.readouterr()
    keys.main(["create", "--tenant", tenant, *args])
    # The key is the one line `keys create` prints (the app's own log lines may be around it).
    (key,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("us_")]
    return Tenant(tenant, key)


async def test_limits_per_key_from_keys_create(
    client, capsys, monkeypatch, migrated: Settings
) -> None:
    custom = _created_key(["--rate", "0.01", "--burst", "3"], capsys, monkeypatch, migrated)
    answers = [await client.get("/v1/utterances/x", headers=custom.headers) for _ in range(4)]
    assert [r.status_code for r in answers] == [404, 404, 404, 429]
    assert [r.headers["ratelimit-remaining"] for r in answers] == ["2", "1", "0", "0"]
    assert_429(answers[-1], 3)

    default = _created_key([], capsys, monkeypatch, migrated)
    r = await client.get("/v1/utterances/x", headers=default.headers)
    assert r.status_code == 404
    assert_rate_headers(r, migrated.api.default_burst)
    assert r.headers["ratelimit-remaining"] == str(migrated.api.default_burst - 1)


# ---- Redis goes away and comes back


OUTAGE_BURST = 3


def _limits_apply(c: httpx.Client, tenant: Tenant, burst: int, *, spent: int = 0) -> None:
    """`burst - spent` requests pass, the next one is refused."""
    answers = [c.get("/v1/utterances/x", headers=tenant.headers) for _ in range(burst - spent + 1)]
    assert [r.status_code for r in answers] == [404] * (burst - spent) + [429]
    assert_429(answers[-1], burst)


def _outage(c: httpx.Client, db, redis_server: ThrowawayRedis) -> Tenant:
    """A new tenant (OUTAGE_BURST, next to no refill) whose limit is seen to
    apply; then Redis is killed."""
    tenant = new_tenant(db, rate=0.01, burst=OUTAGE_BURST)
    _limits_apply(c, tenant, OUTAGE_BURST)
    redis_server.kill()
    return tenant


def _recovers(
    c: httpx.Client, tenant: Tenant, redis_server: ThrowawayRedis, event: str, **facts: float
) -> None:
    """Restart Redis on the same port: within 5 s an answer carries a
    rate-limit decision again (taking one token), and, Redis having come
    back empty, the limit applies from a full bucket."""
    redis_server.start()
    started = time.monotonic()
    while True:
        r = c.get("/v1/utterances/x", headers=tenant.headers)
        assert r.status_code in (404, 503), r.text
        if "ratelimit-limit" in r.headers:
            break
        assert time.monotonic() - started < 10, "limits never applied again"
        time.sleep(0.05)
    recovered = time.monotonic() - started
    log.info(event, recovery_s=round(recovered, 3), **facts)
    assert recovered < 5
    _limits_apply(c, tenant, OUTAGE_BURST, spent=1)


def test_redis_down_open_policy_serves_counts_fallbacks_and_recovers(
    servers, redis_up: ThrowawayRedis, db
) -> None:
    with httpx.Client(base_url=servers["open"].url, timeout=10) as c:
        before = metric(c.get("/metrics").text, FALLBACKS)
        tenant = _outage(c, db, redis_up)
        slowest = 0.0
        for _ in range(10):
            started = time.monotonic()
            r = c.get("/v1/utterances/x", headers=tenant.headers)
            slowest = max(slowest, time.monotonic() - started)
            assert r.status_code == 404, r.text  # served and unlimited: not 429, not 5xx
            assert "ratelimit-limit" not in r.headers  # no decision, so no numbers
        assert slowest < 2.0
        assert metric(c.get("/metrics").text, FALLBACKS) - before >= 10
        ready = c.get("/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"] == "down"

        _recovers(
            c,
            tenant,
            redis_up,
            "rate_limits_api.redis_open",
            slowest_answer_during_outage_s=round(slowest, 3),
        )
        assert c.get("/ready").status_code == 200


def test_redis_down_closed_policy_is_503_with_retry_after_and_recovers(
    servers, redis_up: ThrowawayRedis, db
) -> None:
    with httpx.Client(base_url=servers["closed"].url, timeout=10) as c:
        tenant = _outage(c, db, redis_up)
        refused = [c.get("/v1/utterances/x", headers=tenant.headers) for _ in range(5)]
        refused.append(
            c.post(
                "/v1/users", json={"email": "x@example.com", "name": "X"}, headers=tenant.headers
            )
        )
        for r in refused:
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == PROBLEM
            assert int(r.headers["retry-after"]) >= 1

        _recovers(c, tenant, redis_up, "rate_limits_api.redis_closed")
