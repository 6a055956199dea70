"""The Redis rate limiter against the real Redis, and against a throwaway
redis-server of our own for the outage tests (the shared one is never stopped).

Every test works under its own key prefix and deletes only those keys.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import pytest
import redis
import structlog
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from runtime.ratelimit import (
    RateDecision,
    RateLimiterUnavailable,
    RedisRateLimiter,
    decide,
    headers,
)
from runtime.settings import Settings

log = structlog.get_logger(__name__)

# Rates below are slow enough that a loaded test machine, taking tens of
# milliseconds between two hits, does not refill a token the test counts on.
FALLBACKS = "utterstream_ratelimit_redis_fallbacks_total"


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"rltest:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=prefix + "*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
async def aredis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis.url)
    yield client
    await client.aclose()


@pytest.fixture
def limiter(aredis: Redis, prefix: str) -> RedisRateLimiter:
    return RedisRateLimiter(aredis, prefix)


async def test_full_bucket_admits_exactly_burst_then_rate_per_second(
    limiter: RedisRateLimiter,
) -> None:
    rate, burst = 10.0, 20
    first = [await limiter.hit("k", rate, burst) for _ in range(burst + 1)]
    assert [d.allowed for d in first] == [True] * burst + [False]

    admitted, started = 0, time.monotonic()
    while time.monotonic() - started < 1.5:
        decision = await limiter.hit("k", rate, burst)
        last_hit = time.monotonic()
        admitted += decision.allowed
        await asyncio.sleep(0.005)
    assert abs(admitted - rate * (last_hit - started)) <= 2


async def test_cost_takes_that_many_tokens_and_never_part(limiter: RedisRateLimiter) -> None:
    rate, burst = 1.0, 10
    assert (await limiter.hit("k", rate, burst, cost=4)).remaining == 6
    assert (await limiter.hit("k", rate, burst, cost=4)).remaining == 2

    denied = await limiter.hit("k", rate, burst, cost=4)
    assert not denied.allowed
    assert denied.remaining == 2  # a denied hit takes nothing
    # Two more tokens, a second each, less what has refilled since.
    assert 1.5 < denied.retry_after_s <= 2.0
    assert (await limiter.hit("k", rate, burst, cost=2)).allowed


async def test_cost_above_burst_passes_only_from_a_full_bucket_and_is_paid_for(
    limiter: RedisRateLimiter,
) -> None:
    rate, burst = 100.0, 5
    assert (await limiter.hit("k", rate, burst, cost=1)).allowed
    not_full = await limiter.hit("k", rate, burst, cost=20)
    assert not not_full.allowed
    assert 0 < not_full.retry_after_s <= 1 / rate + 0.005
    await asyncio.sleep(not_full.retry_after_s + 0.01)
    oversized = await limiter.hit("k", rate, burst, cost=20)
    assert oversized.allowed and oversized.remaining == 0
    # The 20 tokens are owed: nothing passes for about 20/rate seconds.
    after = await limiter.hit("k", rate, burst, cost=1)
    assert not after.allowed
    assert 0.1 < after.retry_after_s <= 20 / rate


async def test_remaining_reset_and_retry_after_agree(limiter: RedisRateLimiter) -> None:
    rate, burst = 2.0, 5
    fresh = await limiter.hit("k", rate, burst)
    assert (fresh.allowed, fresh.limit, fresh.remaining) == (True, 5, 4)
    assert fresh.reset_after_s == pytest.approx(0.5, abs=1e-6)
    assert fresh.retry_after_s == 0

    for _ in range(burst - 1):
        last = await limiter.hit("k", rate, burst)
    assert last.remaining == 0
    assert 2.3 < last.reset_after_s <= 2.5

    denied = await limiter.hit("k", rate, burst)
    assert (denied.allowed, denied.remaining) == (False, 0)
    # Full again once the one missing token and the four others are back.
    assert denied.reset_after_s == pytest.approx(denied.retry_after_s + 2.0, abs=1e-5)
    assert 0.3 < denied.retry_after_s <= 0.5
    assert headers(denied)["Retry-After"] == "1"
    # A denied hit takes nothing, so waiting retry_after is enough.
    await asyncio.sleep(denied.retry_after_s)
    assert (await limiter.hit("k", rate, burst)).allowed


def test_headers_round_seconds_up() -> None:
    allowed = RateDecision(True, limit=200, remaining=150, reset_after_s=0.25, retry_after_s=0)
    assert headers(allowed) == {
        "RateLimit-Limit": "200",
        "RateLimit-Remaining": "150",
        "RateLimit-Reset": "1",
    }
    denied = RateDecision(False, limit=200, remaining=0, reset_after_s=2.0, retry_after_s=1.01)
    assert headers(denied) == {
        "RateLimit-Limit": "200",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "2",
        "Retry-After": "2",
    }
    # Never "Retry-After: 0" on a denial, however close the next token is.
    almost = RateDecision(False, limit=1, remaining=0, reset_after_s=0.001, retry_after_s=0.001)
    assert headers(almost)["Retry-After"] == "1"


async def test_idle_keys_expire_when_the_bucket_is_full(
    limiter: RedisRateLimiter, aredis: Redis, prefix: str
) -> None:
    decision = await limiter.hit("k", 100.0, 5, cost=3)
    assert 0 < await aredis.pttl(prefix + "k") <= math.ceil(decision.reset_after_s * 1000)
    await asyncio.sleep(decision.reset_after_s + 0.02)
    assert await aredis.exists(prefix + "k") == 0


@pytest.mark.parametrize(
    ("rate", "burst", "cost"),
    [(0.0, 5, 1), (-1.0, 5, 1), (math.inf, 5, 1), (1.0, 0, 1), (1.0, 5, 0)],
)
async def test_nonsense_limits_are_errors(
    limiter: RedisRateLimiter, rate: float, burst: int, cost: int
) -> None:
    with pytest.raises(ValueError):
        await limiter.hit("k", rate, burst, cost)


async def test_unknown_failure_policy_is_refused_while_redis_is_fine(
    limiter: RedisRateLimiter,
) -> None:
    with pytest.raises(ValueError, match="redis_failure_policy"):
        await decide(limiter, "k", 10.0, 5, 1, policy="ajar")


class CountingLimiter(RedisRateLimiter):
    """A leasing limiter that counts its round trips to Redis."""

    def __init__(self, client: Redis, prefix: str, lease_s: float = 0.1) -> None:
        super().__init__(client, prefix, lease_s=lease_s)
        self.calls = 0

    async def _run(self, key: str, args: tuple[str, int, int, int, int]) -> list[int]:
        self.calls += 1
        return await super()._run(key, args)


async def _hit_for(limiter: RedisRateLimiter, seconds: float, rate: float, burst: int) -> int:
    """Hits on key "k", about one a millisecond for `seconds`; how many were admitted."""
    admitted, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        admitted += (await limiter.hit("k", rate, burst)).allowed
        await asyncio.sleep(0.0005)
    return admitted


async def test_a_busy_process_spends_leased_tokens_and_never_more_than_it_took(
    aredis: Redis, prefix: str, limiter: RedisRateLimiter
) -> None:
    rate, burst = 0.01, 100_000
    leasing = CountingLimiter(aredis, prefix)
    admitted = await _hit_for(leasing, 1.0, rate, burst)
    # What the bucket was charged, read by a limiter that does not lease.
    charged = burst - 1 - (await limiter.hit("k", rate, burst)).remaining
    log.info("ratelimit_test.lease", admitted=admitted, charged=charged, calls=leasing.calls)
    assert admitted > 200
    assert leasing.calls < admitted / 5
    # Every admission was paid for in Redis; what a lease left unspent is
    # about one period of this process's hits (a tenth of the run).
    assert admitted <= charged <= 1.25 * admitted


async def test_a_lease_that_ends_unspent_gives_its_tokens_back(
    aredis: Redis, prefix: str, limiter: RedisRateLimiter
) -> None:
    rate, burst = 0.01, 100_000
    leasing = CountingLimiter(aredis, prefix)
    admitted = await _hit_for(leasing, 0.35, rate, burst)
    unspent = burst - 1 - (await limiter.hit("k", rate, burst)).remaining - admitted
    assert unspent > 0  # the test means something only if a lease was left over
    await asyncio.sleep(0.25)  # the lease ends; no demand is left to lease for
    admitted += (await leasing.hit("k", rate, burst)).allowed
    charged = burst - 2 - (await limiter.hit("k", rate, burst)).remaining
    assert charged == admitted


async def test_near_its_limit_a_key_is_decided_by_redis_and_admits_exactly_the_burst(
    aredis: Redis, prefix: str
) -> None:
    # A burst that lasts well beyond a lease period at this pace, so that
    # the busier limiter leases while the bucket is more than half full.
    rate, burst = 0.01, 120
    first, second = CountingLimiter(aredis, prefix), CountingLimiter(aredis, prefix)
    answers, first_admitted, first_calls = [], 0, 0
    for turn in range(3 * burst):
        limiter = first if turn % 3 else second  # the first one is busier
        answer = await limiter.hit("k", rate, burst)
        answers.append(answer)
        if answer.allowed and limiter is first:
            first_admitted, first_calls = first_admitted + 1, first.calls
        await asyncio.sleep(0.004)
    # A lease ends unspent at times; its tokens went back to the bucket.
    allowed = [a.allowed for a in answers]
    assert allowed == [True] * burst + [False] * (len(answers) - burst)
    assert first_calls < first_admitted  # it did lease


# Across processes ---------------------------------------------------------


def _hammer(
    url: str,
    prefix: str,
    rate: float,
    burst: int,
    start: Barrier,
    results: Queue[tuple[int, float, float]],
    lease_s: float,
) -> None:
    results.put(asyncio.run(_hammer_for(url, prefix, rate, burst, start, 2.0, lease_s)))


async def _hammer_for(
    url: str,
    prefix: str,
    rate: float,
    burst: int,
    start: Barrier,
    seconds: float,
    lease_s: float,
) -> tuple[int, float, float]:
    """(admitted, wall time before the first hit, wall time after the last)."""
    client = Redis.from_url(url)
    limiter = RedisRateLimiter(client, prefix, lease_s=lease_s)
    await client.ping()
    start.wait()  # every process connected; none is still importing
    admitted, first = 0, time.time()

    async def worker() -> None:
        nonlocal admitted
        while time.time() - first < seconds:
            # Awaited before `+=`: `admitted += await ...` would read
            # `admitted` first and lose the other workers' increments.
            decision = await limiter.hit("shared", rate, burst)
            admitted += decision.allowed

    await asyncio.gather(*(worker() for _ in range(4)))
    last = time.time()
    await client.aclose()
    return admitted, first, last


@pytest.mark.parametrize("lease_s", [0.0, 0.1])
def test_processes_sharing_a_key_share_one_bucket(
    settings: Settings, prefix: str, lease_s: float
) -> None:
    rate, burst, processes = 300.0, 60, 3
    ctx = multiprocessing.get_context("forkserver")
    # The workers fork from one clean server process that imported this
    # module once; under "spawn" each would import it again, which takes
    # seconds on a busy machine. Either way no loop, client or thread is shared.
    ctx.set_forkserver_preload([__name__])
    start, results = ctx.Barrier(processes), ctx.Queue()
    workers = [
        ctx.Process(
            target=_hammer,
            args=(settings.redis.url, prefix, rate, burst, start, results, lease_s),
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
        assert worker.exitcode == 0

    admitted = sum(n for n, _, _ in outcomes)
    elapsed = max(last for _, _, last in outcomes) - min(first for _, first, _ in outcomes)
    allowance = burst + rate * elapsed
    log.info("ratelimit_test.cross_process", admitted=admitted, allowance=round(allowance, 1))
    assert admitted <= allowance + 1  # one hit may be in flight at the edge
    assert admitted >= 0.9 * allowance


# Redis outage and recovery --------------------------------------------------


class ThrowawayRedis:
    """A redis-server of our own on a free port, so an outage test can kill
    and restart it without touching the shared Redis."""

    def __init__(self) -> None:
        # Not conftest's free_port: the hammer processes import this module,
        # and conftest would make them import the whole API.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        self._process = subprocess.Popen(
            ["redis-server", *args, "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while not self._answers():
            assert time.monotonic() < deadline, "throwaway redis-server did not start"
            time.sleep(0.02)

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()  # SIGKILL: a crash, not a clean shutdown
            self._process.wait()
            self._process = None

    def freeze(self, frozen: bool) -> None:
        """SIGSTOP/SIGCONT: a Redis that accepts nothing and answers nothing."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis()
    server.start()
    yield server
    server.kill()  # SIGKILL ends a frozen process too


