"""The LLM client against a real local server, with the real openai client
and the real Redis: statuses, attempts, Retry-After, and the shared rate."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import multiprocessing
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from multiprocessing.synchronize import Event
from typing import Any, TypeVar

import msgspec
import pytest
import redis
import redis.asyncio
import structlog
from prometheus_client import REGISTRY
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from llm.analysis import PROMPT_VERSION
from llm.calls import RATE_BURST
from llm.client import InsightResult, LlmClient
from llm.offline import OFFLINE_MODEL, OfflineAnalyzer
from runtime.settings import LlmSettings
from tests.fakes.openai_server import Behaviour, FakeOpenAI, Kind, mix_policy

REDIS_URL = "redis://127.0.0.1:6379/0"
TEXT = "I loved the trip to Rome but the hotel food was terrible."

pytestmark = pytest.mark.timeout(60)
log = structlog.get_logger(__name__)
T = TypeVar("T")


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(hang_s=10) as server:
        yield server


@pytest.fixture
def prefix() -> Iterator[str]:
    """A bucket of our own, so tests never share a rate budget."""
    prefix = f"test:llm:{uuid.uuid4().hex}:"
    yield prefix
    with redis.Redis.from_url(REDIS_URL) as client:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)


def llm_settings(fake: FakeOpenAI, **changes: Any) -> LlmSettings:
    defaults = LlmSettings(
        base_url=fake.base_url,
        model="fake-model",
        # Roomy, so a loaded machine's slow answer is not taken for a hang;
        # tests of hangs shorten it (hang_settings).
        timeout_s=2.0,
        max_attempts=3,
        rate_per_s=50.0,
        max_concurrency=8,
    )
    return msgspec.structs.replace(defaults, **changes)


async def with_client(
    settings: LlmSettings,
    prefix: str,
    use: Callable[[LlmClient], Awaitable[T]],
    **options: Any,
) -> T:
    async with redis.asyncio.Redis.from_url(REDIS_URL) as client:
        # A deadline far off unless a test is about the deadline.
        options = {"backoff_base_s": 0.05, "backoff_cap_s": 0.2, "deadline_s": 10.0} | options
        async with LlmClient(settings, client, limiter_prefix=prefix, **options) as llm:
            return await use(llm)


def analyze(settings: LlmSettings, prefix: str, *texts: str, **options: Any) -> list[InsightResult]:
    async def run_all(llm: LlmClient) -> list[InsightResult]:
        # One after another: the order of calls is the order of the script.
        return [await llm.analyze(text) for text in texts]

    return asyncio.run(with_client(settings, prefix, run_all, **options))


def fault_settings(fake: FakeOpenAI, kind: Kind) -> LlmSettings:
    # A hang lasts until the client's timeout: keep that short for hangs.
    return llm_settings(fake, timeout_s=0.5) if kind == "hang" else llm_settings(fake)


def gaps(fake: FakeOpenAI) -> list[float]:
    times = [arrival.at for arrival in fake.arrivals]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


# --- one call ----------------------------------------------------------------


def test_a_valid_answer_is_strict_with_its_provenance(fake: FakeOpenAI, prefix: str) -> None:
    [result] = analyze(llm_settings(fake), prefix, TEXT)

    assert result.parse_status == "strict"
    assert result.analysis is not None and "travel" in result.analysis.topics
    assert (result.model, result.prompt_version, result.attempts) == (
        "fake-model",
        PROMPT_VERSION,
        1,
    )
    assert result.reason is None and result.latency_ms > 0
    [arrival] = fake.arrivals
    assert arrival.body["response_format"] == {"type": "json_object"}
    assert arrival.body["model"] == "fake-model"
    assert [m["role"] for m in arrival.body["messages"]] == ["system", "user"]


@pytest.mark.parametrize(
    ("kind", "status", "sentiment"),
    [
        ("fenced", "repaired", None),
        ("prose_json", "repaired", None),
        ("out_of_range", "repaired", 1.0),
    ],
)
def test_repairable_answers(
    fake: FakeOpenAI, prefix: str, kind: Kind, status: str, sentiment: float | None
) -> None:
    fake.script(kind)
    [result] = analyze(llm_settings(fake), prefix, TEXT)

    assert (result.parse_status, result.attempts, result.reason) == (status, 1, None)
    assert result.analysis is not None
    if sentiment is not None:
        assert (result.analysis.sentiment, result.analysis.confidence) == (sentiment, 1.0)


def test_prose_fails_with_its_reason_and_is_not_retried(fake: FakeOpenAI, prefix: str) -> None:
    fake.script("prose")
    [result] = analyze(llm_settings(fake), prefix, TEXT)

    assert (result.parse_status, result.analysis, result.attempts) == ("failed", None, 1)
    assert result.reason == "no JSON object in reply"


# --- faults ------------------------------------------------------------------

RETRYABLE: list[tuple[Kind, str]] = [
    ("rate_limit", "429 after 3 attempts"),
    ("server_error", "500 after 3 attempts"),
    ("unavailable", "503 after 3 attempts"),
    ("hang", "timeout after 3 attempts"),
    ("drop", "connection error after 3 attempts"),
]


@pytest.mark.parametrize("kind", [kind for kind, _ in RETRYABLE])
def test_a_retryable_fault_is_retried(fake: FakeOpenAI, prefix: str, kind: Kind) -> None:
    fake.script(kind)
    [result] = analyze(fault_settings(fake, kind), prefix, TEXT)

    assert (result.parse_status, result.attempts, result.reason) == ("strict", 2, None)
    assert [arrival.kind for arrival in fake.arrivals] == [kind, "valid"]


@pytest.mark.parametrize(("kind", "reason"), RETRYABLE)
def test_a_lasting_fault_fails_after_max_attempts(
    fake: FakeOpenAI, prefix: str, kind: Kind, reason: str
) -> None:
    fake.script(kind, kind, kind, "valid")
    [result] = analyze(fault_settings(fake, kind), prefix, TEXT)

    assert (result.parse_status, result.analysis, result.attempts) == ("failed", None, 3)
    assert result.reason is not None and result.reason.startswith(reason)
    assert len(fake.arrivals) == 3


def test_other_client_errors_are_not_retried(fake: FakeOpenAI, prefix: str) -> None:
    fake.script("unauthorized")
    [result] = analyze(llm_settings(fake), prefix, TEXT)

    assert (result.parse_status, result.attempts) == ("failed", 1)
    assert result.reason == "401 after 1 attempt: Incorrect API key"
    assert len(fake.arrivals) == 1


def test_json_mode_is_dropped_for_good_when_the_server_rejects_it(
    fake: FakeOpenAI, prefix: str
) -> None:
    fake.script("reject_json_mode", "reject_json_mode", "reject_json_mode")
    first, second = analyze(llm_settings(fake), prefix, TEXT, TEXT)

    assert (first.parse_status, first.attempts) == ("strict", 2)
    assert (second.parse_status, second.attempts) == ("strict", 1)
    sent = ["response_format" in arrival.body for arrival in fake.arrivals]
    assert sent == [True, False, False]


def test_json_mode_is_kept_when_the_400_was_about_something_else(
    fake: FakeOpenAI, prefix: str
) -> None:
    fake.script("bad_request", "bad_request")
    first, second = analyze(llm_settings(fake), prefix, TEXT, TEXT)

    assert (first.parse_status, first.attempts) == ("failed", 2)
    assert first.reason == "400 after 2 attempts: This model's maximum context length is 8 tokens"
    assert (second.parse_status, second.attempts) == ("strict", 1)
    sent = ["response_format" in arrival.body for arrival in fake.arrivals]
    assert sent == [True, False, True]


@pytest.mark.parametrize(
    ("behaviour", "wait_s"),
    [
        (Behaviour("rate_limit", retry_after_s=1), 1.0),
        (Behaviour("rate_limit", retry_after_ms=400), 0.4),
        # The finer header wins when both are sent, as OpenAI does.
        (Behaviour("rate_limit", retry_after_s=1, retry_after_ms=300), 0.3),
    ],
    ids=["Retry-After", "retry-after-ms", "both"],
)
def test_retry_after_is_honoured(
    fake: FakeOpenAI, prefix: str, behaviour: Behaviour, wait_s: float
) -> None:
    fake.script(behaviour)
    [result] = analyze(llm_settings(fake), prefix, TEXT)

    assert (result.parse_status, result.attempts) == ("strict", 2)
    # Without the header the backoff would be at most 0.05 s.
    [gap] = gaps(fake)
    assert wait_s <= gap < wait_s + 0.3


def test_a_retry_after_past_the_deadline_fails_at_once(fake: FakeOpenAI, prefix: str) -> None:
    fake.script(Behaviour("rate_limit", retry_after_s=30))
    [result] = analyze(llm_settings(fake), prefix, TEXT, deadline_s=2.0)

    assert (result.parse_status, result.attempts) == ("failed", 1)
    assert result.reason == "deadline reached retrying in 30.0s after 1 attempt, last fault 429"
    assert result.latency_ms < 1000


def test_a_rate_limit_wait_past_the_deadline_fails_without_a_call(
    fake: FakeOpenAI, prefix: str
) -> None:
    settings = llm_settings(fake, rate_per_s=0.5)
    first, second = analyze(settings, prefix, TEXT, TEXT, deadline_s=1.0)

    assert (first.parse_status, first.attempts) == ("strict", 1)
    assert (second.parse_status, second.attempts) == ("failed", 0)
    assert second.reason == "deadline reached waiting for the rate limit after 0 attempts"
    assert len(fake.arrivals) == 1


def test_calls_retries_and_failures_are_counted(fake: FakeOpenAI, prefix: str) -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(f"utterstream_llm_{name}_total", labels) or 0.0

    before = {
        "ok": sample("calls", outcome="ok"),
        "503s": sample("calls", outcome="server_error"),
        "retries": sample("retries", cause="server_error"),
        "failures": sample("failures", reason="server_error"),
    }
    fake.script("unavailable", "valid", "unavailable", "unavailable", "unavailable")
    analyze(llm_settings(fake), prefix, TEXT, TEXT)

    assert sample("calls", outcome="ok") - before["ok"] == 1
    assert sample("calls", outcome="server_error") - before["503s"] == 4
    assert sample("retries", cause="server_error") - before["retries"] == 3
    assert sample("failures", reason="server_error") - before["failures"] == 1


def test_without_a_model_the_offline_analyzer_answers(fake: FakeOpenAI, prefix: str) -> None:
    [result] = analyze(LlmSettings(), prefix, TEXT)

    assert (result.parse_status, result.model, result.attempts) == ("strict", OFFLINE_MODEL, 1)
    assert result.analysis == OfflineAnalyzer().analyze(TEXT)
    assert fake.arrivals == []


@pytest.mark.parametrize(
    "change", [{"max_attempts": 0}, {"max_concurrency": 0}, {"rate_per_s": 0.0}]
)
def test_unusable_settings_are_refused_at_start(change: dict[str, Any]) -> None:
    settings = msgspec.structs.replace(LlmSettings(), **change)
    with pytest.raises(ValueError, match=next(iter(change))):
        LlmClient(settings, redis.asyncio.Redis())


def test_redis_down_fails_open_to_the_local_limiter(fake: FakeOpenAI) -> None:
    async def run() -> InsightResult:
        # No redis-py retries, as runtime.ratelimit asks of its clients: the
        # outage shows at once instead of eating the call's deadline.
        unreachable = redis.asyncio.Redis(
            port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
        )
        async with unreachable, LlmClient(llm_settings(fake), unreachable) as llm:
            return await llm.analyze(TEXT)

    result = asyncio.run(run())
    assert (result.parse_status, result.attempts) == ("strict", 1)


# --- many calls --------------------------------------------------------------


def test_a_faulty_stream_loses_nothing(prefix: str) -> None:
    texts = [f"utterance {i}: {TEXT}" for i in range(60)]

    async def run_all(llm: LlmClient) -> list[InsightResult]:
        return await asyncio.gather(*(llm.analyze(text) for text in texts))

    with FakeOpenAI(policy=mix_policy(0.33, seed=7), hang_s=10) as fake:
        # A short timeout: hangs are among the faults.
        settings = llm_settings(fake, max_attempts=4, timeout_s=0.5)
        results = asyncio.run(with_client(settings, prefix, run_all))

    assert len(results) == len(texts)
    for result in results:
        assert (result.analysis is None) == (result.parse_status == "failed")
        assert (result.reason is None) == (result.parse_status != "failed")
    # Every HTTP request the server saw is counted in some result's attempts.
    assert sum(result.attempts for result in results) == len(fake.arrivals)
    faulty = [arrival for arrival in fake.arrivals if arrival.kind != "valid"]
    assert 0.2 < len(faulty) / len(fake.arrivals) < 0.5
    statuses = {result.parse_status for result in results}
    assert statuses == {"strict", "repaired", "failed"}


RATE = 10.0
CALLS_PER_WORKER = 12


def test_the_rate_holds_across_clients_and_processes(fake: FakeOpenAI, prefix: str) -> None:
    """Three workers share one budget: two clients in this process and one in
    another, through the same Redis bucket, released together by `go` so
    that they contend for it."""
    spawn = multiprocessing.get_context("spawn")
    ready, go = spawn.Event(), spawn.Event()
    other = spawn.Process(target=_worker_process, args=(fake.base_url, prefix, ready, go))
    other.start()
    try:
        assert ready.wait(30), "the other process never got going"
        results = asyncio.run(_two_workers(fake.base_url, prefix, go))
    finally:
        other.join(30)
        if other.is_alive():
            other.kill()

    assert other.exitcode == 0
    assert all(result.parse_status == "strict" for result in results)
    times = sorted(arrival.at for arrival in fake.arrivals)
    assert len(times) == 3 * CALLS_PER_WORKER
    assert _calls_per_worker(fake) == {
        "a": CALLS_PER_WORKER,
        "b": CALLS_PER_WORKER,
        "c": CALLS_PER_WORKER,
    }
    # Calls in [t, t + 1 s), for every t at which a call arrived.
    busiest = max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))
    span = times[-1] - times[0]
    average = (len(times) - 1) / span
    log.info("rate.measured", busiest_second=busiest, average_per_s=round(average, 2), span_s=span)
    assert span >= 3.0
    # Grants are never more than RATE a second; the burst's one call of room
    # absorbs the scheduling noise between a grant and its arrival here.
    assert busiest <= RATE + RATE_BURST
    assert average <= RATE * 1.1


async def _two_workers(base_url: str, prefix: str, go: Event) -> list[InsightResult]:
    async with (
        redis.asyncio.Redis.from_url(REDIS_URL) as redis_a,
        redis.asyncio.Redis.from_url(REDIS_URL) as redis_b,
        LlmClient(_rate_settings(base_url), redis_a, limiter_prefix=prefix) as a,
        LlmClient(_rate_settings(base_url), redis_b, limiter_prefix=prefix) as b,
    ):
        go.set()
        return await asyncio.gather(
            *(a.analyze(f"worker a {i}: {TEXT}") for i in range(CALLS_PER_WORKER)),
            *(b.analyze(f"worker b {i}: {TEXT}") for i in range(CALLS_PER_WORKER)),
        )


def _rate_settings(base_url: str) -> LlmSettings:
    return LlmSettings(
        base_url=base_url, model="fake-model", timeout_s=2.0, max_attempts=3, rate_per_s=RATE
    )


def _calls_per_worker(fake: FakeOpenAI) -> Counter[str]:
    utterances = (json.loads(a.body["messages"][-1]["content"]) for a in fake.arrivals)
    return Counter(utterance["utterance"].split()[1] for utterance in utterances)


def _worker_process(base_url: str, prefix: str, ready: Event, go: Event) -> None:
    async def run() -> list[InsightResult]:
        async with (
            redis.asyncio.Redis.from_url(REDIS_URL) as client,
            LlmClient(_rate_settings(base_url), client, limiter_prefix=prefix) as llm,
        ):
            ready.set()
            await asyncio.to_thread(go.wait, 30)
            return await asyncio.gather(
                *(llm.analyze(f"worker c {i}: {TEXT}") for i in range(CALLS_PER_WORKER))
            )

    results = asyncio.run(run())
    if any(result.parse_status != "strict" for result in results):
        raise SystemExit(1)