@pytest.fixture
async def fragile_limiter(throwaway_redis: ThrowawayRedis) -> AsyncIterator[RedisRateLimiter]:
    # Configured as the API should configure its client: a short timeout
    # and one quick retry, so an outage costs a request milliseconds.
    client = Redis(
        port=throwaway_redis.port,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), retries=1),
    )
    yield RedisRateLimiter(client, prefix="rl:")
    await client.aclose()


async def test_redis_down_raises_and_policies_apply(
    fragile_limiter: RedisRateLimiter, throwaway_redis: ThrowawayRedis
) -> None:
    assert (await fragile_limiter.hit("k", 10.0, 5)).allowed
    throwaway_redis.kill()

    started = time.monotonic()
    with pytest.raises(RateLimiterUnavailable):
        await fragile_limiter.hit("k", 10.0, 5)
    assert time.monotonic() - started < 1.0

    fallbacks = REGISTRY.get_sample_value(FALLBACKS) or 0.0
    assert await decide(fragile_limiter, "k", 10.0, 5, 1, policy="open") is None
    assert REGISTRY.get_sample_value(FALLBACKS) == fallbacks + 1
    with pytest.raises(RateLimiterUnavailable):
        await decide(fragile_limiter, "k", 10.0, 5, 1, policy="closed")
    assert REGISTRY.get_sample_value(FALLBACKS) == fallbacks + 1


async def test_same_limiter_works_again_once_redis_is_back(
    fragile_limiter: RedisRateLimiter, throwaway_redis: ThrowawayRedis
) -> None:
    assert (await fragile_limiter.hit("k", 10.0, 5)).allowed
    throwaway_redis.kill()
    with pytest.raises(RateLimiterUnavailable):
        await fragile_limiter.hit("k", 10.0, 5)

    # Restarted empty: no keys, and no cached script (EVALSHA meets NOSCRIPT).
    throwaway_redis.start()
    started = time.monotonic()
    decision = await decide(fragile_limiter, "k", 10.0, 5, 1, policy="closed")
    recovery = time.monotonic() - started
    log.info("ratelimit_test.recovery", seconds=round(recovery, 4))
    assert decision is not None
    assert (decision.allowed, decision.remaining) == (True, 4)
    assert recovery < 1.0


async def test_a_hung_redis_times_out_into_unavailable_and_recovers(
    fragile_limiter: RedisRateLimiter, throwaway_redis: ThrowawayRedis
) -> None:
    assert (await fragile_limiter.hit("k", 10.0, 5)).allowed
    throwaway_redis.freeze(True)
    started = time.monotonic()
    with pytest.raises(RateLimiterUnavailable):
        await fragile_limiter.hit("k", 10.0, 5)
    # Two attempts of socket_timeout each, no backoff.
    assert time.monotonic() - started < 1.5

    throwaway_redis.freeze(False)
    decision = await fragile_limiter.hit("k", 10.0, 5)
    assert decision.allowed
